"""Which broker the fleet uses: ``$CATDOG_BROKER_URL``, else ``broker:``, else the embedded Redis.

The embedded Redis is started only by coordinator-side code (:mod:`ops.embedded_redis`, which needs
the ``coordinator`` extra); workers are handed the URL by the launcher and never start one.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from catdog.errors import BrokerError
from catdog.inventory import BROKER_ENV, Inventory
from catdog.loader import NEEDS_BROKER, TLS_FILES, check_broker_url, tls_verified

PORT_FILE = "redis.port"
PASSWORD_FILE = "redis.password"


def configured_url(inventory: Inventory, environ: Mapping[str, str] | None = None) -> str | None:
    """The broker the user configured (environment first), or None for the embedded one."""
    environ = os.environ if environ is None else environ
    return environ.get(BROKER_ENV) or inventory.broker or None


def resolve(inventory: Inventory, *, start_embedded: bool,
            environ: Mapping[str, str] | None = None) -> str:
    """The broker URL for ``inventory``; starts the embedded Redis when allowed and needed."""
    url = configured_url(inventory, environ)
    if url:
        problem = check_broker_url(url, inventory.insecure)
        if problem:
            raise BrokerError(f"broker {redact(url)}: {problem}")
        return url
    if inventory.has_remote_devices:
        raise BrokerError(f"{inventory.path}: {NEEDS_BROKER}")
    if start_embedded:
        from ops.embedded_redis import EmbeddedRedis

        return EmbeddedRedis(inventory.state_dir).ensure_running()
    return embedded_url(inventory.state_dir)


def tls_settings(url: str) -> dict[str, Any]:
    """Celery settings for a ``rediss://`` broker: the server's certificate is checked (against
    ``?ssl_ca_certs=PATH``, else the system's CAs). Without them kombu would connect to a
    ``rediss://`` broker without checking its certificate at all."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "rediss":
        return {}
    query = dict(parse_qsl(parts.query))
    options: dict[str, Any] = {
        "ssl_cert_reqs": ssl.CERT_REQUIRED if tls_verified(parts.query) else ssl.CERT_NONE}
    options.update({key: query[key] for key in TLS_FILES if key in query})
    return {"broker_use_ssl": options, "redis_backend_use_ssl": dict(options)}


def embedded_url(state_dir: Path) -> str:
    """The URL of the embedded Redis recorded in ``state_dir`` (it may not be running)."""
    try:
        port = int((state_dir / PORT_FILE).read_text().strip())
        password = (state_dir / PASSWORD_FILE).read_text().strip()
    except (OSError, ValueError) as exc:
        raise BrokerError(
            f"no embedded Redis recorded in {state_dir}; start the fleet with `fab launch`"
        ) from exc
    return f"redis://:{password}@127.0.0.1:{port}/0"


def redact(url: str) -> str:
    """``url`` with its password hidden, for messages and logs.

    >>> redact("redis://:s3cret@10.0.0.2:6379/0")
    'redis://:***@10.0.0.2:6379/0'
    """
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
