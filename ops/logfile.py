"""A worker's output file on its device, rotated: tmux pipes the pane into a small awk program.

awk is on every Debian and Raspberry Pi OS install and costs about a megabyte, where a second
Python process would cost a Pi Zero ten. The program appends each line (flushed at once, so
``fab logs --follow`` sees it), and when the file reaches :data:`MAX_BYTES` it becomes ``.1``
(``.1`` becomes ``.2`` ...; :data:`BACKUPS` are kept): at most (BACKUPS + 1) x MAX_BYTES per
device.

The file keeps the worker's output as the pane's terminal gave it, colours and ``\\r\\n``
included; :func:`plain` and :func:`plain_filter` make it plain text for ``fab logs`` (unless
``--color``).
"""

from __future__ import annotations

import re
import shlex

MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 3

_AWK = (
    'BEGIN { while ((getline line < f) > 0) size += length(line) + 1; close(f) } '
    '{ print >> f; fflush(f); size += length($0) + 1; '
    'if (size >= max) { close(f); '
    'for (i = keep - 1; i >= 1; i--) '
    'system("mv -f \\"" f "." i "\\" \\"" f "." (i + 1) "\\" 2>/dev/null"); '
    'system("mv -f \\"" f "\\" \\"" f ".1\\""); size = 0 } }'
)


# mawk (Debian's default awk) reads a pipe in large blocks unless told `-W interactive`; other
# awks read lines as they come and may not know the option, so it is added only where it works
_LINE_BY_LINE = ("$(awk -W interactive 'BEGIN {}' </dev/null >/dev/null 2>&1 "
                 "&& echo -W interactive)")


def rotating_append(path: str, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> str:
    """The shell command that appends its input to ``path``, rotating it."""
    return (f"exec awk {_LINE_BY_LINE} -v f={shlex.quote(path)} -v max={int(max_bytes)} "
            f"-v keep={int(backups)} {shlex.quote(_AWK)}")


#: a terminal escape sequence: CSI (colours, cursor: ``ESC [ 1;36m``), OSC (titles, ended by BEL
#: or ``ESC \\``), and the short ones (``ESC ( B``, ``ESC 7``); the same in :data:`_PLAIN_AWK`
ESCAPE_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-~]")
_PLAIN_AWK = ('{ gsub(/\\033\\[[0-?]*[ -\\/]*[@-~]|\\033\\][^\\007\\033]*(\\007|\\033\\\\)|'
              '\\033[ -\\/]*[0-~]/, ""); sub(/\\r$/, ""); print; fflush() }')


def plain(text: str) -> str:
    """``text`` without terminal escape sequences, its lines ended by ``\\n`` alone (the pane's
    terminal ends them ``\\r\\n``)."""
    return ESCAPE_RE.sub("", text).replace("\r\n", "\n")


def plain_filter() -> str:
    """The shell command that copies its input as :func:`plain` would, line by line (awk, as
    for the file itself: on every device, where ``sed -u`` is GNU's only)."""
    return f"awk {_LINE_BY_LINE} {shlex.quote(_PLAIN_AWK)}"
