"""A selection run's log file: one JSON header line, then one JSON line per round.

The log is the run's whole state (SelectionRun replays it). Rounds are appended as whole lines
and fsynced; a reader drops a torn last line (a crash mid-write), so at most the round in
flight is lost.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from . import atomic

LOG_NAME = "log.jsonl"
LOG_VERSION = 1


def write_header(path: Path, header: dict[str, Any]) -> None:
    """Start a log; refuses a file that already holds a run."""
    if path.exists() and path.stat().st_size > 0:
        raise FileExistsError(f"{path} already holds a run; reopen it with "
                              "SelectionRun.open() to continue it")
    atomic.write_text(path, json.dumps(header) + "\n")


def append_line(path: Path, line: dict[str, Any]) -> None:
    """Append one round as a whole line and fsync it."""
    data = (json.dumps(line, allow_nan=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]], int, int]:
    """(header, round lines, bytes of complete lines, bytes in the file).

    The part after the last newline is a torn write and is left out; so is a last line that
    ends in a newline but is not JSON. A bad line anywhere else is an error."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no selection log at {path}")
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    complete, good_len = [], 0
    for i, line in enumerate(lines[:-1]):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 2:
                break
            raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None
        complete.append(obj)
        good_len += len(line) + 1
    if not complete or complete[0].get("kind") != "header":
        raise ValueError(f"{path} has no header line; it is not a selection log")
    header = complete[0]
    if header.get("version") != LOG_VERSION:
        raise ValueError(f"{path}: log version {header.get('version')} is not supported")
    return header, complete[1:], good_len, len(raw)


def drop_torn_tail(path: Path, good_len: int) -> None:
    """Cut the file back to its complete lines, so appends stay line-aligned."""
    with open(path, "r+b") as fh:
        fh.truncate(good_len)
        os.fsync(fh.fileno())
