"""A small job target for the job-runner tests: counts, can fail on purpose, and resumes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clusterucb_core.runtime import atomic


def demo_task(total: int = 20, delay_s: float = 0.05, fail_at: int | None = None,
              out: str | None = None, progress: Callable[..., Any] | None = None) -> dict:
    """Count to `total`, sleeping `delay_s` per step; resumable through the file `out`."""
    start_at = 0
    if out and Path(out).exists():
        start_at = int(Path(out).read_text() or 0)
    for i in range(start_at, total):
        if fail_at is not None and i == fail_at:
            raise ValueError(f"planned failure at step {i}")
        time.sleep(delay_s)
        if out:
            atomic.write_text(out, str(i + 1))
        if progress is not None:
            progress(i + 1, total, f"step {i + 1} of {total}")
    return {"counted": total, "resumed_from": start_at}
