"""The rollout's order and its refusals, before anything starts: batches that never take every
consumer of a shared queue, bad options refused with exit status 2, which releases a device keeps
and goes back to."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from catdog.loader import load_inventory
from ops import api, batches, commands
from ops.releases import Releases, release_id
from ops.results import FAILED

from .conftest import device_spec


def inventory(tmp_path: Path, devices: dict[str, list[str]], ssh: tuple[str, ...] = ()):
    specs = {name: ({"host": "192.0.2.10", "capabilities": caps} if name in ssh
                    else device_spec(caps)) for name, caps in devices.items()}
    path = tmp_path / "catdog.yaml"
    # a broker nothing may reach: every refusal here comes before anything connects
    broker = {"broker": "redis://:never@192.0.2.1:6379/0"} if ssh else {}
    path.write_text(yaml.safe_dump({**broker, "devices": specs}))
    return load_inventory(path)


def names(plan: list[list]) -> list[list[str]]:
    return [[d.name for d in batch] for batch in plan]


def test_a_batch_never_holds_every_device_of_a_shared_capability(tmp_path: Path) -> None:
    inv = inventory(tmp_path, {"r1": ["work", "cam"], "r2": ["work", "cam"], "r3": ["work"],
                               "r4": ["gpio"]})
    assert names(batches.plan(inv, inv.select(None), 3)) == [["r1", "r3", "r4"], ["r2"]]
    assert names(batches.plan(inv, inv.select(None), 1)) == [["r1"], ["r2"], ["r3"], ["r4"]]
    # any: never the whole fleet at once, however large the batch
    assert names(batches.plan(inv, inv.select(None), 10)) == [["r1", "r3", "r4"], ["r2"]]
    # r4 alone has gpio: nothing to keep served, so it may go with the others
    two = inventory(tmp_path, {"a": ["x"], "b": ["x"]})
    assert names(batches.plan(two, two.select(None), 2)) == [["a"], ["b"]]


def test_canaries_are_ssh_devices_first(tmp_path: Path) -> None:
    inv = inventory(tmp_path, {"here": [], "pi": [], "zero": []}, ssh=("pi", "zero"))
    assert [d.name for d in batches.canaries(inv.select(None), 2)] == ["pi", "zero"]


@pytest.mark.parametrize(("given", "said"), [
    ({"restart": True, "batch": "0"}, "--batch '0': expected a whole number of at least 1"),
    ({"restart": True, "canary": "2"}, "--canary 2: only 1 of the devices asked for have "
                                       "releases to go back to (pi); choose --canary 1 or fewer"),
    ({"restart": True, "check": "nope.never"}, "--check 'nope.never': no worker has that task"),
    ({"canary": "1"}, "--batch, --canary and --check go with --restart"),
    ({"restart": True, "watch": "soon"}, "--watch 'soon': expected a duration like 90s"),
    ({"restart": True, "keep": "0"}, "--keep '0': expected a whole number of at least 1"),
])
def test_bad_rollout_input_is_one_line_and_exit_2_before_anything_starts(
        tmp_path: Path, capsys, given: dict, said: str) -> None:
    inv = inventory(tmp_path, {"here": ["x"], "pi": ["x"]}, ssh=("pi",))
    assert commands.deploy(str(inv.path), **given) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said in err[0], err
    assert not (tmp_path / ".catdog").exists()  # no broker started, nothing built


def test_rollback_of_local_devices_only_is_refused(tmp_path: Path, capsys) -> None:
    inv = inventory(tmp_path, {"here": ["x"]})
    assert commands.rollback(str(inv.path)) == 2
    assert "all host: local" in capsys.readouterr().err
    assert commands.restart(str(inv.path), batch="2") == 2
    assert "--batch goes with --rolling" in capsys.readouterr().err


def test_the_release_to_go_back_to_and_the_ones_pruned() -> None:
    held = Releases("c", {"a": {"installed_at": 1}, "b": {"installed_at": 2},
                          "c": {"installed_at": 3}, "d": {"installed_at": 4}}, ["half"])
    assert held.previous() == "b"  # d is newer: deployed, then rolled back from
    assert held.to_prune(2) == ["b", "a"]  # the newest two (d, c) stay; c is current anyway
    assert held.to_prune(1, also_keep=("a",)) == ["b"]
    assert Releases("a", {"a": {"installed_at": 1}}).previous() is None
    assert Releases(None, {}).previous() is None


def test_a_release_id_is_the_code_it_holds() -> None:
    one = release_id("f" * 64, {"tasks.py": "1" * 64})
    assert one == release_id("f" * 64, {"tasks.py": "1" * 64}) and len(one) == 12
    assert one != release_id("f" * 64, {"tasks.py": "2" * 64})
    assert one != release_id("e" * 64, {"tasks.py": "1" * 64})
    assert one != release_id("f" * 64, {"tasks.py": "1" * 64}, ("mylab.tasks",))


def test_a_rolling_deploy_to_a_device_it_cannot_reach_is_that_devices_failed_row(
        tmp_path: Path, redis_url: str) -> None:
    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "catdog.yaml"
    path.write_text(yaml.safe_dump({"devices": {"gone": {
        "host": "127.0.0.1", "port": port, "python": "/opt/venv/bin/python",
        "workdir": str(tmp_path / "gone"), "capabilities": ["work"]}}}))
    rolled = api.deploy_fleet(str(path), restart=True)
    row = rolled["gone"]
    assert (row.state, row.previous_release, row.release) == (FAILED, None, None), row
    assert f"connection refused at 127.0.0.1:{port}" in row.reason
