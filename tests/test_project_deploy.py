"""``fab deploy`` from a project of one's own, with CatDog installed from its wheel (no checkout):
the wheel rebuilt from the installed files, and the project's task modules on the SSH device."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from catdog.loader import load_inventory
from ops.build import PACKAGES, device_requirements, shippable
from ops.taskfiles import task_files

from .conftest import IS_ROOT, Sshd
from .tmuxserver import end_server

BUILD_FROM_INSTALLED = """
import json, sys, zipfile
from importlib.metadata import distribution
from pathlib import Path
from ops.build import catdog_to_ship
shipment = catdog_to_ship()
wheel = shipment.build(Path(sys.argv[1]))
dist = distribution("catdog")
with zipfile.ZipFile(wheel) as zipped:
    names = zipped.namelist()
    [meta] = [n for n in names if n.endswith(".dist-info/METADATA")]
    metadata = zipped.read(meta).decode()
print(json.dumps({
    "origin": shipment.origin, "fingerprint": shipment.fingerprint, "wheel": wheel.name,
    "names": names, "installed": [str(f) for f in dist.files], "requires": dist.requires,
    "requires_dist": [ln.split(": ", 1)[1] for ln in metadata.splitlines()
                      if ln.startswith("Requires-Dist: ")],
    "same_again": catdog_to_ship().fingerprint == shipment.fingerprint,
}))
"""


def test_the_wheel_rebuilt_from_an_installed_catdog_is_its_files_and_the_device_side(
        wheel_venv: Path, tmp_path: Path) -> None:
    done = subprocess.run([str(wheel_venv / "bin" / "python"), "-c", BUILD_FROM_INSTALLED,
                           str(tmp_path / "dist")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout)
    assert found["origin"] == "installed" and found["wheel"] == "catdog-0.1.0-py3-none-any.whl"
    packaged = {n for n in found["names"] if n.split("/")[0] in PACKAGES}
    installed = {f for f in found["installed"] if shippable(f)}
    assert packaged == installed and len(installed) > 50
    assert {n.split("/")[0] for n in found["names"]} - set(PACKAGES) == {"catdog-0.1.0.dist-info"}
    device_side = [r for r in found["requires"] if "extra ==" not in r]
    assert found["requires_dist"] == device_side == device_requirements(found["requires"])
    assert {r.split("[")[0].split(">")[0] for r in device_side} == {"celery", "redis", "pyyaml"}
    assert found["same_again"] and len(found["fingerprint"]) == 64


def test_task_files_are_the_projects_own_modules_only(tmp_path: Path) -> None:
    (tmp_path / "catdog.yaml").write_text(
        "imports: [mylab.tasks, solo, celery.contrib.abortable]\n"
        "devices:\n  here:\n    host: local\n")
    for name in ("tasks/__init__.py", "tasks/sensors.py", "tasks/__pycache__/sensors.cpython.pyc",
                 "mylab/__init__.py", "mylab/tasks.py", "mylab/util.py", "mylab/data.json",
                 "mylab/.hidden", "solo.py", "other.py", "celeryconfig.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("# x\n")
    assert list(task_files(load_inventory(tmp_path / "catdog.yaml"))) == [
        "mylab/__init__.py", "mylab/data.json", "mylab/tasks.py", "mylab/util.py", "solo.py",
        "tasks/__init__.py", "tasks/sensors.py"]


@pytest.mark.slow
def test_fab_deploy_from_a_project_of_ones_own_puts_it_on_an_ssh_device(
        wheel_venv: Path, sshd: Sshd, redis_url: str, tmp_path: Path) -> None:
    # a remote device needs a broker it can reach: the session's Redis, as $CATDOG_BROKER_URL
    env = {"PATH": f"{wheel_venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path),
           "CATDOG_BROKER_URL": redis_url}
    project, work = tmp_path / "myproject", tmp_path / "pi"
    project.mkdir()

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), cwd=project, env=env, capture_output=True, text=True,
                              timeout=900, check=False)

    def rows(done: subprocess.CompletedProcess[str]) -> list[tuple[str, str, str]]:
        assert done.stdout.strip().startswith("["), done.stdout + done.stderr
        return [(r["device"], r["state"], r["reason"]) for r in json.loads(done.stdout)]

    assert run("catdog", "init").returncode == 0
    socket = f"catdog-projdep-{uuid.uuid4().hex[:8]}"
    doc = yaml.safe_load((project / "catdog.yaml").read_text())
    doc["tmux_socket"] = socket
    doc["devices"]["here"]["allow_root"] = IS_ROOT
    doc["devices"]["pi"] = sshd.device(["gpio"], work, python=str(work / ".venv/bin/python"))
    (project / "catdog.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    module = project / "mytasks.py"
    original = module.read_text()
    module.write_text(original + '\n\n@app.task\ndef where() -> list:\n'
                                 '    return ["first", __file__]\n')
    (project / "tasks.py").write_text(  # the project's own tasks.py: imported without `imports:`
        "from catdog import app\n\n@app.task\ndef count_birds():\n    return 3\n")
    call = ("from mytasks import where, hello; print(where.on('pi').delay().get(timeout=30)); "
            "print(hello.on('pi').delay('pi').get(timeout=30))")
    birds = "from tasks import count_birds; print(count_birds.on('pi').delay().get(timeout=30))"
    try:
        first = run("fab", "deploy", "--json")
        assert first.returncode == 0, first.stdout + first.stderr
        [(_, here_state, _), (_, pi_state, pi_reason)] = rows(first)
        assert (here_state, pi_state) == ("SKIPPED", "DEPLOYED"), first.stdout
        assert "installed catdog 0.1.0" in pi_reason
        assert pi_reason.endswith("; task modules: mytasks.py, tasks.py"), pi_reason
        # the task modules are in the release deploy switched to, which the worker runs
        def project_dir() -> Path:
            return (work / ".catdog" / "releases" / "current").resolve() / "project"

        assert (project_dir() / "mytasks.py").read_text() == module.read_text()
        assert project_dir().parent.name == json.loads(first.stdout)[1]["release"]

        def catdog_check() -> dict:
            doctor = run("fab", "doctor", "--devices", "pi", "--json")
            [checked] = json.loads(doctor.stdout)
            return next(c for c in checked["checks"] if c["name"] == "catdog")

        assert catdog_check()["ok"] is True  # not behind the installed CatDog it shipped
        record = work / ".venv" / "catdog-deployed.json"
        shipped = json.loads(record.read_text())
        record.write_text(json.dumps({**shipped, "fingerprint": "0" * 64}))
        behind = catdog_check()
        assert (behind["ok"], behind["detail"]) == (
            False, f"0.1.0 from older sources (000000000000, here {shipped['fingerprint'][:12]})")
        record.write_text(json.dumps(shipped))

        launched = run("fab", "launch", "--devices", "pi", "--json")
        assert launched.returncode == 0, launched.stdout + launched.stderr
        assert [r[:2] for r in rows(launched)] == [("pi", "READY")]
        called = run("python", "-c", call)
        assert called.returncode == 0, called.stderr[-2000:]
        assert called.stdout.splitlines()[0] == str(["first", str(project_dir() / "mytasks.py")])
        assert called.stdout.splitlines()[1].startswith("hello pi from ")
        counted = run("python", "-c", birds)
        assert (counted.returncode, counted.stdout) == (0, "3\n"), counted.stderr[-2000:]

        again = run("fab", "deploy", "--devices", "pi", "--json")
        assert [r[1] for r in rows(again)] == ["UNCHANGED"], again.stdout

        module.write_text(module.read_text().replace('"first"', '"second"'))
        changed = run("fab", "deploy", "--devices", "pi", "--json")
        assert rows(changed) == [("pi", "DEPLOYED", "task modules: mytasks.py")], changed.stdout
        (project / "tasks.py").unlink()
        removed = run("fab", "deploy", "--devices", "pi", "--json")
        assert rows(removed) == [("pi", "DEPLOYED", "removed task modules: tasks.py")]
        assert not (project_dir() / "tasks.py").exists()
        assert (project_dir() / "mytasks.py").exists()
        restarted = run("fab", "restart", "--devices", "pi", "--json")
        assert [r[:2] for r in rows(restarted)] == [("pi", "READY")], restarted.stdout
        called = run("python", "-c", call)
        assert called.returncode == 0, called.stderr[-2000:]
        assert called.stdout.splitlines()[0] == str(["second", str(project_dir() / "mytasks.py")])

        stopped = run("fab", "stop", "--json")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert {r[:2] for r in rows(stopped)} >= {("pi", "STOPPED")}
    finally:
        run("fab", "stop", "--force")
        end_server(socket)
