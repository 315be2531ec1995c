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
"""

from __future__ import annotations

import csv
import hashlib
import json
import mmap
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from clusterucb_core.data import sources

FORMATS = ("jsonl", "json", "csv", "tsv", "parquet", "datasets")
SHAPES = ("messages", "alpaca", "sharegpt", "prompt_completion")
ROLES = ("system", "user", "assistant")
ROLE_ALIASES = {
    "system": "system",
    "user": "user", "human": "user", "prompter": "user",
    "assistant": "assistant", "gpt": "assistant", "bot": "assistant", "model": "assistant",
    "chatgpt": "assistant",
}
_CANON_ROLES = frozenset(ROLES)
_DETECT_FIRST = 200  # records used to detect the shape
_SURROGATE = re.compile("[\udc80-\udcff]")
RECORD_FORMATS = ("parquet", "datasets")  # no byte offsets: records are found by index
BATCH_ROWS = 65536  # rows per Arrow record batch while parsing
SCHEMA = pa.schema([("row", pa.int64()), ("id", pa.string()), ("source", pa.string()),
                    ("messages", pa.large_string()), ("line_no", pa.int64()),
                    ("offset", pa.int64()), ("length", pa.int64()), ("subtask", pa.string())])
_EXT_FORMAT = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv",
               ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}


# --------------------------------------------------------------------------- public types
@dataclass
class Problem:
    line: int  # 1-based
    reason: str
    severity: str = "error"  # error (record excluded) | warning (record kept)

    def __str__(self) -> str:
        return f"line {self.line}: {self.severity}: {self.reason}"


@dataclass
class ValidationReport:
    problems: list[Problem]
    n_records: int
    n_valid: int

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity != "error"]

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self, limit: int | None = 50) -> list[str]:
        """Human-readable problem lines, the first `limit` and a count of the rest."""
        shown = self.problems if limit is None else self.problems[:limit]
        out = [str(p) for p in shown]
        if limit is not None and len(self.problems) > limit:
            out.append(f"... and {len(self.problems) - limit} more problems")
        return out


class PoolError(ValueError):
    def __init__(self, message: str, report: ValidationReport | None = None):
        super().__init__(message)
        self.report = report


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
            return _reread_records(self.path, self.format, offsets)
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
    stream: _JsonlStream | None = None
    shards = sources.parquet_shards(path) if path.is_dir() else []
    if shards and format in ("auto", "parquet"):
        fmt = "parquet"
        fingerprint = _fingerprint_dir(path)
        records: Iterator[_Rec] = _read_parquet_shards(path, shards, notes)
    elif path.is_dir():
        if format not in ("auto", "datasets"):
            raise PoolError(f"{path} is a folder; only format 'datasets' reads folders")
        fmt = "datasets"
        fingerprint = _fingerprint_dir(path)
        records = _read_datasets(path, notes)
    else:
        with open(path, "rb") as fh:
            head = fh.read(1 << 20)
        fmt = format if format != "auto" else _sniff_format(path, head)
        if fmt == "json" and format == "auto" and _looks_like_jsonl(head):
            fmt = "jsonl"
            notes.append("the .json file holds one JSON object per line: read as JSONL")
        if fmt == "jsonl":
            hasher = hashlib.sha256()
            stream = _JsonlStream(path, hasher)
            records = stream.records()
            fingerprint = ""
        else:
            data = path.read_bytes()
            fingerprint = hashlib.sha256(data).hexdigest()
            if fmt == "json":
                records = _read_json(data)
            elif fmt in ("csv", "tsv"):
                newline = _newline_of(data)
                records = _read_delimited(data, "," if fmt == "csv" else "\t")
            elif fmt == "parquet":
                records = _read_parquet(path)
            else:
                raise PoolError(f"{path} is a file; format 'datasets' needs a save_to_disk "
                                "folder")

    kept: list[pa.RecordBatch] = []
    builder = _Builder(path, shape, sink or kept.append, record_index=fmt in RECORD_FORMATS,
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


# --------------------------------------------------------------------------- readers
@dataclass
class _Rec:
    """A record from a reader: its start line, exact text, and either an object or a problem."""
    line: int
    raw: str
    obj: Any = None
    problem: str | None = None
    json_cells: bool = False  # CSV/TSV: messages/conversations cells are JSON strings
    file_level: bool = False  # a problem with the file's structure, not one record
    offset: int = -1  # byte offset of `raw` in the file (record formats: the record index)
    length: int = -1  # bytes of `raw` (-1: count them from `raw`; record formats: stays -1)


def _sniff_format(path: Path, data: bytes) -> str:
    ext = path.suffix.lower()
    if ext in _EXT_FORMAT:
        return _EXT_FORMAT[ext]
    if data[:4] == b"PAR1":
        return "parquet"
    head = data[:65536].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        return "json"
    if head.startswith(b"{"):
        return "jsonl" if _looks_like_jsonl(data) else "json"
    first = head.split(b"\n", 1)[0]
    if b"\t" in first and first.count(b"\t") >= first.count(b","):
        return "tsv"
    if b"," in first:
        return "csv"
    raise PoolError(f"cannot tell the format of {path.name}; pass format= one of "
                    f"{', '.join(FORMATS)}")


def _looks_like_jsonl(data: bytes) -> bool:
    """True when the text is several JSON values one after another (JSONL), not one value."""
    text = data[:1 << 20].decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    if not text.startswith("{"):
        return False
    try:
        _, end = json.JSONDecoder().raw_decode(text)
    except RecursionError:  # one value nested too deeply: the JSON reader reports it
        return False
    except json.JSONDecodeError:
        # first line alone parses -> JSONL with a long or broken tail
        first = text.split("\n", 1)[0]
        try:
            json.loads(first)
            return "\n" in text.strip()
        except (json.JSONDecodeError, RecursionError):
            return False
    return bool(text[end:].strip())


def _newline_of(data: bytes) -> str:
    n = data.count(b"\n")
    return "\r\n" if n and data.count(b"\r\n") * 2 > n else "\n"


def _bad_utf8(raw: str) -> str | None:
    m = _SURROGATE.search(raw)
    if m is None:
        return None
    return f"non-UTF-8 bytes (first at character {m.start() + 1} of the record)"


class _JsonlStream:
    """JSONL records read block by block: byte offsets, 1-based line numbers, the newline
    style and the file's sha256, without holding the file. Lines end at b"\\n" only (a UTF-8
    multi-byte character never holds that byte), so decoding line by line equals decoding
    the whole file."""

    BLOCK = 8 << 20

    def __init__(self, path: Path, hasher: Any):
        self.path, self.hasher = path, hasher
        self.n_lf = self.n_crlf = 0

    @property
    def newline(self) -> str:
        return "\r\n" if self.n_lf and self.n_crlf * 2 > self.n_lf else "\n"

    def _lines(self) -> Iterator[tuple[int, bytes, bool]]:
        """(offset, line without b"\\n", whether a b"\\n" ended it)."""
        offset = 0
        carry = b""
        with open(self.path, "rb") as fh:
            while True:
                block = fh.read(self.BLOCK)
                if not block:
                    break
                self.hasher.update(block)
                parts = (carry + block).split(b"\n")
                carry = parts.pop()
                for part in parts:
                    yield offset, part, True
                    offset += len(part) + 1
        if carry:
            yield offset, carry, False

    def records(self) -> Iterator[_Rec]:
        loads = json.loads
        for i, (offset, line, ended) in enumerate(self._lines(), start=1):
            if ended:
                self.n_lf += 1
            if line.endswith(b"\r"):
                self.n_crlf += ended
                line = line[:-1]
            if i == 1 and line.startswith(b"\xef\xbb\xbf"):
                line, offset = line[3:], offset + 3
            try:
                raw = line.decode("utf-8")
                bad = None
            except UnicodeDecodeError:
                raw = line.decode("utf-8", "surrogateescape")
                bad = _bad_utf8(raw)
            if not raw.strip():
                continue  # blank lines are skipped silently
            if bad:
                yield _Rec(i, raw, problem=bad, offset=offset, length=len(line))
                continue
            try:
                obj = loads(raw)
            except json.JSONDecodeError as exc:
                yield _Rec(i, raw, problem=f"bad JSON: {exc.msg} (column {exc.colno})")
                continue
            except RecursionError:
                yield _Rec(i, raw, problem="bad JSON: nested too deeply")
                continue
            yield _Rec(i, raw, obj=obj, offset=offset, length=len(line))


class _ByteOffsets:
    """Byte offset in the file of increasing character offsets into its decoded text."""

    def __init__(self, text: str, skip: int):
        self.text, self.ascii = text, text.isascii()
        self.char, self.byte = 0, skip

    def __call__(self, pos: int) -> int:
        if self.ascii:
            return pos + self.byte
        self.byte += len(self.text[self.char:pos].encode("utf-8", "surrogateescape"))
        self.char = pos
        return self.byte


_WS = re.compile(r"[ \t\r\n]*")


def _decode(data: bytes) -> tuple[str, bool]:
    """The file's text (undecodable bytes kept as surrogates, so offsets stay exact) and
    whether it began with a UTF-8 BOM, which is dropped."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", "surrogateescape")
    bom = text.startswith("\ufeff")
    return (text[1:] if bom else text), bom


def _read_json(data: bytes) -> Iterator[_Rec]:
    text, bom = _decode(data)
    dec = json.JSONDecoder()
    counter = _LineCounter(text)
    counter.byte = _ByteOffsets(text, 3 if bom else 0)
    pos = _WS.match(text, 0).end()
    if pos >= len(text):
        return
    if text[pos] == "{":
        pos = yield from _find_list_in_object(text, pos, dec, counter)
        if pos is None:
            return
    if text[pos] != "[":
        yield _Rec(counter.line(pos), "", file_level=True,
                   problem="bad JSON: expected a list of records (or an object with a "
                           "'data' list)")
        return
    yield from _scan_array(text, pos, dec, counter)


class _LineCounter:
    """1-based line number of a character offset, for increasing offsets in O(total)."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.n = 1
        self.byte: _ByteOffsets | None = None

    def line(self, offset: int) -> int:
        if offset < self.pos:
            self.pos, self.n = 0, 1
        self.n += self.text.count("\n", self.pos, offset)
        self.pos = offset
        return self.n


def _json_error(exc: json.JSONDecodeError, counter: _LineCounter, text: str) -> _Rec:
    line = counter.line(exc.pos)
    rest = text.count("\n", exc.pos) + 1
    return _Rec(line, "", problem=f"bad JSON: {exc.msg} (column {exc.colno}); the rest of the "
                                  f"file ({rest} lines) could not be read")


def _find_list_in_object(text: str, pos: int, dec: json.JSONDecoder,
                         counter: _LineCounter) -> Iterator[_Rec]:
    """Generator returning the offset of the record list inside a top-level object."""
    try:
        obj, end = dec.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        yield _json_error(exc, counter, text)
        return None
    except RecursionError:
        yield _Rec(1, "", problem="bad JSON: nested too deeply")
        return None
    if _WS.match(text, end).end() < len(text):
        yield _Rec(counter.line(end), "", problem="bad JSON: extra data after the top-level value",
                   file_level=True)
    keys = [k for k, v in obj.items() if isinstance(v, list)]
    key = "data" if "data" in keys else (keys[0] if len(keys) == 1 else None)
    if key is None:
        if any(k in obj for k in ("messages", "conversations", "instruction", "prompt")):
            # a single record
            yield _Rec(counter.line(pos), text[pos:end], obj=obj, offset=counter.byte(pos))
            return None
        yield _Rec(1, "", problem="the JSON object has no 'data' list of records (keys: "
                                  + ", ".join(map(repr, list(obj)[:10])) + ")", file_level=True)
        return None
    # locate the chosen list's '[' by walking the object's keys
    p = pos + 1
    while True:
        p = _WS.match(text, p).end()
        k, p = dec.raw_decode(text, p)
        p = _WS.match(text, p).end() + 1  # ':'
        p = _WS.match(text, p).end()
        if k == key:
            return p
        _, p = dec.raw_decode(text, p)
        p = _WS.match(text, p).end() + 1  # ',' or '}'


def _scan_array(text: str, pos: int, dec: json.JSONDecoder,
                counter: _LineCounter) -> Iterator[_Rec]:
    p = pos + 1
    n = len(text)
    while True:
        p = _WS.match(text, p).end()
        if p >= n:
            yield _Rec(counter.line(n), "", problem="bad JSON: the list is not closed (truncated "
                                                    "file?)", file_level=True)
            return
        if text[p] == "]":
            end = _WS.match(text, p + 1).end()
            if end < n:
                yield _Rec(counter.line(end), "", problem="bad JSON: extra data after the list",
                           file_level=True)
            return
        try:
            obj, end = dec.raw_decode(text, p)
        except json.JSONDecodeError as exc:
            yield _json_error(exc, counter, text)
            return
        except RecursionError:
            yield _Rec(counter.line(p), "", problem="bad JSON: nested too deeply; the rest of the "
                                                   "file could not be read")
            return
        raw = text[p:end]
        bad = _bad_utf8(raw)
        yield _Rec(counter.line(p), raw, obj=None if bad else obj, problem=bad,
                   offset=counter.byte(p))
        p = _WS.match(text, end).end()
        if p < n and text[p] == ",":
            p += 1
        elif p < n and text[p] != "]":
            yield _Rec(counter.line(p), "", problem="bad JSON: expected ',' or ']' between "
                                                    "records; the rest of the file could not be "
                                                    "read", file_level=True)
            return


def _read_delimited(data: bytes, delimiter: str) -> Iterator[_Rec]:
    text, bom = _decode(data)
    lines = [m for m in re.split(r"(?<=\n)", text) if m]  # only \n (or \r\n) ends a line
    starts = [3 if bom else 0]  # byte offset of each line
    ascii_only = text.isascii()
    for ln in lines:
        starts.append(starts[-1] + (len(ln) if ascii_only else
                                    len(ln.encode("utf-8", "surrogateescape"))))
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    state = {"consumed": 0}

    def feed() -> Iterator[str]:
        for ln in lines:
            state["consumed"] += 1
            yield ln

    reader = csv.reader(feed(), delimiter=delimiter)
    header: list[str] | None = None
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raw = "".join(lines[start - 1:state["consumed"]]).rstrip("\r\n")
            yield _Rec(start, raw, problem=f"bad {'CSV' if delimiter == ',' else 'TSV'}: {exc}")
            start = state["consumed"] + 1
            continue
        raw = "".join(lines[start - 1:state["consumed"]])
        raw = raw[:-2] if raw.endswith("\r\n") else raw[:-1] if raw.endswith(("\n", "\r")) else raw
        line = start
        start = state["consumed"] + 1
        if not row or not raw.strip():
            continue  # blank line
        if header is None:
            header = [h.strip() for h in row]
            continue
        bad = _bad_utf8(raw)
        if bad:
            yield _Rec(line, raw, problem=bad)
            continue
        if len(row) != len(header):
            yield _Rec(line, raw, problem=f"expected {len(header)} fields (the header's), got "
                                          f"{len(row)}")
            continue
        yield _Rec(line, raw, obj=dict(zip(header, row)), json_cells=True,
                   offset=starts[line - 1])


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def _records_from_columns(batches: Iterable[list[dict]]) -> Iterator[_Rec]:
    i = 0
    for batch in batches:
        for obj in batch:
            i += 1
            obj = _jsonable(obj)
            raw = json.dumps(obj, ensure_ascii=False, default=str)
            yield _Rec(i, raw, obj=obj, offset=i - 1)


def _read_parquet(path: Path) -> Iterator[_Rec]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds
        raise PoolError(f"{path}: not a readable Parquet file ({exc})") from exc
    yield from _records_from_columns(b.to_pylist() for b in pf.iter_batches(batch_size=8192))


def _read_parquet_shards(folder: Path, shards: list[Path], notes: list[str]) -> Iterator[_Rec]:
    """Records of every shard in path order, numbered 1.. across the shards."""
    import pyarrow.parquet as pq

    spans, start = [], 1
    for p in shards:
        try:
            n = pq.ParquetFile(p).metadata.num_rows
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds
            raise PoolError(f"{p}: not a readable Parquet file ({exc})") from exc
        spans.append(f"{p.relative_to(folder)}: rows {start}-{start + n - 1}")
        start += n
    notes.append(f"{len(shards)} Parquet shards, rows numbered across them in path order ("
                 + "; ".join(spans[:5]) + ("; ..." if len(spans) > 5 else "") + ")")
    yield from _records_from_columns(b.to_pylist() for p in shards
                                     for b in pq.ParquetFile(p).iter_batches(batch_size=8192))


def _open_dataset(path: Path, notes: list[str]) -> Any:
    """The split of a `datasets` folder a pool reads: 'train', or the only one."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover
        raise PoolError("reading a datasets folder needs the `datasets` package") from exc
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001
        raise PoolError(f"{path}: not a `datasets` save_to_disk folder ({exc})") from exc
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if "train" in ds:
            split = "train"
        elif len(splits) == 1:
            split = splits[0]
        else:
            raise PoolError(f"{path}: a DatasetDict with splits {splits} and no 'train'; save "
                            "the split you want on its own")
        notes.append(f"read split {split!r} of {splits}")
        ds = ds[split]
    return ds


def _column_batches(ds: Any) -> Iterator[list[dict]]:
    for cols in ds.iter(batch_size=8192):
        keys = list(cols)
        n = len(cols[keys[0]]) if keys else 0
        yield [{k: cols[k][j] for k in keys} for j in range(n)]


def _read_datasets(path: Path, notes: list[str]) -> Iterator[_Rec]:
    yield from _records_from_columns(_column_batches(_open_dataset(path, notes)))


def _reread_records(path: Path, fmt: str, index: np.ndarray) -> list[bytes]:
    """Records of a Parquet file or `datasets` folder by 0-based index, as the JSON text that
    parsing made of them."""
    if fmt == "parquet":  # a file, or a folder of shards in path order
        objs = sources.parquet_table(path).take(pa.array(index)).to_pylist()
    else:
        objs = [o for batch in _column_batches(_open_dataset(path, []).select(index.tolist()))
                for o in batch]
    return [json.dumps(_jsonable(o), ensure_ascii=False, default=str)
            .encode("utf-8", "surrogateescape") for o in objs]


def _fingerprint_dir(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and p.suffix in (".arrow", ".parquet", ".jsonl", ".json", ".csv", ".tsv")
                   and p.name not in ("state.json", "dataset_info.json", "dataset_dict.json",
                                      sources.ORIGIN_FILE))
    for p in files:
        h.update(str(p.relative_to(path)).encode() + b"\0")
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- shapes
def _shape_of(obj: dict) -> str | None:
    if "messages" in obj:
        return "messages"
    if "conversations" in obj:
        return "sharegpt"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if "prompt" in obj and "completion" in obj:
        return "prompt_completion"
    return None


_REQUIRED = {"messages": "'messages'", "sharegpt": "'conversations'",
             "alpaca": "'instruction' and 'output'",
             "prompt_completion": "'prompt' and 'completion'"}


def _maybe_json_cell(value: Any, json_cells: bool) -> Any:
    if json_cells and isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _turns(value: Any, what: str) -> tuple[list[dict] | None, str | None]:
    """Validate a list of turns ({role, content} or {from, value}) -> canonical messages."""
    if type(value) is list and value:
        # fast path: already canonical (the common case; reuses the parsed dicts)
        for m in value:
            if type(m) is not dict or len(m) != 2 or type(m.get("content")) is not str \
                    or type(m.get("role")) is not str or m["role"] not in _CANON_ROLES:
                break
        else:
            return value, None
    if not isinstance(value, list):
        return None, f"'{what}' must be a list of turns, got {type(value).__name__}"
    if not value:
        return None, f"'{what}' is empty"
    out = []
    for k, m in enumerate(value, start=1):
        if not isinstance(m, dict):
            return None, f"{what}[{k}] must be an object, got {type(m).__name__}"
        if "role" in m or "content" in m:
            role, content, rk, ck = m.get("role"), m.get("content"), "role", "content"
        else:
            role, content, rk, ck = m.get("from"), m.get("value"), "from", "value"
        if role is None:
            return None, f"{what}[{k}] has no '{rk}'"
        if not isinstance(role, str):
            return None, f"{what}[{k}].{rk} must be a string, got {type(role).__name__}"
        canon = ROLE_ALIASES.get(role.strip().lower())
        if canon is None:
            return None, f"{what}[{k}] has unknown role {role!r} (known: system, user, " \
                         "assistant, human, gpt)"
        if content is None and ck not in m:
            return None, f"{what}[{k}] has no '{ck}'"
        if not isinstance(content, str):
            return None, f"{what}[{k}].{ck} must be a string, got {type(content).__name__}"
        out.append({"role": canon, "content": content})
    return out, None


def _to_messages(obj: dict, shape: str, json_cells: bool) -> tuple[list[dict] | None, str | None]:
    if shape in ("messages", "sharegpt"):
        key = "messages" if shape == "messages" else "conversations"
        if key not in obj:
            return None, f"missing field '{key}' (shape {shape})"
        return _turns(_maybe_json_cell(obj[key], json_cells), key)
    if shape == "alpaca":
        for k in ("instruction", "output"):
            if k not in obj:
                return None, f"missing field '{k}' (shape alpaca)"
        ins, inp, out = obj["instruction"], obj.get("input"), obj["output"]
        sysmsg = obj.get("system")
        for k, v in (("instruction", ins), ("output", out)):
            if not isinstance(v, str):
                return None, f"'{k}' must be a string, got {type(v).__name__}"
        if inp is not None and not isinstance(inp, str):
            return None, f"'input' must be a string, got {type(inp).__name__}"
        user = ins + ("\n\n" + inp if inp and inp.strip() else "")
        msgs = []
        if isinstance(sysmsg, str) and sysmsg.strip():
            msgs.append({"role": "system", "content": sysmsg})
        msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": out}]
        return msgs, None
    # prompt_completion
    for k in ("prompt", "completion"):
        if k not in obj:
            return None, f"missing field '{k}' (shape prompt_completion)"
    prompt = _maybe_json_cell(obj["prompt"], json_cells)
    completion = _maybe_json_cell(obj["completion"], json_cells)
    if isinstance(prompt, str):
        msgs = [{"role": "user", "content": prompt}]
    else:
        msgs, err = _turns(prompt, "prompt")
        if err:
            return None, err
    if isinstance(completion, str):
        return msgs + [{"role": "assistant", "content": completion}], None
    more, err = _turns(completion, "completion")
    if err:
        return None, err
    return msgs + more, None


def _check_chat(msgs: list[dict]) -> str | None:
    n_assistant = 0
    for k, m in enumerate(msgs, start=1):
        if m["role"] == "assistant":
            n_assistant += 1
            if not m["content"].strip():
                return f"empty assistant turn (turn {k}): nothing to train on"
    if n_assistant == 0:
        return "no assistant turn: nothing to train on"
    return None


class _Builder:
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
        self.pending: list[_Rec] = []
        self.problems: list[Problem] = []
        self.n_records = 0
        self.n_rows = 0
        self.cols: dict[str, list] = {k: [] for k in SCHEMA.names if k != "row"}
        self.first_id: dict[str, int] = {}
        self.first_chat: dict[bytes, int] = {}
        self.notes: list[str] = []

    def add(self, rec: _Rec) -> None:
        if rec.file_level:
            self.problems.append(Problem(rec.line, rec.problem or "bad file"))
            return
        self.n_records += 1
        if self.shape == "auto":
            self.pending.append(rec)
            if len(self.pending) >= _DETECT_FIRST:
                self._detect()
            return
        self._convert(rec)

    def _detect(self) -> None:
        votes = Counter(_shape_of(r.obj) for r in self.pending if isinstance(r.obj, dict))
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

    def _convert(self, rec: _Rec) -> None:
        if rec.problem is not None:
            self.problems.append(Problem(rec.line, rec.problem))
            return
        obj = rec.obj
        if not isinstance(obj, dict):
            self.problems.append(Problem(rec.line, "not a JSON object (got "
                                         f"{_kind(obj)}); each record must be an object"))
            return
        msgs, err = _to_messages(obj, self.shape, rec.json_cells)
        if err is None:
            err = _check_chat(msgs)
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


def chats(pool: Any, rows: Any) -> list[list[dict]]:
    """The chats of `rows` of a Pool, or of a bare table with a `messages` column."""
    if isinstance(pool, Pool):
        return pool.messages(rows)
    col = pool["messages"]
    return [list(col.iat[int(r)]) for r in rows]


__all__ = ["FORMATS", "SHAPES", "Pool", "PoolError", "Problem", "ValidationReport", "chats",
           "parse_pool"]
