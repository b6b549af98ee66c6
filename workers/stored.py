"""Where a request's message lives on Redis: the message as the transport stored it, and the
priority lists of the queues it was routed to — what a message put back (deferred, quarantined
and later requeued) is written to, exactly as kombu would deliver it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stored:
    raw: dict[str, Any]  # the message as the Redis transport stored it
    routing_key: str
    keys: list[str]  # each routed queue's Redis list for the message's priority


def stored(request: Any) -> Stored:
    """The stored form of ``request``'s message and the lists it goes back to."""
    message = request.message
    channel = message.channel
    raw = message._raw
    info = request.delivery_info or {}
    exchange, routing_key = info.get("exchange") or "", info.get("routing_key") or ""
    queues = channel._lookup(exchange, routing_key) or [routing_key]
    priority = channel._get_message_priority(raw, reverse=False)
    return Stored(raw, routing_key, [channel._q_for_pri(q, priority) for q in queues])
