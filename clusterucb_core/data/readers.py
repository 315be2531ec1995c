"""Reading a pool file by format: JSONL (streamed, with byte offsets), JSON, CSV/TSV, Parquet
(files and shard folders) and `datasets` folders, each as a stream of raw records with the
line they start on (`Rec`); malformed input becomes a record with its problem.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from clusterucb_core.data import sources
from clusterucb_core.data.schema import EXT_FORMAT, FORMATS, SURROGATE, PoolError


# --------------------------------------------------------------------------- readers
@dataclass
class Rec:
    """A record from a reader: its start line, exact text, and either an object or a problem."""
    line: int
    raw: str
    obj: Any = None
    problem: str | None = None
    json_cells: bool = False  # CSV/TSV: messages/conversations cells are JSON strings
    file_level: bool = False  # a problem with the file's structure, not one record
    offset: int = -1  # byte offset of `raw` in the file (record formats: the record index)
    length: int = -1  # bytes of `raw` (-1: count them from `raw`; record formats: stays -1)


def sniff_format(path: Path, data: bytes) -> str:
    ext = path.suffix.lower()
    if ext in EXT_FORMAT:
        return EXT_FORMAT[ext]
    if data[:4] == b"PAR1":
        return "parquet"
    head = data[:65536].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        return "json"
    if head.startswith(b"{"):
        return "jsonl" if looks_like_jsonl(data) else "json"
    first = head.split(b"\n", 1)[0]
    if b"\t" in first and first.count(b"\t") >= first.count(b","):
        return "tsv"
    if b"," in first:
        return "csv"
    raise PoolError(f"cannot tell the format of {path.name}; pass format= one of "
                    f"{', '.join(FORMATS)}")


def looks_like_jsonl(data: bytes) -> bool:
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


def newline_of(data: bytes) -> str:
    n = data.count(b"\n")
    return "\r\n" if n and data.count(b"\r\n") * 2 > n else "\n"


def _bad_utf8(raw: str) -> str | None:
    m = SURROGATE.search(raw)
    if m is None:
        return None
    return f"non-UTF-8 bytes (first at character {m.start() + 1} of the record)"


class JsonlStream:
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

    def records(self) -> Iterator[Rec]:
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
                yield Rec(i, raw, problem=bad, offset=offset, length=len(line))
                continue
            try:
                obj = loads(raw)
            except json.JSONDecodeError as exc:
                yield Rec(i, raw, problem=f"bad JSON: {exc.msg} (column {exc.colno})")
                continue
            except RecursionError:
                yield Rec(i, raw, problem="bad JSON: nested too deeply")
                continue
            yield Rec(i, raw, obj=obj, offset=offset, length=len(line))


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


def read_json(data: bytes) -> Iterator[Rec]:
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
        yield Rec(counter.line(pos), "", file_level=True,
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


def _json_error(exc: json.JSONDecodeError, counter: _LineCounter, text: str) -> Rec:
    line = counter.line(exc.pos)
    rest = text.count("\n", exc.pos) + 1
    return Rec(line, "", problem=f"bad JSON: {exc.msg} (column {exc.colno}); the rest of the "
                                  f"file ({rest} lines) could not be read")


def _find_list_in_object(text: str, pos: int, dec: json.JSONDecoder,
                         counter: _LineCounter) -> Iterator[Rec]:
    """Generator returning the offset of the record list inside a top-level object."""
    try:
        obj, end = dec.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        yield _json_error(exc, counter, text)
        return None
    except RecursionError:
        yield Rec(1, "", problem="bad JSON: nested too deeply")
        return None
    if _WS.match(text, end).end() < len(text):
        yield Rec(counter.line(end), "", problem="bad JSON: extra data after the top-level value",
                   file_level=True)
    keys = [k for k, v in obj.items() if isinstance(v, list)]
    key = "data" if "data" in keys else (keys[0] if len(keys) == 1 else None)
    if key is None:
        if any(k in obj for k in ("messages", "conversations", "instruction", "prompt")):
            # a single record
            yield Rec(counter.line(pos), text[pos:end], obj=obj, offset=counter.byte(pos))
            return None
        yield Rec(1, "", problem="the JSON object has no 'data' list of records (keys: "
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
                counter: _LineCounter) -> Iterator[Rec]:
    p = pos + 1
    n = len(text)
    while True:
        p = _WS.match(text, p).end()
        if p >= n:
            yield Rec(counter.line(n), "", problem="bad JSON: the list is not closed (truncated "
                                                    "file?)", file_level=True)
            return
        if text[p] == "]":
            end = _WS.match(text, p + 1).end()
            if end < n:
                yield Rec(counter.line(end), "", problem="bad JSON: extra data after the list",
                           file_level=True)
            return
        try:
            obj, end = dec.raw_decode(text, p)
        except json.JSONDecodeError as exc:
            yield _json_error(exc, counter, text)
            return
        except RecursionError:
            yield Rec(counter.line(p), "", problem="bad JSON: nested too deeply; the rest of the "
                                                   "file could not be read")
            return
        raw = text[p:end]
        bad = _bad_utf8(raw)
        yield Rec(counter.line(p), raw, obj=None if bad else obj, problem=bad,
                   offset=counter.byte(p))
        p = _WS.match(text, end).end()
        if p < n and text[p] == ",":
            p += 1
        elif p < n and text[p] != "]":
            yield Rec(counter.line(p), "", problem="bad JSON: expected ',' or ']' between "
                                                    "records; the rest of the file could not be "
                                                    "read", file_level=True)
            return


def read_delimited(data: bytes, delimiter: str) -> Iterator[Rec]:
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
            yield Rec(start, raw, problem=f"bad {'CSV' if delimiter == ',' else 'TSV'}: {exc}")
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
            yield Rec(line, raw, problem=bad)
            continue
        if len(row) != len(header):
            yield Rec(line, raw, problem=f"expected {len(header)} fields (the header's), got "
                                          f"{len(row)}")
            continue
        yield Rec(line, raw, obj=dict(zip(header, row)), json_cells=True,
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


def _records_from_columns(batches: Iterable[list[dict]]) -> Iterator[Rec]:
    i = 0
    for batch in batches:
        for obj in batch:
            i += 1
            obj = _jsonable(obj)
            raw = json.dumps(obj, ensure_ascii=False, default=str)
            yield Rec(i, raw, obj=obj, offset=i - 1)


def read_parquet(path: Path) -> Iterator[Rec]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds
        raise PoolError(f"{path}: not a readable Parquet file ({exc})") from exc
    yield from _records_from_columns(b.to_pylist() for b in pf.iter_batches(batch_size=8192))


def read_parquet_shards(folder: Path, shards: list[Path], notes: list[str]) -> Iterator[Rec]:
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


def read_datasets(path: Path, notes: list[str]) -> Iterator[Rec]:
    yield from _records_from_columns(_column_batches(_open_dataset(path, notes)))


def reread_records(path: Path, fmt: str, index: np.ndarray) -> list[bytes]:
    """Records of a Parquet file or `datasets` folder by 0-based index, as the JSON text that
    parsing made of them."""
    if fmt == "parquet":  # a file, or a folder of shards in path order
        objs = sources.parquet_table(path).take(pa.array(index)).to_pylist()
    else:
        objs = [o for batch in _column_batches(_open_dataset(path, []).select(index.tolist()))
                for o in batch]
    return [json.dumps(_jsonable(o), ensure_ascii=False, default=str)
            .encode("utf-8", "surrogateescape") for o in objs]


def fingerprint_dir(path: Path) -> str:
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
