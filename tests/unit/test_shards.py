"""Shard stores and their merge: the same bytes as one process, resume skips finished rows, and
a merge refuses a missing or duplicated row, naming it."""

from __future__ import annotations

import numpy as np
import pytest

from clusterucb_core.config import FeatureSpec, LoraSpec, ModelSpec
from clusterucb_core.data.load import load_pool
from clusterucb_core.features.engine import FeatureEngine
from clusterucb_core.features.shards import MergeError, merge_shards, open_shard, shard_names
from clusterucb_core.features.store import FeatureStore


def _engine(pool_file, model_dir, path):
    spec = FeatureSpec(kind="gradient", mode="sgd", dim=40, batch_size=2, store_dtype="float32")
    return FeatureEngine(load_pool(pool_file), ModelSpec(name_or_path=str(model_dir),
                                                         max_length=64, device="cpu"),
                         LoraSpec(rank=4, alpha=16), None, spec, path)


def test_shards_then_merge_equal_one_process_and_resume_skips(tiny_pool_file, tiny_model_dir,
                                                              tmp_path):
    one = _engine(tiny_pool_file, tiny_model_dir, tmp_path / "one").compute()
    eng = _engine(tiny_pool_file, tiny_model_dir, tmp_path / "sharded")
    eng.compute(rank=0, world=2, shard="rank-0")
    assert eng.store().n_done == 0 and shard_names(eng.store_path) == ["rank-0"]
    mine = np.concatenate(eng.plan(rank=1, world=2))
    # a restart with another world size skips the rows rank 0 finished in its shard
    assert np.array_equal(np.concatenate(eng.plan()), mine)
    eng.compute(rank=0, world=1, shard="rank-1")
    assert eng.plan() == []
    assert merge_shards(eng.store()) == 40 and shard_names(eng.store_path) == []
    a, b = eng.store().read(), one.read()
    assert eng.store().complete
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    assert (eng.store_path / "features.npy").read_bytes() == \
        (one.path / "features.npy").read_bytes()
    assert (eng.store_path / "done.npy").read_bytes() == (one.path / "done.npy").read_bytes()


def _stores(tmp_path, spans):
    main = FeatureStore.create_or_open(tmp_path / "s", 10, 4, {"pool": "p"}, dtype="float32")
    for name, (lo, hi) in spans.items():
        with open_shard(main, name) as sh:
            rows = np.arange(lo, hi)
            sh.write(rows, np.tile(rows[:, None], (1, 4)).astype(np.float32) + 1)
    return main


def test_merge_refuses_a_duplicated_row_naming_it(tmp_path):
    main = _stores(tmp_path, {"a": (0, 6), "b": (5, 10)})
    with pytest.raises(MergeError, match="row 5 is in shard 'a' and in shard 'b'"):
        merge_shards(main)
    assert main.n_done == 0  # nothing copied


def test_merge_refuses_a_missing_row_naming_it(tmp_path):
    main = _stores(tmp_path, {"a": (0, 5), "b": (6, 10)})
    with pytest.raises(MergeError, match="row 5 is in no shard"):
        merge_shards(main)


def test_an_interrupted_merge_is_finished_by_merging_again(tmp_path):
    main = _stores(tmp_path, {"a": (0, 5), "b": (5, 10)})
    with FeatureStore.open(tmp_path / "s" / "shards" / "a") as a:
        main.copy_rows(a, np.arange(0, 5))  # killed after copying shard a, before removing it
    assert merge_shards(main) == 5 and main.complete
    np.testing.assert_array_equal(main.read()[:, 0], np.arange(10) + 1)
    main._data.array[2] = 99  # a row held with other values in the store and a shard
    with open_shard(main, "c") as c:
        c.write(np.array([2]), np.full((1, 4), 3, np.float32))
    with pytest.raises(MergeError, match="row 2 is in the store .* with other values"):
        merge_shards(main)
