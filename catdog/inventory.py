"""The inventory model: devices, capabilities, limits and schedules, as validated values.

Reading and validating ``catdog.yaml`` lives in :mod:`catdog.loader`; this module holds the values it
produces, the questions asked of them, and (as dataclass field metadata) how each device and schedule
field is read, so one declaration gives a section's keys, readers and defaults.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from catdog.broker import BROKER_ENV, BROKER_RE, WHAT_BROKER
from catdog.errors import TargetError, UsageError
from catdog.fields import DOTTED_RE, NAME_RULE, NO_SPACE_RE, Fields, Reader, reads
from catdog.targets import NAME_RE, WHAT_TARGET, Target
from catdog.windows import WHAT_WINDOW, Window

DEFAULT_INVENTORY = "catdog.yaml"
INVENTORY_ENV = "CATDOG_INVENTORY"
__all__ = ["BROKER_ENV"]  # re-exported: the broker's module owns it
LOCAL_HOST = "local"
POOLS = ("prefork", "solo", "threads")
RESERVED_DEVICE_NAMES = ("flower", "beat")
CRON_FIELD_RE = re.compile(r"^[0-9*/,-]+$")
WHAT_CRON = 'a cron expression of 5 fields like "*/5 * * * *"'
DETECTABLE = ("camera", "gpio", "i2c", "gpu")
DETECTABLE_RE = re.compile("^(" + "|".join(DETECTABLE) + ")$")


def _text(what: str, pattern: re.Pattern[str] | None = None) -> Reader:
    return partial(Fields.text, what=what, pattern=pattern)


def _path(what: str) -> Reader:
    return partial(Fields.path, what=what)


SOCKET_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
WHAT_SOCKET = "a tmux socket name (letters, digits, '_', '.' and '-')"
WHAT_TIMEZONE = "an IANA time zone name like Europe/Paris or UTC"
#: the top-level sections that are not settings of :class:`Inventory` (read section by section)
SECTIONS = ("defaults", "devices", "limits", "schedule", "embedded")


def time_zone(name: str) -> str | None:
    """``name`` if it is a time zone this machine knows, else None."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
    return name


def cron(text: str) -> str | None:
    """``text`` as a 5-field cron expression (spaces normalized), or None."""
    fields = text.split()
    fits = len(fields) == 5 and all(CRON_FIELD_RE.match(f) for f in fields)
    return " ".join(fields) if fits else None


@dataclass(frozen=True)
class Device:
    """A device; its fields with :func:`~catdog.fields.reads` are its inventory keys, in the order
    messages list them (``Device(name, host, capabilities)`` stays positional: the rest is
    keyword-only)."""

    name: str
    host: str = field(metadata=reads(_text("a host name or 'local'", NO_SPACE_RE)))
    port: int = field(default=22, kw_only=True, metadata=reads(partial(
        Fields.integer, what="a port number 1..65535", low=1, high=65535), local=False))
    user: str | None = field(default=None, kw_only=True,
                             metadata=reads(_text("a user name"), local=False))
    key: str | None = field(default=None, kw_only=True,
                            metadata=reads(_path("a path to an SSH private key"), local=False))
    known_hosts: str | None = field(default=None, kw_only=True, metadata=reads(
        _path("a path to a known_hosts file"), local=False))
    # None: the coordinator's own interpreter (local devices)
    python: str | None = field(default=None, kw_only=True, metadata=reads(
        _text("a path to a Python interpreter"), local=False))
    # None: the inventory's folder (local devices)
    workdir: str | None = field(default=None, kw_only=True,
                                metadata=reads(_text("a folder path"), local=False))
    capabilities: tuple[str, ...] = field(default=(), metadata=reads(Fields.names))
    concurrency: int = field(default=1, kw_only=True, metadata=reads(partial(
        Fields.integer, what="a whole number >= 1", low=1)))
    pool: str = field(default="prefork", kw_only=True,
                      metadata=reads(partial(Fields.choice, options=POOLS)))
    env: Mapping[str, str] = field(default_factory=dict, kw_only=True,
                                   metadata=reads(Fields.env))
    allow_root: bool = field(default=False, kw_only=True, metadata=reads(Fields.boolean))
    # False: disabled; tuple: allowed programs, no shell
    run_on: bool | tuple[str, ...] = field(default=True, kw_only=True,
                                           metadata=reads(Fields.run_on))
    #: capabilities the worker looks for on the device and reports (:mod:`workers.facts`)
    detect: tuple[str, ...] = field(default=(), kw_only=True, metadata=reads(partial(
        Fields.names, noun="detectable capability", pattern=DETECTABLE_RE,
        rule="one of " + ", ".join(DETECTABLE))))
    #: how many running tasks may hold each resource at once (``uses=`` of a task)
    resources: Mapping[str, int] = field(default_factory=dict, kw_only=True,
                                         metadata=reads(Fields.counts))
    #: when the device stops taking shared work (:mod:`workers.health`)
    health: Mapping[str, float | bool] = field(default_factory=dict, kw_only=True,
                                               metadata=reads(Fields.health))
    line: int | None = field(default=None, kw_only=True)  # of the device's mapping

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
    """A schedule entry; its fields with :func:`~catdog.fields.reads` are its inventory keys."""

    name: str
    task: str = field(metadata=reads(_text("a task name like tasks.sensors.read_temperature",
                                           DOTTED_RE)))
    every_s: float | None = field(default=None, metadata=reads(Fields.duration, key="every"))
    cron: str | None = field(default=None, metadata=reads(partial(
        Fields.checked, what=WHAT_CRON, check=cron)))
    on: Target | None = field(default=None, metadata=reads(partial(
        Fields.parsed, what=WHAT_TARGET, parse=Target.parse, errors=(TargetError,))))
    args: tuple[object, ...] = field(default=(), metadata=reads(Fields.arguments))
    kwargs: Mapping[str, object] = field(default_factory=dict, metadata=reads(Fields.keywords))
    window: Window | None = field(default=None, metadata=reads(partial(
        Fields.parsed, what=WHAT_WINDOW, parse=Window.parse, errors=(UsageError,))))
    limit: str | None = field(default=None, metadata=reads(_text(f"a limit name ({NAME_RULE})",
                                                                  NAME_RE)))
    line: int | None = None


@dataclass(frozen=True)
class Embedded:
    """The ``embedded:`` section: how the embedded Redis serves SSH devices (no ``broker:``).

    ``listen``: the coordinator's address the devices reach (None: the source address of the
    route to each device); ``tls``: serve ``rediss://`` with a CA generated into ``.catdog/``.
    Whether the coordinator has ``listen`` is checked where the server starts, on the
    coordinator (a device reads the same file)."""

    listen: str | None = field(default=None, metadata=reads(_text(
        "an address of the coordinator, like 192.168.10.2", NO_SPACE_RE)))
    tls: bool = field(default=False, metadata=reads(Fields.boolean))
    line: int | None = None  # of the section
    lines: Mapping[str, int | None] = field(default_factory=dict, compare=False)  # of each key


@dataclass(frozen=True)
class Inventory:
    """A validated inventory. Its fields with :func:`~catdog.fields.reads` are the top-level
    settings (their keys, in the order messages list them, come before :data:`SECTIONS`)."""

    path: Path
    devices: Mapping[str, Device]
    broker: str | None = field(default=None, metadata=reads(_text(WHAT_BROKER, BROKER_RE)))
    tmux_socket: str = field(default="catdog", metadata=reads(_text(WHAT_SOCKET, SOCKET_RE)))
    imports: tuple[str, ...] = field(default=(), metadata=reads(partial(
        Fields.names, noun="module name", pattern=DOTTED_RE, rule="dotted, like mylab.tasks")))
    limits: Mapping[str, Limit] = field(default_factory=dict)
    schedule: Mapping[str, ScheduleEntry] = field(default_factory=dict)
    insecure: bool = field(default=False, metadata=reads(Fields.boolean))
    timezone: str | None = field(default=None, metadata=reads(partial(
        Fields.checked, what=WHAT_TIMEZONE, check=time_zone)))
    embedded: Embedded = field(default_factory=Embedded)
    #: the file's text as it was read and validated (what ``fab launch`` ships to SSH devices)
    text: str = field(default="", repr=False, compare=False)
    #: the ``${VAR}`` names its values use, in file order (what a device's env file must carry)
    variables: tuple[str, ...] = field(default=(), compare=False)

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


def chosen_inventory(option: str | os.PathLike[str] | None = None,
                     environ: Mapping[str, str] | None = None) -> str:
    """The inventory as the user named it: ``--inventory``, else ``$CATDOG_INVENTORY``, else
    ``catdog.yaml`` (messages show it so)."""
    environ = os.environ if environ is None else environ
    return os.fspath(option) if option else environ.get(INVENTORY_ENV) or DEFAULT_INVENTORY


def inventory_path(option: str | os.PathLike[str] | None = None,
                   environ: Mapping[str, str] | None = None) -> Path:
    """Where the inventory is: ``--inventory``, else ``$CATDOG_INVENTORY``, else ``./catdog.yaml``."""
    return Path(chosen_inventory(option, environ)).expanduser().absolute()
