"""The embedded Redis's TLS files: a private CA and a server certificate it signs, in ``.catdog/tls/``.

The CA is made once and kept (devices hold a copy: ``ca.pem``); its key never leaves the
coordinator (mode 600). The server certificate names every address the TLS front listens on
(IP subject alternative names, plus ``localhost``) and is made again, by the same CA, when that
set changes or it nears its end. Made with ``cryptography`` (already on every coordinator: the
SSH library needs it), so no ``openssl`` program is needed.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ops.files import write_private

CA_DAYS = 3650
SERVER_DAYS = 825
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA certificate: what every client checks the server against
    cert: Path  # the server's certificate chain (server, then CA)
    key: Path  # the server's private key (mode 600)


def tls_files(folder: Path) -> TlsFiles:
    return TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")


def ensure_ca(folder: Path) -> Path:
    """The CA certificate in ``folder``, made (with its key) the first time."""
    if not ((folder / "ca.pem").exists() and (folder / "ca.key").exists()):
        _make_ca(folder)
    return folder / "ca.pem"


def ensure(folder: Path, addresses: tuple[str, ...]) -> TlsFiles:
    """The TLS files in ``folder`` for a server at ``addresses``, made or renewed as needed."""
    files = tls_files(folder)
    ensure_ca(folder)
    if not _server_fits(files, addresses):
        _make_server(folder, addresses)
    return files


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _make_ca(folder: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("CatDog embedded Redis CA")
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
          .public_key(key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(_now() - datetime.timedelta(minutes=5))
          .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(key, hashes.SHA256()))
    write_private(folder / "ca.key", _pem_key(key))
    write_private(folder / "ca.pem", ca.public_bytes(Encoding.PEM).decode())


def _names(addresses: tuple[str, ...]) -> set[str]:
    return {str(ipaddress.ip_address(a)) for a in addresses} | {"127.0.0.1"}


def _server_fits(files: TlsFiles, addresses: tuple[str, ...]) -> bool:
    """Whether the server certificate exists, names exactly ``addresses`` and is not ending."""

    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    found = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    return (found == _names(addresses) and cert.issuer == ca.subject and files.key.exists()
            and cert.not_valid_after_utc - RENEW_BEFORE > _now())


def _make_server(folder: Path, addresses: tuple[str, ...]) -> None:
    ca_key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey), "ca.key is CatDog's own EC key"
    ca = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    names = sorted(_names(addresses), key=lambda a: (":" in a, a))
    alternatives: list[x509.GeneralName] = [x509.DNSName("localhost")]
    alternatives += [x509.IPAddress(ipaddress.ip_address(a)) for a in names]
    cert = (x509.CertificateBuilder().subject_name(_name(f"CatDog embedded Redis {names[0]}"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=SERVER_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .sign(ca_key, hashes.SHA256()))
    write_private(folder / "server.key", _pem_key(key))
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(
        serialization.Encoding.PEM)
    write_private(folder / "server.pem", chain.decode())
