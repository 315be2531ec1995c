"""The table builder: raw records in, Arrow record batches of `SCHEMA` out, with ids,
sources, line numbers, byte offsets and every problem found on the way.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from clusterucb_core.data.readers import Rec
from clusterucb_core.data.schema import (
    BATCH_ROWS,
    DETECT_FIRST,
    SCHEMA,
    SHAPES,
    Problem,
    ValidationReport,
)
from clusterucb_core.data.shapes import check_chat, shape_of, to_messages


class PoolBuilder:
    """Valid records -> record batches of `SCHEMA` for `sink`; problems -> the report.

    Duplicate ids and conversations are found as rows arrive (a warning on each later
    occurrence), keeping one short digest per conversation, not the conversation."""

    def __init__(self, path: Path, shape: str, sink: Callable[[pa.RecordBatch], None],
                 record_index: bool = False, id_field: str | None = None,
                 source_field: str | None = None):
        self.stem = path.stem if path.is_file() else path.name
        self.id_field, self.source_field = id_field, source_field
        self.seen_id = self.seen_source = False
        self.first_keys: list[str] = []
        self.record_index = record_index  # Parquet / datasets: offsets are record indices
        self.shape = shape
        self.sink = sink
        self.pending: list[Rec] = []
        self.problems: list[Problem] = []
        self.n_records = 0
        self.n_rows = 0
        self.cols: dict[str, list] = {k: [] for k in SCHEMA.names if k != "row"}
        self.first_id: dict[str, int] = {}
        self.first_chat: dict[bytes, int] = {}
        self.notes: list[str] = []

    def add(self, rec: Rec) -> None:
        if rec.file_level:
            self.problems.append(Problem(rec.line, rec.problem or "bad file"))
            return
        self.n_records += 1
        if self.shape == "auto":
            self.pending.append(rec)
            if len(self.pending) >= DETECT_FIRST:
                self._detect()
            return
        self._convert(rec)

    def _detect(self) -> None:
        votes = Counter(shape_of(r.obj) for r in self.pending if isinstance(r.obj, dict))
        votes.pop(None, None)
        if votes:
            best = max(SHAPES, key=lambda s: (votes.get(s, 0), -SHAPES.index(s)))
            self.shape = best
            if len(votes) > 1:
                self.notes.append("mixed chat shapes in the first records "
                                  f"({dict(votes)}); read as {best!r}")
        else:
            keys = next((list(r.obj)[:12] for r in self.pending if isinstance(r.obj, dict)), None)
            self.shape = "messages"
            if keys is not None:
                self.notes.append(f"no known chat shape found (first record's keys: {keys}); "
                                  "expected 'messages', 'conversations', 'instruction'+'output' "
                                  "or 'prompt'+'completion'")
        pending, self.pending = self.pending, []
        for r in pending:
            self._convert(r)

    def _convert(self, rec: Rec) -> None:
        if rec.problem is not None:
            self.problems.append(Problem(rec.line, rec.problem))
            return
        obj = rec.obj
        if not isinstance(obj, dict):
            self.problems.append(Problem(rec.line, "not a JSON object (got "
                                         f"{_kind(obj)}); each record must be an object"))
            return
        msgs, err = to_messages(obj, self.shape, rec.json_cells)
        if err is None:
            err = check_chat(msgs)
        if err is not None:
            self.problems.append(Problem(rec.line, err))
            return
        if not self.first_keys:
            self.first_keys = list(obj)[:20]
        if self.source_field:
            source = obj.get(self.source_field)
            self.seen_source |= self.source_field in obj
            if isinstance(source, (int, float)) and not isinstance(source, bool):
                source = str(source)
        else:
            source = obj.get("dataset", obj.get("source"))
        if source is None or source == "":
            source = self.stem
        elif not isinstance(source, str):
            self.problems.append(Problem(rec.line, "'dataset'/'source' must be a string, got "
                                         f"{type(source).__name__}; using the file name",
                                         "warning"))
            source = self.stem
        rid = obj.get(self.id_field or "id")
        self.seen_id |= bool(self.id_field) and self.id_field in obj
        if isinstance(rid, bool) or (rid is not None and not isinstance(rid, (str, int))):
            self.problems.append(Problem(rec.line, f"'id' must be a string or integer, got "
                                         f"{type(rid).__name__}; a new id is made", "warning"))
            rid = None
        if rid is None or rid == "":
            rid = f"{source}_{self.n_rows + len(self.cols['id'])}"  # this row's index
        sub = obj.get("subtask")
        rid = str(rid)
        first = self.first_id.setdefault(rid, rec.line)
        if first != rec.line:
            self.problems.append(Problem(rec.line, f"duplicate id {rid!r} (first at line "
                                                   f"{first})", "warning"))
        turns = [{"role": m["role"], "content": m["content"]} for m in msgs]
        chat = json.dumps(turns, ensure_ascii=False)
        try:
            enc = chat.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a JSON escape: keep it escaped
            chat = json.dumps(turns)
            enc = chat.encode("utf-8")
        first = self.first_chat.setdefault(hashlib.blake2b(enc, digest_size=16).digest(),
                                           rec.line)
        if first != rec.line:
            self.problems.append(Problem(rec.line, f"same conversation as line {first}",
                                         "warning"))
        c = self.cols
        c["id"].append(rid)
        c["source"].append(source)
        c["messages"].append(chat)
        c["line_no"].append(rec.line)
        c["offset"].append(rec.offset)
        c["length"].append(rec.length if rec.length >= 0 or self.record_index else
                           len(rec.raw.encode("utf-8", "surrogateescape")))
        c["subtask"].append(None if sub is None else str(sub))
        if len(c["id"]) >= BATCH_ROWS:
            self._flush()

    def _flush(self) -> None:
        c = self.cols
        n = len(c["id"])
        if not n:
            return
        arrays = [pa.array(np.arange(self.n_rows, self.n_rows + n, dtype=np.int64))]
        arrays += [_arrow_array(c[k], SCHEMA.field(k).type) for k in SCHEMA.names[1:]]
        self.sink(pa.RecordBatch.from_arrays(arrays, schema=SCHEMA))
        self.n_rows += n
        for v in c.values():
            v.clear()

    def finish(self) -> tuple[ValidationReport, str]:
        if self.pending or self.shape == "auto":
            self._detect()
        self._flush()
        self.problems.sort(key=lambda p: p.line)
        return ValidationReport(self.problems, self.n_records, self.n_rows), self.shape


def _arrow_array(values: list, type: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, type=type)
    except UnicodeEncodeError:  # an id or source holding a lone surrogate (a JSON escape)
        return pa.array([v if not isinstance(v, str) else
                         v.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
                         for v in values], type=type)


def _kind(obj: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean", type(None): "null"}.get(type(obj), type(obj).__name__)
