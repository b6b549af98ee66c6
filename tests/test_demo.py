"""The README's main job, end to end: the demo on its own embedded Redis."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from .conftest import ROOT
from .tmuxserver import end_server

pytestmark = pytest.mark.slow


def test_demo_launches_three_devices_runs_routed_tasks_and_says_where_to_look(tmp_path: Path
                                                                               ) -> None:
    socket = f"catdog-demo-test-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATDOG_")}
    env.update(CATDOG_DEMO_DIR=str(tmp_path / "demo"), CATDOG_DEMO_SOCKET=socket)
    inventory = tmp_path / "demo" / "catdog.yaml"
    try:
        done = subprocess.run([sys.executable, "examples/demo.py"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=240, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        launched = {ln.split()[0]: ln.split()[1] for ln in out.splitlines()
                    if ln.split()[:1] in (["kitchen"], ["garden"], ["garage"])}
        assert launched == {"kitchen": "READY", "garden": "READY", "garage": "READY"}
        assert 'run_on.delay("garden", "exit 3")        garden   exit 3' in out
        assert "render.delay()  # requires camera+gpu   kitchen" in out
        assert out.count('run_on.delay("all", "hostname")') == 3
        spread = [ln for ln in out.splitlines() if ln.startswith("12 x read_temperature")]
        assert {ln.split()[3] for ln in spread} == {"garden", "garage"}
        assert "Where to look next" in out and "fab status --inventory" in out
        results = _results(out)
        assert len(results) == 10, results  # 5 calls, 3 of run_on "all", 2 sensor devices
        assert all(result for _, result in results), results  # every row shows something
        whoami = next(r for call, r in results if call.startswith("whoami.delay()"))
        assert re.fullmatch(r"pid=\d+, host=\S+", whoami), whoami
        _check_picture(next(r for call, r in results if call.startswith("snapshot.delay()")))
    finally:
        subprocess.run([str(Path(sys.executable).parent / "fab"), "stop", "--force",
                        "--inventory", str(inventory)], cwd=ROOT, env=env, capture_output=True,
                       check=False)
        end_server(socket)


def _results(out: str) -> list[tuple[str, str]]:
    """The (call, result) cells of the demo's results table, cut at the header's columns."""
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("CALL "))
    at = lines[start].index("RESULT")
    rows = lines[start + 1:lines.index("", start)]
    return [(ln[:at].strip(), ln[at:].strip()) for ln in rows]


def _check_picture(cell: str) -> None:
    """The snapshot's picture is a real file: a PNG of the default 640x480, as the row says."""
    shown = cell.split()[0]
    path = Path(shown) if Path(shown).is_absolute() else ROOT / shown
    data = path.read_bytes()  # it exists
    assert data[:8] == b"\x89PNG\r\n\x1a\n", cell
    width, height = struct.unpack(">II", data[16:24])  # IHDR, the first chunk
    assert (width, height) == (640, 480), cell
    assert f"{len(data)} bytes" in cell and "640x480 PNG" in cell, cell


def test_the_readme_commands_table_is_one_table_with_every_fab_command() -> None:
    """A blank line ends a Markdown table: rows after one render as a paragraph of pipes."""
    import ops.fab

    section = (ROOT / "README.md").read_text().split("\n## Commands\n", 1)[1].split("\n### ")[0]
    lines = section.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| command |"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    named = {m[1] for ln in lines[start + 2:end] if (m := re.match(r"\| `fab (\w+)", ln))}
    assert named == set(ops.fab.__all__)
    assert not [ln for ln in lines[end:] if ln.startswith("| `fab")]  # none cut off below it
