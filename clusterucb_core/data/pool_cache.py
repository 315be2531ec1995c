"""The pool parsed once: a columnar cache in the workspace that every later reader memory-maps.

    W/pool_cache/<fingerprint[:32]>-<format>-<shape>/
        pool.arrow   the columnar table (`pool.SCHEMA`) as an uncompressed Arrow IPC file:
                     opened with `pa.memory_map`, nothing is copied into the process, so the
                     app, each CLI command and every torchrun rank or Ray worker share the
                     operating system's page cache instead of each holding the pool
        meta.json    format, shape, newline, notes, the validation report, the file's
                     signature (size, mtime); written last, so a folder without it is unfinished
    W/pool_cache/index.json   resolved pool path + forced format/shape -> signature and entry

An entry is named by the pool's content fingerprint (sha256). A reader whose file signature
matches the index opens the entry without hashing or parsing; a changed signature parses the
file again (the parse hashes it as it streams) and reuses the entry when the content turns out
unchanged. The original file is re-read only for export, by byte offset (`Pool.records`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa

from clusterucb_core.data.pool import (
    Pool,
    PoolError,
    Problem,
    ValidationReport,
    check_pool,
    file_signature,
    parse_pool,
)
from clusterucb_core.data.schema import SCHEMA
from clusterucb_core.runtime import atomic

DATA = "pool.arrow"
META = "meta.json"
INDEX = "index.json"
CACHE_VERSION = 1

try:
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def _locked(folder: Path):
    """One builder at a time per cache folder (torchrun ranks start together)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _index_key(path: Path, format: str, shape: str, columns: tuple[str, str] = ("", "")
               ) -> str:
    return f"{path}|{format}|{shape}" + ("|{}|{}".format(*columns) if any(columns) else "")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def open_entry(entry: Path, path: Path, signature: list | None = None) -> Pool:
    """Memory-map a finished cache entry as a Pool reading its records from `path` (whose
    `signature` export checks; default: the one it was parsed with)."""
    meta = json.loads((entry / META).read_text())
    source = pa.memory_map(str(entry / DATA), "r")
    data = pa.ipc.open_file(source).read_all()
    if data.schema != SCHEMA:
        raise PoolError(f"{entry}: pool cache of another layout; delete the folder to rebuild")
    rep = meta["report"]
    report = ValidationReport([Problem(*p) for p in rep["problems"]], int(rep["n_records"]),
                              int(rep["n_valid"]))
    return Pool(data=data, path=path, format=meta["format"], shape=meta["shape"], report=report,
                fingerprint=meta["fingerprint"], newline=meta["newline"],
                notes=list(meta["notes"]), signature=signature or meta["signature"],
                cache_entry=entry)


def _build(path: Path, root: Path, format: str, shape: str,
           columns: tuple[str, str] = ("", "")) -> tuple[Path, list]:
    """Parse the pool into a new entry (streamed to disk): (entry folder, file signature)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build.", dir=root))
    try:
        with pa.OSFile(str(tmp / DATA), "wb") as sink, \
                pa.ipc.new_file(sink, SCHEMA) as writer:
            parsed = parse_pool(path, format, shape, sink=writer.write_batch,
                                id_field=columns[0] or None, source_field=columns[1] or None)
        named = ("-" + hashlib.sha256("\0".join(columns).encode()).hexdigest()[:8]
                 if any(columns) else "")
        entry = root / f"{parsed.fingerprint[:32]}-{format}-{shape}{named}"
        if (entry / META).exists():  # same content under another signature: keep the entry
            return entry, parsed.signature
        rep = parsed.report
        meta = {"version": CACHE_VERSION, "format": parsed.format, "shape": parsed.shape,
                "fingerprint": parsed.fingerprint, "newline": parsed.newline,
                "notes": parsed.notes, "signature": parsed.signature,
                "report": {"n_records": rep.n_records, "n_valid": rep.n_valid,
                           "problems": [[p.line, p.reason, p.severity]
                                        for p in rep.problems]}}
        atomic.write_json(tmp / META, meta)
        os.chmod(tmp, atomic._DIR_MODE)  # mkdtemp made it private; entries are shared
        shutil.rmtree(entry, ignore_errors=True)
        tmp.rename(entry)
        return entry, parsed.signature
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_pool(path: str | Path, cache_dir: str | Path, format: str = "auto",
                shape: str = "auto", strict: bool = False, id_field: str | None = None,
                source_field: str | None = None) -> Pool:
    """The pool at `path`, parsed into `cache_dir` on first use and memory-mapped after."""
    path = Path(path).expanduser().resolve()
    root = Path(cache_dir)
    if not path.exists():
        raise FileNotFoundError(f"pool not found: {path}")
    columns = (id_field or "", source_field or "")
    key = _index_key(path, format, shape, columns)
    with _locked(root):
        index = _read_json(root / INDEX)
        known = index.get(key)
        signature = file_signature(path)
        entry = root / known["entry"] if known else None
        if entry is None or known.get("signature") != signature or not (entry / META).exists():
            entry, signature = _build(path, root, format, shape, columns)
            index[key] = {"signature": signature, "entry": entry.name}
            used = {v["entry"] for v in index.values()}
            for old in root.iterdir():  # entries no pool path points to any more
                if old.is_dir() and not old.name.startswith(".") and old.name not in used:
                    shutil.rmtree(old, ignore_errors=True)
            atomic.write_json(root / INDEX, index)
        pool = open_entry(entry, path, signature)
    check_pool(pool, strict)
    return pool


__all__ = ["cached_pool", "open_entry"]
