"""Entry point: ``python -m workers --device NAME``; always says how it exits, as its last line."""

from __future__ import annotations

import sys
import traceback

from catdog.records import EXIT_LINE
from workers.cli import main


def run() -> int:
    try:
        status = main()
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        status = 1
    print(EXIT_LINE.format(status=status), file=sys.stderr, flush=True)
    return status


sys.exit(run())
