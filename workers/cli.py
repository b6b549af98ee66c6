"""``python -m workers --device NAME``: run the Celery worker of one inventory device.

The worker is named ``<device>@<hostname>``, consumes exactly the device's queues (see
:func:`catdog.routing.worker_queues`), imports CatDog's built-in tasks, the project's own
``tasks`` and the inventory's ``imports:`` (:mod:`catdog.taskmodules`), and refuses to run as
root unless the device has ``allow_root: true``.

Arguments are read with click, which the Celery worker loads anyway (argparse would add 0.3 MB to
every worker, a Pi Zero's included).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from catdog import edge
from catdog.errors import CatDogError, WorkerRefused
from catdog.fleet import fleet
from catdog.inventory import Device, Inventory
from catdog.routing import worker_queues
from catdog.taskmodules import import_tasks, project_task_modules

if TYPE_CHECKING:
    from workers.extension import Extensions

__all__ = ["import_tasks", "main", "prepare", "project_task_modules", "run"]

PROG = "python -m workers"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_args(argv)
    except click.exceptions.Exit as done:  # --help
        return done.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return edge.run("catdog worker", lambda: serve(args, argv))


def serve(args: dict[str, Any], argv: list[str]) -> int:
    """Prepare the device named in ``args`` (the options given), then :func:`run` its worker."""
    if args["env_file"]:
        load_env_file(Path(args["env_file"]))
    device = prepare(args["inventory"], args["device"], os.geteuid(),
                     Path(args["project"]) if args["project"] else None)
    state_dir = Path(args["state_dir"]) if args["state_dir"] else Path.cwd() / ".catdog"
    return run(device, fleet.inventory, loglevel=args["loglevel"], state_dir=state_dir,
               argv=argv)


def command() -> click.Command:
    """The worker's command line (``--help`` shows it)."""
    return click.Command(PROG, help=__doc__, callback=lambda **given: given, params=[
        click.Option(["--device"], required=True, help="the inventory device this worker serves"),
        click.Option(["--inventory"],
                     help="inventory file (else $CATDOG_INVENTORY, ./catdog.yaml)"),
        click.Option(["--env-file"],
                     help="KEY=VALUE lines to add to the environment (mode 600)"),
        click.Option(["--project"], help="the project folder whose tasks.py or tasks/ and "
                                         "imports: modules are imported (default: the "
                                         "inventory's folder)"),
        click.Option(["--state-dir"], help="the device's .catdog folder (metrics go in "
                                           "metrics/); default ./.catdog"),
        click.Option(["--loglevel"], default="INFO", show_default=True),
    ])


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """The options given (click's errors raised, not printed: :func:`main` shows them)."""
    given = command().main(list(argv), prog_name=PROG, standalone_mode=False)
    if isinstance(given, int):  # --help was shown (click returns its exit status)
        raise click.exceptions.Exit(given)
    return dict(given)


def load_env_file(path: Path) -> None:
    """Add ``KEY=VALUE`` lines to the environment (how secrets reach the worker, not argv)."""
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.lstrip().startswith("#"):
            os.environ[key.strip()] = value


def prepare(inventory_path: str | None, name: str, euid: int,
            project: Path | None = None) -> Device:
    """Load the inventory, check the device may run here, import its tasks (from ``project``,
    else the inventory's folder)."""
    fleet.use(inventory_path)
    inventory = fleet.inventory
    device = inventory.devices.get(name)
    if device is None:
        raise CatDogError(f"{inventory.path}: no device {name!r}; "
                          f"devices: {', '.join(inventory.devices)}")
    check_user(device, euid)
    fleet.become_worker(name)
    os.environ.update(device.env)
    import_tasks(inventory, project)
    return device


def check_user(device: Device, euid: int) -> None:
    if euid == 0 and not device.allow_root:
        raise WorkerRefused(
            f"device {device.name}: refusing to run the worker as root; run it as an ordinary "
            f"user, or set `allow_root: true` for this device in the inventory"
        )


def declared_requirements() -> list[tuple[str, ...]]:
    """The ``requires`` of every task the worker knows."""
    from catdog import app

    return [tuple(r) for t in app.tasks.values() if (r := getattr(t, "requires", ()))]


def run(device: Device, inventory: Inventory, loglevel: str = "INFO",
        state_dir: Path | None = None, argv: list[str] | None = None) -> int:
    from celery import signals

    from catdog import app
    from workers import killswitch, metrics, reconnect
    from workers.privileges import note_root
    from workers.tasklog import on_logging_setup
    from workers.telemetry import Telemetry

    queues = worker_queues(device, declared_requirements())
    extensions = build_extensions(device, inventory, queues, state_dir or Path.cwd() / ".catdog")
    extensions.install(app)
    reconnect.install()  # a Redis lost mid-work does not end the worker
    telemetry = Telemetry(device.name, app.conf.broker_url, queues, extensions, argv)
    recorder = extensions.get(metrics.Recorder)
    killswitch.register_control_command(extensions.get(killswitch.KillSwitch))
    metrics.register_control_command(recorder)
    signals.after_setup_logger.connect(on_logging_setup, weak=False)
    note_root(device, os.geteuid())
    signals.worker_ready.connect(lambda sender, **_: telemetry.on_ready(sender), weak=False)
    # every orderly exit stops the extensions (the metrics written): a warm shutdown (SIGTERM
    # from `fab stop`, Ctrl-C) sends worker_shutdown once its running tasks have settled; a
    # cold one does not, and returns here (pool processes never do: they leave by os._exit)
    signals.worker_shutdown.connect(lambda **_: telemetry.stop(), weak=False)
    for taken in (signals.task_received, signals.task_unknown, signals.task_rejected):
        taken.connect(extensions.received, weak=False)
    try:
        return start_worker(app, device, queues, loglevel)
    finally:
        recorder.write_all()


def start_worker(app: Any, device: Device, queues: list[str], loglevel: str) -> int:
    """Build and start Celery's worker as ``celery worker`` does (the same ``app.Worker``, the pool
    class, log level and node name worked out as its options do),
    without going through Celery's command line: that loads every ``celery.commands`` plugin of
    the environment (Flower's brings tornado and more: about 3 MB of a Pi's memory where Flower
    is installed) and the other subcommands. Returns the worker's exit status."""
    from celery import concurrency
    from celery.utils.log import mlevel
    from celery.utils.nodenames import default_nodename, host_format

    worker = app.Worker(
        hostname=host_format(default_nodename(f"{device.name}@%h")), queues=queues,
        pool_cls=concurrency.get_implementation(device.pool), concurrency=device.concurrency,
        loglevel=mlevel(loglevel), without_gossip=True, without_mingle=True,
        logfile=None, pidfile=None, statedb=None, no_color=None, quiet=False)
    worker.start()
    return int(worker.exitcode or 0)


def build_extensions(device: Device, inventory: Inventory, queues: list[str],
                     state_dir: Path) -> Extensions:
    """The worker's extensions, in the order their hooks run (the heartbeat's record first on
    each beat)."""
    from workers.extension import Extensions
    from workers.facts import FactReader
    from workers.gate import Gate
    from workers.health import Health
    from workers.heartbeat import HeartbeatRecord
    from workers.killswitch import KillSwitch
    from workers.leases import Leases
    from workers.metrics import Recorder
    from workers.quarantine import Quarantine
    from workers.resources import Resources
    from workers.watchdog import Watchdog

    switch = KillSwitch()
    recorder = Recorder(device.name, state_dir / "metrics")
    facts = FactReader(device.detect)
    gate = Gate(inventory, switch, device)
    health = Health(device, switch)
    return Extensions([
        HeartbeatRecord(device.name, queues, switch, facts, health),
        health,
        switch,
        Watchdog(paused=lambda: switch.engaged),
        Leases(),
        gate,
        Resources(device, gate),  # after the gate: only what may start takes a resource
        Quarantine(device.name, device.pool),  # after the gate: counts only deliveries about to start
        recorder,
    ])
