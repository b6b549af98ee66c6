"""How every fleet operation of :mod:`ops.api` opens its fleet: the inventory loaded and checked,
the devices selected, one fleet context (:class:`catdog.context.FleetContext`) with the broker
resolved once, and broker errors said in one line naming that inventory's broker.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from catdog import broker, edge
from catdog.context import FleetContext, open_fleet
from catdog.errors import CatDogError
from catdog.inventory import Device, Inventory
from catdog.loader import load_inventory

Devices = str | Sequence[str] | None


Call = TypeVar("Call", bound=Callable[..., Any])


def broker_errors(call: Call) -> Call:
    """``call`` (its first argument the inventory path) raises BrokerUnreachable, naming that
    inventory's broker, where the Redis client or kombu raised their own error."""

    @functools.wraps(call)
    def translated(inventory: str | None = None, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(inventory, *args, **kwargs)
        except broker.UNREACHABLE as exc:
            try:
                inv = load_inventory(inventory)  # the error's path only: name its broker
            except CatDogError:
                raise edge.broker_error(exc) from exc
            raise edge.broker_error(exc, inv) from exc

    return translated  # type: ignore[return-value]


def resolved(inv: Inventory, *, start_embedded: bool) -> str:
    """The fleet's broker URL (the coordinator's one :func:`catdog.broker.resolve`)."""
    return broker.resolve(inv, start_embedded=start_embedded)


def answering(inv: Inventory) -> FleetContext:
    """The call's fleet context, its broker answering (the embedded Redis started if need be)."""
    context = open_fleet(inv, resolved(inv, start_embedded=True))
    context.answering().close()
    return context


def running(inv: Inventory) -> FleetContext:
    """The call's fleet context, with the broker only if it runs (nothing is started)."""
    return open_fleet(inv, running_broker(inv))


def load(inventory: str | None = None) -> Inventory:
    """Load and check the inventory (every call does, first). The calls here work on the fleet
    they are given and never change the one the process's task API routes by (to send tasks to
    this fleet from Python, :func:`catdog.use_inventory`)."""
    return load_inventory(inventory)


def select(inv: Inventory, devices: Devices) -> list[Device]:
    if devices is not None and not isinstance(devices, str):
        devices = ",".join(devices)
    return inv.select(devices or None)



def running_broker(inv: Inventory) -> str | None:
    """The broker URL if it can be used without starting anything (stop never starts Redis)."""
    from ops.embedded_redis import EmbeddedRedis

    configured = broker.configured_url(inv)
    if configured:
        return configured
    embedded = EmbeddedRedis(inv.state_dir)
    return embedded.url if embedded.answers() else None
