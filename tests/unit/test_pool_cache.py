"""The columnar pool cache: every format round-trips, exports are byte-exact, the cache is
memory-mapped, reused while the file is unchanged and rebuilt when it changes."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from clusterucb_core.data import pool_cache
from clusterucb_core.data.load import load_pool
from clusterucb_core.data.pool import FORMATS, PoolError

from .test_pool import _EXT, _record, _write

CHATS = [
    [{"role": "user", "content": "naïve ✓ question"}, {"role": "assistant", "content": "yes"}],
    [{"role": "user", "content": "two\nlines, comma"}, {"role": "assistant", "content": "ok"}],
    [{"role": "user", "content": "third"}, {"role": "assistant", "content": "3"}],
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_cache_round_trips_every_format(tmp_path, fmt):
    recs = [_record("messages", i, c) for i, c in enumerate(CHATS)]
    path = _write(tmp_path / f"pool{_EXT[fmt]}", fmt, recs)
    plain = load_pool(path)
    cache = tmp_path / "ws" / "pool_cache"
    first = load_pool(path, cache_dir=cache)
    second = load_pool(path, cache_dir=cache)
    for pool in (first, second):
        assert (pool.format, pool.shape, pool.fingerprint) == \
            (plain.format, plain.shape, plain.fingerprint)
        pd.testing.assert_frame_equal(pool.table, plain.table)
        assert pool.records(np.array([2, 0])) == plain.records(np.array([2, 0]))
    if fmt in ("jsonl", "csv", "tsv", "json"):
        data = path.read_bytes()
        for r, raw in enumerate(second.records(np.arange(3))):
            off, n = int(second.column("offset")[r]), int(second.column("length")[r])
            assert data[off:off + n] == raw
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1


def test_export_bytes_exact_with_bom_crlf_and_problems(tmp_path):
    lines = [json.dumps({"messages": c}, ensure_ascii=False).encode() for c in CHATS]
    body = b"\xef\xbb\xbf" + lines[0] + b"\r\n{bad\r\n\r\n" + lines[1] + b"\r\n" + lines[2]
    path = tmp_path / "p.jsonl"
    path.write_bytes(body)
    pool = load_pool(path, cache_dir=tmp_path / "c")
    assert pool.newline == "\r\n" and [p.line for p in pool.report.problems] == [2]
    assert pool.records(np.arange(3)) == lines
    assert pool.column("line_no").tolist() == [1, 4, 5]
    assert pool.messages([1]) == [CHATS[1]]


def test_cache_is_memory_mapped_and_reused_without_parsing(tmp_path, monkeypatch):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"messages": CHATS[i % 3], "id": f"r{i}"}) + "\n"
                            for i in range(5000)))
    load_pool(path, cache_dir=tmp_path / "c")

    def no_parse(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(pool_cache, "parse_pool", no_parse)
    before = pa.total_allocated_bytes()
    pool = load_pool(path, cache_dir=tmp_path / "c")
    assert pa.total_allocated_bytes() - before < 64 * 1024  # mapped, not copied
    assert pool.data.nbytes > 500_000 and len(pool) == 5000
    assert pool.column("id", [4999]).tolist() == ["r4999"]


def test_cache_rebuilt_when_the_file_changes_and_kept_when_only_touched(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CHATS))
    cache = tmp_path / "c"
    a = load_pool(path, cache_dir=cache)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same bytes
    b = load_pool(path, cache_dir=cache)
    assert b.fingerprint == a.fingerprint
    assert b.records([0]) == [json.dumps({"messages": CHATS[0]}).encode()]
    path.write_text(json.dumps({"messages": CHATS[2]}) + "\n")
    c = load_pool(path, cache_dir=cache)
    assert c.fingerprint != a.fingerprint and len(c) == 1 and c.messages() == [CHATS[2]]
    assert [p.name for p in cache.iterdir() if p.is_dir()] == \
        [json.loads((cache / "index.json").read_text())[f"{path}|auto|auto"]["entry"]]
    with pytest.raises(PoolError, match="changed since it was read"):
        a.records([0])  # the old pool never exports bytes of the new file


def test_frame_reads_only_the_rows_asked_and_matches_the_table(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"messages": CHATS[i % 3], "id": f"r{i}",
                                        "subtask": f"s{i % 2}"}) + "\n" for i in range(10)))
    pool = load_pool(path, cache_dir=tmp_path / "c")
    part = pool.frame([7, 2])
    assert pool._table is None  # no whole-pool DataFrame was built for it
    expect = pool.table.iloc[[7, 2]].drop(columns="raw").reset_index(drop=True)
    pd.testing.assert_frame_equal(part, expect)
    assert part["subtask"].tolist() == ["s1", "s0"]


def test_row_reads_one_row(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"messages": c, "id": f"r{i}"}) + "\n"
                            for i, c in enumerate(CHATS)))
    pool = load_pool(path, cache_dir=tmp_path / "c")
    assert pool.row(1) == {"row": 1, "id": "r1", "source": "p", "line_no": 2,
                           "messages": CHATS[1]}
    assert pool._table is None


def test_the_app_keeps_one_mapped_pool_across_reruns(tmp_path):
    from clusterucb_app import state
    from clusterucb_core.workspace import Workspace

    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CHATS))
    ws = Workspace.open(tmp_path / "ws")
    ws.update_meta(pool={"path": str(path), "format": "auto", "shape": "auto"})
    a, b = state.load_pool(ws), state.load_pool(ws)
    assert a is b  # a rerun reuses the pool, no copy
    assert a.cache_entry.parent == ws.pool_cache() and a._table is None
