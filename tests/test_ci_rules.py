"""CI's own rule: a skipped test fails there (``CI`` set), and only there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT

HOOK = "from tests.conftest import pytest_runtest_makereport  # noqa: F401  (the rule under test)\n"
SKIPPING = """
import pytest


def test_needs_what_this_machine_lacks():
    pytest.skip("no such thing here")
"""


def _pytest(folder: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(ROOT)
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_a_skip_fails_in_ci_and_stays_a_skip_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    (tmp_path / "conftest.py").write_text(HOOK)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not this project's settings
    in_ci = _pytest(tmp_path, ci=True)
    assert in_ci.returncode == 1, in_ci.stdout
    assert "skipped, which fails in CI: " in in_ci.stdout and "no such thing here" in in_ci.stdout
    elsewhere = _pytest(tmp_path, ci=False)
    assert elsewhere.returncode == 0, elsewhere.stdout
    assert "1 skipped" in elsewhere.stdout
