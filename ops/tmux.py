"""tmux control for worker sessions, on a private socket (``tmux -L <socket>``).

Commands are argv lists handed to a runner, so the same code drives the coordinator's tmux
(:class:`LocalRunner`) and, later, a device's tmux over SSH. Sessions keep a dead pane
(``remain-on-exit``) so a worker that dies on start leaves its exit status and last output behind.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from catdog.errors import CommandError

HISTORY_LINES = 10000
DEAD_BANNER = "Pane is dead"
#: the session option naming the inventory that started the session (:mod:`ops.ownership`)
OWNER_OPTION = "@catdog_inventory"


@dataclass(frozen=True)
class Completed:
    status: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str]], Completed]


class LocalRunner:
    """Runs commands on the coordinator."""

    def __init__(self, timeout: float = 15.0) -> None:
        self.timeout = timeout

    def __call__(self, argv: Sequence[str]) -> Completed:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=self.timeout,
                              check=False, stdin=subprocess.DEVNULL)
        return Completed(proc.returncode, proc.stdout, proc.stderr)


@dataclass(frozen=True)
class Pane:
    """The state of a session's (single) pane."""

    dead: bool
    dead_status: int | None  # None while tmux has not recorded it yet
    pid: int
    #: the session's :data:`OWNER_OPTION` ("" for a session started without it)
    owner: str = ""


# the owner last: a path may hold "|"
PANE_FORMAT = "#{session_name}|#{pane_dead}|#{pane_dead_status}|#{pane_pid}|#{@catdog_inventory}"


def parse_pane(name: str, output: str) -> Pane | None:
    """A pane from the output of :meth:`Tmux.pane_query`; None for no such session."""
    session, dead, status, pid, owner = ([*output.strip("\n").split("|", 4), "", "", "", ""])[:5]
    if session != name:  # tmux 3.3 answers 0, with empty fields, for a missing target
        return None
    return Pane(dead == "1", int(status) if status.strip() else None,
                int(pid) if pid.strip() else 0, owner)


class Tmux:
    def __init__(self, socket: str, runner: Runner | None = None) -> None:
        self.socket = socket
        self.runner: Runner = runner or LocalRunner()

    def _argv(self, *args: str) -> list[str]:
        return ["tmux", "-L", self.socket, *args]

    def _run(self, *args: str, check: bool = True) -> Completed:
        argv = self._argv(*args)
        done = self.runner(argv)
        if check and done.status != 0:
            raise CommandError(argv, done.status, done.stderr or done.stdout)
        return done

    def new_session(self, name: str, command: Sequence[str], cwd: str,
                    pipe: str | None = None, owner: str | None = None) -> bool:
        """Start ``command`` in a new detached session; False if the session already exists.

        ``owner`` is recorded in the session's :data:`OWNER_OPTION` in the same tmux command, so
        no other command ever sees the session without it.

        The shell ``exec``s the command, so the pane's pid is the command's own pid.

        ``remain-on-exit`` (and ``pipe-pane`` feeding the output to the shell command ``pipe``)
        are set in the same tmux command, before the server runs its event loop again, so even a
        command that dies at once leaves its pane, and its output, behind.
        """
        done = self.runner(self.new_session_argv(name, command, cwd, pipe, owner))
        if done.status != 0 and "duplicate session" in done.stderr:
            return False
        if done.status != 0:
            raise CommandError(self._argv("new-session", "-s", name), done.status, done.stderr)
        return True

    def new_session_argv(self, name: str, command: Sequence[str], cwd: str,
                         pipe: str | None = None, owner: str | None = None) -> list[str]:
        """The one tmux command :meth:`new_session` runs (a device's systemd unit runs the same,
        :mod:`ops.autostart`)."""
        piping = ["pipe-pane", "-t", f"={name}:", pipe, ";"] if pipe else []
        owning = ["set-option", "-t", f"={name}:", OWNER_OPTION, owner, ";"] if owner else []
        return self._argv(
            "start-server", ";",
            "set-option", "-g", "history-limit", str(HISTORY_LINES), ";",
            "new-session", "-d", "-s", name, "-x", "200", "-y", "50", "-c", cwd,
            "exec " + shlex.join(command), ";", *owning, *piping,
            "set-option", "-w", "-t", f"={name}:", "remain-on-exit", "on")

    def kill_argv(self, name: str) -> list[str]:
        return self._argv("kill-session", "-t", f"={name}")

    def pane(self, name: str) -> Pane | None:
        """The pane of session ``name``, or None when there is no such session."""
        done = self.runner(self.pane_query(name))
        return parse_pane(name, done.stdout) if done.status == 0 else None

    def panes(self) -> dict[str, Pane]:
        """Every session's pane on this socket, by session name, in one tmux call."""
        done = self.runner(self._argv("list-panes", "-a", "-F", PANE_FORMAT))
        if done.status != 0:  # no server on this socket: no sessions
            return {}
        found = {}
        for line in done.stdout.splitlines():
            name = line.split("|", 1)[0]
            pane = parse_pane(name, line)
            if pane is not None:
                found[name] = pane
        return found

    def pane_query(self, name: str) -> list[str]:
        """The command whose output :func:`parse_pane` reads (to combine with other commands)."""
        return self._argv("display-message", "-p", "-t", f"={name}:", PANE_FORMAT)

    def start_command(self, name: str) -> str:
        """The command the session's pane was started with ("" for no such session)."""
        done = self._run("display-message", "-p", "-t", f"={name}:", "#{pane_start_command}",
                         check=False)
        return done.stdout.strip() if done.status == 0 else ""

    def dead_status(self, name: str, wait_s: float = 2.0) -> int | None:
        """The exit status of a dead pane, waiting briefly for tmux to record it."""
        deadline = time.monotonic() + wait_s
        while True:
            pane = self.pane(name)
            if pane is None or pane.dead_status is not None or time.monotonic() > deadline:
                return None if pane is None else pane.dead_status
            time.sleep(0.05)

    def last_lines(self, name: str, lines: int = 20) -> list[str]:
        """The pane's last ``lines`` lines of output (tmux's own 'Pane is dead' banner removed)."""
        done = self._run("capture-pane", "-p", "-J", "-t", f"={name}:", "-S", f"-{HISTORY_LINES}",
                         check=False)
        if done.status != 0:
            return []
        out = [ln.rstrip() for ln in done.stdout.splitlines() if not ln.startswith(DEAD_BANNER)]
        while out and not out[-1]:
            out.pop()
        return out[-lines:]

    def kill_session(self, name: str) -> bool:
        return self.runner(self.kill_argv(name)).status == 0
