"""Pool -> feature store: flagged rows, resume after kill -9, lazy subsets, manifests, targets,
warm-up checkpoints feeding adam features, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from clusterucb_core.config import FeatureSpec, LoraSpec, ModelSpec, WarmupSpec
from clusterucb_core.data.formatting import collate, encode_chats
from clusterucb_core.data.load import load_pool
from clusterucb_core.features import engine as F
from clusterucb_core.features import gradients as G
from clusterucb_core.features import model as M
from clusterucb_core.features.projection import make_projector
from clusterucb_core.features.rowsource import normalize_rows
from clusterucb_core.features.store import FeatureStore, StoreMismatch

REPO = Path(__file__).resolve().parents[2]
LORA = LoraSpec(rank=4, alpha=16)
SPEC = FeatureSpec(kind="gradient", mode="sgd", dim=48, batch_size=2, store_dtype="float32")


@pytest.fixture(scope="module")
def pool(tiny_pool_file):
    return load_pool(tiny_pool_file)


@pytest.fixture(scope="module")
def mspec(tiny_model_dir):
    # LESS's right cut, so row 5 (a long question) loses its answer and must be flagged
    return ModelSpec(name_or_path=str(tiny_model_dir), max_length=64, device="cpu",
                     truncation="right")


@pytest.fixture(scope="module")
def full_store(pool, mspec, tmp_path_factory):
    path = tmp_path_factory.mktemp("full") / "store"
    store = F.compute_features(pool, mspec, LORA, None, SPEC, path)
    return store.read()


def test_all_rows_normalised_and_empty_rows_flagged(pool, full_store):
    feats = full_store
    assert feats.shape == (len(pool.table), 48)
    flagged = ~np.isfinite(feats).all(axis=1)
    assert np.flatnonzero(flagged).tolist() == [5]  # its answer lies beyond max_length=64
    np.testing.assert_allclose(np.linalg.norm(feats[~flagged], axis=1), 1.0, rtol=1e-5)


def test_keep_answer_gives_the_long_row_a_gradient(pool, mspec, tmp_path):
    """The default truncation drops row 5's oldest prompt tokens instead: it has a feature,
    and the store's identity says which cut made it."""
    keep = replace(mspec, truncation="keep_answer")
    store = F.compute_features(pool, keep, LORA, None, SPEC, tmp_path / "keep", rows=np.arange(8))
    assert np.isfinite(store.read(np.arange(8))).all()
    assert "truncation" not in store.identity
    right = F.FeatureEngine(pool, mspec, LORA, None, SPEC, tmp_path / "right")
    assert right.identity["truncation"] == "right"


def test_rows_equal_direct_projected_gradients(pool, mspec, full_store):
    """The pipeline (sorting, chunks, batches) gives each row its own gradient, projected."""
    model, tok, _, _ = M.prepare_model(mspec, LORA, None, seed=SPEC.seed)
    rows = [0, 3, 17]
    encs, _ = encode_chats([pool.table["messages"].iat[r] for r in rows], tok, 64,
                           truncation=mspec.truncation)
    grads = torch.stack([G.per_sample_gradients(model, collate([e], tok.pad_token_id))[0]
                         for e in encs])
    proj = make_projector(SPEC.projection, grads.shape[1], 48, seed=0)
    want = normalize_rows(proj.project(grads))[0].numpy()
    np.testing.assert_allclose(full_store[rows], want, rtol=1e-4, atol=1e-5)


def test_lazy_subset_then_rest_equals_all_at_once(pool, mspec, full_store, tmp_path):
    engine = F.FeatureEngine(pool, mspec, LORA, None, SPEC, tmp_path / "lazy")
    # full chunks of 8 batches x 2 rows; scattered rows are packed into one group
    assert [len(g) for g in engine.plan()] == [16, 16, 8]
    assert [g.tolist() for g in engine.plan(rank=1, world=2)] == [list(range(16, 32))]
    assert [g.tolist() for g in engine.plan(np.array([35, 1, 20]))] == [[1, 20, 35]]
    first = np.array([31, 2, 9, 5])
    store = engine.compute(first)
    assert store.done.sum() == 4 and store.done[first].all()
    assert len(engine.plan(first)) == 0  # nothing left to do for them
    calls = []
    engine.compute(progress=lambda done, total, msg, **kw: calls.append((done, total)))
    assert store.complete
    assert calls[-1] == (len(pool.table) - 4, len(pool.table) - 4)
    got = store.read()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(full_store))
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(full_store), atol=2e-6)


_RUN = """
import os, signal, sys
from clusterucb_core.features import engine as F
from clusterucb_core.config import FeatureSpec, LoraSpec, ModelSpec
from clusterucb_core.data.load import load_pool
spec = FeatureSpec(kind="gradient", mode="sgd", dim=48, batch_size=2, store_dtype="float32")
kill_after = int(sys.argv[4])
def progress(done, total, message, **kw):
    if kill_after and done >= kill_after:  # die without any cleanup
        os.kill(os.getpid(), signal.SIGKILL)
F.compute_features(load_pool(sys.argv[1]),
                   ModelSpec(name_or_path=sys.argv[2], max_length=64, device="cpu",
                             truncation="right"),
                   LoraSpec(rank=4, alpha=16), None, spec, sys.argv[3], progress=progress)
"""


def _run_features(pool_file: Path, model_dir: Path, path: Path, kill_after: int = 0) -> int:
    """compute_features in a fresh process (kill -9 itself after `kill_after` rows)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _RUN, str(pool_file), str(model_dir),
                           str(path), str(kill_after)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr[-2000:]
    return proc.returncode


def test_resume_after_sigkill_is_bit_identical(tmp_path, tiny_pool_file, tiny_model_dir):
    # Every run in its own process, as in real use: a process's threading state (another
    # library's OpenMP runtime, say) may change float summation order in its last bits.
    assert _run_features(tiny_pool_file, tiny_model_dir, tmp_path / "whole") == 0
    killed = tmp_path / "killed"
    assert _run_features(tiny_pool_file, tiny_model_dir, killed, kill_after=16) \
        == -signal.SIGKILL  # after the first chunk (16 rows) is written
    with FeatureStore.open(killed) as partial:
        assert 0 < partial.n_done < partial.n_rows
    assert _run_features(tiny_pool_file, tiny_model_dir, killed) == 0
    with FeatureStore.open(killed) as got, FeatureStore.open(tmp_path / "whole") as want:
        assert got.complete
        np.testing.assert_array_equal(got.read().view(np.uint32), want.read().view(np.uint32))


def test_manifest_mismatch_is_refused(pool, mspec, tmp_path):
    path = tmp_path / "s"
    F.compute_features(pool, mspec, LORA, None, SPEC, path, rows=np.array([0, 1]))
    from dataclasses import replace

    with pytest.raises(StoreMismatch, match="seed"):
        F.compute_features(pool, mspec, LORA, None, replace(SPEC, seed=1), path)
    with pytest.raises(StoreMismatch, match="rank"):
        F.compute_features(pool, mspec, LoraSpec(rank=2, alpha=8), None, SPEC, path)
    # the batch size is not part of the identity
    F.compute_features(pool, mspec, LORA, None, replace(SPEC, batch_size=3), path,
                       rows=np.array([2]))


def test_hidden_kind(pool, mspec, tmp_path):
    spec = FeatureSpec(kind="hidden", batch_size=8, store_dtype="float32")
    store = F.compute_features(pool, mspec, LORA, None, spec, tmp_path / "h")
    feats = store.read()
    assert feats.shape == (len(pool.table), 32)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
    assert "lora" not in store.identity and store.identity["feature"] == {"kind": "hidden"}


def test_adam_needs_checkpoint(pool, mspec, tmp_path):
    from dataclasses import replace

    with pytest.raises(ValueError, match="warm-up checkpoint"):
        F.FeatureEngine(pool, mspec, LORA, None, replace(SPEC, mode="adam"), tmp_path / "a")


@dataclass
class _Example:
    subtask: str
    prompt: str
    completion: str


@dataclass
class _Target:
    name: str
    examples: list
    fingerprint: str = "t1"
    subtasks: list = field(default_factory=list)


def test_warmup_checkpoints_then_adam_and_target_features(pool, mspec, tmp_path):
    from clusterucb_core.features.warmup import select_rows, warmup

    wspec = WarmupSpec(fraction=0.3, epochs=2, batch_size=4, learning_rate=1e-3, seed=0)
    saved = warmup(pool, mspec, LORA, wspec, tmp_path / "ck")
    assert [p.name for p in saved] == ["ckpt-1", "ckpt-2"]
    info = json.loads((tmp_path / "ck" / "warmup.json").read_text())
    rows = select_rows(len(pool.table), 0.3, 0)
    assert len(rows) == 12 and info["rows"] == [r for r in rows.tolist() if r != 5]
    steps = -(-len(info["rows"]) // 4)
    metas = [M.checkpoint_meta(p) for p in saved]
    assert [m["step"] for m in metas] == [steps, 2 * steps]
    assert all(0 < m["avg_lr"] <= 1e-3 for m in metas)
    # the Adam state reloads and is the optimiser's (non-zero, v >= 0)
    model, *_ = M.prepare_model(mspec, LORA, saved[-1])
    state = M.load_adam_state(model, saved[-1])
    assert all(v.min() >= 0 and m.abs().max() > 0 for m, v in state.values())

    from dataclasses import replace

    spec = replace(SPEC, mode="adam")
    engine = F.FeatureEngine(pool, mspec, LORA, saved[-1], spec, tmp_path / "adam")
    adam = engine.compute().read()
    assert engine.identity["checkpoint"] == metas[-1]["fingerprint"]
    sgd = F.compute_features(pool, mspec, LORA, saved[-1], SPEC, tmp_path / "sgd").read()
    ok = np.isfinite(adam).all(axis=1)
    assert not np.allclose(adam[ok], sgd[ok], atol=1e-3)  # the preconditioner matters

    target = _Target("tgt", [_Example("b", "<|user|>\nthe cat?\n<|assistant|>\n", " sat"),
                             _Example("a", "<|user|>\nwhy red?\n<|assistant|>\n", " because"),
                             _Example("a", "<|user|>\nsum?\n<|assistant|>\n", " add one"),
                             _Example("b", "<|user|>\nempty\n<|assistant|>\n", "")],
                     subtasks=["a", "b"])
    out = tmp_path / "targets" / F.target_name(target, saved[-1])
    feats, ids = F.target_features(target, mspec, LORA, saved[-1], spec, out_dir=out,
                                   engine=engine)
    assert feats.shape == (3, 48) and ids.tolist() == [1, 0, 0]  # the empty one is left out
    # targets are SGD features: the same as a pool row's SGD feature of the same text
    sgd_engine = engine.as_sgd()
    from clusterucb_core.data.formatting import encode_prompt_completion

    enc = encode_prompt_completion(target.examples[0].prompt, " sat", engine.tok, 64)
    direct, _ = sgd_engine.featurize([enc])
    np.testing.assert_allclose(feats[0], direct[0], rtol=1e-5, atol=1e-6)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_without_labels"] == 1 and manifest["counts"] == {"a": 2, "b": 1}
    again, ids2 = F.target_features(target, mspec, LORA, saved[-1], spec, out_dir=out)
    np.testing.assert_array_equal(again, feats)


def test_cli_warmup_then_features(tiny_pool_file, tiny_model_dir, tmp_path, capsys):
    from clusterucb_core.cli import main

    ws = tmp_path / "ws"
    common = ["--workspace", str(ws), "--pool", str(tiny_pool_file), "--model",
              str(tiny_model_dir), "--max-length", "64", "--lora-rank", "4", "--lora-alpha", "16",
              "--device", "cpu"]
    assert main(["warmup", *common, "--fraction", "0.2", "--epochs", "1",
                 "--batch-size", "4"]) == 0
    assert (ws / "checkpoints" / "warmup" / "ckpt-1" / "adam_state.safetensors").exists()
    assert main(["features", *common, "--dim", "32", "--batch-size", "4",
                 "--rows", "0:10"]) == 0
    err = capsys.readouterr().err
    assert "rows 10/10" in err and "rows/s" in err and "ETA" in err
    name = f"gradient-adam-ckpt-1-{FeatureSpec().projection}-d32"
    with FeatureStore.open(ws / "features" / name) as store:
        assert store.done.tolist() == [True] * 10 + [False] * 30
        assert store.identity["feature"]["mode"] == "adam"
    assert main(["features", *common, "--kind", "hidden"]) == 0  # base model by default
    assert (ws / "features" / "hidden-base" / "manifest.json").exists()
    assert main(["features", *common, "--checkpoint", "nope"]) == 2
    assert "no checkpoint 'nope'" in capsys.readouterr().err


def test_target_gradients_resume_after_a_cancel(pool, mspec, tmp_path, monkeypatch):
    """Issue 13, item 8: Cancel then Resume redid the target gradients from 0."""
    from dataclasses import replace

    spec = replace(SPEC, batch_size=1)
    monkeypatch.setattr(F, "CHUNK_BATCHES", 1)  # one example per chunk: four chunks
    target = _Target("tgt", [_Example(s, f"<|user|>\nq{i}?\n<|assistant|>\n", f" a{i}")
                             for i, s in enumerate("abab")], subtasks=["a", "b"])
    out = tmp_path / "targets" / "t"

    class Stop(Exception):
        pass

    def stop_after_two(done, total, message=""):
        if done >= 2:
            raise Stop

    with pytest.raises(Stop):
        F.target_features(target, mspec, LORA, None, spec, out_dir=out, progress=stop_after_two)
    calls = []
    real = F.FeatureEngine.featurize
    monkeypatch.setattr(F.FeatureEngine, "featurize",
                        lambda self, encs: calls.append(len(encs)) or real(self, encs))
    feats, ids = F.target_features(target, mspec, LORA, None, spec, out_dir=out)
    assert calls == [1, 1]  # only the two chunks not done before the cancel
    assert not out.with_name("t.partial").exists()
    fresh, _ = F.target_features(target, mspec, LORA, None, spec, out_dir=tmp_path / "fresh")
    np.testing.assert_allclose(feats, fresh, rtol=1e-5, atol=1e-6)
    assert ids.tolist() == [0, 1, 0, 1]
