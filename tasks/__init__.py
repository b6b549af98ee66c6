"""Built-in and example tasks. Workers import every module of this package.

Importing it defines tasks lazily and connects to nothing.
"""

from __future__ import annotations

from tasks.shell import run_on

__all__ = ["run_on"]
