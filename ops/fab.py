"""CatDog's ``fab`` commands: launch, stop, restart, status, logs, deploy, doctor, killswitch,
beat, flower, metrics.

A project's ``fabfile.py`` gets all of them with ``from ops.fab import *`` (``catdog init`` writes
that line). A thin shell: each command is implemented in :mod:`ops.commands` and only its exit
status is handled here. Every command takes ``--inventory PATH`` (else $CATDOG_INVENTORY, else
./catdog.yaml).

Options with a value are declared as strings (``timeout: str = "30"``) and read by
:mod:`ops.options` inside the command: invoke would cast them itself and answer a bad value with a
``ValueError`` traceback, not one line and exit status 2.
"""

from __future__ import annotations

from invoke import Context, Exit, task

__all__ = ["beat", "deploy", "doctor", "flower", "killswitch", "launch", "logs", "metrics",
           "restart", "status", "stop"]

HELP = {
    "inventory": "inventory file (default: $CATDOG_INVENTORY, else ./catdog.yaml)",
    "devices": "comma-separated device names (default: all)",
    "json": "print one JSON document on stdout",
    "timeout": "seconds to wait per device (default 30)",
    "loglevel": "the workers' log level (default INFO; DEBUG adds Celery's line per task)",
    "force": "kill workers instead of a warm shutdown",
    "lines": "how many of the last lines to show (default 50)",
    "follow": "keep streaming new lines until Ctrl-C (one device)",
    "color": "keep the worker's colour codes (default: plain text)",
    "on": "stop the whole fleet from starting tasks (needs --reason)",
    "off": "let the fleet start tasks again",
    "reason": "why the switch is on (shown to whoever looks)",
    "watch": "redraw every second until Ctrl-C",
    "port": "Flower's port (default 5555)",
    "address": "Flower's address (default 127.0.0.1; beyond loopback needs $CATDOG_FLOWER_AUTH)",
    "since": "only the last period, like 15m, 1h or 2d (default: everything kept)",
    "hard": "with --on: also terminate running tasks and re-queue them (prefork pool)",
}


def _help(*names: str) -> dict[str, str]:
    return {n: HELP[n] for n in names}


def _done(status: int) -> None:
    if status:
        raise Exit(code=status)


@task(help=_help("inventory", "devices", "json", "timeout", "loglevel"))
def launch(c: Context, inventory: str = "", devices: str = "", json: bool = False,
           timeout: str = "30", loglevel: str = "") -> None:
    """Start each device's worker in tmux; READY once it answers a ping."""
    from ops import commands

    _done(commands.launch(inventory or None, devices or None, json, timeout,
                          loglevel or None))


@task(help=_help("inventory", "devices", "json", "timeout", "force"))
def stop(c: Context, inventory: str = "", devices: str = "", json: bool = False,
         timeout: str = "30", force: bool = False) -> None:
    """Warm shutdown (running tasks finish); without --devices also stops the embedded Redis."""
    from ops import commands

    _done(commands.stop(inventory or None, devices or None, json, timeout, force))


@task(help=_help("inventory", "devices", "json", "timeout", "loglevel"))
def restart(c: Context, inventory: str = "", devices: str = "", json: bool = False,
            timeout: str = "30", loglevel: str = "") -> None:
    """Stop, then launch."""
    from ops import commands

    _done(commands.restart(inventory or None, devices or None, json, timeout,
                           loglevel or None))


@task(help=_help("inventory", "devices", "json", "watch"))
def status(c: Context, inventory: str = "", devices: str = "", json: bool = False,
           watch: bool = False) -> None:
    """A row per device: offline / idle / busy / paused, tasks, backlog, load, memory."""
    from ops import commands

    _done(commands.show_status(inventory or None, devices or None, json, watch))


@task(help=_help("inventory", "devices", "lines", "follow", "color"))
def logs(c: Context, inventory: str = "", devices: str = "", lines: str = "50",
         follow: bool = False, color: bool = False) -> None:
    """A worker's recent output, kept on its device; --follow streams it."""
    from ops import commands

    _done(commands.logs(inventory or None, devices or None, lines, follow, color))


@task(help=_help("inventory", "devices", "json"))
def deploy(c: Context, inventory: str = "", devices: str = "", json: bool = False) -> None:
    """Put this project on each SSH device: CatDog into its venv (created if missing), the task
    modules into its workdir; idempotent."""
    from ops import commands

    _done(commands.deploy(inventory or None, devices or None, json))


@task(help=_help("inventory", "devices", "json"))
def doctor(c: Context, inventory: str = "", devices: str = "", json: bool = False) -> None:
    """Check each device (SSH, host key, Python, CatDog, tmux, broker, clock) and say the fixes."""
    from ops import commands

    _done(commands.doctor(inventory or None, devices or None, json))


@task(help=_help("inventory", "on", "off", "reason", "hard", "json"))
def killswitch(c: Context, inventory: str = "", on: bool = False, off: bool = False,
               reason: str = "", hard: bool = False, json: bool = False) -> None:
    """Kill switch: --on --reason TEXT pauses the whole fleet, --off resumes, no flag shows it."""
    from ops import commands

    _done(commands.killswitch(inventory or None, on, off, reason, hard, json))


@task(help=_help("inventory", "json"))
def beat(c: Context, inventory: str = "", json: bool = False) -> None:
    """Start the scheduler (schedule:) in tmux session catdog-beat; one is active fleet-wide."""
    from ops import commands

    _done(commands.beat(inventory or None, json))


@task(help=_help("inventory", "devices", "since", "json"))
def metrics(c: Context, inventory: str = "", devices: str = "", since: str = "",
            json: bool = False) -> None:
    """Gather every device's task metrics (InfluxDB line protocol) into metrics/."""
    from ops import commands

    _done(commands.metrics(inventory or None, devices or None, since, json))


@task(help=_help("inventory", "port", "address", "json"))
def flower(c: Context, inventory: str = "", port: str = "5555", address: str = "127.0.0.1",
           json: bool = False) -> None:
    """Start Flower for the fleet in tmux session catdog-flower; prints its URL."""
    from ops import commands

    _done(commands.flower(inventory or None, port, address, json))
