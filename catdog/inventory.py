"""The inventory model: devices, capabilities, limits and schedules, as validated values.

Reading and validating ``catdog.yaml`` lives in :mod:`catdog.loader`; this module holds only the
values it produces and the questions asked of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from catdog.errors import UsageError

DEFAULT_INVENTORY = "catdog.yaml"
INVENTORY_ENV = "CATDOG_INVENTORY"
BROKER_ENV = "CATDOG_BROKER_URL"
LOCAL_HOST = "local"
POOLS = ("prefork", "solo", "threads")
RESERVED_DEVICE_NAMES = ("flower", "beat")


@dataclass(frozen=True)
class Device:
    name: str
    host: str
    capabilities: tuple[str, ...] = ()
    port: int = 22
    user: str | None = None
    key: str | None = None
    known_hosts: str | None = None
    python: str | None = None  # None: the coordinator's own interpreter (local devices)
    workdir: str | None = None  # None: the inventory's folder (local devices)
    concurrency: int = 1
    pool: str = "prefork"
    env: Mapping[str, str] = field(default_factory=dict)
    allow_root: bool = False
    run_on: bool | tuple[str, ...] = True  # False: disabled; tuple: allowed programs, no shell
    line: int | None = None  # line of the device's mapping in the inventory

    @property
    def is_local(self) -> bool:
        return self.host == LOCAL_HOST

    def has(self, capabilities: Iterable[str]) -> bool:
        return set(capabilities) <= set(self.capabilities)


@dataclass(frozen=True)
class Limit:
    """A fleet-wide rate limit: at most ``count`` starts in any rolling ``period_s`` seconds."""

    name: str
    count: int
    period_s: float
    text: str


@dataclass(frozen=True)
class ScheduleEntry:
    name: str
    task: str
    every_s: float | None = None
    cron: str | None = None
    on: str | None = None
    args: tuple[object, ...] = ()
    kwargs: Mapping[str, object] = field(default_factory=dict)
    window: str | None = None
    limit: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class Inventory:
    path: Path
    devices: Mapping[str, Device]
    broker: str | None = None
    tmux_socket: str = "catdog"
    imports: tuple[str, ...] = ()
    limits: Mapping[str, Limit] = field(default_factory=dict)
    schedule: Mapping[str, ScheduleEntry] = field(default_factory=dict)
    insecure: bool = False
    timezone: str | None = None

    @property
    def root(self) -> Path:
        """The project folder: the inventory's own folder."""
        return self.path.parent

    @property
    def state_dir(self) -> Path:
        """``.catdog/`` beside the inventory: embedded Redis data, run files, logs."""
        return self.root / ".catdog"

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset(c for d in self.devices.values() for c in d.capabilities)

    def devices_with(self, capabilities: Iterable[str]) -> list[Device]:
        wanted = set(capabilities)
        return [d for d in self.devices.values() if d.has(wanted)]

    @property
    def has_remote_devices(self) -> bool:
        return any(not d.is_local for d in self.devices.values())

    def select(self, names: Iterable[str] | str | None) -> list[Device]:
        """The devices named by ``--devices a,b`` (all when empty); unknown names raise."""
        if names is None or names == "":
            return list(self.devices.values())
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        names = list(names)
        unknown = [n for n in names if n not in self.devices]
        if unknown:
            raise UsageError(
                f"{self.path}: unknown device(s) {', '.join(unknown)}; "
                f"the inventory has: {', '.join(self.devices) or '(none)'}"
            )
        return [self.devices[n] for n in names]


def inventory_path(option: str | os.PathLike[str] | None = None,
                   environ: Mapping[str, str] | None = None) -> Path:
    """Where the inventory is: ``--inventory``, else ``$CATDOG_INVENTORY``, else ``./catdog.yaml``."""
    environ = os.environ if environ is None else environ
    chosen = option or environ.get(INVENTORY_ENV) or DEFAULT_INVENTORY
    return Path(chosen).expanduser().absolute()
