"""Importing CatDog, its tasks and the worker side connects to nothing and reads nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import socket, sys
def refuse(*a, **k):
    raise AssertionError("network use at import")
socket.socket.connect = refuse
socket.create_connection = refuse
import catdog, catdog.tasks, catdog.tasks.examples, workers.cli, celeryconfig
from catdog import app
assert not app.configured, "configuration was loaded at import"
print("ok")
"""


def test_importing_catdog_and_tasks_touches_no_broker_or_file(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "CATDOG_INVENTORY": str(tmp_path / "missing.yaml"),
           "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


RETRY = """
import os, sys
from catdog import app, use_inventory, InventoryError
from catdog.tasks.examples import whoami
try:
    whoami.delay()
except InventoryError as exc:
    print("first:", type(exc).__name__)
os.environ["CATDOG_BROKER_URL"] = "redis://127.0.0.1:1/0"
open(sys.argv[1], "w").write("devices:\\n  a:\\n    host: local\\n")
use_inventory(sys.argv[1])
print("then:", app.conf.broker_url)
"""


def test_a_failed_first_configuration_is_retried_once_the_inventory_exists(tmp_path: Path
                                                                            ) -> None:
    env = {"PATH": "/usr/bin:/bin", "CATDOG_INVENTORY": str(tmp_path / "catdog.yaml"),
           "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", RETRY, str(tmp_path / "catdog.yaml")], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["first: InventoryError",
                                           "then: redis://127.0.0.1:1/0"]
