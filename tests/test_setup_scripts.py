"""The README's two commands check the machine before any work: the real ``scripts/demo`` and
``scripts/test`` (copied into a fresh folder, no ``.venv``) on a PATH that lacks their programs."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ROOT

BASICS = ("bash", "dirname", "mktemp", "tail", "rm")  # what bash and scripts/setup use
SSHD = [] if Path("/usr/sbin/sshd").exists() else ["openssh-server"]  # looked for by its path
# Debian's python3 (nobody may run it), else this interpreter itself (not a pyenv shim)
PYTHON = Path("/usr/bin/python3") if Path("/usr/bin/python3").exists() else Path(sys.executable).resolve()
TEST_PACKAGES = ["tmux", *SSHD, "openssh-client", "iproute2", "chromium", "procps"]
TEST_LACKS = ", ".join(["tmux", *(["/usr/sbin/sshd"] if SSHD else []), "ssh-keygen", "ip",
                        "chromium", "ps"])


@pytest.fixture
def bare() -> Iterator[Path]:
    """A checkout of the scripts alone, readable by ``nobody`` (pytest's tmp_path is not)."""
    root = Path(tempfile.mkdtemp(prefix="catdog-bare-"))
    try:
        root.chmod(0o755)
        (root / "scripts").mkdir()
        for name in ("setup", "demo", "test"):
            shutil.copy2(ROOT / "scripts" / name, root / "scripts" / name)
        (root / "bin").mkdir()
        for name in BASICS:
            found = shutil.which(name)
            assert found, f"{name} is needed to run the scripts"
            (root / "bin" / name).symlink_to(found)
        (root / "bin" / "python3").symlink_to(PYTHON)
        venv = subprocess.run([PYTHON, "-c", "import ensurepip, venv"], check=False)
        assert venv.returncode == 0, f"{PYTHON} lacks venv (python3-venv), which setup checks too"
        yield root
    finally:
        shutil.rmtree(root)


def _run(root: Path, script: str, *, as_nobody: bool) -> subprocess.CompletedProcess[str]:
    """Runs ``scripts/<script>`` on the bare PATH; ``as_nobody``: as a real non-root user."""
    nobody = [shutil.which("setpriv") or "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    prefix = nobody if as_nobody and os.geteuid() == 0 else []
    return subprocess.run([*prefix, str(root / "scripts" / script)], cwd=root, capture_output=True,
                          text=True, timeout=60, check=False,
                          env={"PATH": str(root / "bin"), "HOME": str(root)})


def _fake_apt_get(root: Path) -> Path:
    """An apt-get that records its arguments and installs nothing (so no package changes here)."""
    calls = root / "apt-calls"
    fake = root / "bin" / "apt-get"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return calls


@pytest.mark.parametrize(("script", "packages", "lacking"), [
    ("demo", ["tmux"], "tmux"),
    ("test", TEST_PACKAGES, TEST_LACKS),
])
def test_not_root_stops_at_once_with_the_one_install_command(
        bare: Path, script: str, packages: list[str], lacking: str) -> None:
    calls = _fake_apt_get(bare)
    done = _run(bare, script, as_nobody=True)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == (f"catdog: this machine lacks {lacking}; install them, then run this "
                           f"again:\n  sudo apt-get install -y {' '.join(packages)}\n")
    assert done.stdout == ""
    assert not (bare / ".venv").exists() and not calls.exists()


def test_without_apt_it_names_the_programs(bare: Path) -> None:
    done = _run(bare, "demo", as_nobody=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == "catdog: this machine lacks tmux; install them, then run this again\n"
    assert not (bare / ".venv").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the apt path is taken as root only")
def test_as_root_it_installs_through_apt_then_checks_again(bare: Path) -> None:
    calls = _fake_apt_get(bare)
    done = _run(bare, "test", as_nobody=False)
    assert calls.read_text().splitlines() == [
        "update -q", f"install -y -q {' '.join(TEST_PACKAGES)}"]
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        f"catdog: installing {' '.join(TEST_PACKAGES)} (apt-get)",
        f"catdog: still missing after apt-get: {TEST_LACKS}"]
    assert not (bare / ".venv").exists()
