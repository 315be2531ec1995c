"""`--engine ray` on a local Ray instance (2 CPUs): actors holding a FeatureEngine fill the
store bit for bit like one process, and a worker killed mid-run is retried without losing or
duplicating a row."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from clusterucb_core.config import FeatureSpec, LoraSpec, ModelSpec  # noqa: E402
from clusterucb_core.data.load import load_pool  # noqa: E402
from clusterucb_core.features.engine import FeatureEngine  # noqa: E402
from clusterucb_core.features.ray_engine import compute_with_ray  # noqa: E402
from clusterucb_core.features.shards import shard_names  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def _engine(pool, model_dir, path):
    spec = FeatureSpec(kind="gradient", mode="sgd", dim=40, batch_size=2, store_dtype="float32")
    return FeatureEngine(pool, ModelSpec(name_or_path=str(model_dir), max_length=64, device="cpu"),
                         LoraSpec(rank=4, alpha=16), None, spec, path)


def test_ray_actors_equal_one_process_and_survive_a_killed_worker(
        local_ray, tiny_pool_file, tiny_model_dir, tmp_path):
    import torch

    pool = load_pool(tiny_pool_file, cache_dir=tmp_path / "ws" / "pool_cache")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the actors run one thread each: the same float summation order
    try:
        one = _engine(pool, tiny_model_dir, tmp_path / "one").compute()
    finally:
        torch.set_num_threads(threads)
    eng = _engine(pool, tiny_model_dir, tmp_path / "ray")
    marker = tmp_path / "crashed"
    seen = []
    n = compute_with_ray(eng, workers=2, crash_marker=str(marker),
                         progress=lambda done, total, msg="", **k: seen.append(done))
    assert marker.exists()  # one worker died after writing its first group, before reporting
    assert n == 40 and seen[-1] == 40
    store = eng.store()
    assert store.complete and shard_names(store.path) == []  # merged: every row exactly once
    a, b = store.read(), one.read()
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    assert (store.path / "done.npy").read_bytes() == (one.path / "done.npy").read_bytes()
