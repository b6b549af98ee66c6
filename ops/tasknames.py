"""The schedule check: every ``schedule:`` entry names a task the workers will have.

Which tasks those are is found the way a worker finds them (:mod:`catdog.taskmodules`: CatDog's
built-in tasks, the project's own ``tasks`` and ``imports:``), in a fresh Python process started in
the project's folder, so the coordinator's own imports neither hide nor add a name, and a task
module's import-time side effects stay out of the command. A misspelled task is refused before
anything starts, with the nearest existing name; a task module that fails to import is named
with the error, not shown as a traceback.
"""

from __future__ import annotations

import difflib
import json
import subprocess
import sys
from collections.abc import Iterable

from catdog.errors import InventoryError, Problem, TaskModuleError
from catdog.inventory import Inventory

CHECK_TIMEOUT_S = 60.0


def registered_tasks(inventory: Inventory) -> set[str]:
    """The task names a worker of ``inventory`` will have registered."""
    try:
        done = subprocess.run([sys.executable, "-m", "catdog.taskmodules", "--inventory",
                               str(inventory.path)], cwd=inventory.root, capture_output=True,
                              text=True, timeout=CHECK_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise TaskModuleError(f"importing the task modules of {inventory.path} took more than "
                              f"{CHECK_TIMEOUT_S:g}s (does one of them wait at import?)") from exc
    try:
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise TaskModuleError(f"importing the task modules of {inventory.path} failed "
                              f"(exit status {done.returncode}): {tail[0]}") from None
    if "error" in found:
        raise TaskModuleError(found["error"])
    return set(found["tasks"])


def unknown_tasks(inventory: Inventory, registered: Iterable[str]) -> list[Problem]:
    """A problem for each schedule entry whose task is not among ``registered``."""
    known = sorted(set(registered))
    problems = []
    for entry in inventory.schedule.values():
        if entry.task in known:
            continue
        near = difflib.get_close_matches(entry.task, known, n=1)
        hint = f"did you mean {near[0]!r}?" if near else "no registered task has a similar name;"
        problems.append(Problem(
            str(inventory.path), entry.line, f"schedule.{entry.name}.task",
            f"no worker has a task {entry.task!r}; {hint} (workers register the tasks of "
            f"catdog.tasks, the project's tasks.py or tasks/, and `imports:`)"))
    return problems


def check_schedule(inventory: Inventory) -> None:
    """Refuse a schedule whose tasks no worker will have (nothing to check without one)."""
    if not inventory.schedule:
        return
    problems = unknown_tasks(inventory, registered_tasks(inventory))
    if problems:
        raise InventoryError(problems)
