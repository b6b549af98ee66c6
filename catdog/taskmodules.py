"""Which modules define a fleet's tasks, imported the same way by every worker, by beat and by the
coordinator's schedule check.

In this order: CatDog's own :mod:`catdog.tasks` (every module of it), the project's own ``tasks.py``
or ``tasks/`` package beside the inventory (as in Celery's tutorials), then each module of the
inventory's ``imports:``. The inventory's folder goes first on ``sys.path``, so a project's
``tasks`` is the one found there, never a ``tasks`` of CatDog's (the wheel has none).

``python -m catdog.taskmodules --inventory PATH [--project DIR] [--env-file FILE]`` imports them
in a fresh process, as a worker would, and prints one JSON document: the registered task names,
or the module that failed to import and why (what :func:`ops.tasknames.registered_tasks` reads,
and what ``fab deploy`` checks a release with before switching to it). Importing this module
imports nothing else.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from catdog.errors import TaskModuleError

if TYPE_CHECKING:
    from catdog.inventory import Inventory

BUILTIN = "catdog.tasks"
PROJECT = "tasks"
#: the broker URL the check process configures with: a name only, nothing connects to it
CHECK_BROKER = "redis://127.0.0.1:6379/0"


def project_task_modules(root: Path) -> list[str]:
    """The project's own task modules: ``tasks.py`` beside the inventory, or every module of a
    ``tasks/`` package there; none when the project has neither."""
    if (root / f"{PROJECT}.py").is_file():
        return [PROJECT]
    package = root / PROJECT
    if not (package / "__init__.py").is_file():
        return []
    return [PROJECT] + [m.name for m in pkgutil.walk_packages([str(package)], f"{PROJECT}.")]


def builtin_task_modules() -> list[str]:
    import catdog.tasks

    return [BUILTIN] + [m.name for m in pkgutil.walk_packages(catdog.tasks.__path__, f"{BUILTIN}.")]


def import_tasks(inventory: Inventory, project: Path | None = None) -> list[str]:
    """Import CatDog's built-in tasks, the project's own ``tasks`` and each module of
    ``imports:``; the names imported. ``project`` is the project folder when it is not the
    inventory's (an SSH device's worker reads a copy of the inventory, in ``<workdir>/.catdog/run``,
    and ``fab deploy`` puts the project's task modules in ``workdir``). A module that fails raises
    :class:`TaskModuleError` naming it, the file and line where it failed, and the error."""
    folder = project or inventory.root
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    names = builtin_task_modules() + project_task_modules(folder) + list(inventory.imports)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise TaskModuleError(import_failure(name, exc, inventory, folder)) from exc
    return names


def import_failure(name: str, exc: BaseException, inventory: Inventory,
                   project: Path | None = None) -> str:
    """One line: which task module failed, where, and why."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if "importlib" not in f.filename] or frames
    where = f" at {own[-1].filename}:{own[-1].lineno}" if own else ""
    source = ("from `imports:` of " + str(inventory.path) if name in inventory.imports
              else f"(a task module of {project or inventory.root})")
    return (f"task module {name!r} {source} failed to import{where}: "
            f"{type(exc).__name__}: {exc}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m catdog.taskmodules", description=__doc__)
    parser.add_argument("--inventory", required=True)
    parser.add_argument("--project", help="the project folder (default: the inventory's)")
    parser.add_argument("--env-file", help="KEY=VALUE lines the inventory's ${VAR}s read")
    args = parser.parse_args(argv)
    from catdog.fleet import fleet
    from catdog.inventory import BROKER_ENV

    if args.env_file:
        for line in Path(args.env_file).read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip():
                os.environ[key.strip()] = value
    os.environ[BROKER_ENV] = CHECK_BROKER  # binding tasks reads the settings; nothing connects
    fleet.use(args.inventory)
    try:
        import_tasks(fleet.inventory, Path(args.project) if args.project else None)
    except TaskModuleError as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    from catdog import app

    print(json.dumps({"tasks": sorted(app.tasks)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
