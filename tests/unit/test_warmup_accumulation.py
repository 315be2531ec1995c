"""The warm-up at 7B scale, checked on a tiny model: micro-batches accumulate the same step as
one batch, gradient checkpointing changes nothing but memory, clipping bounds the step, an
out-of-memory error halves the micro-batch, and only rank 0 trains under torchrun."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from clusterucb_core.config import LoraSpec, ModelSpec, WarmupSpec
from clusterucb_core.data.load import load_pool
from clusterucb_core.features import gradients as G
from clusterucb_core.features.warmup import warmup

LORA = LoraSpec(rank=4, alpha=16, dropout=0.0)  # no dropout: micro-batches draw other masks
SPEC = WarmupSpec(fraction=0.2, epochs=1, batch_size=4, learning_rate=5e-3, seed=3,
                  max_grad_norm=0.0)


@pytest.fixture(scope="module")
def pool(tiny_pool_file):
    return load_pool(tiny_pool_file)


@pytest.fixture(scope="module")
def mspec(tiny_model_dir):
    return ModelSpec(name_or_path=str(tiny_model_dir), max_length=64, device="cpu")


def _train(pool, mspec, spec, out):
    ckpt = warmup(pool, mspec, LORA, spec, out, progress=lambda *a, **k: None)[-1]
    return (load_file(str(ckpt / "adapter_model.safetensors")),
            load_file(str(ckpt / "adam_state.safetensors")))


def _close(a: dict, b: dict, **tol) -> bool:
    assert a.keys() == b.keys()
    return all(torch.allclose(a[k], b[k], **tol) for k in a)


@pytest.fixture(scope="module")
def whole(pool, mspec, tmp_path_factory):
    return _train(pool, mspec, replace(SPEC, micro_batch_size=4), tmp_path_factory.mktemp("w"))


def test_four_micro_batches_of_one_equal_one_batch_of_four(pool, mspec, tmp_path, whole):
    micro = _train(pool, mspec, replace(SPEC, micro_batch_size=1), tmp_path)
    assert _close(micro[0], whole[0], rtol=1e-4, atol=1e-6)  # adapters
    assert _close(micro[1], whole[1], rtol=1e-4, atol=1e-9)  # Adam m and v
    assert any(v.abs().max() > 0 for k, v in micro[1].items() if k.startswith("exp_avg_sq"))


def test_gradient_checkpointing_gives_the_same_step(monkeypatch, pool, mspec, tmp_path, whole):
    import torch.utils.checkpoint as tuc

    real, used = tuc.checkpoint, []

    def counted(*a, **k):
        used.append(1)
        return real(*a, **k)

    import transformers.modeling_utils as mu

    monkeypatch.setattr(tuc, "checkpoint", counted)
    monkeypatch.setattr(mu, "checkpoint", counted)  # transformers binds it at import
    ckpt = _train(pool, mspec, replace(SPEC, micro_batch_size=2, gradient_checkpointing=True),
                  tmp_path)
    assert used  # the layers were recomputed
    assert _close(ckpt[0], whole[0], rtol=1e-4, atol=1e-6)
    assert _close(ckpt[1], whole[1], rtol=1e-4, atol=1e-9)


def test_clipping_changes_the_step(pool, mspec, tmp_path, whole):
    clipped = _train(pool, mspec, replace(SPEC, micro_batch_size=4, max_grad_norm=1e-4),
                     tmp_path)
    assert not _close(clipped[1], whole[1], rtol=1e-3, atol=1e-9)  # m holds the clipped grads


def test_oom_halves_the_micro_batch_and_keeps_the_objective(monkeypatch, pool, mspec, tmp_path,
                                                            whole):
    real = G.row_losses
    raised: list[int] = []

    def limited(model, batch, *a, **k):
        if batch["input_ids"].shape[0] > 1:
            raised.append(batch["input_ids"].shape[0])
            raise torch.cuda.OutOfMemoryError("fake")
        return real(model, batch, *a, **k)

    monkeypatch.setattr(G, "row_losses", limited)
    got = _train(pool, mspec, replace(SPEC, micro_batch_size=4), tmp_path)
    assert raised[:2] == [4, 2] and len(raised) == 2  # learnt once, kept for later steps
    assert _close(got[0], whole[0], rtol=1e-4, atol=1e-6)


def test_only_rank_zero_trains(monkeypatch, pool, mspec, tmp_path):
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match="rank 0 only"):
        warmup(pool, mspec, LORA, SPEC, tmp_path / "x", progress=lambda *a, **k: None)
    from clusterucb_core.cli import main

    assert main(["warmup", "--workspace", str(tmp_path / "ws"), "--pool", "nowhere.jsonl"]) == 0
    assert not (tmp_path / "ws").exists()
