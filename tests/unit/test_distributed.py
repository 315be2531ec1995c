"""torchrun at scale, checked on CPUs: the process group gets a long timeout and the right GPU,
and ranks that finish far apart do not abort the job at the end."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from clusterucb_core.cli import features as cli_features
from clusterucb_core.features.store import FeatureStore

REPO = Path(__file__).resolve().parents[2]


def _capture_init(monkeypatch) -> list[dict]:
    seen: list[dict] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: seen.append(kw))
    monkeypatch.setattr(dist, "get_rank", lambda: 0)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return seen


def test_process_group_gets_a_long_timeout_on_cpu(monkeypatch):
    seen = _capture_init(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli_features._init_distributed() == (0, 2, True)
    assert seen[0]["backend"] == "gloo" and seen[0]["timeout"] >= timedelta(hours=1)


def test_nccl_group_uses_local_rank_modulo_gpus_and_refuses_too_many(monkeypatch):
    seen = _capture_init(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: None)
    cli_features._init_distributed()
    assert seen[0]["backend"] == "nccl" and seen[0]["timeout"] >= timedelta(hours=1)
    assert seen[0]["device_id"] == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="2 processes on this machine but 1 GPU"):
        cli_features._init_distributed()


# Runs `clusterucb features` with every collective timeout cut to 3 s and rank 1 finishing its
# share long after that: the job must still end with a complete store.
DELAYED = """
import datetime, sys, time
import torch.distributed as dist
real_init = dist.init_process_group
def short(*a, **k):
    k["timeout"] = datetime.timedelta(seconds=3)
    return real_init(*a, **k)
dist.init_process_group = short
from clusterucb_core.features import engine as F
real_compute = F.FeatureEngine.compute
def late(self, *a, **k):
    out = real_compute(self, *a, **k)
    if dist.get_rank() == 1:
        print("rank 1 finished late", flush=True)
        time.sleep(10)
    return out
F.FeatureEngine.compute = late
from clusterucb_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_torchrun_rank_finishing_late_does_not_abort(tiny_pool_file, tiny_model_dir, tmp_path):
    script = tmp_path / "delayed_features.py"
    script.write_text(DELAYED)
    ws = tmp_path / "ws"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(script), "features", "--workspace", str(ws), "--pool", str(tiny_pool_file),
           "--model", str(tiny_model_dir), "--device", "cpu", "--max-length", "64",
           "--lora-rank", "4", "--lora-alpha", "16", "--dim", "40", "--batch-size", "2",
           "--store-dtype", "float32", "--checkpoint", "none", "--name", "late"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "rank 1 finished late" in out and "40/40 rows done" in out
    with FeatureStore.open(ws / "features" / "late") as store:
        assert store.complete
        # every row is scored: the long row keeps its answer (truncation = "keep_answer")
        assert np.isfinite(store.read()).all(axis=1).sum() == 40
