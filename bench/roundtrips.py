"""Count this process's Redis round trips: each write to a Redis socket, whether it carries one
command or a whole pipeline. Writes to the result backend's subscriber connection (SUBSCRIBE,
UNSUBSCRIBE: sent without waiting for a reply) are counted apart."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from redis.connection import AbstractConnection


@dataclass
class Trips:
    writes: int = 0
    subscriptions: int = 0


def _is_subscription(packed: Any) -> bool:
    first = packed if isinstance(packed, bytes | str) else (packed[0] if packed else b"")
    head = bytes(first[:40], "latin-1") if isinstance(first, str) else bytes(first[:40])
    return b"SUBSCRIBE" in head.upper()


@contextlib.contextmanager
def counting() -> Iterator[Trips]:
    """Count the writes made inside the block (every Redis connection of this process)."""
    trips = Trips()
    original = AbstractConnection.send_packed_command

    def send_packed_command(self: Any, packed: Any, *args: Any, **kwargs: Any) -> Any:
        if _is_subscription(packed):
            trips.subscriptions += 1
        else:
            trips.writes += 1
        return original(self, packed, *args, **kwargs)

    AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign,assignment]
    try:
        yield trips
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]
