"""What each ``fab`` command prints for what :mod:`ops.api` returned, and its exit status: a table
for people, or with ``--json`` one JSON document on stdout and nothing else (progress goes to
stderr). Each renderer is ``render(found, shown) -> exit status``; :mod:`ops.commands` names which.
"""

from __future__ import annotations

import datetime
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from catdog.errors import UsageError
from ops import results
from ops.results import DeviceResult

if TYPE_CHECKING:
    from catdog.killswitch import Report
    from ops.results import QuarantineReport, StoppedSwitch


@dataclass(frozen=True)
class Shown:
    """How a command's result is shown: its option values, and the API call once more (for
    ``fab status --watch``)."""

    options: dict[str, Any]
    again: Callable[[], Any]

    @property
    def json(self) -> bool:
        return bool(self.options.get("json"))


def progress(out: TextIO = sys.stderr) -> Callable[[str, str, str], None]:
    """Live progress, one line per device event (devices report from parallel threads)."""
    lock = threading.Lock()

    def show(device: str, event: str, detail: str) -> None:
        line = f"  {device}: {event}" + (f" ({detail})" if detail else "") + "\n"
        with lock:
            out.write(line)
            out.flush()

    return show


def _emit(found: list[DeviceResult], as_json: bool, text: str) -> int:
    print(results.to_json([r.as_dict() for r in found]) if as_json else text, flush=True)
    return 0 if results.all_ok(found) else 1


def _rows(found: dict[str, DeviceResult]) -> list[DeviceResult]:
    return list(found.values())


def launched(found: dict[str, DeviceResult], shown: Shown) -> int:
    """``fab launch`` and ``fab restart``."""
    rows = _rows(found)
    return _emit(rows, shown.json, results.launch_report(rows))


def autostarted(found: dict[str, DeviceResult], shown: Shown) -> int:
    """``fab enable`` and ``fab disable``: a row per device (and per coordinator service), with
    the unit's journal when it did not come up."""
    rows = _rows(found)
    cells = [(r.device, r.state, f"{r.elapsed_s:.1f}s", r.reason) for r in rows]
    text = results.table(cells, ("DEVICE", "STATE", "TIME", "UNIT / REASON"))
    for r in rows:
        if r.output:
            text += f"\n--- {r.device}: its unit ---\n" + "\n".join(r.output)
    return _emit(rows, shown.json, text)


def stopped(found: dict[str, DeviceResult], shown: Shown) -> int:
    rows = _rows(found)
    cells = [(r.device, r.state, f"{r.elapsed_s:.1f}s", r.reason) for r in rows]
    return _emit(rows, shown.json, results.table(cells, ("DEVICE", "STATE", "TIME", "REASON")))


def _service(found: dict[str, DeviceResult], as_json: bool, reason_header: str) -> int:
    """A coordinator service's row, and its last output lines when it failed to start."""
    rows = _rows(found)
    cells = [(r.device, r.state, f"{r.elapsed_s:.1f}s", r.reason) for r in rows]
    text = results.table(cells, ("SERVICE", "STATE", "TIME", reason_header))
    for r in rows:
        if r.output:
            text += f"\n--- {r.device}: last output lines ---\n" + "\n".join(r.output)
    return _emit(rows, as_json, text)


def beat(found: dict[str, DeviceResult], shown: Shown) -> int:
    return _service(found, shown.json, "REASON")


def flower(found: dict[str, DeviceResult], shown: Shown) -> int:
    return _service(found, shown.json, "URL / REASON")


def refuse_watched_json(options: dict[str, Any]) -> None:
    if options.get("watch") and options.get("json"):
        raise UsageError("--watch redraws a table for people; scripts poll --json instead")


def status(rows: list[dict[str, Any]], shown: Shown) -> int:
    """The status rows; ``--watch`` redraws them every second until Ctrl-C."""
    if shown.json:
        print(results.to_json(rows), flush=True)
        return 0
    while True:
        text = status_table(rows)
        if not shown.options.get("watch"):
            print(text, flush=True)
            return 0
        print(f"\x1b[H\x1b[2J{text}\n\n(every 1 s; Ctrl-C stops)", flush=True)
        try:
            time.sleep(1.0)
        except KeyboardInterrupt:
            return 0
        rows = shown.again()


def status_table(rows: list[dict[str, Any]]) -> str:
    def active(r: dict[str, Any]) -> str:
        return f"{r['active']} {','.join(r['active_tasks'])}".strip() if r["active"] else "0"

    cells = [(r["device"], r["state"], ",".join(r["capabilities"]), active(r), r["done"],
              r["failed"], "-" if r["heartbeat_age_s"] is None else r["heartbeat_age_s"],
              "-" if r["backlog"] is None else r["backlog"], "-" if r["load"] is None else r["load"],
              "-" if r["rss_mb"] is None else r["rss_mb"],
              "-" if r.get("quarantined") is None else r["quarantined"],
              "-" if r.get("enabled") is None else ("yes" if r["enabled"] else "no"),
              r.get("release") or "-", _held(r), r["reason"]) for r in rows]
    return results.table(cells, ("DEVICE", "STATE", "CAPABILITIES", "ACTIVE", "DONE", "FAILED",
                                 "HEARTBEAT_S", "BACKLOG", "LOAD", "WORKER_MB", "QUARANTINED",
                                 "AT_BOOT", "RELEASE", "HELD",
                                 "REASON"))


def _held(row: dict[str, Any]) -> str:
    """The resources held on a device, ``camera:1/1`` (``-``: it declares none)."""
    return " ".join(f"{k}:{v['held']}/{v['of']}" for k, v in row.get("resources", {}).items()
                    ) or "-"


def facts(rows: list[dict[str, Any]], shown: Shown) -> int:
    """``fab facts``: the status rows' facts, health and held resources, one row per device."""
    from catdog.facts import throttling

    if shown.json:
        print(results.to_json(rows), flush=True)
        return 0

    def cell(value: Any) -> str:
        return "-" if value is None or value == [] else str(value)

    cells = [(r["device"], r["state"], *(cell(r["facts"].get(k)) for k in (
        "arch", "cores", "mem_total", "mem", "temp")),
        ",".join(throttling(r["facts"].get("throttled"))) or "-",
        ",".join(r["facts"].get("detected") or []) or "-",
        _held(r),
        cell(r["facts"].get("model")), cell(r["facts"].get("os")),
        cell(r["facts"].get("python")), r.get("degraded") or "") for r in rows]
    print(results.table(cells, ("DEVICE", "STATE", "ARCH", "CORES", "MEM_MB", "FREE_MB", "TEMP_C",
                                "THROTTLING", "DETECTED", "RESOURCES", "MODEL", "OS", "PYTHON",
                                "DEGRADED")), flush=True)
    return 0


def logs(texts: dict[str, str], shown: Shown) -> int:
    """Each device's log text, under a ``==> name <==`` line when there are several."""
    for name, text in texts.items():
        print(f"==> {name} <==\n{text}" if len(texts) > 1 else text, end="", flush=True)
    return 0


def doctor(found: dict[str, DeviceResult], shown: Shown) -> int:
    from ops.doctor import CHECKS, DoctorResult

    rows = [r for r in found.values() if isinstance(r, DoctorResult)]
    cells = [(r.device, r.state, *(_cell(r.check(n).ok, r.check(n).detail) for n in CHECKS))
             for r in rows]
    text = [results.table(cells, ("DEVICE", "STATE", *(n.upper().replace("_", " ")
                                                       for n in CHECKS)))]
    failed = [(r.device, c) for r in rows for c in r.checks if c.ok is False]
    if failed:
        text.append("\nTo fix:")
        text += [f"  {device}: {c.name}: {c.detail}" + (f"\n      fix: {c.fix}" if c.fix else "")
                 for device, c in failed]
    return _emit(list(rows), shown.json, "\n".join(text))


def _cell(ok: bool | None, detail: str) -> str:
    if ok is None:
        return "-"
    if not ok:
        return "FAIL"
    return detail.split(" ")[0] if len(detail) > 14 else detail


def killswitch(report: Report | StoppedSwitch, shown: Shown) -> int:
    """The switch (who, when, why) and each device's state; a stopped fleet's is unknown."""
    from ops.results import StoppedSwitch

    if shown.json:
        print(json.dumps(report.as_dict(), indent=2), flush=True)
        return 0
    cells = [(r["device"], r["state"], r["detail"]) for r in report.devices]
    table = results.table(cells, ("DEVICE", "STATE", "DETAIL"))
    if isinstance(report, StoppedSwitch):
        print(f"kill switch unknown: {report.note}\n\n" + table, flush=True)
        return 0
    s = report.switch
    when = (datetime.datetime.fromtimestamp(s.at).astimezone().isoformat(timespec="seconds")
            if s.at else "never set")
    head = (f"kill switch ON{' (hard)' if s.hard else ''} since {when} by {s.by}: {s.reason}"
            if s.on else "kill switch off" + (f" (since {when}, by {s.by})" if s.at else ""))
    print(head + "\n\n" + table, flush=True)
    return 0


def metrics(found: dict[str, DeviceResult], shown: Shown) -> int:
    rows = _rows(found)
    cells = [(r.device, r.state, r.reason) for r in rows]
    return _emit(rows, shown.json, results.table(cells, ("DEVICE", "STATE", "WHAT")))


def quarantine(report: QuarantineReport, shown: Shown) -> int:
    """The held messages (or the one requeued or dropped): id, task, arguments, each loss."""
    if shown.json:
        print(json.dumps(report.as_dict(), indent=2), flush=True)
        return 0
    if report.action != "listed":
        [entry] = report.entries
        print(f"{report.action} {entry.id} ({entry.task})"
              + (f": sent to {entry.queue or ', '.join(entry.keys)} again"
                 if report.action == "requeued" else ""),
              flush=True)
        return 0
    if not report.entries:
        print("quarantine empty: no message has lost max_deliveries workers", flush=True)
        return 0
    cells = [(e.id, e.task, _arguments(e.args, e.kwargs), f"{len(e.losses)}/{e.max_deliveries}",
              _when(e.held_at)) for e in report.entries]
    text = [results.table(cells, ("ID", "TASK", "ARGUMENTS", "LOSSES", "HELD SINCE"))]
    for e in report.entries:
        text.append(f"\n{e.id}:")
        text += [f"  {_when(loss.started) if loss.started else '?'} {loss.device}: {loss.how}, "
                 f"{_ending(loss.exit_status, loss.signal)}, oom killer: "
                 f"{'unknown' if loss.oom is None else 'yes' if loss.oom else 'no'}"
                 for loss in e.losses]
    text.append("\n`fab quarantine --requeue ID` runs one again; `--drop ID` forgets it")
    print("\n".join(text), flush=True)
    return 0


def _arguments(args: list[Any], kwargs: dict[str, Any], width: int = 40) -> str:
    shown = ", ".join([json.dumps(a) for a in args] +
                      [f"{k}={json.dumps(v)}" for k, v in kwargs.items()])
    return shown if len(shown) <= width else shown[:width - 3] + "..."


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at).astimezone().isoformat(timespec="seconds")


def _ending(status: int | None, signal: int | None) -> str:
    if signal is not None:
        return f"signal {signal}"
    return f"exit status {status}" if status is not None else "exit unknown"


def rolled(found: dict[str, DeviceResult], shown: Shown) -> int:
    """``fab deploy`` and ``fab rollback``: each device's old and new release, and what happened."""
    rows = _rows(found)

    def release(r: DeviceResult, name: str) -> str:
        return str(getattr(r, name, None) or "-")

    cells = [(r.device, r.state, f"{r.elapsed_s:.1f}s", release(r, "previous_release"),
              release(r, "release"), r.reason) for r in rows]
    text = [results.table(cells, ("DEVICE", "STATE", "TIME", "OLD RELEASE", "NEW RELEASE",
                                  "WHAT CHANGED / REASON"))]
    for r in rows:
        if r.output:
            text += [f"\n--- {r.device}: last output lines ---", *r.output]
    return _emit(rows, shown.json, "\n".join(text))


def restarted(found: dict[str, DeviceResult], shown: Shown) -> int:
    """``fab restart``: as ``fab launch``; ``--rolling`` as a rollout (with the releases)."""
    return rolled(found, shown) if shown.options.get("rolling") else launched(found, shown)
