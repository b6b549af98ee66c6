"""Ping a worker by node name with Celery's remote control.

A broadcast ping with no destination always waits its whole timeout; one addressed to the node
returns as soon as that node replies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery import Celery


def ping(app: Celery, nodename: str, timeout: float = 2.0) -> bool:
    """True when ``nodename`` answers a Celery ping through ``app`` within ``timeout`` seconds
    (the app of the fleet's context: :attr:`catdog.context.FleetContext.app`)."""
    replies = app.control.ping(destination=[nodename], timeout=timeout) or []
    return any(nodename in reply for reply in replies)
