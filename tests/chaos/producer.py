"""The producer of the chaos tests, run as a user's script: ``send`` probe tasks to a target
and print their ids by number; ``get`` their results (True where a task returned its number,
else what happened instead)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.test_cli import _env

PRODUCER = """
import importlib, json, sys
from catdog import use_inventory
inventory, module, action = sys.argv[1:4]
use_inventory(inventory)
sys.path.insert(0, str(__import__("pathlib").Path(inventory).parent))
record = importlib.import_module(module).record
if action == "send":
    device, first, count, seconds = sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
    print(json.dumps({n: record.on(device).delay(n, seconds).id
                      for n in range(first, first + count)}))
else:
    from catdog import app
    sent = json.loads(sys.stdin.read())
    done = {}
    for n, task_id in sent.items():
        try:
            value = app.AsyncResult(task_id).get(timeout=90)
            done[n] = True if value == int(n) else f"returned {value!r}"
        except Exception as exc:
            done[n] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(done))
"""


def produce(inventory: Path, *args: str, stdin: str = "", **env: str) -> dict:
    """Run the producer as its own process (its app talks to the inventory's broker)."""
    done = subprocess.run([sys.executable, "-c", PRODUCER, str(inventory), *args], cwd=ROOT,
                          env=_env(**env), input=stdin, capture_output=True, text=True,
                          timeout=240, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
