"""The command edge: what each ``fab`` command prints, and its exit status (the work is in
:mod:`ops.api` and the modules it calls).

Errors become exit statuses here and only here (:func:`catdog.errors.exit_status`): a bad
inventory or option value exits 2 before anything starts (option values are read by
:mod:`ops.options`); a broker that does not answer is one line saying which and what to
check. ``--json`` puts one JSON document on stdout and nothing else; progress goes to stderr.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from catdog import broker
from catdog.errors import CatDogError, UsageError, exit_status
from ops import api, options, results
from ops.results import DeviceResult


def guarded(command: Callable[..., int]) -> Callable[..., int]:
    """Run ``command``; a CatDogError is printed to stderr and mapped to its exit status, and so
    is a broker that stops answering on the way (the Redis client's or kombu's error)."""

    def run(*args: Any, **kwargs: Any) -> int:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        try:
            try:
                return command(*args, **kwargs)
            except broker.UNREACHABLE as exc:
                raise api.broker_error(exc) from exc
        except CatDogError as exc:
            print(f"catdog: {exc}", file=sys.stderr)
            return exit_status(exc)

    run.__name__ = command.__name__
    run.__doc__ = command.__doc__
    return run


def _progress(out: TextIO = sys.stderr) -> Callable[[str, str, str], None]:
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


@guarded
def launch(inventory: str | None = None, devices: str | None = None, as_json: bool = False,
           timeout: float | str = 30.0, loglevel: str | None = None) -> int:
    """Start workers in tmux; READY only when each answers a ping."""
    devices = options.devices("--devices", devices)
    timeout = options.seconds("--timeout", timeout)
    found = list(api.launch(inventory, devices, timeout=timeout, on_event=_progress(),
                            loglevel=loglevel).values())
    return _emit(found, as_json, results.launch_report(found))


@guarded
def stop(inventory: str | None = None, devices: str | None = None, as_json: bool = False,
         timeout: float | str = 30.0, force: bool = False) -> int:
    """Warm shutdown (then kill after ``timeout``); the whole fleet also stops the embedded Redis."""
    devices = options.devices("--devices", devices)
    timeout = options.seconds("--timeout", timeout)
    found = list(api.stop(inventory, devices, timeout=timeout, force=force,
                          on_event=_progress()).values())
    rows = [(r.device, r.state, f"{r.elapsed_s:.1f}s", r.reason) for r in found]
    return _emit(found, as_json, results.table(rows, ("DEVICE", "STATE", "TIME", "REASON")))


@guarded
def restart(inventory: str | None = None, devices: str | None = None, as_json: bool = False,
            timeout: float | str = 30.0, loglevel: str | None = None) -> int:
    """Stop then launch the selected devices (the broker stays up)."""
    devices = options.devices("--devices", devices)
    timeout = options.seconds("--timeout", timeout)
    found = list(api.restart(inventory, devices, timeout=timeout, on_event=_progress(),
                             loglevel=loglevel).values())
    return _emit(found, as_json, results.launch_report(found))


@guarded
def beat(inventory: str | None = None, as_json: bool = False) -> int:
    """Start the scheduler in tmux; returns once it has reported (active or standby)."""
    return _service_report(list(api.beat(inventory).values()), as_json, "REASON")


@guarded
def flower(inventory: str | None = None, port: int | str = 5555, address: str = "127.0.0.1",
           as_json: bool = False) -> int:
    """Start Flower for the fleet in tmux; returns once it answers, with its URL."""
    port = options.port("--port", port)
    address = options.address("--address", address)
    found = list(api.flower(inventory, port=port, address=address).values())
    return _service_report(found, as_json, "URL / REASON")


def _service_report(found: list[DeviceResult], as_json: bool, reason_header: str) -> int:
    """A coordinator service's row, and its last output lines when it failed to start."""
    rows = [(r.device, r.state, f"{r.elapsed_s:.1f}s", r.reason) for r in found]
    text = results.table(rows, ("SERVICE", "STATE", "TIME", reason_header))
    for r in found:
        if r.output:
            text += f"\n--- {r.device}: last output lines ---\n" + "\n".join(r.output)
    return _emit(found, as_json, text)


@guarded
def show_status(inventory: str | None = None, devices: str | None = None,
                as_json: bool = False, watch: bool = False) -> int:
    """A row per device: state, capabilities, active, done, failed, heartbeat age, backlog, load
    and memory; ``watch`` redraws it every second until Ctrl-C."""
    devices = options.devices("--devices", devices)
    if watch and as_json:
        raise UsageError("--watch redraws a table for people; scripts poll --json instead")
    inv = api.load(inventory)
    selected = inv.select(devices)
    if as_json:
        print(results.to_json(api.status_of(inv, selected)), flush=True)
        return 0
    while True:
        text = status_table(api.status_of(inv, selected))
        if not watch:
            print(text, flush=True)
            return 0
        print(f"\x1b[H\x1b[2J{text}\n\n(every 1 s; Ctrl-C stops)", flush=True)
        try:
            time.sleep(1.0)
        except KeyboardInterrupt:
            return 0


def status_table(rows: list[dict[str, Any]]) -> str:
    def active(r: dict[str, Any]) -> str:
        return f"{r['active']} {','.join(r['active_tasks'])}".strip() if r["active"] else "0"

    cells = [(r["device"], r["state"], ",".join(r["capabilities"]), active(r), r["done"],
              r["failed"], "-" if r["heartbeat_age_s"] is None else r["heartbeat_age_s"],
              "-" if r["backlog"] is None else r["backlog"], "-" if r["load"] is None else r["load"],
              "-" if r["rss_mb"] is None else r["rss_mb"], r["reason"]) for r in rows]
    return results.table(cells, ("DEVICE", "STATE", "CAPABILITIES", "ACTIVE", "DONE", "FAILED",
                                 "HEARTBEAT_S", "BACKLOG", "LOAD", "WORKER_MB", "REASON"))


@guarded
def logs(inventory: str | None = None, devices: str | None = None, lines: int | str = 50,
         follow: bool = False, color: bool = False) -> int:
    """The recent output of one device's worker; ``follow`` streams it until Ctrl-C; plain text
    unless ``color``."""
    from ops import logs as worker_logs

    devices = options.devices("--devices", devices)
    lines = options.count("--lines", lines)
    inv = api.load(inventory)
    selected = inv.select(devices)
    if follow:
        if len(selected) != 1:
            raise UsageError("--follow takes exactly one device: --devices NAME")
        return worker_logs.follow(inv, selected[0], lines, color)
    for device in selected:
        text = worker_logs.recent(inv, device, lines, color)
        print(f"==> {device.name} <==\n{text}" if len(selected) > 1 else text, end="", flush=True)
    return 0


@guarded
def deploy(inventory: str | None = None, devices: str | None = None, as_json: bool = False) -> int:
    """Install this checkout on each SSH device (venv created if missing); says what changed."""
    devices = options.devices("--devices", devices)
    found = list(api.deploy(inventory, devices, on_event=_progress()).values())
    rows = [(r.device, r.state, f"{r.elapsed_s:.1f}s", r.reason) for r in found]
    text = [results.table(rows, ("DEVICE", "STATE", "TIME", "WHAT CHANGED / REASON"))]
    for r in found:
        if r.output:
            text += [f"\n--- {r.device}: last output lines ---", *r.output]
    return _emit(found, as_json, "\n".join(text))


@guarded
def doctor(inventory: str | None = None, devices: str | None = None, as_json: bool = False) -> int:
    """Per device: host key, SSH, Python, CatDog, tmux, broker from the device, clock skew."""
    from ops.doctor import CHECKS, DoctorResult

    devices = options.devices("--devices", devices)
    found = [r for r in api.doctor(inventory, devices, on_event=_progress()).values()
             if isinstance(r, DoctorResult)]
    cells = [(r.device, r.state, *(_cell(r.check(n).ok, r.check(n).detail) for n in CHECKS))
             for r in found]
    text = [results.table(cells, ("DEVICE", "STATE", *(n.upper().replace("_", " ")
                                                       for n in CHECKS)))]
    failed = [(r.device, c) for r in found for c in r.checks if c.ok is False]
    if failed:
        text.append("\nTo fix:")
        text += [f"  {device}: {c.name}: {c.detail}" + (f"\n      fix: {c.fix}" if c.fix else "")
                 for device, c in failed]
    return _emit(list(found), as_json, "\n".join(text))


def _cell(ok: bool | None, detail: str) -> str:
    if ok is None:
        return "-"
    if not ok:
        return "FAIL"
    return detail.split(" ")[0] if len(detail) > 14 else detail


@guarded
def killswitch(inventory: str | None = None, on: bool = False, off: bool = False,
               reason: str = "", hard: bool = False, as_json: bool = False) -> int:
    """Turn the fleet's kill switch on or off, or show it (who, when, why, each device)."""
    import datetime
    import json

    from catdog import killswitch as switch

    if on and off:
        raise UsageError("--on and --off together: choose one")
    if hard and not on:
        raise UsageError("--hard goes with --on (it terminates running tasks and re-queues them)")
    inv = api.load(inventory)
    if not (on or off) and api.running_broker(inv) is None:
        return _switch_of_stopped_fleet(inv, as_json)  # read-only: starts nothing
    if on:
        report = switch.engage(reason, hard=hard)
    elif off:
        report = switch.release()
    else:
        report = switch.devices_state()
    if as_json:
        print(json.dumps(report.as_dict(), indent=2), flush=True)
        return 0
    s = report.switch
    when = (datetime.datetime.fromtimestamp(s.at).astimezone().isoformat(timespec="seconds")
            if s.at else "never set")
    head = (f"kill switch ON{' (hard)' if s.hard else ''} since {when} by {s.by}: {s.reason}"
            if s.on else "kill switch off" + (f" (since {when}, by {s.by})" if s.at else ""))
    rows = [(r["device"], r["state"], r["detail"]) for r in report.devices]
    print(head + "\n\n" + results.table(rows, ("DEVICE", "STATE", "DETAIL")), flush=True)
    return 0


def _switch_of_stopped_fleet(inv: Any, as_json: bool) -> int:
    """``fab killswitch`` on a stopped fleet: the switch is kept in the embedded Redis, which is
    not started just to read it."""
    import json

    from ops.status import FLEET_STOPPED

    rows = [{"device": name, "state": "offline", "detail": FLEET_STOPPED} for name in inv.devices]
    note = (f"{FLEET_STOPPED}: the switch is kept there and holds again when `fab launch` "
            f"starts it")
    if as_json:
        print(json.dumps({"on": None, "reason": "", "by": "", "at": 0.0, "hard": False,
                          "note": note, "devices": rows}, indent=2), flush=True)
        return 0
    cells = [(r["device"], r["state"], r["detail"]) for r in rows]
    print(f"kill switch unknown: {note}\n\n" + results.table(cells, ("DEVICE", "STATE", "DETAIL")),
          flush=True)
    return 0


@guarded
def metrics(inventory: str | None = None, devices: str | None = None, since: str = "",
            as_json: bool = False) -> int:
    """Gather every device's task metrics (InfluxDB line protocol) into metrics/."""
    from catdog.durations import parse_duration

    devices = options.devices("--devices", devices)
    since_s = None
    if since:
        since_s = parse_duration(since)
        if since_s is None:
            raise UsageError(f"--since {since!r}: expected a duration like 90s, 15m, 1h or 2d")
    found = list(api.metrics(inventory, devices, since_s=since_s, on_event=_progress()).values())
    rows = [(r.device, r.state, r.reason) for r in found]
    return _emit(found, as_json, results.table(rows, ("DEVICE", "STATE", "WHAT")))
