"""The inventory loader: the contract's example loads, every broken inventory is refused with
``FILE:LINE field: expected ...`` messages, and no input makes it fail any other way.

Broken inventories live in ``tests/inventories/broken/``; each starts with ``# expect: TEXT`` lines,
every TEXT a substring of the error. The environment is always passed explicitly.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catdog.broker import check_broker_url
from catdog.errors import InventoryError
from catdog.inventory import BROKER_ENV, INVENTORY_ENV, Device, Inventory, inventory_path
from catdog.loader import load_inventory

HERE = Path(__file__).resolve().parent / "inventories"
BROKEN = sorted((HERE / "broken").glob("*.yaml"))
PASSWORD = {"CATDOG_REDIS_PASSWORD": "s3cret"}
LOCAL = "devices:\n  laptop: {host: local}\n"


def expectations(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return [line.split("# expect: ", 1)[1] for line in lines if line.startswith("# expect: ")]


def write(folder: Path, text: str, name: str = "catdog.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def load_text(folder: Path, text: str, environ: dict[str, str] | None = None) -> Inventory:
    return load_inventory(write(folder, text), environ or {})


def problems_of(folder: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(InventoryError) as caught:
        load_text(folder, text, environ)
    assert caught.value.problems
    return str(caught.value)


# -- the broken corpus --------------------------------------------------------------------------


def test_the_broken_corpus_is_large_and_every_file_says_what_it_expects() -> None:
    assert len(BROKEN) >= 14
    for path in BROKEN:
        assert expectations(path), f"{path.name} has no '# expect:' line"


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_inventory_is_refused_with_every_expected_problem(path: Path) -> None:
    with pytest.raises(InventoryError) as caught:
        load_inventory(path, {})
    assert caught.value.problems
    message = str(caught.value)
    for expected in expectations(path):
        assert expected in message, f"{expected!r} not in:\n{message}"


def test_a_file_with_several_problems_reports_them_all_at_once_in_file_order() -> None:
    with pytest.raises(InventoryError) as caught:
        load_inventory(HERE / "broken" / "many-problems.yaml", {})
    lines = [p.line or 0 for p in caught.value.problems]
    assert len(lines) >= 7
    assert lines == sorted(lines)
    assert all(p.file.endswith("many-problems.yaml") for p in caught.value.problems)


# -- the contract's example ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> Inventory:
    return load_inventory(HERE / "contract-example.yaml", PASSWORD)


def test_contract_example_loads_with_defaults_merged(example: Inventory) -> None:
    assert list(example.devices) == ["pi4", "zero-1", "laptop"]
    pi4 = example.devices["pi4"]
    assert (pi4.host, pi4.port, pi4.user, pi4.concurrency) == ("192.168.10.113", 22, "pi", 2)
    assert pi4.python == "/home/pi/catdog/.venv/bin/python"
    assert pi4.workdir == "/home/pi/catdog"
    assert pi4.capabilities == ("camera", "gpio")
    assert pi4.line == 11


def test_contract_example_device_fields(example: Inventory) -> None:
    zero = example.devices["zero-1"]
    assert (zero.pool, zero.concurrency, dict(zero.env)) == ("solo", 1, {"SENSOR_BUS": "1"})
    assert zero.run_on is True and zero.allow_root is False


def test_local_device_ignores_ssh_python_and_workdir_defaults(example: Inventory) -> None:
    laptop = example.devices["laptop"]
    assert laptop.is_local
    assert (laptop.user, laptop.python, laptop.workdir, laptop.port) == (None, None, None, 22)
    assert laptop.capabilities == ("x86", "gpu")


def test_contract_example_top_level_limits_and_schedule(example: Inventory) -> None:
    assert example.broker == "redis://:s3cret@192.168.10.113:6379/0"
    assert (example.tmux_socket, example.imports) == ("catdog", ("mylab.tasks",))
    assert example.path == (HERE / "contract-example.yaml").absolute()
    limit = example.limits["download"]
    assert (limit.count, limit.period_s, limit.text) == (360, 3600, "360/h")
    entry = example.schedule["read-temperature"]
    assert (entry.task, entry.every_s, entry.cron) == ("tasks.sensors.read_temperature", 60, None)
    assert (entry.on, entry.window, entry.limit) == ("cap:sensor", ":05-:55", "download")
    assert dict(entry.kwargs) == {"unit": "C"}


# -- values -------------------------------------------------------------------------------------


def test_variables_expand_typed_for_plain_scalars_and_dollar_dollar_is_literal(
        tmp_path: Path) -> None:
    inventory = load_text(tmp_path, """\
devices:
  laptop:
    host: local
    port: ${SSH_PORT}
    user: "${WHO}"
    env: {GREETING: "hello $${NAME}", PORT: "${SSH_PORT}"}
""", {"SSH_PORT": "2222", "WHO": "1000"})
    laptop = inventory.devices["laptop"]
    assert laptop.port == 2222
    assert laptop.user == "1000"
    assert dict(laptop.env) == {"GREETING": "hello ${NAME}", "PORT": "2222"}


def test_a_malformed_variable_reference_is_a_problem(tmp_path: Path) -> None:
    text = "devices:\n  laptop:\n    host: local\n    user: ${not a name}\n"
    assert "catdog.yaml:4 devices.laptop.user: expected ${NAME}" in problems_of(tmp_path, text)


def test_device_values_override_defaults_and_env_merges_key_by_key(tmp_path: Path) -> None:
    inventory = load_text(tmp_path, """\
broker: redis://127.0.0.1:6379/0
defaults: {user: pi, port: 2200, env: {A: "1", B: "2"}, run_on: false}
devices:
  pi4:
    host: 10.0.0.4
    user: admin
    env: {B: 3, C: true}
  laptop: {host: local, port: 2201, run_on: [uptime, ls]}
""")
    pi4, laptop = inventory.devices["pi4"], inventory.devices["laptop"]
    assert (pi4.user, pi4.port, pi4.run_on) == ("admin", 2200, False)
    assert dict(pi4.env) == {"A": "1", "B": "3", "C": "true"}
    assert (laptop.user, laptop.port, laptop.run_on) == (None, 2201, ("uptime", "ls"))
    assert dict(laptop.env) == {"A": "1", "B": "2"}


def test_key_and_known_hosts_expand_home_from_the_given_environment(tmp_path: Path) -> None:
    inventory = load_text(tmp_path, """\
broker: redis://127.0.0.1:6379/0
defaults: {key: ~/.ssh/catdog, known_hosts: ~/.ssh/known_hosts}
devices:
  pi4: {host: 10.0.0.4}
""", {"HOME": "/home/tester"})
    pi4 = inventory.devices["pi4"]
    assert (pi4.key, pi4.known_hosts) == ("/home/tester/.ssh/catdog", "/home/tester/.ssh/known_hosts")


def test_schedule_accepts_cron_numbers_units_args_and_hour_windows(tmp_path: Path) -> None:
    inventory = load_text(tmp_path, LOCAL + """\
schedule:
  a: {task: tasks.a, cron: " */5  *  * * 1-5 ", args: [1, x, [2]]}
  b: {task: tasks.b, every: 90, window: "08:00-18:30", on: laptop}
  c: {task: tasks.c, every: 1.5h, on: all}
  d: {task: tasks.d, every: 1d}
""")
    a, b, c, d = inventory.schedule.values()
    assert (a.cron, a.every_s, a.args) == ("*/5 * * * 1-5", None, (1, "x", [2]))
    assert (b.every_s, b.window, b.on) == (90, "08:00-18:30", "laptop")
    assert (c.every_s, c.on, d.every_s) == (5400, "all", 86400)


def test_yaml_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    inventory = load_text(tmp_path, """\
devices:
  laptop: &base {host: local, capabilities: [gpu], concurrency: 3}
  desk:
    <<: *base
    concurrency: 1
""")
    desk = inventory.devices["desk"]
    assert (desk.host, desk.capabilities, desk.concurrency) == ("local", ("gpu",), 1)


def test_a_recursive_alias_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    text = LOCAL + "schedule:\n  a: {task: tasks.a, every: 5, args: &loop [1, *loop]}\n"
    assert "schedule.a.args" in problems_of(tmp_path, text)


def test_an_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = "imports:\n  - " + "\n  - ".join(levels) + "\n" + LOCAL
    text += "schedule:\n  s: {task: tasks.s, every: 1, args: *a8, kwargs: {x: *a8}}\n"
    started = time.monotonic()
    with pytest.raises(InventoryError):
        load_text(tmp_path, text)
    assert time.monotonic() - started < 5


def test_a_missing_file_says_how_to_choose_another(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as caught:
        load_inventory(tmp_path / "nowhere.yaml", {})
    (problem,) = caught.value.problems
    assert problem.line is None
    assert str(problem).startswith(f"{tmp_path / 'nowhere.yaml'}: does not exist; ")
    assert str(problem).count("nowhere.yaml") == 1  # the path once, as the message's location
    assert "--inventory PATH" in problem.message and f"${INVENTORY_ENV}" in problem.message


def test_a_directory_is_named_once(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as caught:
        load_inventory(tmp_path, {})
    assert str(caught.value.problems[0]) == f"{tmp_path}: is a directory; expected an inventory file"


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n"])
def test_an_empty_file_is_reported_as_path_colon_message(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InventoryError) as caught:
        load_inventory(path, {})
    assert str(caught.value.problems[0]) == (
        f"{path}: the file is empty; expected a mapping with at least `devices:`")


@pytest.mark.parametrize(("text", "line", "column", "advice"), [
    ("devices:\n\tlaptop: {host: local}\n", 2, 1, "indent"),
    ("devices:\n  laptop:\n  \thost: local\n", 3, 3, "indent"),
    ("devices:\n  laptop:\n    host:\tlocal\n", 3, 10, "separate values"),
])
def test_a_tab_names_its_line_and_says_to_use_spaces(tmp_path: Path, text: str, line: int,
                                                     column: int, advice: str) -> None:
    assert problems_of(tmp_path, text) == (
        f"{tmp_path / 'catdog.yaml'}:{line}: YAML syntax error: a tab at column {column}; "
        f"{advice} with spaces, not tabs")


@pytest.mark.parametrize(("text", "expected"), [
    ("devices:\n  laptop:\n    host: local\n    pool: solo\n    concurrency: 2\n",
     "5 devices.laptop.concurrency: pool 'solo' (line 4) runs one task at a time; expected "
     "concurrency 1, got 2"),
    ("devices:\n  laptop:\n    concurrency: 2\n    pool: solo\n    host: local\n",
     "4 devices.laptop.pool: pool 'solo' runs one task at a time; expected concurrency 1 "
     "(line 3), got 2"),
    ("defaults:\n  concurrency: 4\ndevices:\n  laptop:\n    host: local\n    pool: solo\n",
     "6 devices.laptop.pool: pool 'solo' runs one task at a time; expected concurrency 1 "
     "(line 2), got 4"),
    ("defaults:\n  pool: solo\ndevices:\n  laptop:\n    host: local\n    concurrency: 2\n",
     "6 devices.laptop.concurrency: pool 'solo' (line 2) runs one task at a time; expected "
     "concurrency 1, got 2"),
])
def test_solo_with_concurrency_is_reported_at_the_later_of_its_two_lines(
        tmp_path: Path, text: str, expected: str) -> None:
    """Not at the device's name: at the line of `pool` or `concurrency`, whichever comes later
    (the one that clashes, reading down), naming the line of the other."""
    assert problems_of(tmp_path, text) == f"{tmp_path / 'catdog.yaml'}:{expected}"


def test_a_non_utf8_file_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "catdog.yaml"
    path.write_bytes(b"devices:\n  laptop: {host: \xff}\n")
    with pytest.raises(InventoryError, match=r"catdog.yaml:2: expected UTF-8 text"):
        load_inventory(path, {})


# -- the broker ---------------------------------------------------------------------------------

REMOTE = "devices:\n  pi4: {host: 192.168.10.113}\n"


def test_broker_url_from_the_environment_makes_a_remote_inventory_valid(tmp_path: Path) -> None:
    inventory = load_text(tmp_path, REMOTE, {BROKER_ENV: "redis://:pw@192.168.10.5:6379/0"})
    assert inventory.broker is None
    assert inventory.has_remote_devices


def test_a_bad_broker_url_from_the_environment_is_reported(tmp_path: Path) -> None:
    message = problems_of(tmp_path, REMOTE, {BROKER_ENV: "redis://192.168.10.5:6379/0"})
    assert "broker: the broker host 192.168.10.5 is not loopback" in message
    assert f"${BROKER_ENV}" in message


def test_insecure_allows_a_passwordless_lan_broker(tmp_path: Path) -> None:
    text = "broker: redis://192.168.10.5:6379/0\ninsecure: true\n" + REMOTE
    assert load_text(tmp_path, text).insecure is True


def test_rediss_needs_no_password_and_loopback_needs_neither(tmp_path: Path) -> None:
    assert load_text(tmp_path, "broker: rediss://broker.lan:6380/0\n" + REMOTE).broker
    assert load_text(tmp_path, "broker: redis://localhost:6379/0\n" + REMOTE).broker


@pytest.mark.parametrize(("url", "insecure", "fine"), [
    ("redis://:pw@10.0.0.1:6379/0", False, True),
    ("redis://10.0.0.1:6379/0", False, False),
    ("redis://10.0.0.1:6379/0", True, True),
    ("rediss://10.0.0.1:6379/0", False, True),
    ("redis://127.0.0.53:6379/0", False, True),
    ("redis://[::1]:6379/0", False, True),
    ("redis://LOCALHOST/0", False, True),
    ("redis://user@10.0.0.1/0", False, False),
    ("amqp://:pw@10.0.0.1/", False, False),
    ("redis://:pw@10.0.0.1:notaport/0", False, False),
    ("redis:///0", False, False),
])
def test_check_broker_url(url: str, insecure: bool, fine: bool) -> None:
    assert (check_broker_url(url, insecure) is None) is fine


# -- where the inventory is ---------------------------------------------------------------------


def test_inventory_is_found_by_option_then_environment_then_current_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("option", "env", "catdog"):
        write(tmp_path, f"tmux_socket: {name}\n" + LOCAL, f"{name}.yaml")
    monkeypatch.chdir(tmp_path)
    env = {INVENTORY_ENV: str(tmp_path / "env.yaml")}
    assert load_inventory(tmp_path / "option.yaml", env).tmux_socket == "option"
    assert load_inventory(None, env).tmux_socket == "env"
    assert load_inventory(None, {}).tmux_socket == "catdog"
    assert inventory_path(None, {}) == tmp_path / "catdog.yaml"


# -- no input makes it fail another way ---------------------------------------------------------

KEYS = ["broker", "devices", "defaults", "limits", "schedule", "on", "host", "port", "pool",
        "capabilities", "env", "every", "cron", "window", "task", "<<", "insecure", "timezone"]
VALUES = ["local", "22", "yes", "~", "[a, b]", "{x: 1}", "${X}", "$${X}", "'${NOPE}'", "&a [1]",
          "*a", "!!int x", "!foo bar", "360/h", "cap:x", "redis://h/0", "2020-13-45", "1:30",
          ".nan", '"*/5 * * * *"', ":05-:55", "|", "- x", "? [k]", "0x1f", "!!binary Zm9v"]

yamlish = st.lists(
    st.tuples(st.integers(0, 6), st.sampled_from(KEYS), st.sampled_from(VALUES)),
    max_size=25,
).map(lambda rows: "".join(f"{' ' * n}{k}: {v}\n" for n, k, v in rows))
text = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=st.one_of(yamlish, text, st.binary(max_size=200)))
def test_any_input_gives_an_inventory_or_an_inventory_error(tmp_path: Path,
                                                             source: str | bytes) -> None:
    path = tmp_path / "catdog.yaml"
    if isinstance(source, bytes):
        path.write_bytes(source)
    else:
        path.write_text(source, encoding="utf-8")
    try:
        inventory = load_inventory(path, {"X": "1"})
    except InventoryError as error:
        assert error.problems
    else:
        assert all(isinstance(d, Device) for d in inventory.devices.values())
