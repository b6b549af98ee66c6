"""``fab flower``: Flower for the fleet in tmux, its API and Prometheus ``/metrics``, every device
in the dashboard in a real headless Chromium (screenshot kept in ``artifacts/``), authentication
required beyond loopback, and ``fab stop`` stopping it."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from catdog.tasks.examples import whoami
from ops.results import READY

from .conftest import ROOT, device_spec
from .test_cli import _env, fab

pytestmark = pytest.mark.slow
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--virtual-time-budget=5000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, auth: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("the Flower test needs a real browser: apt-get install -y chromium "
                    "(scripts/test installs it as root)")
    return found


def test_fab_flower_shows_every_device_in_the_api_and_in_a_real_browser(
        make_fleet, redis_url: str) -> None:
    fleet = make_fleet({"kitchen": device_spec(["camera"]),
                        "garden": device_spec(["sensor"], pool="solo"),
                        "shed": device_spec(["sensor"], pool="threads")})
    assert [r.state for r in fleet.launch()] == [READY] * 3
    env = {**_env(), "CATDOG_BROKER_URL": redis_url}
    port = free_port()
    started = fab("flower", "--inventory", str(fleet.path), "--port", str(port), "--json",
                  env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    row = json.loads(started.stdout)[0]
    url = f"http://127.0.0.1:{port}/"
    assert (row["device"], row["state"], row["reason"]) == ("flower", "RUNNING", url)
    nodes = {f"{d}@{socket.gethostname()}" for d in ("kitchen", "garden", "shed")}

    deadline = time.monotonic() + 20
    workers: dict = {}
    while set(workers) != nodes and time.monotonic() < deadline:
        status, body = get(f"{url}api/workers?refresh=1")
        assert status == 200  # loopback: the API answers without authentication
        workers = json.loads(body)
    assert set(workers) == nodes
    status, text = get(f"{url}metrics")
    assert status == 200 and "flower_" in text  # Prometheus can scrape it

    # workers start without task events; Flower turns them on (every 5 s) and then sees tasks
    deadline, states = time.monotonic() + 30, set()
    while "SUCCESS" not in states and time.monotonic() < deadline:
        assert whoami.on("garden").delay().get(timeout=10)["device"] == "garden"
        status, body = get(f"{url}api/tasks")
        states = {task["state"] for task in json.loads(body).values()}
        time.sleep(0.5)
    assert "SUCCESS" in states, states

    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = artifacts / "flower-dashboard.png"
    shot.unlink(missing_ok=True)
    browser = chromium()
    dom = subprocess.run([browser, *CHROMIUM_FLAGS, "--dump-dom", url], capture_output=True,
                         text=True, timeout=60, check=False).stdout
    assert all(node in dom for node in nodes), dom[-2000:]
    subprocess.run([browser, *CHROMIUM_FLAGS, "--window-size=1280,800", f"--screenshot={shot}",
                    url], capture_output=True, timeout=60, check=False)
    assert shot.exists() and shot.stat().st_size > 10_000

    stopped = fab("stop", "--inventory", str(fleet.path), "--json", env=env)
    rows = {r["device"]: r["state"] for r in json.loads(stopped.stdout)}
    assert rows["flower"] == "STOPPED" and "catdog-flower" not in fleet.sessions()


def test_flower_beyond_loopback_needs_auth_and_auth_protects_the_api(make_fleet,
                                                                     redis_url: str) -> None:
    fleet = make_fleet({"kitchen": device_spec([])})
    env = {**_env(), "CATDOG_BROKER_URL": redis_url}
    refused = fab("flower", "--inventory", str(fleet.path), "--address", "0.0.0.0",
                  "--port", str(free_port()), env=env)
    assert refused.returncode == 2
    assert "export CATDOG_FLOWER_AUTH=user:password" in refused.stderr
    assert "catdog-flower" not in fleet.sessions()  # nothing half-started

    port = free_port()
    secret = "ana:s3cret-pass"
    started = fab("flower", "--inventory", str(fleet.path), "--address", "0.0.0.0",
                  "--port", str(port), env={**env, "CATDOG_FLOWER_AUTH": secret})
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        assert get(f"http://127.0.0.1:{port}/api/workers")[0] == 401
        assert get(f"http://127.0.0.1:{port}/api/workers", auth=secret)[0] == 200
        tmux_commands = fleet.tmux("list-panes", "-a", "-F", "#{pane_start_command}").stdout
        processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert "s3cret-pass" not in tmux_commands + processes
        env_file = Path(fleet.folder / ".catdog" / "run" / "flower.env")
        assert env_file.stat().st_mode & 0o077 == 0
    finally:
        fab("stop", "--inventory", str(fleet.path), env=env)
