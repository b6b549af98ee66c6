"""Reading and validating ``catdog.yaml`` into an :class:`~catdog.inventory.Inventory`.

The file is read by :mod:`catdog.yamlfile` (values keep their lines, ``${VAR}`` expands) with the
typed readers of :mod:`catdog.fields`; a device's and a schedule entry's keys, readers and defaults
are declared once, on the :class:`~catdog.inventory.Device` and
:class:`~catdog.inventory.ScheduleEntry` dataclasses, and the top-level settings on
:class:`~catdog.inventory.Inventory`. Every problem is collected, then raised at once
as one :class:`~catdog.errors.InventoryError`; nothing is returned half-checked.

Device fields may stand under ``defaults:``; a device's own values win, ``env`` merges key by key,
and a ``host: local`` device ignores the SSH fields, ``python`` and ``workdir`` of ``defaults:``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node

from catdog.broker import check_broker_url, chosen_url
from catdog.durations import WHAT_DURATION
from catdog.errors import InventoryError
from catdog.fields import NAME_RULE, Fields, any_invalid, arguments, schema
from catdog.inventory import (
    BROKER_ENV,
    INVENTORY_ENV,
    LOCAL_HOST,
    RESERVED_DEVICE_NAMES,
    SECTIONS,
    WHAT_CRON,
    Device,
    Embedded,
    Inventory,
    Limit,
    ScheduleEntry,
    chosen_inventory,
    inventory_path,
)
from catdog.targets import NAME_RE, Kind, Target
from catdog.yamlfile import INVALID, Pairs, line_of

RATE_RE = re.compile(r"^\s*([1-9][0-9]*)\s*/\s*([smh])\s*$")
PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def load_inventory(path: str | os.PathLike[str] | None = None,
                   environ: Mapping[str, str] | None = None) -> Inventory:
    """Read, validate and return the inventory; raise one :class:`InventoryError` listing every
    problem.

    ``path`` None looks for ``$CATDOG_INVENTORY``, else ``./catdog.yaml``. ``environ`` (default
    ``os.environ``) serves ``${VAR}`` expansion and ``$CATDOG_BROKER_URL``.
    """
    environ = os.environ if environ is None else environ
    shown = chosen_inventory(path, environ)
    where = inventory_path(shown)
    checker = _Checker(shown, environ)
    root = checker.compose(where)
    inventory = checker.inventory(root, where) if root is not None else None
    if checker.problems or inventory is None:
        raise InventoryError(sorted(checker.problems, key=lambda p: p.line or 0))
    return inventory


@dataclass(frozen=True)
class _Got:
    """A device field's value and the line it came from."""

    value: Any
    line: int | None


def _reachable(target: Target, listed: Mapping[str, Any]) -> bool:
    """Whether a device of ``listed`` (name -> capabilities, INVALID when unknown) can ever
    satisfy ``target``; when in doubt, yes (the devices' own problems come first)."""
    if target.kind in (Kind.EVERY, Kind.ANY):
        return True
    if target.kind is Kind.DEVICE:
        return target.name in listed
    known = [caps for caps in listed.values() if caps is not INVALID]
    return any(target.name in caps for caps in known) or len(known) < len(listed)


def _merge(defaults: dict[str, _Got], own: dict[str, _Got]) -> dict[str, _Got]:
    """A device's fields over ``defaults:`` (``env`` merged key by key; local devices skip SSH)."""
    host = own.get("host") or defaults.get("host")
    local = host is not None and host.value == LOCAL_HOST
    keys = schema(Device)
    merged = {k: g for k, g in defaults.items() if not (local and not keys[k].local)}
    merged.update(own)
    base, mine = defaults.get("env"), own.get("env")
    if base and mine and isinstance(base.value, dict) and isinstance(mine.value, dict):
        merged["env"] = _Got({**base.value, **mine.value}, mine.line)
    return merged


class _Checker(Fields):
    """Reads one inventory file, section by section, collecting every problem."""

    missing = f"does not exist; choose another inventory with --inventory PATH or ${INVENTORY_ENV}"
    kind = "an inventory file"
    empty = "expected a mapping with at least `devices:`"
    top = "a mapping (`devices:` ...)"

    def __init__(self, file: str, environ: Mapping[str, str]) -> None:
        super().__init__(file, environ)
        self._listed: dict[str, Any] = {}  # every device named, to its capabilities (or INVALID)

    def read_section(self, section: type, found: Pairs, prefix: str) -> dict[str, _Got]:
        """The values of a section's keys (already restricted to its schema), with their lines."""
        keys = schema(section)
        return {name: _Got(keys[name].read(self, node, f"{prefix}.{name}"), line_of(key))
                for name, (key, node) in found.items()}

    # -- the sections -----------------------------------------------------------------------

    def inventory(self, root: MappingNode, where: Path) -> Inventory | None:
        top = self.fields(root, "", (*schema(Inventory), *SECTIONS), "a mapping")
        settings = self._settings(top)
        found = self._section(top, "defaults", tuple(schema(Device)))
        defaults = self.read_section(Device, found, "defaults")
        devices = self._devices(top.get("devices"), root, defaults)
        limits_found = self._section(top, "limits")
        limits = self._limits(limits_found)
        schedule = self._schedule(self._section(top, "schedule"), tuple(limits_found))
        self._check_broker(top.get("broker"), settings)
        embedded = self._embedded(top.get("embedded"), top.get("broker"), devices)
        if self.problems or embedded is None:
            return None
        return Inventory(path=where, devices=devices, limits=limits, schedule=schedule,
                         text=self.source, variables=tuple(self.variables), embedded=embedded,
                         **settings)

    def _section(self, top: Pairs, name: str, allowed: tuple[str, ...] | None = None) -> Pairs:
        if name not in top:
            return {}
        node = top[name][1]
        what = "a mapping of " + ("device fields" if allowed else f"{name} by name")
        found = (self.fields(node, name, allowed, what) if allowed
                 else self.mapping(node, name, what))
        return {} if found is INVALID else dict(found)

    def _settings(self, top: Pairs) -> dict[str, Any]:
        """The top-level settings given (:class:`Inventory`'s fields that :func:`reads`)."""
        keys = schema(Inventory)
        read = {name: keys[name].read(self, top[name][1], name) for name in keys if name in top}
        return arguments(Inventory, {k: v for k, v in read.items() if v is not INVALID})

    # -- devices ----------------------------------------------------------------------------

    def _devices(self, entry: tuple[Node, Node] | None, root: Node,
                 defaults: dict[str, _Got]) -> dict[str, Device]:
        what = "a mapping of device names to their fields"
        if entry is None:
            self.problem(root, "devices", f"required field missing; expected {what}, "
                                          "like `pi4: {host: 192.168.1.20}`")
            return {}
        listed = self.mapping(entry[1], "devices", what, allow_null=False)
        if listed is INVALID:
            return {}
        if not listed:
            self.bad(entry[0], "devices", "at least one device", listed)
        devices = {}
        for name, (key, node) in listed.items():
            device = self._device(name, key, node, defaults)
            if device is not None:
                devices[name] = device
        return devices

    def _device(self, name: str, key: Node, node: Node,
                defaults: dict[str, _Got]) -> Device | None:
        field = f"devices.{name}"
        self._listed[name] = INVALID
        named = self._device_name_ok(name, key, field)
        found = self.fields(node, field, tuple(schema(Device)), "a mapping of device fields (at least "
                            "`host:`)", allow_null=False)
        if found is INVALID:
            return None
        merged = _merge(defaults, self.read_section(Device, found, field))
        self._listed[name] = merged.get("capabilities", _Got((), None)).value
        if "host" not in merged:
            self.problem(key, f"{field}.host",
                         "required field missing; expected a host name or 'local'")
            return None
        fits = self._pool_fits(merged, key, field)
        if not (named and fits) or any(g.value is INVALID for g in merged.values()):
            return None
        values = arguments(Device, {k: g.value for k, g in merged.items()})
        return Device(name=name, line=line_of(key), **values)

    def _device_name_ok(self, name: str, key: Node, field: str) -> bool:
        if not NAME_RE.match(name):
            self.bad(key, field, f"a device name ({NAME_RULE})", name)
        elif name in RESERVED_DEVICE_NAMES:
            self.bad(key, field, f"a device name other than {', '.join(RESERVED_DEVICE_NAMES)} "
                                 f"(catdog-{name} is the session of `fab {name}`)", name)
        elif name in ("all", "any"):
            self.bad(key, field, f"a device name other than {name!r} (the target word: "
                                 f"{'every device' if name == 'all' else 'any one device'})", name)
        else:
            return True
        return False

    def _pool_fits(self, merged: dict[str, _Got], key: Node, field: str) -> bool:
        pool = merged.get("pool")
        concurrency = merged.get("concurrency")
        if pool is None or pool.value != "solo" or concurrency is None:
            return True
        if concurrency.value is INVALID or concurrency.value == 1:
            return True
        # at the later of the two lines (where the clash shows, reading down), naming the other
        if (concurrency.line or 0) >= (pool.line or 0):
            self.problem(concurrency.line, f"{field}.concurrency",
                         f"pool 'solo' (line {pool.line}) runs one task at a time; expected "
                         f"concurrency 1, got {concurrency.value!r}")
        else:
            self.problem(pool.line, f"{field}.pool", "pool 'solo' runs one task at a time; "
                         f"expected concurrency 1 (line {concurrency.line}), got "
                         f"{concurrency.value!r}")
        return False

    # -- limits and schedule ----------------------------------------------------------------

    def _limits(self, found: Pairs) -> dict[str, Limit]:
        limits = {}
        for name, (key, node) in found.items():
            field = f"limits.{name}"
            if not NAME_RE.match(name):
                self.bad(key, field, f"a limit name ({NAME_RULE})", name)
                continue
            text = self.text(node, field, "a rate like 10/s, 100/m or 360/h (a positive whole "
                                          "number per second, minute or hour)", RATE_RE)
            if text is not INVALID:
                match = RATE_RE.match(text)
                assert match is not None
                limits[name] = Limit(name, int(match[1]), PERIODS[match[2]], text.strip())
        return limits

    def _schedule(self, found: Pairs, limits: tuple[str, ...]) -> dict[str, ScheduleEntry]:
        schedule = {}
        for name, (key, node) in found.items():
            entry = self._entry(name, key, node, limits)
            if entry is not None:
                schedule[name] = entry
        return schedule

    def _entry(self, name: str, key: Node, node: Node, limits: tuple[str, ...]
               ) -> ScheduleEntry | None:
        field = f"schedule.{name}"
        named = NAME_RE.match(name) or self.bad(key, field, f"a schedule name ({NAME_RULE})", name)
        spec = self.fields(node, field, tuple(schema(ScheduleEntry)), "a mapping with `task:` and "
                           "`every:` or `cron:`", allow_null=False)
        if spec is INVALID:
            return None
        values = {k: got.value for k, got in self.read_section(ScheduleEntry, spec, field).items()}
        complete = self._entry_complete(values, key, field)
        fits = self._entry_fits(values, spec, field, limits)
        if named is INVALID or not (complete and fits) or any_invalid(values):
            return None
        return ScheduleEntry(name=name, line=line_of(key), **arguments(ScheduleEntry, values))

    def _entry_complete(self, values: dict[str, Any], key: Node, field: str) -> bool:
        """``task:`` is there, and exactly one of ``every:`` and ``cron:``."""
        ok = "task" in values
        if not ok:
            self.problem(key, f"{field}.task", "required field missing; expected a task name "
                                               "like tasks.sensors.read_temperature")
        if "every" in values and "cron" in values:
            self.problem(key, field, "expected exactly one of 'every' or 'cron', got both")
            ok = False
        elif "every" not in values and "cron" not in values:
            self.problem(key, f"{field}.every", f"required field missing; expected {WHAT_DURATION}"
                                                f" (`every:`) or {WHAT_CRON} (`cron:`)")
            ok = False
        return ok

    def _entry_fits(self, values: dict[str, Any], spec: Pairs, field: str,
                    limits: tuple[str, ...]) -> bool:
        """``on:`` names what this inventory has and ``limit:`` a name from ``limits:``."""
        ok = True
        limit = values.get("limit", INVALID)
        if limit is not INVALID and limit not in limits:
            known = ", ".join(limits) or "there are none"
            self.problem(spec["limit"][1], f"{field}.limit",
                         f"expected a name from `limits:` ({known}), got {limit!r}")
            ok = False
        on = values.get("on", INVALID)
        if on is not INVALID and self._listed and not _reachable(on, self._listed):
            capabilities = sorted({c for caps in self._listed.values() if caps is not INVALID
                                   for c in caps})
            self.problem(spec["on"][1], f"{field}.on",
                         f"no device can ever run {str(on)!r}; devices: {', '.join(self._listed)}; "
                         f"capabilities: {', '.join(capabilities) or '(none)'}")
            ok = False
        return ok

    # -- the broker -------------------------------------------------------------------------

    def _check_broker(self, entry: tuple[Node, Node] | None, settings: dict[str, Any]) -> None:
        """A configured broker must be able to serve (without one, the embedded Redis serves
        every device, SSH devices included: ``embedded:``)."""
        from_env = self.environ.get(BROKER_ENV) or None
        url = chosen_url(settings.get("broker"), self.environ)
        if url:
            message = check_broker_url(url, bool(settings.get("insecure", False)))
            if message and from_env:
                self.problem(None, "broker", f"{message} (the URL comes from ${BROKER_ENV})")
            elif message and entry is not None:
                self.problem(entry[1], "broker", message)

    def _embedded(self, entry: tuple[Node, Node] | None, broker: tuple[Node, Node] | None,
                  devices: dict[str, Device]) -> Embedded | None:
        """The ``embedded:`` section (None after a problem): it serves SSH devices, so it needs
        some and no ``broker:``."""
        if entry is None:
            return Embedded()
        key, node = entry
        found = self.fields(node, "embedded", tuple(schema(Embedded)),
                            "a mapping with `listen:` and/or `tls:`")
        if found is INVALID:
            return None
        values = self.read_section(Embedded, found, "embedded")
        if any(g.value is INVALID for g in values.values()):
            return None
        if broker is not None:
            self.problem(key, "embedded", f"the embedded Redis serves only without `broker:` "
                                          f"(line {line_of(broker[0])}); remove one of the two")
            return None
        if devices and all(d.is_local for d in devices.values()) and (
                values.get("listen") or (values.get("tls") and values["tls"].value)):
            name = "listen" if "listen" in values else "tls"
            self.problem(values[name].line, f"embedded.{name}",
                         "this fleet has no SSH device, and the embedded Redis serves local "
                         f"devices on loopback; remove `{name}:` (or add a device with a host)")
            return None
        return Embedded(**arguments(Embedded, {k: g.value for k, g in values.items()}),
                        line=line_of(key), lines={k: g.line for k, g in values.items()})
