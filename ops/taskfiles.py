"""The project's own task code that ``fab deploy`` copies into an SSH device's ``workdir``.

The files of the modules a worker imports from the project folder (:mod:`catdog.taskmodules`):
``tasks.py`` or the whole ``tasks/`` package, and each module of ``imports:`` that lives in the
project folder, a package whole (so ``imports: [mylab.tasks]`` brings ``mylab/``'s other modules
too). Modules of ``imports:`` that are not in the folder are installed libraries: not copied.
Byte-code caches and hidden files are left out.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from catdog.inventory import Inventory
from catdog.taskmodules import PROJECT

#: on the device, in ``<workdir>/.catdog/``: what deploy copied there, ``{path: sha256}``
RECORD = "deployed-tasks.json"


def task_files(inventory: Inventory) -> dict[str, Path]:
    """``{path under the project folder: file}`` of every task module file to ship, sorted."""
    root = inventory.root
    tops = [PROJECT, *(name.split(".")[0] for name in inventory.imports)]
    found: dict[str, Path] = {}
    for top in dict.fromkeys(tops):
        package, module = root / top, root / f"{top}.py"
        if package.is_dir():
            found.update((p.relative_to(root).as_posix(), p) for p in package.rglob("*")
                         if p.is_file() and shipped(p.relative_to(root)))
        elif module.is_file():
            found[module.name] = module
    return dict(sorted(found.items()))


def shipped(relative: Path) -> bool:
    return (not any(part.startswith(".") or part == "__pycache__" for part in relative.parts)
            and relative.suffix not in (".pyc", ".pyo"))


def hashes(files: dict[str, Path]) -> dict[str, str]:
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}


def inside(name: object) -> bool:
    """A record's path that stays inside the workdir (the only ones deploy removes)."""
    return (isinstance(name, str) and bool(name) and not name.startswith("/")
            and ".." not in name.split("/"))
