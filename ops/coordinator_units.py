"""``fab enable --coordinator``: systemd units on the coordinator for the embedded Redis, the
scheduler (``fab beat``) and Flower (``fab flower``), so a coordinator that reboots serves the fleet
again by itself.

Each unit ``catdog-<service>.service`` runs ``python -m ops.coordinator_units SERVICE --inventory
PATH`` (this module), which starts the service exactly as its command does (the embedded Redis as
any command starts it; beat and Flower in their tmux sessions, :mod:`ops.services`), tells systemd
it is ready, and watches it: a service stopped on purpose (``fab stop``: Redis shut down, the
session removed) ends the unit with status 0, one that died with status 1, and systemd starts it
again (``Restart=on-failure``). Beat and Flower start after the embedded Redis. Root gets system
units, any other user user units with lingering on, as for devices (:mod:`ops.autostart`).

Which services: ``--services`` (``redis``, ``beat``, ``flower``); by default the embedded Redis
when the fleet uses it and beat when the inventory has a ``schedule:``. Flower runs on its
defaults (127.0.0.1:5555).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from catdog.errors import UsageError
from catdog.inventory import Inventory
from ops.autostart import SYSTEM, NoSystemd, Place, parse_probe, probe_command, render_unit, unit_name
from ops.fanout import EventCallback, quiet
from ops.remote import LocalHost
from ops.results import DISABLED, ENABLED, FAILED, NOT_ENABLED, DeviceResult
from workers.autostart import log, notify

REDIS, BEAT, FLOWER = "redis", "beat", "flower"
SERVICES = (REDIS, BEAT, FLOWER)
WATCH_S = 2.0


def embedded(inventory: Inventory) -> bool:
    from catdog import broker

    return broker.configured_url(inventory) is None


def chosen(inventory: Inventory, services: str) -> list[str]:
    """The services asked for (``"beat,flower"``), or the default ones; bad names refused."""
    if not services:
        return [s for s in SERVICES if (s == REDIS and embedded(inventory))
                or (s == BEAT and inventory.schedule)]
    names = [n.strip() for n in services.split(",") if n.strip()]
    if unknown := [n for n in names if n not in SERVICES]:
        raise UsageError(f"--services {','.join(unknown)}: not a coordinator service; choose "
                         f"from {', '.join(SERVICES)}")
    if REDIS in names and not embedded(inventory):
        raise UsageError(f"--services redis: {inventory.path.name} names its own broker, so no "
                         f"embedded Redis runs here; leave redis out")
    if BEAT in names and not inventory.schedule:
        raise UsageError(f"--services beat: {inventory.path.name} has no `schedule:`; add one "
                         f"or leave beat out")
    return names


def place_here() -> Place:
    return parse_probe(LocalHost().shell(probe_command(sys.executable)).stdout)


def unit_text(inventory: Inventory, service: str, place: Place) -> str:
    after = [unit_name(REDIS)] if service != REDIS and embedded(inventory) else []
    what = {REDIS: "the embedded Redis", BEAT: "the scheduler", FLOWER: "Flower"}[service]
    return render_unit(f"CatDog: {what} of {inventory.path}",
                       [sys.executable, "-m", "ops.coordinator_units", service, "--inventory",
                        str(inventory.path)], str(inventory.root), place, after=after)


def enable(inventory: Inventory, services: str, timeout: float = 30.0,
           on_event: EventCallback = quiet) -> list[DeviceResult]:
    names = chosen(inventory, services)
    if not names:
        raise UsageError(f"nothing to enable on the coordinator: {inventory.path.name} names its "
                         f"own broker and has no `schedule:`; ask with --services flower")
    place, host = place_here(), LocalHost()
    if not place.systemd:
        raise NoSystemd("fab enable --coordinator: no systemd runs on this coordinator (no "
                        "/run/systemd/system or systemctl), nothing was enabled: start the "
                        "services with `fab launch`, `fab beat` and `fab flower` after a boot")
    found = []
    for service in names:
        started, unit = time.monotonic(), unit_name(service)
        host.write_private(f"{place.unit_dir}/{unit}", unit_text(inventory, service, place))
        on_event(service, "enabling", unit)
        done = host.shell(f"{place.systemctl('daemon-reload')} && "
                          f"{place.systemctl('enable', '--now', unit)}", timeout=timeout)
        if done.status != 0:
            found.append(DeviceResult(service, FAILED, f"systemctl could not enable {unit}: "
                                                       f"{(done.stderr or done.stdout).strip()}"))
            continue
        scope = "system unit" if place.scope == SYSTEM else f"user unit of {place.user}"
        result = DeviceResult(service, ENABLED, f"{unit} ({scope})")
        result.elapsed_s = round(time.monotonic() - started, 3)
        found.append(result)
    return found


def disable(inventory: Inventory, services: str) -> list[DeviceResult]:
    names = [n.strip() for n in services.split(",") if n.strip()] or list(SERVICES)
    place, host = place_here(), LocalHost()
    found = []
    for service in names:
        unit = unit_name(service)
        path = Path(place.unit_dir) / unit
        if not path.exists():
            if services:
                found.append(DeviceResult(service, NOT_ENABLED, f"no {unit} here"))
            continue
        if place.systemd:
            host.shell(f"{place.systemctl('disable', '--now', unit)} >/dev/null 2>&1")
        path.unlink()
        if place.systemd:
            host.shell(place.systemctl("daemon-reload"))
        found.append(DeviceResult(service, DISABLED, f"{unit} removed (the service keeps "
                                                     f"running until `fab stop`)"))
    return found


# --- what the unit runs ----------------------------------------------------------------------

def serve(service: str, inventory_path: str) -> int:
    from catdog.loader import load_inventory
    from ops import api

    inventory = load_inventory(inventory_path)
    if service == REDIS:
        return _watch_redis(inventory)
    # started exactly as `fab beat` / `fab flower` start them
    found = api.beat(inventory_path) if service == BEAT else api.flower(inventory_path)
    result = found[service]
    log(f"{service}: {result.state} {result.reason}")
    if not result.ok:
        return 1
    notify("READY=1")
    return _watch_session(inventory, service)


def _watch_redis(inventory: Inventory) -> int:
    from ops.embedded_redis import EmbeddedRedis, alive

    server = EmbeddedRedis(inventory.state_dir)
    server.ensure_running(inventory.path)
    pid = server.pid()
    log(f"the embedded Redis answers (pid {pid})")
    notify("READY=1")
    while pid is not None and alive(pid):
        time.sleep(WATCH_S)
    if server.pid() is None:  # Redis removes its pid file when shut down on purpose
        log("the embedded Redis was shut down (fab stop): not restarting")
        return 0
    log("the embedded Redis died: systemd restarts it")
    return 1


def _watch_session(inventory: Inventory, service: str) -> int:
    from ops.session import session_name
    from ops.tmux import Tmux

    tmux, name = Tmux(inventory.tmux_socket), session_name(service)
    while True:
        pane = tmux.pane(name)
        if pane is None:
            log(f"{name} ended (fab stop): not restarting")
            return 0
        if pane.dead:
            log(f"{name} died: systemd restarts it")
            tmux.kill_session(name)
            return 1
        time.sleep(WATCH_S)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.coordinator_units",
                                     description="run a coordinator service for its unit")
    parser.add_argument("service", choices=SERVICES)
    parser.add_argument("--inventory", required=True)
    args = parser.parse_args(argv)
    from catdog import edge

    return edge.run(f"catdog {args.service}", lambda: serve(args.service, args.inventory))


if __name__ == "__main__":
    sys.exit(main())
