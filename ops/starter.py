"""The starter project ``catdog init`` writes: an inventory, a fabfile and a task module.

Three files, none of them overwritten: when any already exists nothing at all is written. The task
module is ``mytasks.py``, named in the inventory's ``imports:``, not ``tasks.py``: ``tasks`` is the
name every Celery tutorial (and many a library) uses, so ``import tasks`` from a Python session
started anywhere else may find another one; ``mytasks`` is plainly the project's own, and its
``imports:`` line shows where more modules go. (A ``tasks.py`` or ``tasks/`` beside the inventory
works too: workers import it without being told.) Standard library only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TASK_MODULE = "mytasks"
DEVICE = "here"

INVENTORY = f"""\
# CatDog's inventory: the devices of this fleet and what runs on them.
# Every `fab` command reads ./catdog.yaml (or --inventory PATH, or $CATDOG_INVENTORY).

# No `broker:`: CatDog runs its own Redis (the embedded Redis) in .catdog/ beside this file.
# broker: redis://:${{CATDOG_REDIS_PASSWORD}}@192.168.1.10:6379/0

# Modules every worker imports, besides CatDog's built-in tasks (catdog.tasks) and a
# tasks.py or tasks/ package of this folder, if there is one.
imports: [{TASK_MODULE}]

devices:
  {DEVICE}:
    host: local              # this machine itself, no SSH; add SSH devices with host: ADDRESS
    capabilities: [demo]     # what tasks may ask for: @app.task(requires=("demo",))
    concurrency: 1
    # Workers refuse to run as root. Running as root (a container, CI)? Uncomment this:
    # allow_root: true

# Tasks that run on a timer (started by `fab beat`):
# schedule:
#   say-hello:
#     task: {TASK_MODULE}.hello
#     every: 60s
#     on: cap:demo
#     kwargs: {{name: beat}}
"""

FABFILE = '''\
"""`fab` gets every CatDog command from this line (see `fab --list`); add tasks of your own below."""

from ops.fab import *  # noqa: F403
'''

TASKS = f'''\
"""This project's tasks: every worker imports this module (`imports:` in catdog.yaml).

Call them from Python in this folder: `from {TASK_MODULE} import hello; hello.delay("you").get(timeout=10)`.
CatDog's built-in tasks are in catdog.tasks (`from catdog.tasks import run_on`).
"""

import platform

from catdog import app


@app.task
def hello(name: str = "world") -> str:
    """Greet from the device that runs it."""
    return f"hello {{name}} from {{platform.node()}}"


@app.task(requires=("demo",))
def add(x: float, y: float) -> float:
    """Runs only on a device with the `demo` capability."""
    return x + y
'''

FILES = {"catdog.yaml": INVENTORY, "fabfile.py": FABFILE, f"{TASK_MODULE}.py": TASKS}


class StarterExists(FileExistsError):
    """Some of the starter's files are already there (nothing was written).

    Not a :class:`catdog.CatDogError`: importing :mod:`catdog` loads Celery, and ``catdog init``
    needs only the standard library."""

    def __init__(self, existing: list[Path]) -> None:
        self.existing = existing
        names = ", ".join(str(p) for p in existing)
        super().__init__(f"{names} already exist{'s' if len(existing) == 1 else ''}; "
                         f"nothing written (catdog init never overwrites a file)")


@dataclass(frozen=True)
class Written:
    folder: Path
    files: list[Path]


def write_starter(folder: Path) -> Written:
    """Write the starter's files into ``folder`` (created if missing); refuse to overwrite any."""
    targets = [folder / name for name in FILES]
    existing = [p for p in targets if p.exists() or p.is_symlink()]
    if existing:
        raise StarterExists(existing)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in FILES.items():
        path = folder / name
        with open(path, "x", encoding="utf-8") as out:  # "x": never replaces a file
            out.write(text)
        written.append(path)
    return Written(folder, written)


def next_steps(folder: Path, euid: int | None = None) -> str:
    """What to run next, shown after the files are written."""
    euid = os.geteuid() if euid is None else euid
    where = "" if folder.resolve() == Path.cwd().resolve() else f" (after cd {folder})"
    lines = [
        f"next{where}:",
        f"  fab launch      # start the worker of device '{DEVICE}' (and the embedded Redis)",
        f"  python -c 'from {TASK_MODULE} import hello; print(hello.delay().get(timeout=10))'",
        "  fab stop        # stop the worker and the embedded Redis",
    ]
    if euid == 0:
        lines.append("note: you are root, and workers refuse to run as root: uncomment "
                     "`allow_root: true` in catdog.yaml, or run as an ordinary user")
    return "\n".join(lines)
