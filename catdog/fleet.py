"""The fleet the process works with: which inventory, loaded once, and in which role.

The Celery app is global (``from catdog import app``), so the inventory it routes by is held here,
chosen by :func:`use_inventory` (commands do this from ``--inventory``) or found the documented way
(``$CATDOG_INVENTORY``, then ``./catdog.yaml``) on first use. Nothing is read at import.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from catdog.errors import CatDogError
from catdog.inventory import Device, Inventory, inventory_path
from catdog.placement import Placer
from catdog.routing import Route, plan
from catdog.targets import Target

COORDINATOR = "coordinator"
WORKER = "worker"
DEVICE_ENV = "CATDOG_DEVICE"
#: routes kept per process (a route per requirement set and target, so a fleet's worth)
MAX_ROUTES = 4096


class Fleet:
    """The process's view of the fleet: inventory path, loaded inventory, and role."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._inventory: Inventory | None = None
        self._routes: dict[tuple[tuple[str, ...], Target | str | None], Route] = {}
        self._lock = threading.Lock()
        self.role = COORDINATOR
        self.device_name: str | None = None
        self.placer = Placer()

    def use(self, path: str | os.PathLike[str] | None) -> None:
        """Choose the inventory file; the next use loads it."""
        with self._lock:
            self._path = inventory_path(path)
            self._inventory = None
            self._routes = {}

    def use_loaded(self, inventory: Inventory) -> None:
        """Adopt an already loaded inventory (commands load it first to report errors)."""
        with self._lock:
            self._path, self._inventory = inventory.path, inventory
            self._routes = {}

    @property
    def path(self) -> Path:
        return self._path or inventory_path(None)

    @property
    def inventory(self) -> Inventory:
        with self._lock:
            if self._inventory is None:
                from catdog.loader import load_inventory

                self._inventory = load_inventory(self._path or inventory_path(None))
                self._path = self._inventory.path
            return self._inventory

    def route(self, requires: tuple[str, ...] = (), target: Target | str | None = None) -> Route:
        """Where a call goes (:func:`catdog.routing.plan`), worked out once per requirement and
        target: the inventory does not change under a process, and every send asks."""
        key = (requires, target)
        found = self._routes.get(key)
        if found is None:
            found = plan(self.inventory, requires, target)  # NoRoute is raised, never kept
            if len(self._routes) < MAX_ROUTES:
                self._routes[key] = found
        return found

    def place(self, requires: tuple[str, ...] = (), target: Target | str | None = None,
              timeout: float | None = None) -> Route:
        """Where a call goes now: :meth:`route`, and for a target with predicates
        (``cap:camera&mem>=300``) the device(s) live heartbeats say satisfy them
        (:mod:`catdog.placement`). A plain target costs no more than :meth:`route`."""
        if target is None or (isinstance(target, str) and "&" not in target) or (
                isinstance(target, Target) and not target.where):
            return self.route(requires, target)
        from catdog.placement import broker_read

        parsed = Target.parse(target)
        self.route(requires, parsed.base)  # NoRoute for what no device has at all
        return self.placer.place(self.inventory, requires, parsed, broker_read, timeout)

    def become_worker(self, device: str) -> None:
        """Mark this process as the worker of ``device`` (never starts an embedded Redis)."""
        self.role, self.device_name = WORKER, device
        os.environ[DEVICE_ENV] = device

    @property
    def device(self) -> Device:
        """The device this worker process serves."""
        name = self.device_name or os.environ.get(DEVICE_ENV)
        if not name:
            raise CatDogError("this process is not a CatDog worker (no device name)")
        return self.inventory.devices[name]


fleet = Fleet()


def use_inventory(path: str | os.PathLike[str] | None) -> None:
    """Route by the inventory at ``path`` from now on (before the first task is sent)."""
    fleet.use(path)
