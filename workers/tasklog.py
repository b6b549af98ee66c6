"""Celery's two lines per task ("received", "succeeded in") are debug output on a device.

At INFO a Celery worker writes both for every task: on a Pi Zero at a few hundred tasks a second
that is a real share of the CPU (formatting, the write, and tmux keeping the pane's history), and
it buries what matters in ``fab logs``. CatDog keeps them for ``--loglevel DEBUG``; at INFO a
worker logs its life (ready, kill switch, deferrals, watchdog), and each task's failure or retry;
every task has its line in the metrics file instead (:mod:`workers.metrics`, ``fab metrics``).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.app import trace

#: Celery's logger of each task's receipt (Celery checks its level once, so a quiet one costs
#: nothing per task)
RECEIPT_LOGGER = "celery.worker.strategy"
#: Celery's logger of each task's success, retry and failure
TRACE_LOGGER = "celery.app.trace"


class NoSuccessLines(logging.Filter):
    """Drops the tracer's "succeeded in" line, before it is formatted or written."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg is not trace.LOG_SUCCESS


def quiet_task_lines(loglevel: int | str) -> None:
    """Above DEBUG: no receipt line, no success line; retries and failures stay."""
    level = logging.getLevelName(loglevel) if isinstance(loglevel, str) else loglevel
    if isinstance(level, int) and level <= logging.DEBUG:
        return
    logging.getLogger(RECEIPT_LOGGER).setLevel(logging.WARNING)
    tracer = logging.getLogger(TRACE_LOGGER)
    if not any(isinstance(f, NoSuccessLines) for f in tracer.filters):
        tracer.addFilter(NoSuccessLines())


def on_logging_setup(loglevel: Any = None, **_: Any) -> None:
    """``after_setup_logger`` handler (in the main process and in every pool process)."""
    quiet_task_lines(loglevel if loglevel is not None else logging.INFO)
