"""What a worker's next take carries to Redis: its finished tasks' results, its deliveries' starts.

On a Wi-Fi link every round trip a task waits for is most of what a short task costs. A worker
under its event loop (a solo pool runs each task in that loop's thread) does not write a
finished task's result with a round trip of its own: the result waits here, and the worker's
next take (:mod:`catdog.transport`), sent at once as the loop goes on, writes it before it
acknowledges the message and takes the next one, all in one script on Redis. What no take
carries in a tick is written alone at the end of that tick. A worker killed before its take goes
out has acknowledged nothing either: the message runs again (at least once), and a result
already ``SUCCESS`` is never overwritten (Celery's own rule, kept by the script).

The take also writes the first delivery's record for the quarantine count
(:mod:`workers.quarantine`) in the same step as the message's hold, when the worker asked for
it with :meth:`Starts.configure`; :meth:`Starts.written` tells the quarantine that it is there,
and :meth:`Starts.forget` lets the gate remove it when the message does not start after all.
Acknowledgements a closing channel could not send are :data:`owed` to the process's next one.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    key: str
    value: str
    ttl_s: int  # 0: no expiry


class Results:
    """Results waiting for the next take of the worker's event loop (one per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: list[Result] = []
        self._loop: tuple[int, int] | None = None  # (pid, thread) of the event loop

    def attach(self) -> None:
        """The calling thread runs the event loop whose takes carry results (the worker's
        main thread). The pid is kept too: a prefork child starts as a copy of that thread."""
        self._loop = (os.getpid(), threading.get_ident())

    def carry(self, key: str, value: str, ttl_s: int | None) -> bool:
        """Keep the result for the next take; False (write it now) outside the loop's thread."""
        if self._loop != (os.getpid(), threading.get_ident()):
            return False
        with self._lock:
            self._waiting.append(Result(key, value, int(ttl_s or 0)))
        return True

    def take(self) -> list[Result]:
        with self._lock:
            waiting, self._waiting = self._waiting, []
        return waiting

    def give_back(self, results: list[Result]) -> None:
        """Results whose take failed: first in line for the next one."""
        if results:
            with self._lock:
                self._waiting[:0] = results

    def __bool__(self) -> bool:
        return bool(self._waiting)


class Starts:
    """First deliveries' records written by the take (the quarantine's), per delivery tag."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._written: set[str] = set()
        self.prefix = ""  # '' : the take writes none
        self.head = ""
        self.ttl_s = 0

    def configure(self, prefix: str, head: str, ttl_s: int) -> None:
        """Have the take write ``head`` + the take's time + ``}}`` at ``prefix`` + the message's
        delivery tag (``SET NX``, ``ttl_s``) for each held message delivered the first time."""
        self.prefix, self.head, self.ttl_s = prefix, head, ttl_s

    def reset(self) -> None:
        self.configure("", "", 0)
        with self._lock:
            self._written.clear()

    def add(self, tag: str) -> None:
        with self._lock:
            self._written.add(tag)

    def written(self, tag: str) -> bool:
        """Whether the take wrote ``tag``'s record (asked once: the answer is forgotten)."""
        with self._lock:
            if tag in self._written:
                self._written.discard(tag)
                return True
            return False

    def forget(self, tag: str) -> str | None:
        """The key of ``tag``'s record when the take wrote it (the caller deletes it: the
        message does not start here after all), else None."""
        return f"{self.prefix}{tag}" if self.written(tag) else None


class Owed:
    """Acknowledgements a closed channel could not send: the next channel sends them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owed: dict[tuple[str, str], list[str]] = {}

    def add(self, unacked: str, index: str, tags: list[str]) -> None:
        with self._lock:
            self._owed.setdefault((unacked, index), []).extend(tags)

    def take(self, unacked: str, index: str) -> list[str]:
        with self._lock:
            return self._owed.pop((unacked, index), [])


results = Results()
starts = Starts()
owed = Owed()
