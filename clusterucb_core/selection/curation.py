"""The curation ledger: a user's hand edits to a selection, every one timestamped and kept.

`W/ledger.jsonl` is append-only: one JSON object per edit, never rewritten. The current
state is the fold of every edit in order (`Ledger.state()`):

    ban / unban cluster      a banned cluster is never drawn by the bandit, and its rows are
                             left out of the final selection (unless pinned)
    pin / unpin rows         pinned rows are always in the final selection
    reject / unreject rows   rejected rows are never in the final selection; a rejected row
                             that was drawn still counts against the budget (its gradient was
                             computed)
    note                     free text, optionally about a cluster or rows
    tag / untag rows         free-form labels on rows ("needs review", "math"); a row holds
                             any number of tags; they ride along in every export
    name cluster             a human name for a cluster (scoped like a ban); an empty name
                             goes back to the generated label

Pin and reject exclude each other: the later edit wins (pinning a rejected row un-rejects
it, and the other way round). Rows are pool row indices (`Pool.table.row`); clusters are
indices in one clustering, so a ban can be scoped to a clustering name (`Ledger(path,
clustering="k20")` writes and reads bans for that clustering; a ban written without a
clustering applies to every clustering).

A crash while appending leaves at most a torn last line, which is ignored when read.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

OPS = ("ban", "unban", "pin", "unpin", "reject", "unreject", "note", "tag", "untag", "name")
_CLUSTER_OPS = ("ban", "unban", "name")
_TAG_OPS = ("tag", "untag")
MAX_TAG = 64
_ROW_OPS = ("pin", "unpin", "reject", "unreject")


@dataclass(frozen=True)
class LedgerState:
    banned: frozenset[int] = frozenset()
    pinned: frozenset[int] = frozenset()
    rejected: frozenset[int] = frozenset()
    notes: tuple[dict[str, Any], ...] = ()
    n_edits: int = 0
    problems: tuple[str, ...] = field(default=())
    tags: dict[int, tuple[str, ...]] = field(default_factory=dict)  # row -> sorted tags
    names: dict[int, str] = field(default_factory=dict)  # cluster -> the user's name

    def row_tags(self, row: int) -> tuple[str, ...]:
        return self.tags.get(int(row), ())

    def tag_counts(self) -> dict[str, int]:
        """Rows per tag, most used first."""
        counts: dict[str, int] = {}
        for ts in self.tags.values():
            for t in ts:
                counts[t] = counts.get(t, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def rows_tagged(self, tag: str) -> list[int]:
        return sorted(r for r, ts in self.tags.items() if tag in ts)

    @property
    def fingerprint(self) -> str:
        blob = json.dumps([sorted(self.banned), sorted(self.pinned), sorted(self.rejected)])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"banned": sorted(self.banned), "pinned": sorted(self.pinned),
                "rejected": sorted(self.rejected), "notes": list(self.notes),
                "n_edits": self.n_edits, "fingerprint": self.fingerprint,
                "tags": {str(r): list(t) for r, t in sorted(self.tags.items())},
                "names": {str(k): v for k, v in sorted(self.names.items())}}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


def _as_rows(rows: int | Iterable[int]) -> list[int]:
    if isinstance(rows, (int,)) or hasattr(rows, "__index__"):
        rows = [rows]  # type: ignore[list-item]
    out = []
    for r in rows:  # type: ignore[union-attr]
        if isinstance(r, bool) or int(r) != r or int(r) < 0:
            raise ValueError(f"row indices must be integers >= 0, got {r!r}")
        out.append(int(r))
    if not out:
        raise ValueError("no rows given")
    return out


def _as_cluster(cluster: int) -> int:
    if isinstance(cluster, bool) or int(cluster) != cluster or int(cluster) < 0:
        raise ValueError(f"a cluster index must be an integer >= 0, got {cluster!r}")
    return int(cluster)


def as_tag(tag: str) -> str:
    """A tag as stored: trimmed, one line, at most MAX_TAG characters, not empty."""
    t = " ".join(str(tag).split())
    if not t:
        raise ValueError("a tag needs some text")
    if len(t) > MAX_TAG:
        raise ValueError(f"a tag is at most {MAX_TAG} characters, got {len(t)}: {t[:20]!r}...")
    return t


def _noted(edit: dict[str, Any], note: str | None, action: str | None) -> dict[str, Any]:
    if note:
        edit["note"] = str(note)
    if action:
        edit["action"] = str(action)
    return edit


def fold(edits: Iterable[dict[str, Any]], clustering: str | None = None) -> LedgerState:
    """The state after applying `edits` in order (bans of other clusterings skipped)."""
    banned: set[int] = set()
    pinned: set[int] = set()
    rejected: set[int] = set()
    notes: list[dict[str, Any]] = []
    problems: list[str] = []
    tags: dict[int, set[str]] = {}
    names: dict[int, str] = {}
    n = 0
    for i, e in enumerate(edits):
        op = e.get("op")
        if op not in OPS:
            problems.append(f"edit {i + 1}: unknown op {op!r} ignored")
            continue
        try:
            if op in _CLUSTER_OPS:
                scope = e.get("clustering")
                if clustering is not None and scope is not None and scope != clustering:
                    n += 1
                    continue
                k = _as_cluster(e["cluster"])
                if op == "name":
                    name = " ".join(str(e["name"]).split())
                    if name:
                        names[k] = name
                    else:
                        names.pop(k, None)
                else:
                    (banned.add if op == "ban" else banned.discard)(k)
            elif op in _TAG_OPS:
                tag = as_tag(e["tag"])
                for r in _as_rows(e["rows"]):
                    if op == "tag":
                        tags.setdefault(r, set()).add(tag)
                    elif r in tags:
                        tags[r].discard(tag)
                        if not tags[r]:
                            del tags[r]
            elif op in _ROW_OPS:
                rows = _as_rows(e["rows"])
                if op == "pin":
                    pinned.update(rows)
                    rejected.difference_update(rows)
                elif op == "unpin":
                    pinned.difference_update(rows)
                elif op == "reject":
                    rejected.update(rows)
                    pinned.difference_update(rows)
                else:
                    rejected.difference_update(rows)
            else:
                notes.append({k: v for k, v in e.items() if k != "op"})
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"edit {i + 1} ({op}) is malformed and was ignored: {exc}")
            continue
        n += 1
    return LedgerState(frozenset(banned), frozenset(pinned), frozenset(rejected),
                       tuple(notes), n, tuple(problems),
                       {r: tuple(sorted(ts)) for r, ts in sorted(tags.items())}, names)


class Ledger:
    """The ledger file at `path` (usually `ws.ledger_path`), seen for one clustering."""

    def __init__(self, path: str | Path, clustering: str | None = None):
        self.path = Path(path)
        self.clustering = clustering

    # ------------------------------------------------------------ writing
    def _append(self, edit: dict[str, Any]) -> dict[str, Any]:
        edit = {"ts": _now(), **edit}
        data = (json.dumps(edit, sort_keys=True) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":  # a torn line from a crash: keep it apart
                    data = b"\n" + data
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)  # one write: concurrent appenders never interleave a line
            os.fsync(fd)
        finally:
            os.close(fd)
        return edit

    def _cluster_edit(self, op: str, cluster: int, note: str | None,
                      action: str | None = None) -> dict[str, Any]:
        edit: dict[str, Any] = {"op": op, "cluster": _as_cluster(cluster)}
        if self.clustering is not None:
            edit["clustering"] = self.clustering
        return self._append(_noted(edit, note, action))

    def _row_edit(self, op: str, rows: int | Iterable[int], note: str | None,
                  action: str | None = None) -> dict[str, Any]:
        return self._append(_noted({"op": op, "rows": _as_rows(rows)}, note, action))

    # `action` names the user action an edit belongs to (one click can write several
    # edits), so an undo can find it again after a reload (clusterucb_app.curation_ui)
    def ban(self, cluster: int, note: str | None = None,
            action: str | None = None) -> dict[str, Any]:
        return self._cluster_edit("ban", cluster, note, action)

    def unban(self, cluster: int, note: str | None = None,
              action: str | None = None) -> dict[str, Any]:
        return self._cluster_edit("unban", cluster, note, action)

    def pin(self, rows: int | Iterable[int], note: str | None = None,
            action: str | None = None) -> dict[str, Any]:
        return self._row_edit("pin", rows, note, action)

    def unpin(self, rows: int | Iterable[int], note: str | None = None,
              action: str | None = None) -> dict[str, Any]:
        return self._row_edit("unpin", rows, note, action)

    def reject(self, rows: int | Iterable[int], note: str | None = None,
               action: str | None = None) -> dict[str, Any]:
        return self._row_edit("reject", rows, note, action)

    def unreject(self, rows: int | Iterable[int], note: str | None = None,
                 action: str | None = None) -> dict[str, Any]:
        return self._row_edit("unreject", rows, note, action)

    def tag(self, rows: int | Iterable[int], tag: str) -> dict[str, Any]:
        return self._append({"op": "tag", "rows": _as_rows(rows), "tag": as_tag(tag)})

    def untag(self, rows: int | Iterable[int], tag: str) -> dict[str, Any]:
        return self._append({"op": "untag", "rows": _as_rows(rows), "tag": as_tag(tag)})

    def name_cluster(self, cluster: int, name: str) -> dict[str, Any]:
        """Name a cluster (an empty name restores the generated label)."""
        edit: dict[str, Any] = {"op": "name", "cluster": _as_cluster(cluster),
                                "name": " ".join(str(name).split())}
        if len(edit["name"]) > 120:
            raise ValueError(f"a cluster name is at most 120 characters, got {len(edit['name'])}")
        if self.clustering is not None:
            edit["clustering"] = self.clustering
        return self._append(edit)

    def note(self, text: str, cluster: int | None = None,
             rows: Iterable[int] | None = None) -> dict[str, Any]:
        if not str(text).strip():
            raise ValueError("a note needs some text")
        edit: dict[str, Any] = {"op": "note", "text": str(text)}
        if cluster is not None:
            edit["cluster"] = _as_cluster(cluster)
            if self.clustering is not None:
                edit["clustering"] = self.clustering
        if rows is not None:
            edit["rows"] = _as_rows(rows)
        return self._append(edit)

    # ------------------------------------------------------------ reading
    def _read(self) -> tuple[list[dict[str, Any]], list[str]]:
        if not self.path.exists():
            return [], []
        out, problems = [], []
        for i, line in enumerate(self.path.read_bytes().split(b"\n")):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                obj = None
            if not isinstance(obj, dict):  # e.g. the torn line of an interrupted append
                problems.append(f"{self.path.name}: line {i + 1} is not an edit; skipped")
                continue
            out.append(obj)
        return out, problems

    def edits(self) -> list[dict[str, Any]]:
        """Every complete edit in order (a torn line from a crash is skipped)."""
        return self._read()[0]

    def state(self) -> LedgerState:
        edits, problems = self._read()
        st = fold(edits, self.clustering)
        if problems:
            st = replace(st, problems=tuple(problems) + st.problems)
        return st
