"""What ``fab deploy`` ships: a wheel of this CatDog checkout, and a fingerprint of its sources.

The fingerprint is a hash of the files that go into the wheel, so it is cheap to compute and the
same for the same sources (wheels themselves are not byte-reproducible). A device records the
fingerprint it was deployed with; ``fab deploy`` skips devices already on it and ``fab doctor``
reports the ones that are behind.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from pathlib import Path

from catdog.errors import BuildError

PACKAGES = ("catdog", "workers", "ops")
MODULES = ("pyproject.toml",)


def project_root() -> Path:
    """The source checkout CatDog runs from; deploy builds from it."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise BuildError(
            f"fab deploy builds CatDog from its source checkout, and {root} is not one "
            f"(no pyproject.toml); run fab from a clone of the project")
    return root


def source_files(root: Path) -> list[Path]:
    files = [root / m for m in MODULES if (root / m).is_file()]
    for package in PACKAGES:
        files += [p for p in (root / package).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".typed")]
    return sorted(files)


def source_fingerprint(root: Path) -> str:
    """A hash of every file the wheel is built from (path and content)."""
    digest = hashlib.sha256()
    for path in source_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


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
                           f"(is the coordinator extra installed? pip install -e '.[coordinator]'):"
                           f"\n{tail}")
    return wheels[-1]


class WheelOnce:
    """Builds the wheel the first time a device needs it, once for all devices (thread-safe)."""

    def __init__(self, root: Path, dest: Path) -> None:
        self.root = root
        self.dest = dest
        self._lock = threading.Lock()
        self._wheel: Path | None = None

    def get(self) -> Path:
        with self._lock:
            if self._wheel is None:
                self._wheel = build_wheel(self.root, self.dest)
            return self._wheel
