"""Per-device results of fleet commands, and how they are shown (table or ``--json``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

READY = "READY"
ALREADY_RUNNING = "ALREADY RUNNING"
FAILED = "FAILED"
STOPPED = "STOPPED"
NOT_RUNNING = "NOT RUNNING"
DEPLOYED = "DEPLOYED"
UNCHANGED = "UNCHANGED"
SKIPPED = "SKIPPED"
OK = "OK"
ACTIVE = "ACTIVE"
GATHERED = "GATHERED"
RUNNING = "RUNNING"
STANDBY = "STANDBY"
ENABLED = "ENABLED"
DISABLED = "DISABLED"
NOT_ENABLED = "NOT ENABLED"

SUCCESS_STATES = frozenset({READY, ALREADY_RUNNING, STOPPED, NOT_RUNNING, DEPLOYED, UNCHANGED,
                            SKIPPED, OK, ACTIVE, STANDBY, GATHERED, RUNNING, ENABLED, DISABLED,
                            NOT_ENABLED})


@dataclass
class DeviceResult:
    """One device's outcome, like an entry of Fabric's ``GroupResult``."""

    device: str
    state: str
    reason: str = ""
    elapsed_s: float = 0.0
    nodename: str | None = None
    exit_status: int | None = None
    #: launch: seconds from the worker's "ready to consume" to READY here (device clock vs ours)
    serve_to_ready_s: float | None = None
    output: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.state in SUCCESS_STATES

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def all_ok(results: Sequence[DeviceResult]) -> bool:
    return all(r.ok for r in results)


def to_json(rows: Sequence[dict[str, Any]]) -> str:
    return json.dumps(list(rows), indent=2, sort_keys=False)


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A plain text table, columns padded to their widest cell."""
    cells = [[str(c) for c in header]] + [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    return "\n".join(lines)


def launch_report(results: Sequence[DeviceResult]) -> str:
    rows = [(r.device, r.state, f"{r.elapsed_s:.1f}s", r.reason) for r in results]
    text = [table(rows, ("DEVICE", "STATE", "TIME", "REASON"))]
    for r in results:
        if r.state == FAILED and r.output:
            text.append(f"\n--- {r.device}: last output lines ---")
            text.extend(r.output)
    return "\n".join(text)


class GroupResult(dict[str, DeviceResult]):
    """Results by device name, in the order asked; ``succeeded`` and ``failed`` as in Fabric."""

    def __init__(self, results: Iterable[DeviceResult]) -> None:
        super().__init__((r.device, r) for r in results)

    @property
    def succeeded(self) -> dict[str, DeviceResult]:
        return {k: r for k, r in self.items() if r.ok}

    @property
    def failed(self) -> dict[str, DeviceResult]:
        return {k: r for k, r in self.items() if not r.ok}

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class StoppedSwitch:
    """The kill switch of a stopped fleet: it is kept in the embedded Redis, which is not started
    just to read it (``on`` is None: unknown)."""

    devices: list[dict[str, Any]]
    note: str

    def as_dict(self) -> dict[str, Any]:
        return {"on": None, "reason": "", "by": "", "at": 0.0, "hard": False, "note": self.note,
                "devices": self.devices}


@dataclass
class QuarantineReport:
    """What ``fab quarantine`` did (``listed``, ``requeued`` or ``dropped``) and the entries it
    did it to (:class:`catdog.quarantine.Entry`)."""

    action: str
    entries: list[Any]

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "entries": [e.summary() for e in self.entries]}
