"""``rediss://`` with a CA file: workers, commands and callers all speak TLS and check the broker's
certificate; a broker whose certificate the CA did not sign is refused, never used unchecked.

The bundled Redis has no TLS, so a small TLS-terminating proxy (tests/tls.py) fronts it, with a
certificate for 127.0.0.1 from a private CA made by the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from catdog.broker import check_broker_url, tls_settings
from ops.embedded_redis import EmbeddedRedis
from ops.results import READY

from .conftest import ROOT, device_spec
from .test_cli import _env, fab
from .tls import Certificates, TlsProxy, make_certificates
from .tmuxserver import end_server

pytestmark = pytest.mark.slow

PRODUCER = """
import json, sys
from catdog import use_inventory
from tasks import run_on
use_inventory(sys.argv[1])
print(json.dumps(run_on.delay("tls", "echo over tls").get(timeout=60)))
"""


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[str, int]]:
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.ensure_running()
    password, port = url.split("//:", 1)[1].split("@")[0], int(url.rsplit(":", 1)[1].split("/")[0])
    yield password, port
    server.stop()


def inventory(folder: Path, ca: Path, port: int) -> Path:
    path = folder / "catdog.yaml"
    path.write_text(yaml.safe_dump({
        "broker": f"rediss://:${{CATDOG_TLS_PASSWORD}}@127.0.0.1:{port}/0?ssl_ca_certs={ca}",
        "tmux_socket": f"catdog-tls-{uuid.uuid4().hex[:6]}",
        "devices": {"tls": device_spec([], pool="solo")}}))
    return path


def test_a_fleet_on_a_rediss_broker_with_a_ca_file(tmp_path: Path, upstream) -> None:
    password, port = upstream
    certificates = make_certificates(tmp_path)
    proxy = TlsProxy(certificates, port)
    path = inventory(tmp_path, certificates.ca, proxy.port)
    env = _env(CATDOG_TLS_PASSWORD=password)
    try:
        launched = fab("launch", "--inventory", str(path), "--json", env=env)
        assert launched.returncode == 0, launched.stdout + launched.stderr
        assert [r["state"] for r in json.loads(launched.stdout)] == [READY]
        done = subprocess.run([sys.executable, "-c", PRODUCER, str(path)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["stdout"] == "over tls\n"
        status = fab("status", "--inventory", str(path), "--json", env=env)
        assert [r["state"] for r in json.loads(status.stdout)] == ["idle"]
        assert proxy.connections >= 4 and proxy.handshake_failures == 0  # all of it over TLS
    finally:
        fab("stop", "--inventory", str(path), "--force", env=env)
        end_server(yaml.safe_load(path.read_text())["tmux_socket"])  # and its socket file
        proxy.close()


def test_a_broker_certificate_the_ca_did_not_sign_is_refused(tmp_path: Path, upstream) -> None:
    password, port = upstream
    (tmp_path / "real").mkdir()
    (tmp_path / "other").mkdir()
    proxy = TlsProxy(make_certificates(tmp_path / "real"), port)
    stranger: Certificates = make_certificates(tmp_path / "other")  # another authority
    path = inventory(tmp_path, stranger.ca, proxy.port)
    env = _env(CATDOG_TLS_PASSWORD=password)
    try:
        launched = fab("launch", "--inventory", str(path), "--json", "--timeout", "15", env=env)
        assert launched.returncode != 0
        assert "certificate verify failed" in launched.stdout + launched.stderr
        assert proxy.handshake_failures >= 1 and proxy.connections == 0  # never used unchecked
    finally:
        fab("stop", "--inventory", str(path), "--force", env=env)
        end_server(yaml.safe_load(path.read_text())["tmux_socket"])  # and its socket file
        proxy.close()


def test_tls_options_are_checked_and_always_verify(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    lan = "rediss://:pw@192.168.1.5:6380/0"
    assert check_broker_url(f"{lan}?ssl_ca_certs={ca}", insecure=False) is None
    missing = check_broker_url(f"{lan}?ssl_ca_certs={tmp_path}/nope.pem", insecure=False)
    assert missing and "nope.pem: no such file" in missing
    unchecked = "rediss://192.168.1.5:6380/0?ssl_cert_reqs=none"
    refused = check_broker_url(unchecked, insecure=False)
    assert refused and "ssl_ca_certs=PATH" in refused
    assert check_broker_url(unchecked, insecure=True) is None
    import ssl

    settings = tls_settings(f"{lan}?ssl_ca_certs={ca}")
    assert settings["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED,
                                          "ssl_ca_certs": str(ca)}
    assert settings["redis_backend_use_ssl"] == settings["broker_use_ssl"]
    assert tls_settings(lan)["broker_use_ssl"]["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert tls_settings("redis://:pw@127.0.0.1:6379/0") == {}
