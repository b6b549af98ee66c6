"""Worker extensions: each concern of the worker is one :class:`Extension`, the worker runs the list.

Modelled on dramatiq's middleware: a base class whose hooks do nothing, each concern overriding
the few it needs, and a runner (:class:`Extensions`) that calls every extension's hook, in list
order. The worker (:mod:`workers.telemetry`) knows no concern; ``workers/cli.py`` ``run`` builds
the list once: heartbeat (:mod:`workers.heartbeat`), health (:mod:`workers.health`), kill switch
(:mod:`workers.killswitch`), watchdog (:mod:`workers.watchdog`), leases (:mod:`workers.leases`),
gate (:mod:`workers.gate`), resources (:mod:`workers.resources`), quarantine
(:mod:`workers.quarantine`), metrics (:mod:`workers.metrics`).

Hooks, in the order of a worker's life:

- ``on_start(worker)``: at ``worker_ready``, in the event-loop thread, before the first fetch;
- ``on_ready(pipe)`` and ``on_beat(pipe)``: queue commands on the shared pipeline (the ready
  announcement once, then every heartbeat) and return a callback, or None. After the one round
  trip each callback gets exactly the replies of the commands its extension queued (the runner
  counts them), never the whole list by position;
- per task, in the worker's main process: ``on_received()`` (a message reached the worker),
  ``before_start(request)`` (True holds the task back: the extension put it back or deferred
  it), ``on_ack_lost(request, exc)`` (True: the extension took over an acknowledgement Redis
  could not take), ``on_lost(request, error)`` (its pool process died; True: the extension took
  the message over instead of Celery re-queueing it), ``on_failure(request)``,
  ``on_settled(request, event, runtime)``;
- ``on_stop()``: at an orderly shutdown.

A Request is made by Celery, not by the worker: it finds the running list on the app
(:func:`running`), the one place the worker leaves it (:meth:`Extensions.install`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

#: what an ``on_ready``/``on_beat`` hook returns: called with its own replies, after the round trip
Replies = Callable[[list[Any]], None]

E = TypeVar("E", bound="Extension")

#: the attribute of the Celery app that holds the running worker's extensions
APP_ATTRIBUTE = "catdog_extensions"


class Worker:
    """What the running worker offers its extensions at ``on_start``: its device, queues and
    arguments, its Redis client, Celery's consumer and event loop (``hub``, None for a green
    pool), and ``wake`` (beat now instead of at the next interval, after a change the heartbeat
    must carry)."""

    __slots__ = ("argv", "consumer", "device", "hub", "queues", "redis", "wake")

    def __init__(self, device: str, queues: list[str], argv: list[str], redis: Any,
                 consumer: Any = None, hub: Any = None,
                 wake: Callable[[], None] = lambda: None) -> None:
        self.device, self.queues, self.argv, self.redis = device, queues, argv, redis
        self.consumer, self.hub, self.wake = consumer, hub, wake


class Extension:
    """One concern of the worker. Every hook does nothing here; override the ones needed."""

    def on_start(self, worker: Worker) -> None:
        pass

    def on_ready(self, pipe: Any) -> Replies | None:
        return None

    def on_beat(self, pipe: Any) -> Replies | None:
        return None

    def on_received(self) -> None:
        pass

    def before_start(self, request: Any) -> bool:
        return False

    def on_ack_lost(self, request: Any, error: BaseException) -> bool:
        return False

    def on_lost(self, request: Any, error: BaseException) -> bool:
        return False

    def on_failure(self, request: Any) -> None:
        pass

    def on_settled(self, request: Any, event: str, runtime: float | None) -> None:
        pass

    def on_stop(self) -> None:
        pass


def _overriding(extensions: Sequence[Extension], hook: str) -> list[Any]:
    """The bound ``hook`` of each extension that overrides it (a task's path calls no no-op)."""
    base = getattr(Extension, hook)
    return [getattr(e, hook) for e in extensions if getattr(type(e), hook) is not base]


class Extensions:
    """Runs a list of extensions' hooks, in list order."""

    def __init__(self, extensions: Sequence[Extension] = ()) -> None:
        self.extensions = list(extensions)
        self._received = _overriding(self.extensions, "on_received")
        self._before_start = _overriding(self.extensions, "before_start")
        self._ack_lost = _overriding(self.extensions, "on_ack_lost")
        self._lost = _overriding(self.extensions, "on_lost")
        self._failure = _overriding(self.extensions, "on_failure")
        self._settled = _overriding(self.extensions, "on_settled")

    def get(self, kind: type[E]) -> E:
        """The extension of class ``kind`` (the first one)."""
        for extension in self.extensions:
            if isinstance(extension, kind):
                return extension
        raise LookupError(f"no {kind.__name__} among the worker's extensions")

    def install(self, app: Any) -> None:
        """Leave the list where Celery's Request objects find it (:func:`running`)."""
        setattr(app, APP_ATTRIBUTE, self)

    def start(self, worker: Worker) -> None:
        for extension in self.extensions:
            extension.on_start(worker)

    def ready(self, pipe: Any) -> Callable[[list[Any]], None]:
        return self._queue(pipe, "on_ready")

    def beat(self, pipe: Any) -> Callable[[list[Any]], None]:
        return self._queue(pipe, "on_beat")

    def _queue(self, pipe: Any, hook: str) -> Callable[[list[Any]], None]:
        """Each extension's ``hook`` queues on ``pipe``; returns what hands every extension its
        own slice of the replies (``pipe.execute()``'s list)."""
        calls: list[tuple[Replies, int, int]] = []
        for extension in self.extensions:
            first = len(pipe)
            callback = getattr(extension, hook)(pipe)
            if callback is not None:
                calls.append((callback, first, len(pipe)))

        def deliver(replies: list[Any]) -> None:
            for callback, first, end in calls:
                callback(replies[first:end])

        return deliver

    def received(self, **_: Any) -> None:
        """(a handler of Celery's ``task_received``, ``task_unknown`` and ``task_rejected``)"""
        for hook in self._received:
            hook()

    def before_start(self, request: Any) -> bool:
        """True when an extension held ``request`` back (the later ones are not asked)."""
        return any(hook(request) for hook in self._before_start)

    def ack_lost(self, request: Any, error: BaseException) -> bool:
        return any(hook(request, error) for hook in self._ack_lost)

    def lost(self, request: Any, error: BaseException) -> bool:
        """True when an extension took over the message of ``request``, whose pool process
        was lost (the quarantine held it: Celery must not re-queue it)."""
        return any(hook(request, error) for hook in self._lost)

    def failure(self, request: Any) -> None:
        for hook in self._failure:
            hook(request)

    def settled(self, request: Any, event: str, runtime: float | None) -> None:
        for hook in self._settled:
            hook(request, event, runtime)

    def stop(self) -> None:
        for extension in self.extensions:
            extension.on_stop()


def running(app: Any) -> Extensions:
    """The running worker's extensions (an empty list, left on the app at the first ask, for a
    worker CatDog did not start: ``celery -A catdog worker``)."""
    try:
        extensions: Extensions = getattr(app, APP_ATTRIBUTE)
        return extensions
    except AttributeError:
        extensions = Extensions()
        extensions.install(app)
        return extensions
