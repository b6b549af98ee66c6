"""The one edge where errors become exit statuses: every ``fab`` command (:mod:`ops.commands`),
``python -m workers``, ``python -m ops.beat`` and ``python -m ops.flower`` run their work through
:func:`run`.

A :class:`~catdog.errors.CatDogError` is one line on stderr, ``<prog>: <message>``, and its
:func:`~catdog.errors.exit_status`; a broker that stops answering on the way (the Redis client's or
kombu's own error) is first made the one-line :class:`~catdog.errors.BrokerUnreachable`. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from catdog import broker
from catdog.errors import BrokerUnreachable, CatDogError, exit_status

if TYPE_CHECKING:
    from catdog.inventory import Inventory

Call = TypeVar("Call", bound=Callable[..., Any])


def broker_error(error: BaseException, inventory: Inventory | None = None) -> BrokerUnreachable:
    """The one-line :class:`BrokerUnreachable` for a Redis or kombu connection ``error`` raised
    while working on ``inventory`` (default: the fleet this process talks to)."""
    try:
        if inventory is None:
            from catdog.fleet import fleet

            inventory = fleet.inventory
        url = broker.configured_url(inventory) or broker.embedded_url(inventory.state_dir)
    except CatDogError:
        return broker.unreachable("(the fleet's broker)", error)
    return broker.unreachable(url, error, inventory)


def broker_errors(call: Call) -> Call:
    """``call`` raises BrokerUnreachable where the Redis client or kombu raised theirs."""

    @functools.wraps(call)
    def translated(*args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except broker.UNREACHABLE as exc:
            raise broker_error(exc) from exc

    return translated  # type: ignore[return-value]


def run(prog: str, work: Callable[[], int | None]) -> int:
    """``work()``'s exit status (None: 0), or the exit status of the error it raised, said on
    stderr as ``<prog>: <message>``."""
    try:
        return broker_errors(work)() or 0
    except CatDogError as exc:
        print(f"{prog}: {exc}", file=sys.stderr, flush=True)
        return exit_status(exc)
