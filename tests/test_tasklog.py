"""A worker's per-task log lines: Celery's receipt and success lines only at DEBUG; a task's
retry and failure lines always (unit test on the logging objects Celery uses)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from celery.app import trace

from workers.tasklog import RECEIPT_LOGGER, TRACE_LOGGER, quiet_task_lines


@pytest.fixture
def loggers() -> Iterator[tuple[logging.Logger, logging.Logger]]:
    receipt, tracer = logging.getLogger(RECEIPT_LOGGER), logging.getLogger(TRACE_LOGGER)
    saved = receipt.level, list(tracer.filters)
    yield receipt, tracer
    receipt.setLevel(saved[0])
    tracer.filters[:] = saved[1]


def _passes(tracer: logging.Logger, msg: str, level: int = logging.INFO) -> bool:
    record = tracer.makeRecord(tracer.name, level, __file__, 1, msg, ({"name": "t"},), None)
    return bool(tracer.filter(record))


def test_above_debug_no_receipt_or_success_line_but_retries_and_failures(loggers) -> None:
    receipt, tracer = loggers
    quiet_task_lines("INFO")
    quiet_task_lines(logging.INFO)  # twice (main and pool process): one filter
    assert not receipt.isEnabledFor(logging.INFO)  # Celery then skips the call entirely
    assert sum(type(f).__name__ == "NoSuccessLines" for f in tracer.filters) == 1
    assert not _passes(tracer, trace.LOG_SUCCESS)
    assert _passes(tracer, trace.LOG_RETRY)
    assert _passes(tracer, trace.LOG_FAILURE, logging.ERROR)


def test_at_debug_every_line_stays(loggers) -> None:
    receipt, tracer = loggers
    quiet_task_lines("DEBUG")
    assert receipt.level == logging.NOTSET
    assert _passes(tracer, trace.LOG_SUCCESS)
