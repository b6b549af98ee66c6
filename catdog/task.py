"""The task class of every CatDog task: capability requirements and targets on plain Celery tasks.

``@app.task(requires=("camera",))`` routes by capability; ``task.on(target)`` returns a Celery
signature pinned to a target (a group for ``all:...``). Routing itself is :mod:`catdog.routing`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from celery import Task, group
from celery.canvas import Signature
from celery.result import ResultBase
from celery.utils import uuid
from kombu import serialization
from kombu.exceptions import EncodeError

from catdog import dedupe
from catdog.errors import TooLarge, UsageError
from catdog.fleet import fleet
from catdog.placement import broker_client
from catdog.records import (
    CONTROL_HEADERS,
    DEFAULT_MAX_DELIVERIES,
    SENT_HEADER,
    TASKS_KEY,
    TaskRecord,
    checked_max_deliveries,
)
from catdog.resources import checked_uses, refusal
from catdog.routing import Route
from catdog.targets import Target
from catdog.windows import parsed

WINDOW_CLOSE = ("finish", "stop")
#: a task's arguments, and its result, as JSON: at most this many bytes. Messages and results live
#: in the broker's memory, and a Pi Zero has 512 MB: move bulk data as files, pass their paths.
MAX_ARGS_BYTES = 1024 * 1024
MAX_RESULT_BYTES = 1024 * 1024


def json_size(value: Any, serializer: str = "json") -> int | None:
    """Bytes of ``value`` as ``serializer`` (kombu's, which Celery uses) encodes it, or None when
    it cannot. kombu's JSON takes what plain JSON does and datetimes, dates, times, UUIDs,
    Decimals and bytes; Celery sends an AsyncResult or GroupResult returned by a task as its id
    tuple (as the result backend stores it)."""
    if isinstance(value, ResultBase):
        value = value.as_tuple()
    try:
        payload = serialization.dumps(value, serializer=serializer)[2]
    except (EncodeError, TypeError, ValueError):
        return None
    return len(payload.encode() if isinstance(payload, str) else payload)


class FanOut(group):
    """A group whose messages reach the broker together: one pipelined round trip for all of
    them (kombu's publish batch) instead of one per device, and one result subscription per
    member (Celery's group subscribes, unsubscribes and subscribes again for each). Each member
    is still an ordinary message on its device's queue, and the result an ordinary GroupResult."""

    def apply_async(self, args: Any = None, kwargs: Any = None, add_to_parent: bool = True,
                    producer: Any = None, link: Any = None, link_error: Any = None,
                    **options: Any) -> Any:
        app = self.app
        if "dedupe_key" in options or "dedupe_for" in options:
            raise UsageError("dedupe_key deduplicates one message; a group sends one per device "
                             "(call once per device)")
        if (app.conf.task_always_eager or link is not None or link_error is not None
                or not self.tasks or options.get("chord")):  # Celery's own path and errors
            return super().apply_async(args, kwargs, add_to_parent, producer, link, link_error,
                                       **options)
        options, group_id, root_id = self._freeze_gid(options)
        # Freezing makes a result object per member; dropping one after its message is sent
        # would unsubscribe from its result, so they are dropped here, before anything is sent.
        members = [sig for sig, _, _ in self._prepared(self.tasks, [], group_id, root_id, app)]
        with app.producer_or_acquire(producer) as producer, producer.batch():
            results = [sig.apply_async(producer=producer, add_to_parent=False, args=args or (),
                                       kwargs=kwargs, **options) for sig in members]
        result = app.GroupResult(group_id, results)
        parent = app.current_worker_task
        if add_to_parent and parent:
            parent.add_trail(result)
        return result


class FleetTask(Task):
    """A Celery task that knows which capabilities it needs."""

    #: capabilities a device must have to run this task
    requires: Sequence[str] = ()
    #: name of a fleet-wide rate limit from the inventory's ``limits:``
    limit: str | None = None
    #: minutes of each hour (``":05-:55"``) or of each day (``"08:00-18:00"``) it may start in
    #: (``apply_async(window=..., limit=...)`` sets either for one call)
    window: str | None = None
    #: a task still running when its window closes: "finish" (default) or "stop" (Celery's soft
    #: time limit at the close, raising SoftTimeLimitExceeded in the task; killed 10 s later)
    window_close: str = "finish"
    #: the first positional argument is the target (``run_on("pi4", "uname -a")``)
    target_arg: bool = False
    #: worker losses (a pool process or the whole worker died running it) after which the
    #: message is quarantined instead of delivered again (:mod:`catdog.quarantine`);
    #: ``apply_async(max_deliveries=N)`` sets it for one call
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    #: per-device resources a run holds (``{"camera": 1}``: one unit of the device's
    #: ``resources: {camera: N}``; :mod:`catdog.resources`)
    uses: Mapping[str, int] = {}
    #: hands each task to the worker's extensions in its main process (:mod:`workers.telemetry`)
    Request = "workers.telemetry:ExtendedRequest"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """``@app.task(max_deliveries=0)`` is refused as the task is made."""
        super().__init_subclass__(**kwargs)
        if "max_deliveries" in cls.__dict__:
            name = cls.__dict__.get("name") or cls.__name__
            checked_max_deliveries(cls.__dict__["max_deliveries"], f"task {name!r}")
        if "uses" in cls.__dict__:
            name = cls.__dict__.get("name") or cls.__name__
            cls.uses = checked_uses(cls.__dict__["uses"], f"task {name!r}")

    def on(self, target: Target | str, timeout: float | None = None) -> Signature:
        """A signature pinned to ``target``; for ``all`` and ``all:X`` a group, one per device.
        A target with predicates is placed now, on live facts (waiting up to ``timeout``
        seconds for a device that satisfies them: :mod:`catdog.placement`)."""
        route = fleet.place(tuple(self.requires), target, timeout)
        self._check_uses(route)
        if route.group:
            return FanOut([self.signature(queue=q) for q in route.queues])
        return self.signature(queue=route.queue)

    def apply_async(self, args: Sequence[Any] | None = None,
                    kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        """Celery's, with CatDog's options: ``window``, ``limit``, ``window_close``,
        ``max_deliveries``, ``timeout`` (a target with predicates waits that long for a device)
        and ``dedupe_key``/``dedupe_for`` (:mod:`catdog.dedupe`)."""
        if "dedupe_key" not in options and "dedupe_for" not in options:
            return self._send(args, kwargs, options)
        key, period = dedupe.checked(self.name, options.pop("dedupe_key", None),
                                     options.pop("dedupe_for", None))
        if self.target_arg and "queue" not in options:
            target = args[0] if args else (kwargs or {}).get("target")
            if fleet.route(tuple(self.requires), Target.parse(target).base).group:
                raise UsageError(f"task {self.name!r}: dedupe_key deduplicates one message; "
                                 f"{target} sends one per device (call once per device)")
        task_id = options.setdefault("task_id", uuid())
        with broker_client() as client:
            first = dedupe.claim(client, self.name, key, task_id, period)
        if first is not None:
            return self.AsyncResult(first)
        try:
            return self._send(args, kwargs, options)
        except BaseException:
            with broker_client() as client:
                dedupe.release(client, self.name, key, task_id)
            raise

    def _send(self, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None,
              options: dict[str, Any]) -> Any:
        self._check_controls(options.get("window"), options.get("limit"),
                             options.get("window_close"))
        if "max_deliveries" in options:
            checked_max_deliveries(options["max_deliveries"], f"task {self.name!r}")
        size = (json_size([args or (), kwargs or {}], self.serializer or "json")
                if args or kwargs else None)
        if size is not None and size > MAX_ARGS_BYTES:
            raise TooLarge(f"task {self.name!r}: arguments of {size} bytes as JSON, over the "
                           f"{MAX_ARGS_BYTES}-byte limit; pass a path or URL to the data instead")
        headers = {header: options.pop(k) for k, header in CONTROL_HEADERS.items() if options.get(k)}
        headers[SENT_HEADER] = time.time()  # the worker's metrics measure the queue wait from it
        options["headers"] = {**(options.get("headers") or {}), **headers}
        if self.target_arg and "queue" not in options:
            self._check_arguments(args, kwargs)
            target = args[0] if args else (kwargs or {}).get("target")
            wait = options.pop("timeout", None) if isinstance(target, str) and "&" in target \
                else None  # (without predicates, ``timeout`` is kombu's publish timeout)
            route = fleet.place(tuple(self.requires), target, wait)
            self._check_uses(route)
            if route.group:
                members = [self.signature(args, kwargs, queue=q, **options) for q in route.queues]
                return FanOut(members).apply_async()
            options["queue"] = route.queue
        elif "queue" not in options:  # what route_task would say, without asking the router
            route = fleet.route(tuple(self.requires))
            self._check_uses(route)
            options["queue"] = route.queue
        return super().apply_async(args, kwargs, **options)

    def _check_uses(self, route: Route) -> None:
        """A call no device it may run on could hold the ``uses`` of is refused (worked out
        once per route: the inventory does not change under a process)."""
        if not self.uses:
            return
        key = (self.name, route.queues)
        if key not in _USES_CHECKED:
            _USES_CHECKED[key] = refusal(fleet.inventory, self.name, self.uses, route)
        problem = _USES_CHECKED[key]
        if problem:
            raise UsageError(problem)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task (in the worker); a result that is not JSON or is too large fails it with
        a clear error instead of failing later in the result backend."""
        result = super().__call__(*args, **kwargs)
        if result is None:
            return result
        serializer = self.app.conf.result_serializer
        size = json_size(result, serializer)
        if size is None:
            raise TypeError(f"task {self.name!r} returned a {type(result).__name__}, which is not "
                            f"JSON: return dicts, lists, strings, numbers, booleans, None, "
                            f"datetimes, UUIDs, Decimals or another task's AsyncResult")
        if size > MAX_RESULT_BYTES:
            raise TooLarge(f"task {self.name!r} returned {size} bytes as JSON, over the "
                           f"{MAX_RESULT_BYTES}-byte limit; write it to a file and return the path")
        return result

    def _check_controls(self, window: str | None = None, limit: str | None = None,
                        window_close: str | None = None) -> None:
        """A limit the inventory does not define, or a malformed window, is refused at the call."""
        window, limit = window or self.window, limit or self.limit
        if (window_close or self.window_close) not in WINDOW_CLOSE:
            raise UsageError(f"task {self.name!r}: window_close must be one of "
                             f"{', '.join(WINDOW_CLOSE)}, got {window_close or self.window_close!r}")
        if window:
            parsed(window)
        if limit and limit not in fleet.inventory.limits:
            known = ", ".join(sorted(fleet.inventory.limits)) or "none"
            raise UsageError(f"task {self.name!r} uses limit {limit!r}, which "
                             f"{fleet.inventory.path.name} does not define under limits: "
                             f"(defined: {known})")

    def _check_arguments(self, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None
                         ) -> None:
        """Refuse arguments that don't fit the signature, as Celery's ``typing`` check does."""
        try:
            self.__header__(*(args or ()), **(kwargs or {}))
        except TypeError as exc:
            raise TypeError(f"Task {self.name!r}: {exc}") from None


_USES_CHECKED: dict[tuple[str, tuple[str, ...]], str | None] = {}
#: seconds a process sending by name keeps a task's published record (:func:`published_record`)
RECORD_TTL_S = 10.0
_records: dict[str, tuple[float, TaskRecord | None]] = {}


def published_record(name: str) -> TaskRecord | None:
    """What the task ``name`` needs, as the workers that import it published it (None when no
    worker has): for a task sent by name from a process that never imported it."""
    from catdog.application import app

    now = time.monotonic()
    kept = _records.get(name)
    if kept is not None and now - kept[0] < RECORD_TTL_S:
        return kept[1]
    with app.pool.acquire(block=True) as conn, conn.default_channel.conn_or_acquire() as client:
        raw = client.hget(TASKS_KEY, name)
    record = TaskRecord.loads(raw) if raw else None
    _records[name] = (now, record)
    return record


def route_task(name: str, args: Any, kwargs: Any, options: Mapping[str, Any],
               task: Any = None, **_: Any) -> dict[str, Any] | None:
    """Celery router (``task_routes``): capability and target routing for every call that names
    no queue, by name (``app.send_task``, ``celery call``, Flower) as from Python, and Celery's
    default priority for messages sent by name, which Celery sends without one (kombu's Redis
    transport would then queue them at 0, ahead of everything)."""
    route: dict[str, Any] = {}
    if options.get("priority") is None:
        from catdog.application import app

        route["priority"] = app.conf.task_default_priority
    if not options.get("queue"):
        record = TaskRecord.of(task) if task is not None else published_record(name)
        route["queue"] = _queue_by_name(name, record or TaskRecord(), args, kwargs)
    return route or None


def _queue_by_name(name: str, record: TaskRecord, args: Any, kwargs: Any) -> str:
    target = None
    if record.target_arg:
        target = args[0] if args else (kwargs or {}).get("target")
    route = fleet.place(record.requires, target)
    if route.group:
        raise UsageError(f"task {name!r} sent to {target} with no queue: one message reaches one "
                         f"device; call it from Python ({name.rsplit('.', 1)[-1]}.delay(...) "
                         f"sends one per device), or send it once per device")
    return route.queue
