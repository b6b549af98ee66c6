"""CatDog's ``fab`` commands: launch, stop, restart, status, logs, deploy, rollback, doctor,
killswitch, beat, flower, metrics, quarantine, enable, disable, facts.

A project's ``fabfile.py`` gets all of them with ``from ops.fab import *`` (``catdog init`` writes
that line). Each is an invoke task made from its row of the command table,
:data:`ops.commands.COMMANDS` (its help, options and defaults are spelled there, once). Every
command takes ``--inventory PATH`` (else $CATDOG_INVENTORY, else ./catdog.yaml).
"""

from __future__ import annotations

import inspect
from typing import Any

from invoke import Context, Exit, Task

from ops import commands
from ops.commands import Command

__all__ = ["beat", "deploy", "disable", "doctor", "enable", "facts", "flower", "killswitch",
           "launch", "logs", "metrics", "quarantine", "restart", "rollback", "status", "stop"]


def task(command: Command) -> Task[Any]:
    """The invoke task of ``command``: its options are the body's keyword parameters, with the
    table's defaults (strings for value options: see :class:`ops.commands.Option`)."""

    def body(c: Context, **given: Any) -> None:
        status = command.run(given)
        if status:
            raise Exit(code=status)

    context = inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    body.__signature__ = inspect.Signature([context, *(  # type: ignore[attr-defined]
        inspect.Parameter(o.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=o.default)
        for o in command.options)])
    body.__name__ = body.__qualname__ = command.name
    body.__doc__ = command.doc
    return Task(body, name=command.name, help={o.name: o.help for o in command.options})


beat = task(commands.beat)
deploy = task(commands.deploy)
disable = task(commands.disable)
doctor = task(commands.doctor)
enable = task(commands.enable)
facts = task(commands.facts)
flower = task(commands.flower)
killswitch = task(commands.killswitch)
launch = task(commands.launch)
logs = task(commands.logs)
metrics = task(commands.metrics)
quarantine = task(commands.quarantine)
restart = task(commands.restart)
rollback = task(commands.rollback)
status = task(commands.status)
stop = task(commands.stop)
