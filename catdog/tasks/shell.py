"""``run_on``: run a shell command on a device and return what happened.

A non-zero exit status is a result, not an error. With a ``run_on:`` allow-list in the inventory
the command runs without a shell and its program must be on the list; ``run_on: false`` disables it.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from typing import Any

from catdog import app
from catdog.errors import CatDogError
from catdog.fleet import fleet

MAX_OUTPUT = 128 * 1024  # bytes of stdout and of stderr kept: the result stays under its limit


class CommandRefused(CatDogError):
    """The device's ``run_on:`` setting does not allow this command."""


@app.task(name="tasks.run_on", target_arg=True)
def run_on(target: str, command: str | list[str], timeout: float | None = None) -> dict[str, Any]:
    """Run ``command`` on the target device(s); ``timeout`` seconds kills it (exit_code -9)."""
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    device = fleet.device
    argv, shell = _command(command, device.run_on)
    started = time.monotonic()
    code, out, err, timed_out = _run(argv, shell, timeout)
    return {
        "device": device.name,
        "exit_code": code,
        "stdout": out,
        "stderr": err,
        "duration_s": round(time.monotonic() - started, 6),
        "timed_out": timed_out,
    }


def _command(command: object, allowed: bool | tuple[str, ...]) -> tuple[list[str] | str, bool]:
    if not isinstance(command, (str, list)) or not command:
        raise TypeError(f"command must be a non-empty string or list of strings, got {command!r}")
    if allowed is False:
        raise CommandRefused("run_on is disabled on this device (inventory: run_on: false)")
    if allowed is True:
        return (command if isinstance(command, str) else shlex.join(command)), True
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if os.path.basename(argv[0]) not in allowed and argv[0] not in allowed:
        raise CommandRefused(
            f"program {argv[0]!r} is not in this device's run_on allow-list: {', '.join(allowed)}"
        )
    return argv, False


def _run(argv: list[str] | str, shell: bool, timeout: float | None
         ) -> tuple[int, str, str, bool]:
    with subprocess.Popen(argv, shell=shell, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            timed_out = True
    return proc.returncode, _text(out), _text(err), timed_out


def _text(data: bytes) -> str:
    return data[:MAX_OUTPUT].decode("utf-8", errors="replace")
