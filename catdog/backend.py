"""A worker's result backend: Celery's Redis backend, with results carried by the next take.

Celery's backend writes a finished task's result with two round trips of its own (it reads the
result first, so as never to overwrite a ``SUCCESS``, then writes and publishes it). In a worker's
event loop (a solo pool) this backend hands the result to :mod:`catdog.carry` instead, and the
worker's next take writes it, under the same rule, before it acknowledges the message: no round
trip of its own. Anywhere else (a threads pool's thread, a prefork child, a caller) it is
Celery's backend unchanged. Workers use it (:func:`catdog.application.fleet_settings`); callers
read results with Celery's.
"""

from __future__ import annotations

from typing import Any

from celery import states
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str

from catdog import carry

#: ``result_backend`` for a worker: this class, then ``+`` and the Redis URL
NAME = "catdog.backend:ResultBackend"


class ResultBackend(RedisBackend):
    def _store_result(self, task_id: Any, result: Any, state: str, traceback: Any = None,
                      request: Any = None, **kwargs: Any) -> Any:
        meta = self._get_result_meta(result=result, state=state, traceback=traceback,
                                     request=request)
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if isinstance(value, bytes):
            value = value.decode()
        if len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError("value too large for Redis backend", state=state,
                                    task_id=task_id)
        ttl = self.failure_expires if state == states.FAILURE else self.expires
        if carry.results.carry(bytes_to_str(self.get_key_for_task(task_id)), value, ttl):
            return result
        return super()._store_result(task_id, result, state, traceback, request, **kwargs)


def url_for_workers(url: str) -> str:
    """The ``result_backend`` setting of a worker whose Redis is ``url``."""
    return f"{NAME}+{url}"
