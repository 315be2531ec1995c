"""`torchrun --nproc_per_node 2 -m clusterucb_core.cli features` (gloo, CPU) fills the same store
as one process, bit for bit: each rank computes whole chunks, batched exactly as one process
batches them, into its own shard store, merged at the end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from clusterucb_core.config import FeatureSpec, LoraSpec, ModelSpec
from clusterucb_core.data.load import load_pool
from clusterucb_core.features import engine as F
from clusterucb_core.features.store import FeatureStore

REPO = Path(__file__).resolve().parents[2]


def _features(tmp_path: Path, args: list[str], name: str, nproc: int) -> str:
    """`clusterucb features` under torch.distributed.run with `nproc` processes."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(nproc), "-m", "clusterucb_core.cli", "features", *args, "--name", name]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_two_process_torchrun_equals_one_process(tiny_pool_file, tiny_model_dir, tmp_path):
    ws = tmp_path / "ws"
    args = ["--workspace", str(ws), "--pool", str(tiny_pool_file), "--model",
            str(tiny_model_dir), "--max-length", "64", "--lora-rank", "4", "--lora-alpha", "16",
            "--dim", "40", "--batch-size", "2", "--store-dtype", "float32",
            "--checkpoint", "none", "--device", "cpu"]
    out = _features(tmp_path, args, "dist", nproc=2)
    assert "[rank 0/2]" in out and "[rank 1/2]" in out  # both ranks did work
    assert "40/40 rows done" in out
    # each rank wrote its own shard; rank 0 merged them, every row exactly once
    assert "merged 40 rows from 2 shards" in out
    assert not (ws / "features" / "dist" / "shards").exists()
    # The reference also runs in a fresh process: this test process's threading state
    # (another test's OpenMP runtime, say) may change float summation in the last bits.
    _features(tmp_path, args, "one", nproc=1)

    with FeatureStore.open(ws / "features" / "dist") as dist, \
            FeatureStore.open(ws / "features" / "one") as one:
        assert dist.complete and one.complete and dist.identity == one.identity
        a, b = dist.read(), one.read()
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    # ... and the stores agree with an in-process computation to rounding.
    spec = FeatureSpec(kind="gradient", mode="sgd", dim=40, batch_size=2, store_dtype="float32")
    here = F.compute_features(load_pool(tiny_pool_file),
                              ModelSpec(name_or_path=str(tiny_model_dir), max_length=64,
                                        device="cpu"),
                              LoraSpec(rank=4, alpha=16), None, spec, tmp_path / "here")
    np.testing.assert_allclose(np.nan_to_num(a), np.nan_to_num(here.read()), atol=1e-6)
