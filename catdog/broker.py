"""Which broker the fleet uses: ``$CATDOG_BROKER_URL``, else ``broker:``, else the embedded Redis.

The embedded Redis is started only on the coordinator, by the code the ``catdog.embedded``
entry point ``redis`` names (:func:`ops.embedded_redis.start`, which needs the ``coordinator``
extra): this package never imports ``ops``. Workers are handed the URL by the launcher and never
start one. Where the embedded Redis's URL is recorded (``PORT_FILE``, ``PASSWORD_FILE`` in the
state folder, read by :func:`embedded_url`) is this module's; the server's side writes them.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import ipaddress
import os
import re
import ssl
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import kombu.exceptions
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from catdog.errors import BrokerError, BrokerUnreachable

if TYPE_CHECKING:
    from catdog.inventory import Inventory

#: the broker URL that overrides the inventory's ``broker:``
BROKER_ENV = "CATDOG_BROKER_URL"

PORT_FILE = "redis.port"
PASSWORD_FILE = "redis.password"
#: the entry point that starts the embedded Redis: ``start(state_dir, inventory_path, fleet=
#: inventory) -> url`` (the loaded inventory: its SSH devices are served on the LAN)
EMBEDDED_ENTRY_POINT = ("catdog.embedded", "redis")
NEEDS_COORDINATOR = "the embedded Redis needs the coordinator extra: pip install 'catdog[coordinator]'"
#: what the Redis client and kombu raise when the broker does not answer (refused, timed out,
#: password refused); :func:`translated` turns them into :class:`BrokerUnreachable`
UNREACHABLE: tuple[type[Exception], ...] = (
    redis.ConnectionError, redis.TimeoutError, redis.exceptions.InvalidResponse,
    kombu.exceptions.OperationalError)
# -- the one timeout policy of every CatDog Redis client (:func:`connect`; coordinator and worker)
#: connecting gives up after this (a coordinator command says at once that the broker does not
#: answer; kombu and redis-py would otherwise retry for seconds per call)
CONNECT_TIMEOUT_S = 1.5
#: the ping of :func:`client` (a coordinator command's first word to the broker) waits this long
PROBE_TIMEOUT_S = CONNECT_TIMEOUT_S
#: any other reply: above the longest blocking wait of a caller (the launcher's 1 s BLPOP)
SOCKET_TIMEOUT_S = 5.0
#: a connection idle this long is pinged before it is used again (a long-lived client, such as
#: a worker's heartbeat, finds a broker that restarted instead of writing into a dead socket)
HEALTH_CHECK_S = 30
#: a failed command is tried once more, after a short backoff
RETRIES = 1


def configured_url(inventory: Inventory, environ: Mapping[str, str] | None = None) -> str | None:
    """The broker the user configured (environment first), or None for the embedded one."""
    return chosen_url(inventory.broker, os.environ if environ is None else environ)


def resolve(inventory: Inventory, *, start_embedded: bool,
            environ: Mapping[str, str] | None = None) -> str:
    """The broker URL for ``inventory``; starts the embedded Redis when allowed and needed."""
    url = configured_url(inventory, environ)
    if url:
        problem = check_broker_url(url, inventory.insecure)
        if problem:
            raise BrokerError(f"broker {redact(url)}: {problem}")
        return url
    if start_embedded:
        return start_embedded_redis(inventory)
    return embedded_url(inventory.state_dir)


def start_embedded_redis(inventory: Inventory) -> str:
    """Start the embedded Redis of ``inventory`` unless it runs (saying so on stderr); its URL.

    It is found through the ``catdog.embedded`` entry point, which the installed CatDog declares;
    without it (or without what it imports) the error says what to install."""
    group, name = EMBEDDED_ENTRY_POINT
    found = importlib.metadata.entry_points(group=group, name=name)
    try:
        start = next(iter(found)).load()
    except (StopIteration, ImportError) as exc:
        raise BrokerError(f"{inventory.path}: no broker is set and {NEEDS_COORDINATOR} "
                          f"(or set `broker:` in the inventory)") from exc
    return str(start(inventory.state_dir, inventory.path, fleet=inventory))


def connect(url: str, *, socket_timeout: float = SOCKET_TIMEOUT_S, retries: int = RETRIES
            ) -> redis.Redis:
    """The one factory of CatDog's Redis clients: a client for ``url`` with the timeout policy
    above (a probe passes :data:`PROBE_TIMEOUT_S`; "is it up?" passes ``retries=0``). It
    connects on first use."""
    return redis.Redis.from_url(
        url, socket_timeout=socket_timeout, socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_S,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.1), retries))


def client(url: str, inventory: Inventory | None = None) -> redis.Redis:
    """A client of :func:`connect` for ``url`` once the broker has just answered a ping (within
    :data:`PROBE_TIMEOUT_S`); raises :class:`BrokerUnreachable` (one line: which broker, why,
    what to check) otherwise."""
    with translated(url, inventory), contextlib.closing(
            connect(url, socket_timeout=PROBE_TIMEOUT_S)) as probe:
        probe.ping()
    return connect(url)


@contextlib.contextmanager
def translated(url: str, inventory: Inventory | None = None) -> Iterator[None]:
    """Inside, a broker that does not answer raises :class:`BrokerUnreachable`, not the client's
    own ``ConnectionError`` (and its traceback)."""
    try:
        yield
    except UNREACHABLE as exc:
        raise unreachable(url, exc, inventory) from exc


def unreachable(url: str, error: BaseException, inventory: Inventory | None = None,
                environ: Mapping[str, str] | None = None) -> BrokerUnreachable:
    """The one-line error for a broker at ``url`` that did not answer with ``error``.

    >>> str(unreachable("redis://:pw@127.0.0.1:6399/0", redis.ConnectionError(
    ...     "Error 111 connecting to 127.0.0.1:6399. Connection refused."), environ={}))
    'broker redis://:***@127.0.0.1:6399/0 does not answer (Connection refused): check that Redis \
runs there and that `broker:` in the inventory is right'
    """
    return BrokerUnreachable(redact(url), _why(url, error), _check(url, inventory, environ))


def _why(url: str, error: BaseException) -> str:
    cause = error.__cause__ if isinstance(error, kombu.exceptions.OperationalError) else None
    error = cause if isinstance(cause, redis.RedisError) else error
    if isinstance(error, redis.AuthenticationError):
        return "it refused the password" if urlsplit(url).password else "it wants a password"
    if isinstance(error, redis.TimeoutError):
        return "timed out"
    if isinstance(error, redis.exceptions.InvalidResponse):
        return f"what answers there is not Redis: {str(error).removeprefix('Protocol Error: ')}"
    text = str(error).strip()
    found = re.match(r"Error -?\d+ connecting to \S+\. (.+?)\.?$", text)
    return found.group(1) if found else text.rstrip(".") or type(error).__name__


def _check(url: str, inventory: Inventory | None, environ: Mapping[str, str] | None) -> str:
    environ = os.environ if environ is None else environ
    where = f"in {inventory.path}" if inventory is not None else "in the inventory"
    if environ.get(BROKER_ENV) == url:
        return f"check that Redis runs there and that ${BROKER_ENV} is right"
    if inventory is None or inventory.broker:
        return f"check that Redis runs there and that `broker:` {where} is right"
    return (f"the embedded Redis of {inventory.path} stopped answering: its log "
            f"{inventory.state_dir / 'redis.log'} says why; `fab stop` then `fab launch` "
            f"starts it again")


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


# -- broker policy: which URL, and whether it may serve (also checked when the inventory loads) ----

WHAT_BROKER = "a redis:// or rediss:// URL"
BROKER_RE = re.compile(r"^rediss?://", re.IGNORECASE)


def chosen_url(broker: str | None, environ: Mapping[str, str]) -> str | None:
    """The broker the user configured: ``$CATDOG_BROKER_URL``, else ``broker:``, else None."""
    return environ.get(BROKER_ENV) or broker or None


def check_broker_url(url: str, insecure: bool) -> str | None:
    """Why ``url`` cannot serve as the fleet's broker, or None when it can.

    A broker beyond loopback needs a password or TLS (``rediss://``), unless ``insecure``.

    >>> check_broker_url("redis://:s3cret@192.168.10.113:6379/0", insecure=False) is None
    True
    >>> check_broker_url("redis://127.0.0.1:6379/0", insecure=False) is None
    True
    >>> check_broker_url("http://localhost", insecure=False)
    "expected a redis:// or rediss:// URL, got scheme 'http'"
    """
    try:
        parts = urlsplit(url.strip())
        host, _ = parts.hostname, parts.port
    except ValueError as exc:
        return f"expected {WHAT_BROKER}, got one that cannot be parsed ({exc})"
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss"):
        return f"expected {WHAT_BROKER}, got " + (f"scheme {scheme!r}" if scheme else "no scheme")
    if not host:
        return f"expected {WHAT_BROKER} with a host, like redis://:PASSWORD@HOST:6379/0"
    problem = check_tls_options(parts.query) if scheme == "rediss" else None
    if problem:
        return problem
    if (scheme == "rediss" and tls_verified(parts.query)) or parts.password or insecure \
            or _is_loopback(host):
        return None
    if scheme == "rediss":
        return (f"the broker host {host} is not loopback and ssl_cert_reqs turns off the check "
                f"of its certificate: give its CA with ?ssl_ca_certs=PATH instead, or a "
                f"password, or set `insecure: true`")
    return (f"the broker host {host} is not loopback, so it needs a password "
            f"(redis://:PASSWORD@{host}:6379/0) or TLS (rediss://...); "
            "or set `insecure: true` to allow a broker without either")


TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def check_tls_options(query: str) -> str | None:
    """Why the TLS options of a ``rediss://`` URL's query cannot work, or None."""
    for key, value in parse_qsl(query):
        if key in TLS_FILES and not Path(value).is_file():
            return (f"{key}={value}: no such file (the same path must hold it on the "
                    f"coordinator and on every device)")
    return None


def tls_verified(query: str) -> bool:
    """Whether a ``rediss://`` URL checks the server's certificate (the default; only
    ``ssl_cert_reqs=none`` or ``optional`` turn that off)."""
    reqs = dict(parse_qsl(query)).get("ssl_cert_reqs", "required")
    return reqs.lower() in ("required", "cert_required")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
