"""The worker's extension runner (:mod:`workers.extension`), with fake extensions on a real Redis
pipeline: hooks run in list order, and each extension gets back exactly its own replies. The real
extensions are proven by the real-worker tests (kill switch, controls, metrics, leases, watchdog)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import redis

from workers.extension import Extension, Extensions, Replies, Worker, running


class Fake(Extension):
    """Records every hook it sees in ``seen``; on a beat, sets and reads its own keys."""

    def __init__(self, name: str, seen: list[str], keys: int, holds: bool = False) -> None:
        self.name, self.seen, self.keys, self.holds = name, seen, keys, holds
        self.replies: list[list[Any]] = []

    def on_start(self, worker: Worker) -> None:
        self.seen.append(f"{self.name}.start")

    def on_beat(self, pipe: Any) -> Replies:
        self.seen.append(f"{self.name}.beat")
        for i in range(self.keys):
            pipe.set(f"ext-test:{self.name}:{i}", f"{self.name}{i}")
            pipe.get(f"ext-test:{self.name}:{i}")
        return self.replies.append

    def before_start(self, request: Any) -> bool:
        self.seen.append(f"{self.name}.before_start")
        return self.holds

    def on_settled(self, request: Any, event: str, runtime: float | None) -> None:
        self.seen.append(f"{self.name}.settled:{event}")

    def on_stop(self) -> None:
        self.seen.append(f"{self.name}.stop")


class Silent(Extension):
    """Queues a command on the beat but wants no reply back."""

    def on_beat(self, pipe: Any) -> None:
        pipe.set("ext-test:silent", "1")


def test_hooks_run_in_list_order_and_each_beat_gets_its_own_replies(
        redis_client: redis.Redis) -> None:
    seen: list[str] = []
    first, second = Fake("a", seen, keys=2), Fake("b", seen, keys=1)
    extensions = Extensions([first, Silent(), Fake("empty", seen, keys=0), second])
    extensions.start(Worker(device="d", queues=[], argv=[], redis=redis_client))
    assert seen == ["a.start", "empty.start", "b.start"]

    pipe = redis_client.pipeline(transaction=False)
    deliver = extensions.beat(pipe)
    assert seen[3:] == ["a.beat", "empty.beat", "b.beat"]
    deliver(pipe.execute())
    assert first.replies == [[True, b"a0", True, b"a1"]]  # its own four, not b's or silent's
    assert second.replies == [[True, b"b0"]]
    assert redis_client.get("ext-test:silent") == b"1"

    request = SimpleNamespace()
    assert extensions.before_start(request) is False
    extensions.settled(request, "task-succeeded", 0.1)
    extensions.stop()
    assert seen[6:] == ["a.before_start", "empty.before_start", "b.before_start",
                        "a.settled:task-succeeded", "empty.settled:task-succeeded",
                        "b.settled:task-succeeded", "a.stop", "empty.stop", "b.stop"]
    redis_client.delete(*redis_client.keys("ext-test:*"))


def test_a_held_request_is_not_shown_to_the_later_extensions() -> None:
    seen: list[str] = []
    extensions = Extensions([Fake("gate", seen, 0, holds=True), Fake("later", seen, 0)])
    assert extensions.before_start(SimpleNamespace()) is True
    assert seen == ["gate.before_start"]


def test_requests_find_the_running_extensions_on_the_app_and_none_elsewhere() -> None:
    app = SimpleNamespace()
    assert running(app).before_start(SimpleNamespace()) is False  # a plain Celery worker
    seen: list[str] = []
    extensions = Extensions([Fake("only", seen, 0)])
    extensions.install(app)
    assert running(app) is extensions
    assert extensions.get(Fake).name == "only"


def test_no_worker_module_keeps_a_worker_object_at_module_level() -> None:
    """The worker builds its extensions once (workers/cli.py build_extensions) and passes them
    where needed; no module holds a gate, switch, leases, recorder, watchdog or filter of its own."""
    import importlib
    import inspect
    import pkgutil

    import workers

    found = []
    for info in pkgutil.iter_modules(workers.__path__):
        if info.name == "__main__":
            continue
        module = importlib.import_module(f"workers.{info.name}")
        for name, value in vars(module).items():
            kind = type(value)
            if kind.__module__.startswith("workers.") and not inspect.isclass(value):
                found.append(f"workers.{info.name}.{name}: a {kind.__name__}")
            if isinstance(value, logging.Filter):
                found.append(f"workers.{info.name}.{name}: a log filter")
    assert found == []
