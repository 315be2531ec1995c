"""The one progress callback type every long stage takes.

A stage calls ``progress(done, total, message, **extra)``; with no callback it reports to the
current background job (``jobs.report``), so the same code runs under the CLI, a job or a test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Progress = Callable[..., None]  # progress(done, total, message, **extra)


def report(progress: Progress | None, done: int, total: int, message: str, **extra: Any) -> None:
    """Send one progress step to ``progress``, or to the running job when there is none."""
    if progress is not None:
        progress(done, total, message, **extra)
    else:
        from clusterucb_core.runtime import jobs

        jobs.report(done, total, message, **extra)
