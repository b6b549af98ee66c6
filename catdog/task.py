"""The task class of every CatDog task: capability requirements and targets on plain Celery tasks.

``@app.task(requires=("camera",))`` routes by capability; ``task.on(target)`` returns a Celery
signature pinned to a target (a group for ``all:...``). Routing itself is :mod:`catdog.routing`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from celery import Task, group
from celery.canvas import Signature

from catdog.fleet import fleet
from catdog.routing import plan


class FleetTask(Task):
    """A Celery task that knows which capabilities it needs."""

    #: capabilities a device must have to run this task
    requires: Sequence[str] = ()
    #: name of a fleet-wide rate limit from the inventory's ``limits:``
    limit: str | None = None
    #: minutes of each hour (``":05-:55"``) or of each day (``"08:00-18:00"``) it may start in
    window: str | None = None
    #: the first positional argument is the target (``run_on("pi4", "uname -a")``)
    target_arg: bool = False
    #: counts outcomes in the worker's main process (see :mod:`workers.telemetry`)
    Request = "workers.telemetry:CountingRequest"

    def on(self, target: str) -> Signature:
        """A signature pinned to ``target``; for ``all`` and ``all:X`` a group, one per device."""
        route = plan(fleet.inventory, self.requires, target)
        if route.group:
            return group([self.signature(queue=q) for q in route.queues])
        return self.signature(queue=route.queue)

    def apply_async(self, args: Sequence[Any] | None = None,
                    kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        if self.target_arg and "queue" not in options:
            self._check_arguments(args, kwargs)
            target = args[0] if args else (kwargs or {}).get("target")
            route = plan(fleet.inventory, self.requires, target)
            if route.group:
                members = [self.signature(args, kwargs, queue=q, **options) for q in route.queues]
                return group(members).apply_async()
            options["queue"] = route.queue
        return super().apply_async(args, kwargs, **options)

    def _check_arguments(self, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None
                         ) -> None:
        """Refuse arguments that don't fit the signature, as Celery's ``typing`` check does."""
        try:
            self.__header__(*(args or ()), **(kwargs or {}))
        except TypeError as exc:
            raise TypeError(f"Task {self.name!r}: {exc}") from None


def route_task(name: str, args: Any, kwargs: Any, options: Mapping[str, Any],
               task: Any = None, **_: Any) -> dict[str, str] | None:
    """Celery router (``task_routes``): capability routing for calls without an explicit queue."""
    if options.get("queue"):
        return None
    requires = getattr(task, "requires", ()) or ()
    return {"queue": plan(fleet.inventory, requires, None).queue}
