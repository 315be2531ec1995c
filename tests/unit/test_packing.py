"""Packed rows (one sequence, block-diagonal attention) give every row its batch-size-1
gradient and features; the engine packs a lazy round's scattered rows, not whole chunks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clusterucb_core.config import FeatureSpec
from clusterucb_core.data.formatting import IGNORE_INDEX, Encoded, collate, encode_chats
from clusterucb_core.features import gradients as G
from clusterucb_core.features import model as M
from clusterucb_core.features.engine import TokenBudget, featurize
from clusterucb_core.features.packing import collate_packed, unpack
from clusterucb_core.features.projection import make_projector


@pytest.fixture(scope="module")
def encs(lora_model, make_chats):
    _, tok = lora_model
    encs, _ = encode_chats(make_chats(10, seed=3), tok, max_length=64)
    assert len({len(e.input_ids) for e in encs}) > 3  # mixed lengths
    return encs


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_collate_packed_masks_each_row_to_itself(encs):
    batch = collate_packed(encs[:3])
    lens = [len(e.input_ids) for e in encs[:3]]
    assert batch["input_ids"].shape == (1, sum(lens))
    assert batch["position_ids"][0].tolist() == [p for n in lens for p in range(n)]
    mask = batch["attention_mask"][0, 0] == 0
    seg = batch["segment_ids"]
    # a token sees exactly the earlier tokens of its own row
    want = (seg[:, None] == seg[None, :]) & torch.ones_like(mask).tril().bool()
    assert torch.equal(mask, want)
    starts = np.cumsum([0] + lens[:-1])
    assert (batch["labels"][0, starts] == IGNORE_INDEX).all()
    x = torch.arange(sum(lens), dtype=torch.float32).reshape(1, -1, 1)
    out = unpack(x, seg, batch["lengths"])
    for i, (s, n) in enumerate(zip(starts, lens)):
        assert out[i, :n, 0].tolist() == list(range(s, s + n))
        assert (out[i, n:] == 0).all()


@pytest.mark.parametrize("mode", ["sgd", "adam"])
def test_packed_gradients_equal_batch_size_one(lora_model, encs, mode):
    model, tok = lora_model
    gen = torch.Generator().manual_seed(2)
    state = {n: (1e-3 * torch.randn(p.shape, generator=gen),
                 1e-6 * torch.rand(p.shape, generator=gen)) for n, p in M.lora_parameters(model)}
    kw = {"mode": mode, "adam_state": state if mode == "adam" else None}
    packed = G.per_sample_gradients(model, collate_packed(encs), **kw)
    assert packed.shape == (len(encs), G.n_params(model))
    for i, enc in enumerate(encs):
        alone = G.per_sample_gradients(model, collate([enc], tok.pad_token_id), **kw)[0]
        assert cosines(packed[i:i + 1].numpy(), alone[None].numpy())[0] >= 0.99999, i
        assert float((packed[i] - alone).norm() / alone.norm()) < 1e-4, i
    losses, _ = G.row_losses(model, collate_packed(encs))
    alone = torch.cat([G.row_losses(model, collate([e], tok.pad_token_id))[0] for e in encs])
    assert torch.allclose(losses, alone, rtol=1e-4, atol=1e-5)


def test_packed_row_without_labels_is_flagged(lora_model, encs):
    model, _ = lora_model
    empty = Encoded(encs[0].input_ids, [IGNORE_INDEX] * len(encs[0].input_ids), False)
    batch = collate_packed([encs[1], empty, encs[2]])
    assert G.valid_rows(batch).tolist() == [True, False, True]
    grads = G.per_sample_gradients(model, batch)
    assert torch.count_nonzero(grads[1]) == 0
    alone = G.per_sample_gradients(model, collate_packed([encs[1], encs[2]]))
    assert float((grads[[0, 2]] - alone).norm() / alone.norm()) < 1e-4


@pytest.mark.parametrize("batch_size", [3, 16])
def test_packed_features_equal_batch_size_one_features(lora_model, encs, batch_size):
    """What a lazy round stores: projected, normalised features, packed as featurize packs
    them (several packs when the rows exceed the batch), against one row at a time."""
    model, tok = lora_model
    spec = FeatureSpec(kind="gradient", mode="sgd", dim=64, batch_size=batch_size)
    proj = make_projector("countsketch", G.n_params(model), 64, seed=0, device="cpu")
    kw = {"projector": proj}
    packed, ok = featurize(model, tok.pad_token_id, encs, spec, 64, pack=True, **kw)
    ones, ok1 = featurize(model, tok.pad_token_id, encs, spec, 64,
                          budget=TokenBudget(1), **kw)
    assert ok.all() and np.array_equal(ok, ok1)
    assert cosines(packed, ones).min() >= 0.99999


def test_packs_respect_the_token_plan():
    budget = TokenBudget(16, limit_bytes=100, token_bytes=1, row_bytes=10)
    # 3 rows cost 30 + their 60 tokens = 90; a 4th (+10 + 20) would be 120 > 100
    assert budget.packed([20, 20, 20, 20, 20], 0) == 3
    assert budget.packed([500], 0) == 1  # one row always goes, even over the plan
    assert TokenBudget(4).packed([5] * 10, 8) == 2
