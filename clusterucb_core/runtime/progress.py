"""The one progress callback type every long stage takes, and the process's current one.

A stage calls ``progress(done, total, message, **extra)``; with no callback it reports to the
process's current one (a background job installs its own with ``set_current``), so the same
code runs under the CLI, a job or a test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Progress = Callable[..., None]  # progress(done, total, message, **extra)

_CURRENT: Progress | None = None


def set_current(progress: Progress | None) -> None:
    """Make `progress` the process's callback for stages given none (None: stop reporting)."""
    global _CURRENT
    _CURRENT = progress


def current() -> Progress | None:
    """The process's current callback (the running job's), or None outside a job."""
    return _CURRENT


def report(progress: Progress | None, done: int, total: int, message: str, **extra: Any) -> None:
    """Send one progress step to ``progress``, or to the process's current callback."""
    sink = progress if progress is not None else _CURRENT
    if sink is not None:
        sink(done, total, message, **extra)
