"""Bad input never crashes: any inventory text, target string, window or broker URL gives either a
valid value or a CatDogError with a message, never another exception (hypothesis)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catdog.broker import check_broker_url
from catdog.errors import CatDogError
from catdog.inventory import Inventory
from catdog.loader import load_inventory
from catdog.targets import Target
from catdog.windows import Window

KEYS = ["devices", "defaults", "limits", "schedule", "broker", "imports", "tmux_socket",
        "timezone", "insecure", "host", "port", "user", "key", "python", "workdir",
        "capabilities", "concurrency", "pool", "env", "allow_root", "run_on", "task", "every",
        "cron", "on", "args", "kwargs", "window", "limit", "pi4", "zero", "local", "camera"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["local", "solo", "prefork", "1/s",
                                                           "60s", ":05-:55", "cap:camera",
                                                           "${HOME}", "${MISSING}", "* * * * *",
                                                           "redis://x:1/0", "all"]))
DOCS = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5)),
    max_leaves=25)


DEVICE = st.dictionaries(st.sampled_from(KEYS[9:25]), SCALARS | st.lists(SCALARS, max_size=3),
                         max_size=6)
SHAPED = st.fixed_dictionaries({
    "devices": st.dictionaries(st.sampled_from(["pi4", "zero", "all", "flower", "a b", ""]),
                               DEVICE, max_size=3)},
    optional={"defaults": DEVICE, "limits": st.dictionaries(st.text(max_size=5), SCALARS),
              "schedule": st.dictionaries(st.text(max_size=5), st.dictionaries(
                  st.sampled_from(KEYS[20:29]), SCALARS, max_size=5), max_size=2),
              "broker": SCALARS, "timezone": SCALARS, "insecure": SCALARS,
              "imports": st.lists(SCALARS, max_size=2)})


def load_text(text: str) -> Inventory:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "catdog.yaml"
        path.write_text(text)
        return load_inventory(path, {"HOME": "/home/pi"})


def loads_or_explains(doc: object) -> None:
    try:
        found = load_text(yaml.safe_dump(doc))
    except CatDogError as exc:
        assert str(exc).strip()
    else:
        assert isinstance(found, Inventory) and found.devices


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=DOCS)
def test_any_yaml_document_loads_or_is_refused_with_a_message(doc: object) -> None:
    loads_or_explains(doc)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=SHAPED)
def test_any_inventory_shaped_document_loads_or_is_refused_with_a_message(doc: object) -> None:
    loads_or_explains(doc)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_loads_or_is_refused_with_a_message(text: str) -> None:
    try:
        load_text(text)
    except CatDogError as exc:
        assert str(exc).strip()


@given(text=st.one_of(st.text(max_size=30), st.integers(), st.none(), st.lists(st.text())))
def test_any_target_parses_or_is_refused_with_a_message(text: object) -> None:
    try:
        target = Target.parse(text)
    except CatDogError as exc:
        assert str(exc).strip()
    else:
        assert target.name or target.kind.name == "EVERY"


@given(text=st.text(max_size=20))
def test_any_window_parses_or_is_refused_with_a_message(text: str) -> None:
    try:
        window = Window.parse(text)
    except CatDogError as exc:
        assert "expected" in str(exc)
    else:
        assert 0 <= window.start < window.span and 0 <= window.end < window.span


@given(url=st.text(max_size=60), insecure=st.booleans())
def test_any_broker_url_is_accepted_or_explained(url: str, insecure: bool) -> None:
    problem = check_broker_url(url, insecure)
    assert problem is None or problem.strip()
