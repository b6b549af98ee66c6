"""Idempotent calls: ``task.apply_async(..., dedupe_key="nightly-2026-12-02", dedupe_for=86400)``.

The first call with a key claims it, for ``dedupe_for`` seconds, with one Redis ``SET NX`` of
``catdog:dedupe:<task name>:<key>`` to the id of the task it then sends; any call of the same
task with the same key within the period, from any producer on the broker, sends nothing and
returns an AsyncResult of that first id. Two producers racing get one claim between them (the
``SET NX`` is atomic). A call whose send fails gives its claim back, so a retry may send.

What it does not promise: it deduplicates sends, not runs (a message delivered again after a
worker died still runs again: at least once); the first call's result is there only as long as
the result backend keeps it (Celery's ``result_expires``); after the period a call sends anew,
whether or not the first ever ran.
"""

from __future__ import annotations

from typing import Any

from catdog.errors import UsageError

DEFAULT_PERIOD_S = 86400
#: compare-and-delete: give a claim back only if it is still this call's
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def dedupe_key(task: str, key: str) -> str:
    return f"catdog:dedupe:{task}:{key}"


def checked(task: str, key: Any, period: Any) -> tuple[str, float]:
    """The key and period of a call, else a UsageError naming the fix.

    >>> checked("t", "nightly", None)
    ('nightly', 86400.0)
    >>> checked("t", "nightly", 0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    catdog.errors.UsageError: task 't': dedupe_for must be a positive number of seconds ...
    """
    if key is None:
        raise UsageError(f"task {task!r}: dedupe_for without dedupe_key; give the key that makes "
                         f"two calls the same call, like dedupe_key='nightly-2026-12-02'")
    if not isinstance(key, str) or not key.strip():
        raise UsageError(f"task {task!r}: dedupe_key must be a non-empty string, got {key!r}")
    period = DEFAULT_PERIOD_S if period is None else period
    if isinstance(period, bool) or not isinstance(period, int | float) or period <= 0:
        raise UsageError(f"task {task!r}: dedupe_for must be a positive number of seconds "
                         f"(how long a second call returns the first one's result), got "
                         f"{period!r}; leave it out for a day")
    return key, float(period)


def claim(client: Any, task: str, key: str, task_id: str, period: float) -> str | None:
    """Claim ``key`` for ``task_id``: None when claimed (send it), else the first call's id."""
    name = dedupe_key(task, key)
    while True:
        if client.set(name, task_id, nx=True, px=max(1, int(period * 1000))):
            return None
        first = client.get(name)
        if first is not None:  # (None: it ran out between the two: claim again)
            return first.decode() if isinstance(first, bytes) else str(first)


def release(client: Any, task: str, key: str, task_id: str) -> None:
    client.eval(RELEASE, 1, dedupe_key(task, key), task_id)
