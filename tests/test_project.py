"""CatDog in a user's own project: ``catdog init``, the schedule check, Celery's own CLI, and the
whole path from a built wheel in a fresh venv, outside this checkout."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from catdog.loader import load_inventory
from ops.starter import FILES, TASK_MODULE
from ops.tasknames import check_schedule, registered_tasks

from .conftest import IS_ROOT, ROOT, device_spec
from .test_cli import BIN, _env, fab
from .tmuxserver import end_server


def catdog(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "catdog"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


# -- catdog init --------------------------------------------------------------------------------

def test_init_writes_an_inventory_a_one_line_fabfile_and_a_task_module(tmp_path: Path) -> None:
    done = catdog("init", "proj", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "proj"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    inventory = yaml.safe_load((folder / "catdog.yaml").read_text())
    assert inventory["imports"] == [TASK_MODULE]
    [device] = inventory["devices"].values()
    assert device["host"] == "local"
    assert "# allow_root: true" in (folder / "catdog.yaml").read_text()
    code = [ln for ln in (folder / "fabfile.py").read_text().splitlines()
            if ln.strip() and not ln.startswith(('"""', "#"))]
    assert code == ["from ops.fab import *  # noqa: F403"]
    steps = [ln.strip() for ln in done.stdout.splitlines() if ln.startswith("  ")]
    assert len(steps) == 3 and steps[0].startswith("fab launch") and steps[2].startswith("fab stop")
    assert f"after cd {Path('proj')}" in done.stdout
    assert ("uncomment `allow_root: true`" in done.stdout) == IS_ROOT


def test_init_refuses_to_overwrite_and_then_writes_nothing_at_all(tmp_path: Path) -> None:
    (tmp_path / "fabfile.py").write_text("# mine\n")
    done = catdog("init", cwd=tmp_path)
    assert done.returncode == 1
    assert f"{Path('.') / 'fabfile.py'} already exists; nothing written" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fabfile.py"]
    assert (tmp_path / "fabfile.py").read_text() == "# mine\n"


def test_catdog_usage_errors_exit_2_and_help_exits_0(tmp_path: Path) -> None:
    assert catdog(cwd=tmp_path).returncode == 2
    wrong = catdog("init", "a", "b", cwd=tmp_path)
    assert (wrong.returncode, "unrecognized arguments: b" in wrong.stderr) == (2, True)
    assert catdog("frobnicate", cwd=tmp_path).returncode == 2
    shown = catdog("init", "--help", cwd=tmp_path)
    assert shown.returncode == 0 and "Never overwrites a file" in " ".join(shown.stdout.split())
    assert list(tmp_path.iterdir()) == []


# -- the schedule check (3.4) -------------------------------------------------------------------

def schedule_project(tmp_path: Path, task: str, module_text: str = "") -> Path:
    socket = f"catdog-sched-{uuid.uuid4().hex[:8]}"
    doc = {"tmux_socket": socket, "imports": ["labtasks"],
           "devices": {"probe": device_spec(["sensor"])},
           "schedule": {"read": {"task": task, "every": "5s", "on": "cap:sensor"}}}
    (tmp_path / "catdog.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (tmp_path / "labtasks.py").write_text(module_text or (
        "from catdog import app\n\n@app.task\ndef read_humidity():\n    return 50\n"))
    (tmp_path / "tasks.py").write_text(  # the project's own, imported without `imports:`
        "from catdog import app\n\n@app.task\ndef count_birds():\n    return 3\n")
    return tmp_path / "catdog.yaml"


@pytest.mark.slow
@pytest.mark.parametrize(("task", "nearest"), [
    ("tasks.examples.read_temprature", "tasks.examples.read_temperature"),  # catdog.tasks
    ("labtasks.read_humidty", "labtasks.read_humidity"),                    # imports:
    ("tasks.count_bird", "tasks.count_birds"),                              # ./tasks.py
])
def test_fab_beat_refuses_a_task_no_worker_has_with_the_nearest_name(
        tmp_path: Path, task: str, nearest: str) -> None:
    path = schedule_project(tmp_path, task)
    done = fab("beat", "--inventory", str(path), env=_env())
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"catdog: {path}:") and "Traceback" not in done.stderr
    assert f"schedule.read.task: no worker has a task {task!r}; did you mean {nearest!r}?" \
        in done.stderr
    assert not (tmp_path / ".catdog").exists()  # nothing started: no embedded Redis, no beat


def test_the_check_knows_the_names_a_worker_registers(tmp_path: Path) -> None:
    inventory = load_inventory(schedule_project(tmp_path, "tasks.count_birds"))
    names = registered_tasks(inventory)
    assert {"tasks.run_on", "tasks.examples.read_temperature", "tasks.count_birds",
            "labtasks.read_humidity"} <= names
    check_schedule(inventory)  # a name that exists passes
    assert not (tmp_path / ".catdog").exists()


@pytest.mark.slow
def test_fab_beat_names_a_task_module_that_fails_to_import(tmp_path: Path) -> None:
    path = schedule_project(tmp_path, "labtasks.read", "import RPi.GPIO  # a device-only library\n")
    done = fab("beat", "--inventory", str(path), env=_env())
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("catdog: task module 'labtasks' from `imports:` of ")
    assert f"failed to import at {tmp_path / 'labtasks.py'}:1: ModuleNotFoundError" in line
    assert not (tmp_path / ".catdog").exists()


# -- Celery's own CLI without an inventory (3.6) ------------------------------------------------

def test_celery_cli_without_an_inventory_says_so_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run([str(BIN / "celery"), "-A", "catdog", "inspect", "ping"], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"Error: catdog: no inventory at {tmp_path / 'catdog.yaml'}: run the command from your "
        f"project's folder (where catdog.yaml is), or set CATDOG_INVENTORY=/path/to/catdog.yaml"]


# -- the whole path, from a wheel ---------------------------------------------------------------

@pytest.mark.slow
def test_a_project_of_ones_own_runs_from_the_wheel_outside_the_checkout(
        wheel_venv: Path, tmp_path: Path) -> None:
    bin_dir = wheel_venv / "bin"
    env = {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)}
    project = tmp_path / "myproject"

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), cwd=project, env=env, capture_output=True, text=True,
                              timeout=180, check=False)

    project.mkdir()
    done = run("catdog", "init")
    assert done.returncode == 0, done.stderr
    socket = f"catdog-proj-{uuid.uuid4().hex[:8]}"
    inventory = project / "catdog.yaml"
    text = f"tmux_socket: {socket}\n" + inventory.read_text()
    if IS_ROOT:  # as the starter's comment says
        text = text.replace("# allow_root: true", "allow_root: true")
    inventory.write_text(text)
    try:
        where = run("python", "-c", "import catdog, ops, sys; print(catdog.__file__, ops.__file__);"
                                    "print(sys.path)")
        assert str(ROOT) not in where.stdout and "site-packages" in where.stdout, where.stdout

        listed = run("fab", "--list")
        assert listed.returncode == 0, listed.stderr
        assert {"launch", "stop", "status", "beat", "deploy"} <= set(listed.stdout.split())

        launched = run("fab", "launch", "--json")
        assert launched.returncode == 0, launched.stdout + launched.stderr
        assert [(r["device"], r["state"]) for r in json.loads(launched.stdout)] == [
            ("here", "READY")]

        called = run("python", "-c", f"from {TASK_MODULE} import add, hello; "
                                     f"print(hello.delay('test').get(timeout=30)); "
                                     f"print(add.delay(2, 3).get(timeout=30))")
        assert called.returncode == 0, called.stderr
        assert called.stdout.split("\n")[:2] == [f"hello test from {os.uname().nodename}", "5"]

        builtin = run("python", "-c", "from catdog.tasks import run_on; "
                                      "print(run_on.delay('here', 'echo ok').get(timeout=30))")
        assert builtin.returncode == 0 and "'stdout': 'ok\\n'" in builtin.stdout, builtin.stderr

        shown = run("fab", "status", "--json")
        assert shown.returncode == 0, shown.stderr
        assert [(r["device"], r["state"]) for r in json.loads(shown.stdout)] == [("here", "idle")]

        pinged = run("celery", "-A", "catdog", "inspect", "ping")  # the README's line, as written
        assert pinged.returncode == 0, pinged.stderr
        assert "here@" in pinged.stdout and "1 node online" in pinged.stdout

        stopped = run("fab", "stop", "--json")
        assert stopped.returncode == 0, stopped.stderr
        assert [r["state"] for r in json.loads(stopped.stdout)] == ["STOPPED"]
    finally:
        run("fab", "stop", "--force")
        end_server(socket)
