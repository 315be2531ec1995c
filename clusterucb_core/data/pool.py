"""Reading instruction-tuning pools into one canonical table, with a validation report.

Formats: JSONL, JSON (a list, or an object holding the list under "data" or as its only list
value), CSV, TSV, Parquet (a file, or a folder of shards read in path order), a Hugging Face
`datasets` `save_to_disk` folder, and a Hub dataset (`hf://ORG/NAME?config=C&split=S`). Files
may be gzip-compressed (`pool.jsonl.gz`, `.json.gz`, `.csv.gz`); see sources.py.
Chat shapes: `messages` (open-instruct / OpenAI: [{"role", "content"}]), `alpaca`
(`instruction`, optional `input`, `output`), `sharegpt` (`conversations`: [{"from", "value"}]),
and `prompt_completion` (`prompt`, `completion`: strings, or message lists). Format and shape
are auto-detected (extension, then content sniffing; shape by the majority of the first
records) and can be forced.

The columnar table (`Pool.data`, a pyarrow Table), one row per *valid* record:
    row       int64, 0..n-1
    id        str  (the record's `id`, or the field named by `id_field`; made as
               f"{source}_{row}" when missing: record-based, not line-based)
    source    str  (`dataset` or `source` field, or the one named by `source_field`, else
               the file stem)
    messages  str  the canonical chat as JSON: [{"role": system|user|assistant, "content"}]
    line_no   int64  1-based line of the file where the record starts (Parquet / datasets: the
              1-based record number)
    offset    int64  byte offset of the record's text in the file (Parquet / datasets: the
              0-based record index, re-read on export)
    length    int64  its length in bytes, without the line terminator (-1 for record formats)
    subtask   str  null unless the pool has a `subtask` field

No row keeps its original text: `Pool.records(rows)` re-reads it from the file by offset, so
an export gives back the user's bytes. `pool_cache.py` writes this table to the workspace once
and memory-maps it afterwards. `Pool.table` is the same rows as a pandas DataFrame with the
chats decoded and a `raw` text column (for small pools and previews; it reads every row).

We read bytes and split lines ourselves so line numbers are right, a CRLF file is recorded as
such (`Pool.newline`) and `raw` is byte-exact: `raw.encode("utf-8") + newline` gives back the
user's line. JSONL is read as a stream (the file is never held whole).

Every malformed or unusable record becomes a `Problem(line, reason, severity)`. Errors exclude
the record: bad JSON, not an object, non-UTF-8 bytes, missing or wrongly typed fields, unknown
role, no assistant turn, an empty assistant turn (it has nothing to train on). Warnings keep it:
duplicate ids, a conversation identical to an earlier one, an id or source of the wrong type
(a made one is used). Blank lines are skipped
silently. `strict=True` raises `PoolError` on any problem; a pool with no valid record raises
`PoolError` always. `PoolError.report` carries the report either way.

This module is the table and `parse_pool`, which drives the parts: `readers.py` (one reader
per format), `shapes.py` (chat shapes to messages), `builder.py` (records to Arrow batches)
and `schema.py` (the columns, the vocabulary and the report's types).
"""

from __future__ import annotations

import hashlib
import json
import mmap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from clusterucb_core.data import sources
from clusterucb_core.data.builder import PoolBuilder
from clusterucb_core.data.readers import (
    JsonlStream,
    Rec,
    fingerprint_dir,
    looks_like_jsonl,
    newline_of,
    read_datasets,
    read_delimited,
    read_json,
    read_parquet,
    read_parquet_shards,
    reread_records,
    sniff_format,
)
from clusterucb_core.data.schema import (
    FORMATS,
    RECORD_FORMATS,
    SHAPES,
    PoolError,
    Problem,
    ValidationReport,
)


def file_signature(path: Path) -> list:
    """Size and modification time of a pool file (or of every file of a folder): a cheap
    check that the file is still the one that was read."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [[str(p.relative_to(path)) if path.is_dir() else p.name, p.stat().st_size,
             p.stat().st_mtime_ns] for p in files]


@dataclass
class Pool:
    data: pa.Table  # the columnar table (module doc); memory-mapped when it comes from a cache
    path: Path
    format: str
    shape: str
    report: ValidationReport
    fingerprint: str
    newline: str = "\n"
    notes: list[str] = field(default_factory=list)
    signature: list | None = None  # file_signature(path) when read; checked before re-reading
    cache_entry: Path | None = None  # the pool cache folder `data` is mapped from, if any
    _table: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return self.data.num_rows

    @property
    def has_subtask(self) -> bool:
        return self.data.column("subtask").null_count < self.data.num_rows

    def sources(self) -> dict[str, int]:
        """Valid rows per source, largest first."""
        import pyarrow.compute as pc

        counts = pc.value_counts(self.data.column("source")).to_pylist()
        counts.sort(key=lambda d: (-d["counts"], d["values"]))
        return {str(d["values"]): int(d["counts"]) for d in counts}

    def _take(self, name: str, rows: Any) -> pa.ChunkedArray | pa.Array:
        col = self.data.column(name)
        if rows is None:
            return col
        return col.take(pa.array(np.asarray(rows, dtype=np.int64).reshape(-1)))

    def column(self, name: str, rows: Any = None) -> np.ndarray:
        """One column as numpy (int64, or object for strings), all rows or `rows` in order."""
        return self._take(name, rows).to_numpy(zero_copy_only=False)

    def messages(self, rows: Any = None) -> list[list[dict]]:
        """The chats of `rows` (default all), decoded from the table's JSON."""
        loads = json.loads
        return [loads(t) for t in self._take("messages", rows).to_pylist()]

    def row(self, i: int) -> dict[str, Any]:
        """One row as a dict (id, source, line_no, messages): a hover text or a sample viewer
        asks for rows one at a time."""
        i = int(i)
        d = self.data
        return {"row": i, "id": d.column("id")[i].as_py(),
                "source": d.column("source")[i].as_py(),
                "line_no": d.column("line_no")[i].as_py(),
                "messages": json.loads(d.column("messages")[i].as_py())}

    def records(self, rows: Any) -> list[bytes]:
        """The records of `rows` as the user wrote them, without line terminators: re-read from
        the file by byte offset (Parquet / datasets: the record, re-read by index, as JSON)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if not len(rows):
            return []
        self.check_unchanged()
        offsets = self.column("offset", rows)
        if self.format in RECORD_FORMATS:
            return reread_records(self.path, self.format, offsets)
        lengths = self.column("length", rows)
        with open(self.path, "rb") as fh, \
                mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return [mm[o:o + n] for o, n in zip(offsets.tolist(), lengths.tolist())]

    def check_unchanged(self) -> None:
        """Refuse to re-read records from a file that changed since it was parsed."""
        if self.signature is not None and file_signature(self.path) != self.signature:
            raise PoolError(f"{self.path} changed since it was read (size or modification "
                            "time differ); load the pool again")

    def original_line(self, row: int) -> bytes:
        """The record as the user wrote it, with its line terminator (JSONL/CSV/TSV)."""
        return self.records([row])[0] + self.newline.encode()

    def frame(self, rows: Any = None, raw: bool = False) -> pd.DataFrame:
        """Rows (default all) as a pandas DataFrame: row, id, source, messages (decoded),
        line_no[, raw][, subtask]. Reads only those rows: what a page shows of a big pool."""
        idx = None if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
        data = {"row": pd.Series(self.column("row", idx), dtype="int64"),
                "id": pd.Series(self.column("id", idx), dtype=object),
                "source": pd.Series(self.column("source", idx), dtype=object),
                "messages": pd.Series(self.messages(idx), dtype=object),
                "line_no": pd.Series(self.column("line_no", idx), dtype="int64")}
        if raw:
            recs = self.records(np.arange(len(self)) if idx is None else idx)
            data["raw"] = pd.Series([r.decode("utf-8", "surrogateescape") for r in recs],
                                    dtype=object)
        if self.has_subtask:
            data["subtask"] = pd.Series(self.column("subtask", idx), dtype=object)
        return pd.DataFrame(data)

    @property
    def table(self) -> pd.DataFrame:
        """Every row as `frame(raw=True)`, built once and kept: for small pools and tests; a
        big pool's readers use `frame(rows)`, `column`, `messages` and `records`."""
        if self._table is None:
            self._table = self.frame(raw=True)
        return self._table


def check_pool(pool: Pool, strict: bool) -> None:
    """The errors every load raises: no usable row, or any problem in strict mode."""
    report, path = pool.report, pool.path
    if report.n_valid == 0:
        detail = "; ".join(report.lines(limit=5)) or "the file holds no records"
        raise PoolError(f"{path}: no usable rows ({report.n_records} records). {detail}", report)
    if strict and report.problems:
        raise PoolError(f"{path}: {len(report.problems)} problems (strict mode): "
                        + "; ".join(report.lines(limit=10)), report)


@dataclass
class Parsed:
    """What parsing a pool gives besides its record batches (which may have gone to a sink)."""
    path: Path
    format: str
    shape: str
    report: ValidationReport
    fingerprint: str
    newline: str
    notes: list[str]
    signature: list
    batches: list[pa.RecordBatch]

    def meta(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "shape": self.shape,
                "report": self.report, "fingerprint": self.fingerprint,
                "newline": self.newline, "notes": self.notes, "signature": self.signature}


def parse_pool(path: str | Path, format: str = "auto", shape: str = "auto",
               sink: Callable[[pa.RecordBatch], None] | None = None,
               id_field: str | None = None, source_field: str | None = None) -> Parsed:
    """Parse a pool into record batches of `SCHEMA`, given to `sink` as they fill (else
    kept in `Parsed.batches`). JSONL streams: memory holds one batch, not the file."""
    path = sources.resolve(path)
    if not path.exists():
        raise FileNotFoundError(f"pool not found: {path}")
    if format not in ("auto",) + FORMATS:
        raise PoolError(f"unknown format {format!r}; choose one of: auto, {', '.join(FORMATS)}")
    if shape not in ("auto",) + SHAPES:
        raise PoolError(f"unknown shape {shape!r}; choose one of: auto, {', '.join(SHAPES)}")

    signature = file_signature(path)
    notes: list[str] = [n for n in [sources.note(path)] if n]
    newline = "\n"
    hasher = None
    stream: JsonlStream | None = None
    shards = sources.parquet_shards(path) if path.is_dir() else []
    if shards and format in ("auto", "parquet"):
        fmt = "parquet"
        fingerprint = fingerprint_dir(path)
        records: Iterator[Rec] = read_parquet_shards(path, shards, notes)
    elif path.is_dir():
        if format not in ("auto", "datasets"):
            raise PoolError(f"{path} is a folder; only format 'datasets' reads folders")
        fmt = "datasets"
        fingerprint = fingerprint_dir(path)
        records = read_datasets(path, notes)
    else:
        with open(path, "rb") as fh:
            head = fh.read(1 << 20)
        fmt = format if format != "auto" else sniff_format(path, head)
        if fmt == "json" and format == "auto" and looks_like_jsonl(head):
            fmt = "jsonl"
            notes.append("the .json file holds one JSON object per line: read as JSONL")
        if fmt == "jsonl":
            hasher = hashlib.sha256()
            stream = JsonlStream(path, hasher)
            records = stream.records()
            fingerprint = ""
        else:
            data = path.read_bytes()
            fingerprint = hashlib.sha256(data).hexdigest()
            if fmt == "json":
                records = read_json(data)
            elif fmt in ("csv", "tsv"):
                newline = newline_of(data)
                records = read_delimited(data, "," if fmt == "csv" else "\t")
            elif fmt == "parquet":
                records = read_parquet(path)
            else:
                raise PoolError(f"{path} is a file; format 'datasets' needs a save_to_disk "
                                "folder")

    kept: list[pa.RecordBatch] = []
    builder = PoolBuilder(path, shape, sink or kept.append, record_index=fmt in RECORD_FORMATS,
                       id_field=id_field or None, source_field=source_field or None)
    for rec in records:
        builder.add(rec)
    report, detected = builder.finish()
    for what, name, seen in (("id", id_field, builder.seen_id),
                             ("source", source_field, builder.seen_source)):
        if name and not seen and report.n_valid:
            raise PoolError(f"{path}: no record has the {what} column {name!r}; the first "
                            f"record's columns are {builder.first_keys}", report)
    if stream is not None:
        newline = stream.newline
        fingerprint = hasher.hexdigest()
    return Parsed(path=path, format=fmt, shape=detected, report=report, fingerprint=fingerprint,
                  newline=newline, notes=notes + builder.notes, signature=signature,
                  batches=kept)


def chats(pool: Any, rows: Any) -> list[list[dict]]:
    """The chats of `rows` of a Pool, or of a bare table with a `messages` column."""
    if isinstance(pool, Pool):
        return pool.messages(rows)
    col = pool["messages"]
    return [list(col.iat[int(r)]) for r in rows]


__all__ = ["FORMATS", "SHAPES", "Pool", "PoolError", "Problem", "ValidationReport", "chats",
           "parse_pool"]
