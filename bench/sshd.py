"""A real OpenSSH server on a loopback port, for the tests' and the benchmarks' SSH devices.

Here rather than in the tests: the benchmarks run with the coordinator extra alone (no pytest)
and never import the tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

IS_ROOT = os.geteuid() == 0


class Sshd:
    """A real OpenSSH server on a loopback port, with its own host key and one client key;
    ``sftp=False`` leaves out the ``Subsystem sftp`` line, as a minimal ``sshd_config`` does;
    ``config`` adds lines (e.g. ``SetEnv PATH=/nowhere``)."""

    def __init__(self, folder: Path, sftp: bool = True, config: tuple[str, ...] = ()) -> None:
        import getpass
        import socket

        if not Path("/usr/sbin/sshd").exists():
            raise RuntimeError("a real sshd is needed: apt-get install -y openssh-server")
        self.folder = folder
        self.user = getpass.getuser()
        for name in ("host_key", "client_key", "other_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            str(folder / name)], check=True)
        (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        host_pub = (folder / "host_key.pub").read_text().split()
        self.known_hosts = folder / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        (folder / "empty_known_hosts").write_text("")
        (folder / "sshd_config").write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}",
            f"PidFile {folder / 'sshd.pid'}", f"AuthorizedKeysFile {folder / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "PubkeyAuthentication yes", *(["Subsystem sftp internal-sftp"] if sftp else []),
            "LogLevel ERROR", *config, "",
        ]))
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f",
                                      str(folder / "sshd_config")],
                                     stderr=open(folder / "sshd.log", "w"))  # noqa: SIM115
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError as err:
                if time.monotonic() > deadline:
                    log = (folder / "sshd.log").read_text()
                    raise RuntimeError(f"sshd did not start: {log}") from err
                time.sleep(0.05)

    def device(self, capabilities: list[str], workdir: Path, **fields: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "host": "127.0.0.1", "port": self.port, "user": self.user,
            "key": str(self.folder / "client_key"), "known_hosts": str(self.known_hosts),
            "python": sys.executable, "workdir": str(workdir), "capabilities": capabilities,
        }
        if IS_ROOT:
            spec["allow_root"] = True
        return {**spec, **fields}

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
