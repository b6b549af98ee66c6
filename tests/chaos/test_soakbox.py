"""The soak's device that boots (:mod:`tests.chaos.soakbox`), on its own: a pid as the box sees it
is found as the machine's (the soak's kills and stops reach the box's worker that way), a power
cut takes the box's processes, and a touched canary outside the box is reported (the soak's
ledger says ``touched_outside_boxes: []`` only when the check would have seen one).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.lan import Lan
from tests.conftest import IS_ROOT

from .soakbox import CANARY, BootedDevice

pytestmark = pytest.mark.slow


def test_the_box_maps_its_pids_and_reports_what_a_boot_touched(lan: Lan) -> None:
    if not IS_ROOT:
        pytest.skip("booting systemd in namespaces needs root (CI is root)")
    device = BootedDevice(lan, "boots")
    try:
        assert device.machine_pid(1) == device.box.pid  # its PID 1, systemd
        inside = int(device.box.run("sh", "-c", "sleep 120 >/dev/null 2>&1 & echo $!")
                     .stdout.strip())
        outside = device.machine_pid(inside)
        assert outside is not None and outside != inside
        assert Path(f"/proc/{outside}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep",
                                                                                  b"120"]
        assert device.machine_pid(999_999) is None
        assert device.untouched() == []

        device.box.reboot()  # the power cut takes the sleep along
        assert not Path(f"/proc/{outside}").exists()
        assert device.untouched() == []

        canary = device.canaries[0]
        canary.write_text("overwritten\n")
        assert device.untouched() == [f"{canary} changed or gone"]
        canary.write_text(CANARY)
        device.box.power_off()
        assert device.machine_pid(1) is None  # down: no box to look in
    finally:
        device.close()
    assert not [c for c in device.canaries if c.exists()]  # close removed them
