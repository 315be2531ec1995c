"""FeatureStore: resume after kill -9 is bit-identical, mismatches are refused, ranks share."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from clusterucb_core.features.store import (
    FeatureStore,
    StoreIncomplete,
    StoreMismatch,
    StoreVersionWarning,
)

ROOT = Path(__file__).resolve().parents[2]
N, D = 300, 48
IDENT = {"pool": "pool-fp", "model": "model-fp", "checkpoint": "ckpt-1", "spec": {"dim": D}}


def row_values(rows: np.ndarray) -> np.ndarray:
    """Deterministic features for a row (what a real feature run would recompute)."""
    return np.stack([np.random.default_rng(int(r)).standard_normal(D) for r in rows])


# A writer in its own process: rows in chunks, in the given order, optionally slowly.
WRITER = textwrap.dedent("""
    import sys, time, json
    import numpy as np
    sys.path.insert(0, {root!r})
    from clusterucb_core.features.store import FeatureStore
    path, rows, delay, dtype = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    hang_at = int(sys.argv[5])
    D = {D}
    ident = json.loads({ident!r})
    store = FeatureStore.create_or_open(path, {N}, D, ident, dtype=dtype)
    todo = store.missing(np.array(rows, dtype=np.int64))
    for k, lo in enumerate(range(0, len(todo), 7)):
        part = todo[lo:lo + 7]
        feats = np.stack([np.random.default_rng(int(r)).standard_normal(D) for r in part])
        if k == hang_at:  # the rows' data is in the file but they are not marked done yet
            store._data.array[part] = (feats * 0.5).astype(dtype)
            print("hanging", flush=True)
            time.sleep(600)
        store.write(part, feats, flagged=(part % 50 == 13))
        time.sleep(delay)
    print("finished", flush=True)
""").format(root=str(ROOT), D=D, N=N, ident=json.dumps(IDENT))


def run_writer(path: Path, rows, delay: float = 0.0, dtype: str = "float16",
               hang_at: int = -1) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), json.dumps(list(rows)),
                             str(delay), dtype, str(hang_at)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def fill(path: Path, dtype: str = "float16", rows=None) -> FeatureStore:
    store = FeatureStore.create_or_open(path, N, D, IDENT, dtype=dtype)
    rows = np.arange(N) if rows is None else np.asarray(rows)
    for lo in range(0, len(rows), 7):
        part = rows[lo:lo + 7]
        store.write(part, row_values(part), flagged=(part % 50 == 13))
    return store


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_write_read_roundtrip(tmp_path, dtype):
    store = fill(tmp_path / "s", dtype)
    assert store.complete and store.missing().size == 0
    got = store.read()
    want = row_values(np.arange(N)).astype(dtype).astype(np.float32)
    flagged = np.arange(N) % 50 == 13
    np.testing.assert_array_equal(got[~flagged], want[~flagged])
    assert np.isnan(got[flagged]).all()
    np.testing.assert_array_equal(store.flagged, flagged)
    # the data file is a plain .npy others can read
    raw = np.load(tmp_path / "s" / "features.npy", mmap_mode="r")
    assert raw.dtype == np.dtype(dtype) and raw.shape == (N, D)
    # streaming in chunks gives the same rows
    parts = list(store.iter_chunks(chunk_rows=64))
    assert [len(r) for r, _ in parts] == [64, 64, 64, 64, 44]
    np.testing.assert_array_equal(np.concatenate([f for _, f in parts]), got)
    kept = list(store.iter_chunks(chunk_rows=64, skip_flagged=True))
    np.testing.assert_array_equal(np.concatenate([r for r, _ in kept]), np.flatnonzero(~flagged))
    np.testing.assert_array_equal(np.concatenate([f for _, f in kept]), got[~flagged])
    store.close()


def test_lazy_subset_and_incomplete_read(tmp_path):
    store = FeatureStore.create_or_open(tmp_path / "s", N, D, IDENT)
    rows = np.array([250, 3, 77])
    assert list(store.missing(rows)) == [250, 3, 77]
    store.write(rows[:2], row_values(rows[:2]))
    assert list(store.missing(rows)) == [77]
    assert store.done.sum() == 2 and not store.complete
    np.testing.assert_allclose(store.read([3, 250]), row_values(np.array([3, 250])), atol=2e-3)
    with pytest.raises(StoreIncomplete, match="77"):
        store.read(rows)
    with pytest.raises(StoreIncomplete):
        next(store.iter_chunks())
    # a non-finite row is stored as flagged, not as garbage
    bad = row_values(np.array([5]))
    bad[0, 3] = np.inf
    store.write([5], bad)
    assert store.flagged[5] and np.isnan(store.read([5])).all()
    with pytest.raises(ValueError):
        store.write([1, 1], row_values(np.array([1, 1])))
    store.close()
    ro = FeatureStore.open(tmp_path / "s")
    with pytest.raises(PermissionError):
        ro.write([0], row_values(np.array([0])))
    assert ro.n_done == 3
    ro.close()


def test_mismatch_refused_naming_every_key(tmp_path):
    fill(tmp_path / "s", rows=np.arange(10)).close()
    other = dict(IDENT, checkpoint="ckpt-2", spec={"dim": D, "mode": "sgd"})
    with pytest.raises(StoreMismatch) as err:
        FeatureStore.create_or_open(tmp_path / "s", N, D, other)
    msg = str(err.value)
    assert "checkpoint: stored='ckpt-1', requested='ckpt-2'" in msg
    assert "spec.mode: stored='<absent>', requested='sgd'" in msg
    assert "pool" not in msg.split("(", 1)[1]  # unchanged keys are not listed
    with pytest.raises(StoreMismatch, match="n_rows: stored=300, requested=301"):
        FeatureStore.create_or_open(tmp_path / "s", N + 1, D, IDENT)
    with pytest.raises(StoreMismatch, match="dtype: stored='float16', requested='float32'"):
        FeatureStore.create_or_open(tmp_path / "s", N, D, IDENT, dtype="float32")
    # same inputs: reopened, rows kept
    again = FeatureStore.create_or_open(tmp_path / "s", N, D, IDENT)
    assert again.n_done == 10
    again.close()


def test_version_difference_only_warns(tmp_path):
    fill(tmp_path / "s", rows=np.arange(5)).close()
    path = tmp_path / "s" / "manifest.json"
    man = json.loads(path.read_text())
    man["versions"]["torch"] = "1.0.0"
    path.write_text(json.dumps(man))
    with pytest.warns(StoreVersionWarning, match="torch: stored=1.0.0"):
        store = FeatureStore.create_or_open(tmp_path / "s", N, D, IDENT)
    assert store.n_done == 5
    store.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FeatureStore.open(tmp_path / "s").close()  # read-only open does not compare


def test_kill9_resume_is_bit_identical(tmp_path):
    ref = fill(tmp_path / "ref")
    ref.close()
    path = tmp_path / "killed"
    # 1) killed between writing a chunk's data and marking it done (the critical window)
    proc = run_writer(path, range(N), hang_at=5)
    assert proc.stdout.readline().strip() == b"hanging"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with FeatureStore.open(path) as peek:
        assert peek.n_done == 35 and not peek.done[35:42].any()
    # 2) killed at whatever point the writer has reached, twice
    for attempt in range(2):
        proc = run_writer(path, range(N), delay=0.02)
        target = (attempt + 2) * N // 4
        deadline = time.time() + 60
        while time.time() < deadline:
            if (path / "manifest.json").exists():
                with FeatureStore.open(path) as peek:
                    if peek.n_done >= target:
                        break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        with FeatureStore.open(path) as peek:
            assert 0 < peek.n_done < N, "the writer must be killed mid-run"
    proc = run_writer(path, range(N))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    for name in ("features.npy", "done.npy", "manifest.json"):
        assert (path / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_two_processes_write_disjoint_rows(tmp_path, dtype):
    path = tmp_path / "shared"
    # interleaved rows so both processes write into the same pages at once
    procs = [run_writer(path, range(k, N, 2), delay=0.001, dtype=dtype) for k in (0, 1)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    ref = fill(tmp_path / "ref", dtype=dtype)
    ref.close()
    for name in ("features.npy", "done.npy"):
        assert (path / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


def test_interrupted_creation_restarts_clean(tmp_path):
    path = tmp_path / "s"
    path.mkdir()
    (path / "features.npy").write_bytes(b"half a file")
    store = FeatureStore.create_or_open(path, N, D, IDENT)
    assert store.n_done == 0 and store.read([]).shape == (0, D)
    store.close()
    with pytest.raises(FileNotFoundError):
        FeatureStore.open(tmp_path / "nothing")
    assert os.path.exists(path / "manifest.json")
