"""The fleet one operation works on, built once at its edge and passed down.

A :class:`FleetContext` holds what every part of an operation would otherwise look up again on
its own: the loaded inventory, the broker URL (None when the fleet's embedded Redis is not
running and the operation does not start it), a Celery app that reaches that broker's workers,
and Redis clients from the one factory (:func:`catdog.broker.connect`, one timeout policy).
``ops.api`` builds one per call and hands it to the launcher, the stopper, status, metrics, the
kill switch, beat and Flower. The process-global :data:`catdog.fleet.fleet` remains only as the
default behind the task API users call (``task.delay``, ``task.on``, ``run_on.delay``) and
behind calls made without a context (:func:`from_process`); opening a context never changes it.
Nothing here runs at import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING

from redis import Redis

from catdog import broker
from catdog.errors import BrokerError
from catdog.inventory import Inventory

if TYPE_CHECKING:
    from celery import Celery


@dataclass(frozen=True)
class FleetContext:
    inventory: Inventory
    broker_url: str | None
    #: the app to talk to the workers through; None: one of its own for ``broker_url``
    given_app: Celery | None = field(default=None, repr=False)

    @cached_property
    def app(self) -> Celery:
        """The Celery app of this fleet's broker (control commands: ping, broadcasts)."""
        if self.given_app is not None:
            return self.given_app
        from catdog.application import control_app

        return control_app(self.url)

    def close(self) -> None:
        """Close the connections of the app this context made (a given app is left open)."""
        if self.given_app is None and "app" in self.__dict__:
            self.app.close()

    def __enter__(self) -> FleetContext:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The broker URL; a :class:`BrokerError` when this context has none."""
        if self.broker_url is None:
            raise BrokerError(f"{self.inventory.path}: the fleet's embedded Redis is not "
                              f"running; start the fleet with `fab launch`")
        return self.broker_url

    def redis(self) -> Redis:
        """A client of the broker (:func:`catdog.broker.connect`); it connects on first use."""
        return broker.connect(self.url)

    def answering(self) -> Redis:
        """A client of the broker once it has just answered, else BrokerUnreachable at once."""
        return broker.client(self.url, self.inventory)

    @contextlib.contextmanager
    def translated(self) -> Iterator[None]:
        """Inside, a broker that stops answering raises :class:`BrokerUnreachable`."""
        with broker.translated(self.broker_url or "(the fleet's broker)", self.inventory):
            yield


def from_process() -> FleetContext:
    """The context of the process-global fleet and app (what the task API routes by): the
    inventory of :data:`catdog.fleet.fleet`, the broker the app is configured with."""
    from catdog.application import app
    from catdog.fleet import fleet

    return FleetContext(fleet.inventory, app.conf.broker_url, app)


def open_fleet(inventory: Inventory, broker_url: str | None) -> FleetContext:
    """The context of a loaded ``inventory`` and its broker; its app is made on first use."""
    return FleetContext(inventory, broker_url)
