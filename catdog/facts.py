"""The facts a device reports in its heartbeat, as both sides name them.

A worker reads them (:mod:`workers.facts`) and puts them in its heartbeat
(:class:`catdog.records.Heartbeat` ``facts``); ``fab status`` shows them and predicates in targets
(:mod:`catdog.predicates`) compare them. Each fact has a kind, which says how a predicate compares
it: numbers with every operator, versions (``python``) part by part, text with ``=`` and ``!=``
only, and lists (``detected``) by membership (``detected=camera``).

Static facts (the architecture, cores, total memory, Python, the OS, the board model, detected
devices) do not change while a worker runs: a device whose static facts fail a clause can never
satisfy it (``NoRoute``); the others (available memory, temperature, throttling, load) may change
(``NoDeviceNow``).
"""

from __future__ import annotations

import enum
from typing import Any


class FactKind(enum.Enum):
    NUMBER = "number"
    VERSION = "version"
    TEXT = "text"
    LIST = "list"


#: fact name -> (kind, static, what it is)
FACTS: dict[str, tuple[FactKind, bool, str]] = {
    "arch": (FactKind.TEXT, True, "the machine architecture (uname -m), like aarch64"),
    "cores": (FactKind.NUMBER, True, "CPU cores online"),
    "mem_total": (FactKind.NUMBER, True, "total memory, MB"),
    "mem": (FactKind.NUMBER, False, "available memory, MB"),
    "python": (FactKind.VERSION, True, "the worker's Python version, like 3.11.2"),
    "os": (FactKind.TEXT, True, "the OS release (PRETTY_NAME of /etc/os-release)"),
    "model": (FactKind.TEXT, True, "the board model (/proc/device-tree/model)"),
    "temp": (FactKind.NUMBER, False, "CPU temperature, degrees C (/sys/class/thermal)"),
    "throttled": (FactKind.NUMBER, False, "the throttling flags (vcgencmd get_throttled)"),
    "load": (FactKind.NUMBER, False, "the 1-minute load average"),
    "detected": (FactKind.LIST, True, "capabilities found on the device (detect:)"),
}
#: the throttling flags' bits that mean the device is slow right now
#: (Raspberry Pi firmware: bit 0 under-voltage, 1 ARM frequency capped, 2 throttled, 3 soft
#: temperature limit; bits 16-19 say the same happened since boot)
THROTTLE_NOW = {0: "under-voltage", 1: "frequency capped", 2: "throttled",
                3: "soft temperature limit"}
#: the flags that make a device degraded (:mod:`workers.health`)
DEGRADING_BITS = (0, 2)


def is_static(name: str) -> bool:
    return FACTS[name][1]


def throttling(flags: int | None) -> list[str]:
    """What the flags say is happening now.

    >>> throttling(0x50005), throttling(0), throttling(None)
    (['under-voltage', 'throttled'], [], [])
    """
    if not flags:
        return []
    return [what for bit, what in THROTTLE_NOW.items() if flags & (1 << bit)]


def version(text: Any) -> tuple[int, ...] | None:
    """A dotted version as numbers, for comparison (None when it is not one).

    >>> version("3.11.2") > version("3.9")
    True
    """
    try:
        return tuple(int(part) for part in str(text).split("."))
    except ValueError:
        return None


def summary(facts: dict[str, Any]) -> str:
    """A short line of the facts people look at first (``fab status``'s FACTS column).

    >>> summary({"arch": "aarch64", "cores": 4, "mem": 512.3, "temp": 61.2, "throttled": 5})
    'aarch64 4c 512MB 61.2C under-voltage,throttled'
    """
    parts = [str(facts["arch"]) if facts.get("arch") else "",
             f"{facts['cores']}c" if facts.get("cores") else "",
             f"{facts['mem']:.0f}MB" if facts.get("mem") is not None else "",
             f"{facts['temp']:.1f}C" if facts.get("temp") is not None else "",
             ",".join(throttling(facts.get("throttled")))]
    return " ".join(p for p in parts if p) or "-"
