"""Doctor's checks one at a time, with a stand-in device where the real one cannot be made to
fail here (a skewed clock, no tmux); the real-sshd tests cover the rest."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catdog.inventory import Device
from ops.doctor import MAX_SKEW_S, clock_check, host_key_check, tmux_check
from ops.tmux import Completed


@dataclass
class FakeHost:
    answers: dict[str, Completed]

    def shell(self, command: str, timeout: float = 30) -> Completed:
        return self.answers[command]


@dataclass
class FakeSession:
    host: Any


def test_a_skewed_clock_fails_with_the_ntp_fix() -> None:
    ahead = f"{time.time() + 5:.3f}"
    found = clock_check(FakeSession(FakeHost({"date +%s.%N": Completed(0, ahead, "")})))
    assert found.ok is False and found.detail.startswith("+5.0")
    assert "timedatectl set-ntp true" in found.fix
    now = FakeSession(FakeHost({"date +%s.%N": Completed(0, f"{time.time():.3f}", "")}))
    assert clock_check(now).ok is True
    assert MAX_SKEW_S == 1.0


def test_an_unreadable_clock_is_a_failure_not_a_pass() -> None:
    found = clock_check(FakeSession(FakeHost({"date +%s.%N": Completed(0, "%s.%N", "")})))
    assert found.ok is False and "could not read the clock" in found.detail


def test_missing_tmux_says_how_to_install_it() -> None:
    found = tmux_check(FakeSession(FakeHost({"tmux -V": Completed(127, "", "not found")})))
    assert (found.ok, found.fix) == (False, "sudo apt install tmux")
    found = tmux_check(FakeSession(FakeHost({"tmux -V": Completed(0, "tmux 3.3a\n", "")})))
    assert (found.ok, found.detail) == (True, "3.3a")


def test_host_key_lookup_uses_the_port_form_and_the_inventory_file(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("[10.0.0.5]:2222 ssh-ed25519 "
                     "AAAAC3NzaC1lZDI1NTE5AAAAIBfXmGN1gO2b0L2mmR6j0pLk7Qm5bG2O3r0V5n0c0xyz\n")
    on_2222 = Device("pi", "10.0.0.5", port=2222, known_hosts=str(known))
    assert host_key_check(on_2222).ok is True
    on_22 = Device("pi", "10.0.0.5", known_hosts=str(known))
    missing = host_key_check(on_22)
    assert missing.ok is False and missing.detail == f"no key for 10.0.0.5 in {known}"
    assert missing.fix.endswith(f"ssh-keyscan -p 22 10.0.0.5 >> {known}")
    nowhere = host_key_check(Device("pi", "10.0.0.5", known_hosts=str(tmp_path / "none")))
    assert nowhere.ok is False
