"""Unit tests of targets and routing on inventory values (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from catdog.errors import NoRoute, TargetError
from catdog.inventory import Device, Inventory
from catdog.routing import ANY_QUEUE, capability_queue, device_queue, plan, worker_queues
from catdog.targets import Kind, Target

INV = Inventory(
    path=Path("/x/catdog.yaml"),
    devices={
        "pi4": Device("pi4", "10.0.0.2", ("camera", "gpio")),
        "zero": Device("zero", "10.0.0.3", ("gpio", "sensor")),
        "laptop": Device("laptop", "local", ("x86", "gpu", "camera")),
    },
)


@pytest.mark.parametrize(("text", "kind", "name"), [
    ("pi4", Kind.DEVICE, "pi4"),
    ("cap:camera", Kind.CAPABILITY, "camera"),
    ("all:gpio", Kind.EVERY_WITH, "gpio"),
    ("all", Kind.EVERY, ""),
    ("any", Kind.ANY, ""),
    (" zero-1 ", Kind.DEVICE, "zero-1"),
])
def test_targets_parse_into_typed_values(text: str, kind: Kind, name: str) -> None:
    target = Target.parse(text)
    assert (target.kind, target.name) == (kind, name)
    assert Target.parse(str(target)) == target


@pytest.mark.parametrize("text", ["", "cap:", "all:", "grp:x", "pi 4", "cap:a b", 3, None])
def test_malformed_targets_raise_target_error(text: object) -> None:
    with pytest.raises(TargetError):
        Target.parse(text)


def test_device_target_goes_to_the_device_queue() -> None:
    assert plan(INV, (), "pi4").queues == (device_queue("pi4"),)


def test_capability_target_goes_to_the_capability_queue() -> None:
    assert plan(INV, (), "cap:gpio").queues == ("catdog.cap.gpio",)


def test_all_with_capability_is_one_queue_per_matching_device() -> None:
    route = plan(INV, (), "all:camera")
    assert route.group
    assert route.queues == (device_queue("pi4"), device_queue("laptop"))


def test_all_is_every_device() -> None:
    assert len(plan(INV, (), "all").queues) == 3


def test_no_target_no_requirement_goes_to_the_shared_queue() -> None:
    assert plan(INV).queues == (ANY_QUEUE,)


def test_any_is_any_one_live_device_as_no_target_is() -> None:
    """The contract's ``any`` target (the soak found ``.on("any")`` refused as a device name)."""
    assert plan(INV, (), "any").queue == plan(INV, ()).queue == ANY_QUEUE
    assert plan(INV, ("camera",), "any").queue == capability_queue(["camera"])
    assert not plan(INV, (), "any").group
    with pytest.raises(NoRoute):
        plan(INV, ("nothing-has-this",), "any")


def test_requirements_route_to_their_capability_set_queue() -> None:
    assert plan(INV, ("camera",)).queue == "catdog.cap.camera"
    assert plan(INV, ("gpu", "camera")).queue == "catdog.caps.camera+gpu"
    assert plan(INV, ("camera",), "cap:gpio").queue == "catdog.caps.camera+gpio"


@pytest.mark.parametrize(("requires", "target", "needle"), [
    ((), "nosuch", "no device named 'nosuch'"),
    ((), "cap:lidar", "no device has capability lidar"),
    ((), "all:lidar", "no device has capability lidar"),
    (("camera",), "zero", "device 'zero' lacks capability camera"),
    (("sensor", "camera"), None, "no device has all of capabilities camera, sensor"),
    (("gpu",), "cap:gpio", "no device has all of capabilities gpio, gpu"),
])
def test_unsatisfiable_targets_raise_no_route_naming_what_exists(
        requires: tuple[str, ...], target: str | None, needle: str) -> None:
    with pytest.raises(NoRoute) as info:
        plan(INV, requires, target)
    message = str(info.value)
    assert needle in message
    assert "devices: laptop, pi4, zero" in message
    assert "capabilities: camera, gpio, gpu, sensor, x86" in message


def test_worker_queues_are_own_any_capabilities_and_satisfied_sets() -> None:
    laptop = INV.devices["laptop"]
    queues = worker_queues(laptop, [("camera", "gpu"), ("camera",), ("gpio",), ("sensor", "x")])
    assert queues[:2] == [device_queue("laptop"), ANY_QUEUE]
    assert set(queues) == {
        device_queue("laptop"), ANY_QUEUE, "catdog.cap.x86", "catdog.cap.gpu", "catdog.cap.camera",
        "catdog.caps.camera+gpu", "catdog.caps.camera+x86", "catdog.caps.camera+gpu+x86",
    }
    assert len(queues) == len(set(queues))


def test_every_set_a_call_can_produce_is_consumed_only_by_devices_having_it() -> None:
    declared = [("camera",), ("gpio",), ("camera", "gpio")]
    consumers = {d.name: set(worker_queues(d, declared)) for d in INV.devices.values()}
    for requires in [(), *declared]:
        for cap in sorted(INV.capabilities):
            try:
                queue = plan(INV, requires, f"cap:{cap}").queue
            except NoRoute:
                continue
            having = {d.name for d in INV.devices_with({*requires, cap})}
            assert {n for n, qs in consumers.items() if queue in qs} == having, (requires, cap)


def test_capability_queue_names_are_order_independent() -> None:
    assert capability_queue(["b", "a"]) == capability_queue(["a", "b", "a"])


def test_a_process_works_out_each_route_once_and_again_for_a_new_inventory() -> None:
    from catdog.fleet import Fleet

    fleet = Fleet()
    fleet.use_loaded(INV)
    first = fleet.route(("camera",))
    assert fleet.route(("camera",)) is first  # every send asks: the answer is kept
    assert first.queue == capability_queue(["camera"])
    assert fleet.route((), "all:gpio").queues == (device_queue("pi4"), device_queue("zero"))
    with pytest.raises(NoRoute):
        fleet.route(("sonar",))
    with pytest.raises(NoRoute):  # a refusal is never kept as a route
        fleet.route(("sonar",))
    smaller = Inventory(path=INV.path, devices={"pi4": INV.devices["pi4"]})
    fleet.use_loaded(smaller)
    assert fleet.route((), "all:gpio").queues == (device_queue("pi4"),)
