"""CatDog's built-in tasks (``run_on``) and the example tasks of the demo fleet.

Every worker imports every module of this package, then the project's own ``tasks`` module or
package beside the inventory (if there is one) and the inventory's ``imports:``. The tasks keep
their registered names (``tasks.run_on``, ``tasks.examples.*``), so inventories, allow-lists and
metrics written before these moved here stay valid. Importing defines tasks and connects to nothing.
"""

from __future__ import annotations

from catdog.tasks.shell import run_on

__all__ = ["run_on"]
