"""The embedded Redis serving SSH devices: where it listens, who may connect, what each device gets.

With SSH devices and no broker configured (no ``broker:``, no ``$CATDOG_BROKER_URL``), the
embedded Redis also listens on the coordinator's address each device reaches: the source address
of the route to the device (a UDP socket's ``connect``: no packet is sent), or
``embedded: {listen: ADDRESS}``, which must be one of the coordinator's own. Each device connects
as a Redis ACL user of its own, ``catdog-<device>``, with its own generated password (kept in
``.catdog/users/``, mode 600): every command on every key and channel but the ``@admin`` and
``@dangerous`` ones (no ``CONFIG``, ``FLUSHALL``, ``SHUTDOWN``, ``REPLICAOF``, ``DEBUG``,
``ACL SETUSER``...), less what a worker needs back (:data:`GIVEN_BACK`). The coordinator keeps
the default user and its password. A device's URL is only ever written into its mode-600 env
file (:func:`device_url`); with ``embedded: {tls: true}`` it is ``rediss://`` to the TLS front,
checked against the CA copied beside it.
"""

from __future__ import annotations

import hashlib
import secrets
import shlex
import socket
from typing import TYPE_CHECKING
from urllib.parse import quote

import redis

from catdog import broker
from catdog.errors import CatDogError, InventoryError, Problem
from catdog.inventory import Device, Inventory
from ops.embedded_redis import HOST, TLS_DIR, EmbeddedRedis, Listening
from ops.files import write_private

if TYPE_CHECKING:
    from ops.session import WorkerSession

USER_PREFIX = "catdog-"
USERS_DIR = "users"
#: what a device's user may not run (Redis's own categories: reconfigure, flush, shut down,
#: replicate, debug, ACL, MONITOR, KEYS, SORT...)
TAKEN = ("-@admin", "-@dangerous")
#: what the clients on a device send of those, found by running the fleet under the ACL and
#: reading Redis's ``ACL LOG``: redis-py describes its own connection on connect (``CLIENT
#: SETINFO``, ``CLIENT MAINT_NOTIFICATIONS``; refused, it goes on, but every connection would
#: then leave a denial in the log, hiding real ones). Celery, kombu and CatDog's workers need
#: nothing else of ``@admin`` and ``@dangerous`` (``INFO``, ``KEYS``, ``CLIENT KILL`` stay refused).
GIVEN_BACK = ("+client|setinfo", "+client|maint_notifications")
CA_NAME = "ca.pem"


def serves_lan(inventory: Inventory) -> bool:
    """Whether the fleet's embedded Redis serves SSH devices (no broker configured)."""
    return broker.configured_url(inventory) is None and inventory.has_remote_devices


def user_name(device: str) -> str:
    return f"{USER_PREFIX}{device}"


def rules(inventory: Inventory, device: str) -> str:
    """``device``'s ACL user as Redis reads it after ``user `` (its password as a SHA-256)."""
    digest = hashlib.sha256(password(inventory, device).encode()).hexdigest()
    return " ".join([user_name(device), "on", f"#{digest}", "allkeys", "allchannels", "+@all",
                     *TAKEN, *GIVEN_BACK])


def password(inventory: Inventory, device: str) -> str:
    """``device``'s Redis password, generated the first time (mode 600)."""
    path = inventory.state_dir / USERS_DIR / f"{device}.password"
    if not path.exists():
        inventory.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # private from the start
        write_private(path, secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def listening_for(inventory: Inventory) -> Listening:
    """What the embedded Redis of ``inventory`` serves: loopback alone for a fleet of local
    devices; else the addresses its SSH devices reach, TLS or not, and a user per device.
    An ``embedded.listen`` the coordinator does not have is an :class:`InventoryError`."""
    if not serves_lan(inventory):
        return Listening()
    listen = inventory.embedded.listen
    addresses = [_own_address(inventory, listen)] if listen else []
    for device in inventory.devices.values():
        if not (device.is_local or listen):
            try:
                addresses.append(route_source(device))
            except CatDogError:
                continue  # unreachable anyway: launching it says why
    users = tuple(rules(inventory, name) for name in inventory.devices)
    return Listening(tuple(dict.fromkeys(addresses)), inventory.embedded.tls, users)


def device_address(inventory: Inventory, device: Device) -> str:
    """The coordinator's address ``device`` reaches the broker at."""
    if device.is_local:
        return HOST
    listen = inventory.embedded.listen
    if listen:
        return _own_address(inventory, listen)
    return route_source(device)


def route_source(device: Device) -> str:
    """The source address of the coordinator's route to ``device`` (no packet is sent)."""
    try:
        family, _, _, _, where = socket.getaddrinfo(device.host, device.port,
                                                    type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(where)
            return str(probe.getsockname()[0])
    except OSError as exc:
        raise CatDogError(f"device {device.name}: no route from the coordinator to "
                          f"{device.host} ({exc}); fix devices.{device.name}.host or set "
                          f"`embedded: {{listen: ADDRESS}}`") from exc


def _own_address(inventory: Inventory, listen: str) -> str:
    """``listen`` as an address of this machine, else the one-line error naming the fix."""
    try:
        infos = socket.getaddrinfo(listen, None, type=socket.SOCK_STREAM)
    except OSError:
        infos = []
    for family, _, _, _, where in infos:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((where[0], 0))
                return str(where[0])
            except OSError:
                continue
    hint = ""
    for device in inventory.devices.values():
        if not device.is_local:
            try:
                hint = (f" (the route to devices.{device.name} leaves from "
                        f"{route_source(device)})")
            except CatDogError:
                continue
            break
    raise InventoryError([Problem(
        str(inventory.path), inventory.embedded.lines.get("listen", inventory.embedded.line),
        "embedded.listen",
        f"the coordinator has no address {listen!r}{hint}; set it to an address of this "
        f"machine that the devices reach, or remove it to use the route to each device")])


def ensure_user(admin: redis.Redis, inventory: Inventory, device: str) -> None:
    """``device``'s user in the running server (one added to the inventory since it started
    is created at once; the next start has it in ``redis.conf``)."""
    wanted = rules(inventory, device).split()
    found = admin.acl_getuser(wanted[0]) or {}
    passwords = found.get("passwords")
    if isinstance(passwords, list) and wanted[2][1:] in passwords:
        return
    admin.execute_command("ACL", "SETUSER", wanted[0], "reset", *wanted[1:])


def device_url(inventory: Inventory, session: WorkerSession, admin_url: str) -> str:
    """The broker URL ``session``'s worker gets (in its mode-600 env file): ``admin_url`` when
    the embedded Redis does not serve the LAN (or a broker is configured); else the device's
    own user at the address it reaches, over TLS when set (the CA copied to the device)."""
    if not serves_lan(inventory):
        return admin_url
    device = session.device
    server = EmbeddedRedis(inventory.state_dir)
    with broker.translated(admin_url, inventory):
        admin = broker.connect(admin_url)
        try:
            ensure_user(admin, inventory, device.name)
        finally:
            admin.close()
    user = f"{user_name(device.name)}:{password(inventory, device.name)}"
    address = device_address(inventory, device)
    host = f"[{address}]" if ":" in address else address
    if device.is_local or not inventory.embedded.tls:
        return f"redis://{user}@{host}:{server.port}/0"
    copied = copy_ca(inventory, session)
    assert copied is not None
    ca = copied[0]
    return f"rediss://{user}@{host}:{server.tls_port()}/0?ssl_ca_certs={quote(ca, safe='/')}"


def copy_ca(inventory: Inventory, session: WorkerSession) -> tuple[str, bool] | None:
    """Put the embedded Redis's CA on ``session``'s SSH device (made now if it is not yet), where
    its URL's ``ssl_ca_certs`` names it: its path there and whether it was copied (not there
    yet, or another), or None when the fleet has no TLS."""
    from ops.certs import ensure_ca

    if session.device.is_local or not (serves_lan(inventory) and inventory.embedded.tls):
        return None
    inventory.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = ensure_ca(inventory.state_dir / TLS_DIR).read_text()
    path = f"{session.state_dir}/run/{CA_NAME}"
    copied = session.host.shell(f"cat {shlex.quote(path)} 2>/dev/null").stdout != text
    if copied:
        session.host.write_private(path, text)
    return path, copied
