"""What ``fab deploy`` ships of CatDog: a wheel, and a fingerprint of the files it is built from.

:func:`catdog_to_ship` is the one entry point. From CatDog's source checkout (pyproject.toml beside
the packages) the wheel is built from the sources, as a developer expects. From an installed
CatDog (``pip install 'catdog[coordinator]'`` in a project of one's own) it is rebuilt from the
installed package files: ``catdog``, ``workers`` and ``ops`` as the installed distribution lists
them, copied into a temporary source tree with a generated ``pyproject.toml`` of the same name,
version, entry points and device-side dependencies (``Requires-Dist`` without the extras). Both are
built offline by the coordinator's own setuptools (the coordinator extra has it).

The fingerprint is a hash of those files (path and content), so it is cheap to compute and the
same for the same sources (wheels themselves are not byte-reproducible). A device records the
fingerprint it was deployed with; ``fab deploy`` skips devices already on it and ``fab doctor``
reports the ones that are behind.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from catdog.errors import BuildError

DIST = "catdog"
PACKAGES = ("catdog", "workers", "ops")
MODULES = ("pyproject.toml",)
_EXTRA_RE = re.compile(r"\bextra\s*==")


@dataclass(frozen=True)
class Shipment:
    """The CatDog that deploy ships: the files its wheel is built from, and how to build it."""

    where: Path                       # the checkout, or the site-packages folder
    files: tuple[Path, ...]           # every file the wheel is built from, sorted
    builder: Callable[[Path], Path]   # dest folder -> the built wheel
    origin: str                       # "checkout" or "installed", for messages

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.where, self.files)

    def build(self, dest: Path) -> Path:
        return self.builder(dest)


def catdog_to_ship() -> Shipment:
    """The running CatDog: its source checkout when there is one, else its installed files."""
    root = checkout_root()
    if root is not None:
        return from_checkout(root)
    return from_installed()


def checkout_root() -> Path | None:
    """CatDog's source checkout, when this CatDog runs from one (not from site-packages)."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and re.search(r'(?m)^name\s*=\s*"catdog"', pyproject.read_text()):
        return root
    return None


def from_checkout(root: Path) -> Shipment:
    return Shipment(root, tuple(source_files(root)), lambda dest: build_wheel(root, dest),
                    "checkout")


def from_installed(dist_name: str = DIST) -> Shipment:
    """The installed CatDog's package files (as its distribution lists them)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(dist_name)
    except PackageNotFoundError as exc:
        raise BuildError(f"{dist_name} is neither a source checkout nor installed; install it "
                         f"(pip install 'catdog[coordinator]') or run fab from a clone") from exc
    site = Path(str(dist.locate_file(""))).resolve()
    files = sorted(site / str(f) for f in dist.files or () if shippable(str(f)))
    missing = [f for f in files if not f.is_file()]
    if not files or missing:
        raise BuildError(f"the installed {dist_name} in {site} is incomplete "
                         f"({'missing ' + str(missing[0]) if missing else 'no package files'}); "
                         f"reinstall it: pip install --force-reinstall 'catdog[coordinator]'")
    project = generated_pyproject(dist.metadata["Name"], dist.version,
                                  (dist.metadata.get_all("Requires-Python") or [None])[0],
                                  device_requirements(dist.requires or ()),
                                  {e.name: e.value for e in dist.entry_points
                                   if e.group == "console_scripts"},
                                  [f.relative_to(site) for f in files])
    return Shipment(site, tuple(files),
                    lambda dest: build_from_files(site, files, project, dest), "installed")


def shippable(relative: str) -> bool:
    """A file of the installed distribution that belongs in the wheel: under one of
    :data:`PACKAGES`, and not Python's byte-code cache."""
    parts = Path(relative).parts
    return (len(parts) > 1 and parts[0] in PACKAGES and "__pycache__" not in parts
            and not relative.endswith((".pyc", ".pyo")))


def device_requirements(requires: Iterable[str]) -> list[str]:
    """The device side: ``Requires-Dist`` lines that belong to no extra."""
    return [r for r in requires if not _EXTRA_RE.search(r.partition(";")[2])]


def generated_pyproject(name: str, version: str, requires_python: str | None,
                        dependencies: list[str], scripts: dict[str, str],
                        files: list[Path]) -> str:
    """A minimal pyproject.toml that rebuilds the installed distribution from its files."""
    packages = sorted({".".join(f.parent.parts) for f in files})
    quoted = json.dumps  # a JSON string is a TOML basic string
    lines = ["[build-system]", 'requires = ["setuptools>=70.1"]',
             'build-backend = "setuptools.build_meta"', "", "[project]",
             f"name = {quoted(name)}", f"version = {quoted(version)}",
             f"dependencies = [{', '.join(quoted(d) for d in dependencies)}]"]
    if requires_python:
        lines.append(f"requires-python = {quoted(requires_python)}")
    if scripts:
        lines += ["", "[project.scripts]", *(f"{quoted(k)} = {quoted(v)}" for k, v in scripts.items())]
    lines += ["", "[tool.setuptools]", f"packages = [{', '.join(quoted(p) for p in packages)}]",
              "include-package-data = false", "", "[tool.setuptools.package-data]",
              '"*" = ["*"]', ""]
    return "\n".join(lines)


def source_files(root: Path) -> list[Path]:
    files = [root / m for m in MODULES if (root / m).is_file()]
    for package in PACKAGES:
        files += [p for p in (root / package).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".typed")]
    return sorted(files)


def fingerprint(root: Path, files: Iterable[Path]) -> str:
    """A hash of ``files`` (each one's path under ``root``, and its content)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def source_fingerprint(root: Path) -> str:
    """A hash of every file the checkout's wheel is built from (path and content)."""
    return fingerprint(root, source_files(root))


def build_from_files(site: Path, files: list[Path], pyproject: str, dest: Path) -> Path:
    """Build a wheel of ``files`` (under ``site``) with the generated ``pyproject``."""
    with tempfile.TemporaryDirectory(prefix="catdog-wheel-") as tree:
        for path in files:
            target = Path(tree) / path.relative_to(site)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        (Path(tree) / "pyproject.toml").write_text(pyproject)
        return build_wheel(Path(tree), dest)


def build_wheel(root: Path, dest: Path) -> Path:
    """Build CatDog's wheel into ``dest`` (no network: the build backend is the coordinator's)."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("catdog-*.whl"):
        old.unlink()
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--quiet", "--wheel-dir", str(dest), str(root)],
        capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("catdog-*.whl"))
    if done.returncode != 0 or not wheels:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise BuildError(f"building CatDog's wheel from {root} failed "
                         f"(is the coordinator extra installed? pip install 'catdog[coordinator]'):"
                         f"\n{tail}")
    return wheels[-1]


class WheelOnce:
    """Builds the wheel the first time a device needs it, once for all devices (thread-safe)."""

    def __init__(self, shipment: Shipment, dest: Path) -> None:
        self.shipment = shipment
        self.dest = dest
        self._lock = threading.Lock()
        self._wheel: Path | None = None

    def get(self) -> Path:
        with self._lock:
            if self._wheel is None:
                self._wheel = self.shipment.build(self.dest)
            return self._wheel
