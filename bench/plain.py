"""The plain-Celery side of the comparison: an app as a user writes it by hand, with
hand-written queues (``q.<device>`` and ``q.bench``) and ``apply_async(queue=...)``.

Its settings (``$BENCH_PLAIN_SETTINGS``): ``defaults``, Celery's own (what a user who writes
nothing gets: early acks, prefetch 4, no priorities), or ``catdog``, CatDog's ``celeryconfig``
(late acks, prefetch 1, ten priority levels), which leaves CatDog's layer as the only
difference. No CatDog code runs here. Workers: ``celery -A bench.plain worker -Q q.d1,q.bench
...`` with ``$BENCH_PLAIN_BROKER``; both are read when the app is first configured, not at import.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

BROKER_ENV = "BENCH_PLAIN_BROKER"
SETTINGS_ENV = "BENCH_PLAIN_SETTINGS"
SETTINGS = ("defaults", "catdog")
SHARED_QUEUE = "q.bench"


def device_queue(name: str) -> str:
    return f"q.{name}"


def _settings() -> dict[str, Any]:
    url = os.environ[BROKER_ENV]
    found: dict[str, Any] = {}
    if os.environ.get(SETTINGS_ENV) == "catdog":
        import celeryconfig

        found.update({k: v for k, v in vars(celeryconfig).items()
                      if k.islower() and not k.startswith("_")})
    return {**found, "broker_url": url, "result_backend": url, "task_default_queue": SHARED_QUEUE}


app = Celery("bench-plain", set_as_current=False)
app.add_defaults(_settings)


@app.task(name="bench.plain.noop")
def noop() -> None:
    """Nothing, as :func:`bench.tasks.noop`."""
