"""Reading instruction-tuning pools into one canonical table, with a validation report.

Formats: JSONL, JSON (a list, or an object holding the list under "data" or as its only list
value), CSV, TSV, Parquet, and a Hugging Face `datasets` `save_to_disk` folder.
Chat shapes: `messages` (open-instruct / OpenAI: [{"role", "content"}]), `alpaca`
(`instruction`, optional `input`, `output`), `sharegpt` (`conversations`: [{"from", "value"}]),
and `prompt_completion` (`prompt`, `completion`: strings, or message lists). Format and shape
are auto-detected (extension, then content sniffing; shape by the majority of the first
records) and can be forced.

The canonical table (`Pool.table`), one row per *valid* record:
    row       int, 0..n-1
    id        str  (the record's `id`, or the field named by `id_field`; made as
              f"{source}_{record}" when missing)
    source    str  (`dataset` or `source` field, or the one named by `source_field`, else the
              file stem)
    messages  list of {"role": system|user|assistant, "content": str}
    line_no   int  1-based line of the file where the record starts (Parquet / datasets: the
              1-based record number)
    record    int  0-based position of the record among the file's records (a CSV record
              spanning several lines counts once; invalid records count too, blank lines
              not): the index LESS's `sorted.csv` uses
    raw       str  the record's exact original text without its line terminator
              (JSONL / CSV / TSV: the line(s); JSON: the element's text; Parquet / datasets: a
              JSON dump of the record)
    subtask   str  only when the pool has a `subtask` field

We read bytes and split lines ourselves so line numbers are right, a CRLF file is recorded as
such (`Pool.newline`) and `raw` is byte-exact: `raw.encode("utf-8") + newline` gives back the
user's line.

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
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd

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


@dataclass
class Pool:
    table: pd.DataFrame
    path: Path
    format: str
    shape: str
    report: ValidationReport
    fingerprint: str
    newline: str = "\n"
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.table)

    def sources(self) -> dict[str, int]:
        """Valid rows per source, largest first."""
        return {str(k): int(v) for k, v in self.table["source"].value_counts().items()}

    def original_line(self, row: int) -> bytes:
        """The record as the user wrote it, with its line terminator (JSONL/CSV/TSV)."""
        return self.table["raw"].iat[row].encode("utf-8", "surrogateescape") + \
            self.newline.encode()


# --------------------------------------------------------------------------- entry point
def load_pool(path: str | Path, format: str = "auto", shape: str = "auto",
              strict: bool = False, id_field: str | None = None,
              source_field: str | None = None) -> Pool:
    """Read a pool file (or `datasets` folder) into the canonical table; see module doc.

    `id_field` / `source_field` name the column holding each record's id / source, for pools
    that do not use `id` and `dataset`/`source`; a named column no record has is an error."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pool not found: {path}")
    if format not in ("auto",) + FORMATS:
        raise PoolError(f"unknown format {format!r}; choose one of: auto, {', '.join(FORMATS)}")
    if shape not in ("auto",) + SHAPES:
        raise PoolError(f"unknown shape {shape!r}; choose one of: auto, {', '.join(SHAPES)}")

    notes: list[str] = []
    newline = "\n"
    if path.is_dir():
        if format not in ("auto", "datasets"):
            raise PoolError(f"{path} is a folder; only format 'datasets' reads folders")
        fmt = "datasets"
        fingerprint = _fingerprint_dir(path)
        records: Iterator[_Rec] = _read_datasets(path, notes)
    else:
        data = path.read_bytes()
        fingerprint = hashlib.sha256(data).hexdigest()
        fmt = format if format != "auto" else _sniff_format(path, data)
        if fmt == "json" and format == "auto" and _looks_like_jsonl(data):
            fmt = "jsonl"
            notes.append("the .json file holds one JSON object per line: read as JSONL")
        if fmt == "jsonl":
            text_lines, newline, clean = _split_lines(data)
            del data  # keep one copy of a big file in memory, not three
            records = _read_jsonl(text_lines, clean)
        elif fmt == "json":
            records = _read_json(data)
        elif fmt in ("csv", "tsv"):
            newline = _newline_of(data)
            records = _read_delimited(data, "," if fmt == "csv" else "\t")
        elif fmt == "parquet":
            records = _read_parquet(path)
        else:
            raise PoolError(f"{path} is a file; format 'datasets' needs a save_to_disk folder")

    builder = _Builder(path, shape, id_field or None, source_field or None)
    for rec in records:
        builder.add(rec)
    report, table, detected = builder.finish()
    for what, name, seen in (("id", id_field, builder.seen_id), ("source", source_field,
                                                                  builder.seen_source)):
        if name and not seen and report.n_valid:
            raise PoolError(f"{path}: no record has the {what} column {name!r}; the first "
                            f"record's columns are {builder.first_keys}", report)

    if report.n_valid == 0:
        detail = "; ".join(report.lines(limit=5)) or "the file holds no records"
        raise PoolError(f"{path}: no usable rows ({report.n_records} records). {detail}", report)
    if strict and report.problems:
        raise PoolError(f"{path}: {len(report.problems)} problems (strict mode): "
                        + "; ".join(report.lines(limit=10)), report)
    return Pool(table=table, path=path, format=fmt, shape=detected, report=report,
                fingerprint=fingerprint, newline=newline, notes=notes + builder.notes)


# --------------------------------------------------------------------------- readers
@dataclass
class _Rec:
    """A record from a reader: its start line, exact text, and either an object or a problem."""
    line: int
    raw: str
    obj: Any = None
    index: int = -1  # position among the file's records (set by _Builder.add)
    problem: str | None = None
    json_cells: bool = False  # CSV/TSV: messages/conversations cells are JSON strings
    file_level: bool = False  # a problem with the file's structure, not one record


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
    except json.JSONDecodeError:
        # first line alone parses -> JSONL with a long or broken tail
        first = text.split("\n", 1)[0]
        try:
            json.loads(first)
            return "\n" in text.strip()
        except json.JSONDecodeError:
            return False
    return bool(text[end:].strip())


def _newline_of(data: bytes) -> str:
    n = data.count(b"\n")
    return "\r\n" if n and data.count(b"\r\n") * 2 > n else "\n"


def _split_lines(data: bytes) -> tuple[list[str], str, bool]:
    """Lines (without terminators) decoded as UTF-8; invalid bytes kept as surrogate escapes
    (flagged later). Returns the lines, the file's newline ("\\n" or "\\r\\n") and whether
    the whole file was valid UTF-8."""
    newline = _newline_of(data)
    try:
        text = data.decode("utf-8")
        clean = True
    except UnicodeDecodeError:
        text = data.decode("utf-8", "surrogateescape")
        clean = False
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines, newline, clean


def _bad_utf8(raw: str) -> str | None:
    m = _SURROGATE.search(raw)
    if m is None:
        return None
    return f"non-UTF-8 bytes (first at character {m.start() + 1} of the record)"


def _read_jsonl(lines: list[str], clean: bool = False) -> Iterator[_Rec]:
    loads = json.loads
    for i, line in enumerate(lines, start=1):
        raw = line[:-1] if line.endswith("\r") else line
        if not raw.strip():
            continue  # blank lines are skipped silently
        bad = None if clean else _bad_utf8(raw)
        if bad:
            yield _Rec(i, raw, problem=bad)
            continue
        try:
            obj = loads(raw)
        except json.JSONDecodeError as exc:
            yield _Rec(i, raw, problem=f"bad JSON: {exc.msg} (column {exc.colno})")
            continue
        except RecursionError:
            yield _Rec(i, raw, problem="bad JSON: nested too deeply")
            continue
        yield _Rec(i, raw, obj=obj)


_WS = re.compile(r"[ \t\r\n]*")


def _read_json(data: bytes) -> Iterator[_Rec]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", "surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    dec = json.JSONDecoder()
    counter = _LineCounter(text)
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
            yield _Rec(counter.line(pos), text[pos:end], obj=obj)
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
        yield _Rec(counter.line(p), raw, obj=None if bad else obj, problem=bad)
        p = _WS.match(text, end).end()
        if p < n and text[p] == ",":
            p += 1
        elif p < n and text[p] != "]":
            yield _Rec(counter.line(p), "", problem="bad JSON: expected ',' or ']' between "
                                                    "records; the rest of the file could not be "
                                                    "read", file_level=True)
            return


def _read_delimited(data: bytes, delimiter: str) -> Iterator[_Rec]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", "surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = [m for m in re.split(r"(?<=\n)", text) if m]  # only \n (or \r\n) ends a line
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
        yield _Rec(line, raw, obj=dict(zip(header, row)), json_cells=True)


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
            yield _Rec(i, raw, obj=obj)


def _read_parquet(path: Path) -> Iterator[_Rec]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds
        raise PoolError(f"{path}: not a readable Parquet file ({exc})") from exc
    yield from _records_from_columns(b.to_pylist() for b in pf.iter_batches(batch_size=8192))


def _read_datasets(path: Path, notes: list[str]) -> Iterator[_Rec]:
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

    def batches() -> Iterator[list[dict]]:
        for cols in ds.iter(batch_size=8192):
            keys = list(cols)
            n = len(cols[keys[0]]) if keys else 0
            yield [{k: cols[k][j] for k in keys} for j in range(n)]

    yield from _records_from_columns(batches())


def _fingerprint_dir(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and p.suffix in (".arrow", ".parquet", ".jsonl", ".json", ".csv", ".tsv")
                   and p.name not in ("state.json", "dataset_info.json", "dataset_dict.json"))
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
    def __init__(self, path: Path, shape: str, id_field: str | None = None,
                 source_field: str | None = None):
        self.stem = path.stem if path.is_file() else path.name
        self.shape = shape
        self.id_field, self.source_field = id_field, source_field
        self.seen_id = self.seen_source = False
        self.first_keys: list[str] = []
        self.pending: list[_Rec] = []
        self.problems: list[Problem] = []
        self.n_records = 0
        self.cols: dict[str, list] = {"id": [], "source": [], "messages": [], "line_no": [],
                                      "record": [], "raw": [], "subtask": []}
        self.has_subtask = False
        self.notes: list[str] = []

    def add(self, rec: _Rec) -> None:
        if rec.file_level:
            self.problems.append(Problem(rec.line, rec.problem or "bad file"))
            return
        rec.index = self.n_records
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
            source = str(source) if isinstance(source, (int, float)) and \
                not isinstance(source, bool) else source
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
            rid = f"{source}_{rec.index}"
        sub = obj.get("subtask")
        if sub is not None:
            self.has_subtask = True
        c = self.cols
        c["id"].append(str(rid))
        c["source"].append(source)
        c["messages"].append(msgs)
        c["line_no"].append(rec.line)
        c["record"].append(rec.index)
        c["raw"].append(rec.raw)
        c["subtask"].append(None if sub is None else str(sub))

    def finish(self) -> tuple[ValidationReport, pd.DataFrame, str]:
        if self.pending or self.shape == "auto":
            self._detect()
        c = self.cols
        # duplicate ids and duplicated conversations: a warning on each later occurrence
        first: dict[str, int] = {}
        seen: dict[tuple, int] = {}
        for rid, line, msgs in zip(c["id"], c["line_no"], c["messages"]):
            if rid in first:
                self.problems.append(Problem(line, f"duplicate id {rid!r} (first at line "
                                                   f"{first[rid]})", "warning"))
            else:
                first[rid] = line
            key = tuple((m["role"], m["content"]) for m in msgs)
            if key in seen:
                self.problems.append(Problem(line, f"same conversation as line {seen[key]}",
                                             "warning"))
            else:
                seen[key] = line
        n = len(c["id"])
        data = {"row": pd.Series(range(n), dtype="int64"),
                "id": pd.Series(c["id"], dtype=object),
                "source": pd.Series(c["source"], dtype=object),
                "messages": pd.Series(c["messages"], dtype=object),
                "line_no": pd.Series(c["line_no"], dtype="int64"),
                "raw": pd.Series(c["raw"], dtype=object),
                "record": pd.Series(c["record"], dtype="int64")}
        if self.has_subtask:
            data["subtask"] = pd.Series(c["subtask"], dtype=object)
        table = pd.DataFrame(data)
        self.problems.sort(key=lambda p: p.line)
        report = ValidationReport(self.problems, self.n_records, n)
        return report, table, self.shape


def _kind(obj: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean", type(None): "null"}.get(type(obj), type(obj).__name__)


__all__ = ["FORMATS", "SHAPES", "Pool", "PoolError", "Problem", "ValidationReport", "load_pool"]
