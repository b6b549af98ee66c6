"""The ``fab`` commands as one table: each :class:`Command` names its :mod:`ops.api` function, its
options (each spelled once: name, how its value is read, default, help) and its renderer in
:mod:`ops.render`. :mod:`ops.fab` makes the invoke tasks from the table; from Python,
``commands.launch("catdog.yaml", "cam", json=True)`` runs a command as ``fab`` does and returns
its exit status.

A command reads its option values first (:mod:`ops.options`: a bad one exits 2 before anything
starts), calls its API function, and shows what it returned. Errors become exit statuses at one
edge, :func:`catdog.edge.run` (also the workers', the scheduler's and Flower's): a CatDogError is
one line on stderr and its status; a broker that does not answer is one line saying which and what
to check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ops import options

Reader = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Option:
    """One option: ``--name`` for ``fab``, ``name=`` from Python.

    A value option's ``fab`` default is a string (``"30"``) and ``read`` reads it: invoke would
    cast it itself and answer a bad value with a ``ValueError`` traceback, not one line and exit
    status 2. ``keyword``: the API function's name for it (None: it is the renderer's, like
    ``--json``)."""

    name: str
    help: str
    default: str | bool = ""
    read: Reader | None = None
    keyword: str | None = ""

    def value(self, given: Any) -> Any:
        return self.read(f"--{self.name.replace('_', '-')}", given) if self.read else given

    @property
    def api_keyword(self) -> str | None:
        return self.name if self.keyword == "" else self.keyword


@dataclass(frozen=True)
class Command:
    """One ``fab`` command: ``doc`` is its help, ``api`` and ``render`` name the functions of
    :mod:`ops.api` and :mod:`ops.render` (imported only when it runs: ``fab --list`` stays quick);
    ``progress``: the API function gets an ``on_event`` that prints progress on stderr; ``check``
    refuses a combination of option values before anything starts."""

    name: str
    doc: str
    api: str
    options: tuple[Option, ...]
    render: str
    progress: bool = False
    check: Callable[[dict[str, Any]], None] | None = None

    def __call__(self, *args: Any, **given: Any) -> int:
        """Run it from Python: options by position (in the table's order) or by name (``as_json``
        is accepted for ``json``); returns the exit status."""
        if "as_json" in given:
            given["json"] = given.pop("as_json")
        given.update(zip((o.name for o in self.options), args, strict=False))
        return self.run(given)

    def run(self, given: dict[str, Any]) -> int:
        """The exit status of the command with the option values ``given`` (missing: defaults)."""
        from catdog import edge

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        return edge.run("catdog", lambda: self._run(given))

    def _run(self, given: dict[str, Any]) -> int:
        from ops import api, render

        values = {o.name: o.value(given.get(o.name, o.default)) for o in self.options}
        if self.check:
            self.check(values)
        kwargs = {o.api_keyword: values[o.name] for o in self.options if o.api_keyword}
        if self.progress:
            kwargs["on_event"] = render.progress()
        function = getattr(api, self.api)

        def call() -> Any:
            return function(**kwargs)

        shown: int = getattr(render, self.render)(call(), render.Shown(values, call))
        return shown


def _refuse_watched_json(values: dict[str, Any]) -> None:
    from ops.render import refuse_watched_json

    refuse_watched_json(values)


INVENTORY = Option("inventory", "inventory file (default: $CATDOG_INVENTORY, else ./catdog.yaml)",
                   read=options.text)
DEVICES = Option("devices", "comma-separated device names (default: all)", read=options.devices)
JSON = Option("json", "print one JSON document on stdout", False, keyword=None)
TIMEOUT = Option("timeout", "seconds to wait per device (default 30)", "30", options.seconds)
LOGLEVEL = Option("loglevel", "the workers' log level (default INFO; DEBUG adds Celery's line per "
                              "task)", read=options.text)

launch = Command(
    "launch", "Start each device's worker in tmux; READY once it answers a ping.", "launch",
    (INVENTORY, DEVICES, JSON, TIMEOUT, LOGLEVEL), "launched", progress=True)
stop = Command(
    "stop", "Warm shutdown (running tasks finish); without --devices also stops the embedded "
            "Redis.", "stop",
    (INVENTORY, DEVICES, JSON, TIMEOUT,
     Option("force", "kill workers instead of a warm shutdown", False)), "stopped", progress=True)
BATCH = Option("batch", "devices restarted at once, each batch READY before the next (default 1)",
               "1", options.count)
restart = Command(
    "restart", "Stop, then launch; --rolling: warm restarts in batches, each READY before the "
               "next.", "restart_fleet",
    (INVENTORY, DEVICES, JSON, TIMEOUT, LOGLEVEL,
     Option("rolling", "restart in batches (--batch), never every consumer of a queue at once",
            False), BATCH), "restarted", progress=True)
status = Command(
    "status", "A row per device: offline / idle / busy / paused, tasks, backlog, load, memory.",
    "status",
    (INVENTORY, DEVICES, JSON,
     Option("watch", "redraw every second until Ctrl-C", False, keyword=None)),
    "status", check=_refuse_watched_json)
facts = Command(
    "facts", "A row per device: the facts its worker reports (arch, cores, memory, temperature, "
             "throttling, board, OS, Python, detected), its health and the resources held.",
    "status", (INVENTORY, DEVICES, JSON), "facts")
logs = Command(
    "logs", "A worker's recent output, kept on its device; --follow streams it.", "logs",
    (INVENTORY, DEVICES,
     Option("lines", "how many of the last lines to show (default 50)", "50", options.count),
     Option("follow", "keep streaming new lines until Ctrl-C (one device)", False),
     Option("color", "keep the worker's colour codes (default: plain text)", False)), "logs")
deploy = Command(
    "deploy", "Put this project on each SSH device as a release of its own (CatDog and the task "
              "modules;\n    the venv's packages shared), switched to once it imports; "
              "idempotent. --restart: a rolling deploy.", "deploy_fleet",
    (INVENTORY, DEVICES, JSON,
     Option("restart", "restart the workers on the new release, warm, in batches", False),
     BATCH,
     Option("canary", "with --restart: first this many devices, checked and watched; a failure "
                      "sends them back and touches no other (default 0)", "0",
            options.count_or_zero),
     Option("check", "the canaries' check task (default the built-in tasks.check)",
            read=options.text),
     Option("check_timeout", "seconds a canary's check may take (default 30)", "30",
            options.seconds),
     Option("watch", "how long each canary must stay up after its check (default 60s; 0: not "
                     "watched)", "60s", options.period_or_zero, keyword="watch_s"),
     Option("keep", "releases kept on each device, the current one included (default 2)", "2",
            options.count),
     TIMEOUT, LOGLEVEL), "rolled", progress=True)
rollback = Command(
    "rollback", "Send each SSH device back to its release before the current one, restarted "
                "warm in batches.", "rollback",
    (INVENTORY, DEVICES, JSON, BATCH, TIMEOUT, LOGLEVEL), "rolled", progress=True)
doctor = Command(
    "doctor", "Check each device (SSH, host key, Python, CatDog, tmux, broker, clock) and say the "
              "fixes.", "doctor", (INVENTORY, DEVICES, JSON), "doctor", progress=True)
killswitch = Command(
    "killswitch", "Kill switch: --on --reason TEXT pauses the whole fleet, --off resumes, no flag "
                  "shows it.", "killswitch",
    (INVENTORY,
     Option("on", "stop the whole fleet from starting tasks (needs --reason)", False),
     Option("off", "let the fleet start tasks again", False),
     Option("reason", "why the switch is on (shown to whoever looks)"),
     Option("hard", "with --on: also terminate running tasks and re-queue them (prefork pool)",
            False),
     JSON), "killswitch")
beat = Command(
    "beat", "Start the scheduler (schedule:) in tmux session catdog-beat; one is active "
            "fleet-wide.", "beat", (INVENTORY, JSON), "beat")
metrics = Command(
    "metrics", "Gather every device's task metrics (InfluxDB line protocol) into metrics/.",
    "metrics",
    (INVENTORY, DEVICES,
     Option("since", "only the last period, like 15m, 1h or 2d (default: everything kept)",
            read=options.duration, keyword="since_s"),
     JSON), "metrics", progress=True)
flower = Command(
    "flower", "Start Flower for the fleet in tmux session catdog-flower; prints its URL.", "flower",
    (INVENTORY,
     Option("port", "Flower's port (default 5555)", "5555", options.port),
     Option("address", "Flower's address (default 127.0.0.1; beyond loopback needs "
                       "$CATDOG_FLOWER_AUTH)", "127.0.0.1", options.address),
     JSON), "flower")

quarantine = Command(
    "quarantine", "Messages held after max_deliveries worker losses; --requeue ID runs one again, "
                  "--drop ID forgets it.", "quarantine",
    (INVENTORY,
     Option("requeue", "send the held message ID to its queue again (its count starts anew)",
            read=options.text),
     Option("drop", "forget the held message ID for good", read=options.text),
     JSON), "quarantine")

COORDINATOR = Option("coordinator", "units on this coordinator (embedded Redis, beat, Flower) "
                                    "instead of the devices", False)
SERVICES = Option("services", "with --coordinator: which of redis,beat,flower (default: the "
                              "embedded Redis if used, beat if schedule: is set)", read=options.text)
enable = Command(
    "enable", "Install on each device a systemd unit that starts its worker at boot and when it "
              "dies.", "enable", (INVENTORY, DEVICES, JSON, TIMEOUT, COORDINATOR, SERVICES),
    "autostarted", progress=True)
disable = Command(
    "disable", "Remove each device's systemd unit (the worker keeps running until fab stop).",
    "disable", (INVENTORY, DEVICES, JSON, COORDINATOR, SERVICES), "autostarted", progress=True)

#: every command, as ``fab --list`` shows them
COMMANDS = (beat, deploy, disable, doctor, enable, facts, flower, killswitch, launch, logs,
            metrics, quarantine, restart, rollback, status, stop)
