"""A selection run's log file: one JSON header line, then one JSON line per round.

The log is the run's whole state (`SelectionRun` replays it). `RunLog` is the only code that
reads or writes it:

* a round is appended as one whole line and fsynced, so a reader never sees half a round
  (a reader ignores bytes after the last newline: the line being written, or a crash's);
* one writer at a time: `RunLog.writer()` holds an exclusive `flock` on `writer.lock` in the
  run folder; a second writer waits for it (up to `timeout`) and is then told who holds it
  (pid, host, command), instead of interleaving rounds and drawing rows twice;
* a torn last line is cut off only by a writer holding the lock, never by a reader.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterucb_core.runtime import atomic

LOG_NAME = "log.jsonl"
LOCK_NAME = "writer.lock"
LOG_VERSION = 1
LOCK_WAIT_S = 60.0  # how long a second writer waits before it is told who holds the run


class RunLocked(RuntimeError):
    """Another process is stepping this run."""


@dataclass(frozen=True)
class RunMeta:
    """What a run was made from, kept in its log header so any entry point can reopen it.

    clustering: the saved clustering's name (its labels are the arms).
    reward: "lazy" (gradients of the drawn rows), "exhaustive" (the workspace's exhaustive
      scores table) or "table" (the scores file at `scores_path`).
    extra: any other keys a caller recorded (kept as they are).
    """

    clustering: str | None = None
    reward: str = "lazy"
    scores_path: str | None = None
    workspace: str | None = None
    pool: Any = None
    config: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> RunMeta:
        """Read a header's meta; logs written before RunMeta named the clustering `clusters`."""
        d = dict(d or {})
        if "clustering" not in d and "clusters" in d:
            d["clustering"] = d.pop("clusters")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: d.pop(k) for k in list(d) if k in names}
        extra = dict(d.pop("extra", None) or {})
        extra.update(d)
        if known.get("reward") is None:
            known.pop("reward", None)
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "extra" and getattr(self, f.name) is not None}
        out.update(self.extra)
        return out


def parse_lines(raw: bytes, where: str) -> tuple[list[dict[str, Any]], int]:
    """(the complete JSON lines of `raw`, their length in bytes). Bytes after the last newline
    are a line still being written (or a crash's) and are left out; so is a last line that
    ends in a newline but is not JSON. A bad line anywhere else is an error."""
    lines = raw.split(b"\n")
    out, good = [], 0
    for i, line in enumerate(lines[:-1]):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 2:
                break
            raise ValueError(f"{where}: line {i + 1} is not valid JSON") from None
        out.append(obj)
        good += len(line) + 1
    return out, good


class RunLog:
    """The log of the run in `folder` (`folder/log.jsonl`), and its writer lock."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOG_NAME
        self.lock_path = self.folder / LOCK_NAME
        self._held = 0  # re-entrant depth of writer() in this object

    def exists(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    # ---------------------------------------------------------------- reading
    def read(self) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
        """(header, complete round lines, bytes they take). Never changes the file."""
        if not self.path.exists():
            raise FileNotFoundError(f"no selection log at {self.path}")
        objs, good = parse_lines(self.path.read_bytes(), str(self.path))
        if not objs or objs[0].get("kind") != "header":
            raise ValueError(f"{self.path} has no header line; it is not a selection log")
        header = objs[0]
        if header.get("version") != LOG_VERSION:
            raise ValueError(f"{self.path}: log version {header.get('version')} is not "
                             "supported")
        return header, objs[1:], good

    def header(self) -> dict[str, Any]:
        return self.read()[0]

    def meta(self) -> RunMeta:
        return RunMeta.from_dict(self.header().get("meta"))

    def read_from(self, offset: int) -> tuple[list[dict[str, Any]], int]:
        """The complete lines written after byte `offset`, and the offset after them."""
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            raw = fh.read()
        objs, good = parse_lines(raw, str(self.path))
        return objs, offset + good

    # ---------------------------------------------------------------- writing
    def create(self, header: dict[str, Any]) -> None:
        """Start the log; refuses a folder that already holds a run (call under `writer()`
        when another process may create the same run)."""
        if self.exists():
            raise FileExistsError(f"{self.path} already holds a run; reopen it with "
                                  "runs.open_run() to continue it")
        atomic.write_text(self.path, json.dumps(header) + "\n")

    def append(self, line: dict[str, Any]) -> int:
        """Append one round as a whole line, fsynced; returns the file size after it.
        Call under `writer()`."""
        data = (json.dumps(line, allow_nan=False) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, data)
            os.fsync(fd)
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def cut(self, good_len: int) -> None:
        """Cut a torn last line off so appends stay line-aligned. Call under `writer()`."""
        if self.size() > good_len:
            with open(self.path, "r+b") as fh:
                fh.truncate(good_len)
                os.fsync(fh.fileno())

    @contextlib.contextmanager
    def writer(self, timeout: float = LOCK_WAIT_S) -> Iterator[None]:
        """Hold the run's exclusive writer lock (re-entrant within this object).

        Waits up to `timeout` seconds for another writer to finish its round, then raises
        `RunLocked` naming the holder."""
        if self._held:
            self._held += 1
            try:
                yield
            finally:
                self._held -= 1
            return

        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + max(float(timeout), 0.0)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise RunLocked(f"run {self.folder.name} is being stepped by "
                                        f"{self._holder()}; wait for it to finish, or stop "
                                        "that process") from None
                    time.sleep(0.02)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_me()).encode(), 0)
            self._held = 1
            try:
                yield
            finally:
                self._held = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _holder(self) -> str:
        try:
            who = json.loads(self.lock_path.read_text() or "{}")
        except (OSError, ValueError):
            who = {}
        if not who:
            return "another process"
        return (f"pid {who.get('pid')} on {who.get('host')} ({who.get('command')}, "
                f"since {who.get('since')})")


def _me() -> dict[str, Any]:
    cmd = " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv else "python"
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": cmd[:200],
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
