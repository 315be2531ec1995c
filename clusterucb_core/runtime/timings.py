"""Measured seconds per pipeline stage, kept in the workspace (W/timings.json).

The planner predicts each stage before a run; this records what each one took, so the run
summary and the UCB page can print predicted against actual. A stage's time is exclusive: a
stage entered inside another (the model load inside the target gradients) pauses the outer
one. Each record carries a key naming what was computed (a store, a run): work resumed under
the same key adds up, a new key replaces the record. The file is rewritten atomically under a
lock (the app's jobs are separate processes writing the same workspace).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clusterucb_core.runtime import atomic

TIMINGS_FILE = "timings.json"

try:
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


def read_timings(workspace: str | Path) -> dict[str, dict[str, Any]]:
    """stage -> {"seconds", "rows", "key", "updated"} (empty when nothing was measured)."""
    try:
        return json.loads((Path(workspace) / TIMINGS_FILE).read_text()).get("stages", {})
    except (FileNotFoundError, ValueError, AttributeError):
        return {}


class StageClock:
    """Exclusive wall-clock seconds per stage, flushed to the workspace when the outermost
    stage ends."""

    def __init__(self, workspace: str | Path | None):
        self.path = None if workspace is None else Path(workspace) / TIMINGS_FILE
        self._stack: list[list[Any]] = []  # [name, started, key]
        self._pending: dict[tuple[str, str], list[float]] = {}  # (name, key) -> [s, rows]

    @contextlib.contextmanager
    def stage(self, name: str, key: str = "", rows: float = 0) -> Iterator[None]:
        now = time.perf_counter()
        if self._stack:
            self._add(self._stack[-1], now)
        self._stack.append([name, now, key])
        self._pending.setdefault((name, key), [0.0, 0.0])[1] += rows
        try:
            yield
        finally:
            end = time.perf_counter()
            self._add(self._stack.pop(), end)
            if self._stack:
                self._stack[-1][1] = end
            else:
                self.flush()

    def _add(self, frame: list[Any], now: float) -> None:
        name, started, key = frame
        self._pending.setdefault((name, key), [0.0, 0.0])[0] += now - started
        frame[1] = now

    def flush(self) -> None:
        """Add what was measured since the last flush to the workspace's file."""
        pending, self._pending = self._pending, {}
        if self.path is None or not pending:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            stages = read_timings(self.path.parent)
            for (name, key), (secs, rows) in pending.items():
                old = stages.get(name)
                if old is None or old.get("key") != key:
                    old = {"seconds": 0.0, "rows": 0.0, "key": key}
                stages[name] = {"seconds": round(old["seconds"] + secs, 4),
                                "rows": old["rows"] + rows, "key": key,
                                "updated": time.time()}
            atomic.write_json(self.path, {"stages": stages})
