"""Task metrics on the device: one line per task and one summary per minute, InfluxDB line
protocol, buffered in memory and appended to ``.catdog/metrics/<device>.lp`` once a minute (or
when ``fab metrics`` asks, or when :data:`MAX_BUFFERED` tasks are waiting), bounded on disk.

- ``catdog_task,device=D,task=T,state=S duration_s=..,wait_s=.. <end, ns>`` for every task that
  succeeded, failed or was retried (``wait_s``: from the call to the start, when the caller was
  CatDog and stamped the message);
- ``catdog_minute,device=D succeeded=..i,failed=..i,retried=..i,mean_duration_s=..,
  max_duration_s=.. <minute, ns>`` for every minute that had tasks.

Recorded in the worker's main process, where Celery settles every request whatever the pool
(the recorder is one of the worker's extensions, :mod:`workers.extension`: ``on_settled``).
The file is rotated at :data:`MAX_BYTES` with one older file kept, so a device never holds more
than twice that.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from catdog.lineprotocol import line
from catdog.records import METRICS_FLUSH_COMMAND, SENT_HEADER
from workers.extension import Extension, Worker

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 60.0
#: tasks kept in memory before an early flush (a busy Pi Zero's buffer stays small)
MAX_BUFFERED = 2000
MAX_BYTES = 5 * 1024 * 1024
STATES = {"task-succeeded": "SUCCESS", "task-failed": "FAILURE", "task-retried": "RETRY"}


class Recorder(Extension):
    """The task metrics of ``device``, written in ``folder``."""

    def __init__(self, device: str, folder: Path) -> None:
        self.device = device
        self.path: Path | None = folder / f"{device}.lp"
        self._tasks: list[tuple[str, str, float | None, float | None, str, float]] = []
        self._minutes: dict[int, dict[str, Any]] = defaultdict(
            lambda: {"SUCCESS": 0, "FAILURE": 0, "RETRY": 0, "durations": []})
        self._lock = threading.Lock()
        self._wake = threading.Event()

    def on_start(self, worker: Worker) -> None:
        threading.Thread(target=self._flusher, name="catdog-metrics", daemon=True).start()

    def on_settled(self, request: Any, event: str, runtime: float | None) -> None:
        self.record(request, event, runtime)

    def on_stop(self) -> None:
        """A warm shutdown (SIGTERM from `fab stop`, Ctrl-C), once its running tasks settled."""
        self.write_all()

    def write_all(self) -> None:
        """Write everything held (on the way out: a full disk is said, not raised)."""
        try:
            self.flush(everything=True)
        except OSError as exc:
            print(f"catdog worker: task metrics not written: {exc}", file=sys.stderr, flush=True)

    def record(self, request: Any, event: str, runtime: float | None) -> None:
        """One settled task (called from the request's event, in the main process). Only the
        numbers are kept here; the line is written out at the flush, off the task's path."""
        state = STATES.get(event)
        if state is None or self.path is None:
            return
        now = time.time()
        started = getattr(request, "time_start", None)
        duration = runtime if runtime is not None else (now - started if started else None)
        sent = (request.request_dict or {}).get(SENT_HEADER)
        wait = started - float(sent) if started and sent else None
        with self._lock:
            self._tasks.append((request.name, state, duration, wait, request.id, now))
            if len(self._tasks) == MAX_BUFFERED:
                self._wake.set()
            minute = self._minutes[int(now // 60)]
            minute[state] += 1
            if duration is not None:
                minute["durations"].append(duration)

    def flush(self, everything: bool = False) -> int:
        """Append what is buffered (finished minutes' summaries; all of them if ``everything``)."""
        if self.path is None:
            return 0
        current = int(time.time() // 60)
        with self._lock:
            tasks, self._tasks = self._tasks, []
            done = [m for m in self._minutes if everything or m < current]
            summaries = [self._summary(m, self._minutes.pop(m)) for m in sorted(done)]
        out = [self._line(*task) for task in tasks] + summaries
        if out:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and self.path.stat().st_size > MAX_BYTES:
                os.replace(self.path, self.path.with_suffix(".lp.1"))
            with self.path.open("a") as f:
                f.write("\n".join(out) + "\n")
        return len(out)

    def _line(self, name: str, state: str, duration: float | None, wait: float | None,
              task_id: str, end: float) -> str:
        return line("catdog_task", {"device": self.device, "task": name, "state": state},
                    {"duration_s": round(duration, 6) if duration is not None else None,
                     "wait_s": round(wait, 6) if wait is not None else None, "id": task_id},
                    int(end * 1e9))

    def _summary(self, minute: int, counts: dict[str, Any]) -> str:
        durations = counts["durations"]
        return line("catdog_minute", {"device": self.device}, {
            "succeeded": counts["SUCCESS"], "failed": counts["FAILURE"],
            "retried": counts["RETRY"],
            "mean_duration_s": round(sum(durations) / len(durations), 6) if durations else None,
            "max_duration_s": round(max(durations), 6) if durations else None,
        }, minute * 60 * 10**9)

    def _flusher(self) -> None:
        while True:
            self._wake.wait(FLUSH_EVERY_S)
            self._wake.clear()
            try:
                self.flush()
            except OSError as exc:
                log.warning("metrics not written: %s", exc)


def register_control_command(recorder: Recorder) -> None:
    """``catdog_metrics_flush``: write everything buffered now (``fab metrics`` asks first)."""
    from celery.worker.control import control_command

    @control_command(name=METRICS_FLUSH_COMMAND)
    def catdog_metrics_flush(panel: Any) -> dict[str, Any]:
        """Write this worker's buffered task metrics to its file now."""
        return {"written": recorder.flush(everything=True),
                "path": str(recorder.path) if recorder.path else None}
