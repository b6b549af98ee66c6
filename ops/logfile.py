"""A worker's output file on its device, rotated: tmux pipes the pane into a small awk program.

awk is on every Debian and Raspberry Pi OS install and costs about a megabyte, where a second
Python process would cost a Pi Zero ten. The program appends each line (flushed at once, so
``fab logs --follow`` sees it), and when the file reaches :data:`MAX_BYTES` it becomes ``.1``
(``.1`` becomes ``.2`` ...; :data:`BACKUPS` are kept): at most (BACKUPS + 1) x MAX_BYTES per
device.
"""

from __future__ import annotations

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
