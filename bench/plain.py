"""The plain-Celery side of the comparison: an app as a careful user writes it by hand.

The same static settings as CatDog (``celeryconfig``: JSON only, late acks, prefetch 1, priority
queues, task events, STARTED state), so the comparison measures CatDog's layer and not a choice
of settings; hand-written queues (``q.<device>`` and ``q.bench``) and ``apply_async(queue=...)``.
No CatDog code runs here. Workers: ``celery -A bench.plain worker -Q q.d1,q.bench ...`` with
``$BENCH_PLAIN_BROKER`` (read when the app is first configured, not at import).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

BROKER_ENV = "BENCH_PLAIN_BROKER"
SHARED_QUEUE = "q.bench"


def device_queue(name: str) -> str:
    return f"q.{name}"


def _settings() -> dict[str, Any]:
    url = os.environ[BROKER_ENV]
    return {"broker_url": url, "result_backend": url, "task_default_queue": SHARED_QUEUE}


app = Celery("bench-plain", set_as_current=False)
app.config_from_object("celeryconfig")
app.add_defaults(_settings)


@app.task(name="bench.plain.noop")
def noop() -> None:
    """Nothing, as :func:`bench.tasks.noop`."""
