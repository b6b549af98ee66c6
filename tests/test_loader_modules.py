"""The inventory loader's pieces: values parsed once into typed values, each section's keys declared
once, each lookup order in one place, and no module of catdog/ over 400 lines."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from catdog.broker import chosen_url
from catdog.fields import schema
from catdog.inventory import BROKER_ENV, INVENTORY_ENV, Device, ScheduleEntry, chosen_inventory
from catdog.loader import load_inventory
from catdog.targets import Kind, Target
from catdog.windows import Window, parsed

ROOT = Path(__file__).resolve().parent.parent
SCHEDULED = """\
devices:
  laptop: {host: local, capabilities: [sensor]}
schedule:
  read: {task: tasks.read, every: 1m, on: "cap:sensor", window: " :05-:55 "}
  day: {task: tasks.day, cron: "0 8 * * *", on: laptop, window: "08:00-18:30"}
"""


def test_a_schedule_entry_keeps_its_target_and_window_as_typed_values(tmp_path: Path) -> None:
    (tmp_path / "catdog.yaml").write_text(SCHEDULED)
    read, day = load_inventory(tmp_path / "catdog.yaml", {}).schedule.values()
    assert isinstance(read.on, Target) and (read.on.kind, read.on.name) == (Kind.CAPABILITY, "sensor")
    assert isinstance(read.window, Window)
    assert (read.window.start, read.window.end, read.window.daily) == (5, 55, False)
    assert isinstance(day.on, Target) and day.on.kind is Kind.DEVICE
    assert isinstance(day.window, Window) and (day.window.start, day.window.end) == (480, 1110)


def test_targets_and_windows_equal_their_text_and_hash_alike() -> None:
    assert Target.parse("cap:sensor") == "cap:sensor" and Target.parse("all") != "all:x"
    assert hash(Target.parse(" cap:sensor")) == hash("cap:sensor")
    assert Window.parse(":05-:55") == ":05-:55" and Window.parse(":05-:55") != ":05-:56"
    assert {Window.parse("08:00-18:00"): 1}["08:00-18:00"] == 1


def test_a_window_that_arrives_as_text_is_parsed_once() -> None:
    assert parsed(":10-:20") is parsed(":10-:20")
    assert parsed(":10-:20") == Window.parse(":10-:20")


def test_each_section_declares_its_keys_once_on_its_dataclass() -> None:
    assert tuple(schema(Device)) == (
        "host", "port", "user", "key", "known_hosts", "python", "workdir", "capabilities",
        "concurrency", "pool", "env", "allow_root", "run_on", "detect", "resources", "health")
    assert tuple(schema(ScheduleEntry)) == (
        "task", "every", "cron", "on", "args", "kwargs", "window", "limit")
    names = {f.name for f in dataclasses.fields(ScheduleEntry)}
    assert all(key.attribute in names for key in schema(ScheduleEntry).values())
    assert schema(ScheduleEntry)["every"].attribute == "every_s"
    not_for_local = [k for k, key in schema(Device).items() if not key.local]
    assert not_for_local == ["port", "user", "key", "known_hosts", "python", "workdir"]
    assert Device("pi4", "10.0.0.2", ("camera",)).capabilities == ("camera",)


def test_the_broker_and_inventory_lookup_orders_are_one_function_each() -> None:
    assert chosen_url("redis://a:6379/0", {BROKER_ENV: "redis://b:6379/0"}) == "redis://b:6379/0"
    assert chosen_url("redis://a:6379/0", {}) == "redis://a:6379/0"
    assert chosen_url(None, {BROKER_ENV: ""}) is None
    assert chosen_inventory("given.yaml", {INVENTORY_ENV: "env.yaml"}) == "given.yaml"
    assert chosen_inventory(None, {INVENTORY_ENV: "env.yaml"}) == "env.yaml"
    assert chosen_inventory(None, {}) == "catdog.yaml"


def test_no_module_of_catdog_is_over_400_lines() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "catdog").rglob("*.py")}
    assert not {name: n for name, n in sizes.items() if n > 400}
