"""Per-sample LoRA gradients: batched rows equal their batch-size-1 gradients (sgd and adam),
the Adam transform, flagged rows, hidden-state features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clusterucb_core.data.formatting import IGNORE_INDEX, Encoded, collate, encode_chats
from clusterucb_core.features import gradients as G
from clusterucb_core.features import model as M


@pytest.fixture(scope="module")
def encs(lora_model, make_chats):
    _, tok = lora_model
    encs, _ = encode_chats(make_chats(10, seed=3), tok, max_length=64)
    lengths = {len(e.input_ids) for e in encs}
    assert len(lengths) > 3  # mixed lengths, so the batch is padded
    return encs


def reference_grad(model, tok, enc: Encoded) -> torch.Tensor:
    """LESS's way: batch size 1, the model's own mean loss, loss.backward(), flatten .grad."""
    params = [p for _, p in M.lora_parameters(model)]
    model.zero_grad(set_to_none=True)
    out = model(**collate([enc], tok.pad_token_id))
    out.loss.backward()
    g = torch.cat([p.grad.reshape(-1) for p in params]).detach().clone()
    model.zero_grad(set_to_none=True)
    return g


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_batched_sgd_equals_batch_size_one(lora_model, encs):
    model, tok = lora_model
    batch = collate(encs, tok.pad_token_id)
    assert (batch["attention_mask"] == 0).any()
    grads = G.per_sample_gradients(model, batch, mode="sgd")
    assert grads.shape == (len(encs), G.n_params(model))
    blocks = G.lora_blocks(model)
    a_cols = np.concatenate([np.arange(b.offset, b.offset + b.numel) for b in blocks
                             if ".lora_A." in b.name])
    for i, enc in enumerate(encs):
        ref = reference_grad(model, tok, enc)
        assert ref[a_cols].abs().max() > 0  # A gradients are exercised too
        assert rel_err(grads[i], ref) < 1e-5, i
    # no parameter .grad was accumulated by the per-sample path
    assert all(p.grad is None for _, p in M.lora_parameters(model))


def test_batched_adam_equals_batch_size_one(lora_model, encs):
    model, tok = lora_model
    gen = torch.Generator().manual_seed(2)
    state = {}
    for name, p in M.lora_parameters(model):
        m = 1e-3 * torch.randn(p.shape, generator=gen)
        v = 1e-6 * torch.rand(p.shape, generator=gen)
        state[name] = (m, v)
    flat_m = torch.cat([state[n][0].reshape(-1) for n, _ in M.lora_parameters(model)])
    flat_v = torch.cat([state[n][1].reshape(-1) for n, _ in M.lora_parameters(model)])
    batch = collate(encs, tok.pad_token_id)
    feats = G.per_sample_gradients(model, batch, mode="adam", adam_state=state)
    for i, enc in enumerate(encs):
        g = reference_grad(model, tok, enc)
        ref = (0.9 * flat_m + 0.1 * g) / torch.sqrt(0.999 * flat_v + 0.001 * g * g + 1e-8)
        assert rel_err(feats[i], ref) < 1e-5, i


def test_adam_transform_matches_formula_by_hand():
    g = torch.tensor([[1.0, -2.0, 0.0, 3e-4]])
    m = torch.tensor([0.5, 0.0, -1.0, 1e-4])
    v = torch.tensor([0.25, 4.0, 1.0, 0.0])
    got = G.adam_transform(g, m, v).numpy()[0]
    gn, mn, vn = g.numpy()[0].astype(np.float64), m.numpy().astype(np.float64), v.numpy()
    want = (0.9 * mn + 0.1 * gn) / np.sqrt(0.999 * vn + 0.001 * gn ** 2 + 1e-8)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # element 0 by hand: m' = 0.45 + 0.1 = 0.55, v' = 0.24975 + 0.001 = 0.25075
    assert got[0] == pytest.approx(0.55 / np.sqrt(0.25075 + 1e-8), rel=1e-6)


def test_adam_mode_requires_state(lora_model, encs):
    model, tok = lora_model
    with pytest.raises(ValueError, match="Adam state"):
        G.per_sample_gradients(model, collate(encs[:2], tok.pad_token_id), mode="adam")
    with pytest.raises(ValueError, match="unknown gradient mode"):
        G.per_sample_gradients(model, collate(encs[:2], tok.pad_token_id), mode="rmsprop")


def test_rows_without_labels_are_flagged_not_scored(lora_model, encs):
    model, tok = lora_model
    empty = Encoded(encs[0].input_ids, [IGNORE_INDEX] * len(encs[0].input_ids), False)
    batch = collate([encs[1], empty, encs[2]], tok.pad_token_id)
    assert G.valid_rows(batch).tolist() == [True, False, True]
    grads = G.per_sample_gradients(model, batch)
    assert torch.count_nonzero(grads[1]) == 0
    alone = G.per_sample_gradients(model, collate([encs[1], encs[2]], tok.pad_token_id))
    assert rel_err(grads[[0, 2]], alone) < 1e-5
    # adam mode: the transform of a zero gradient is not zero, but a flagged row stays zero
    state = {n: (torch.ones(p.shape), torch.ones(p.shape)) for n, p in M.lora_parameters(model)}
    feats, valid = G.per_sample_features(model, batch, projector=None, mode="adam",
                                         adam_state=state)
    assert valid.tolist() == [True, False, True]
    assert torch.count_nonzero(feats[1]) == 0
    assert feats[0].norm() == pytest.approx(1.0, rel=1e-5)


def test_features_are_normalised_gradients(lora_model, encs):
    model, tok = lora_model
    batch = collate(encs[:4], tok.pad_token_id)
    full = G.per_sample_gradients(model, batch)
    feats, valid = G.per_sample_features(model, batch, projector=None)
    assert valid.all()
    want = full / full.norm(dim=1, keepdim=True)
    assert rel_err(feats, want) < 1e-5


def test_fast_loss_path_equals_full_forward(lora_model, encs):
    model, tok = lora_model
    batch = collate(encs, tok.pad_token_id)
    with torch.no_grad():
        fast, n_fast = G.row_losses(model, batch, fast=True)
        full, n_full = G.row_losses(model, batch, fast=False)
        hf = torch.stack([model(**collate([e], tok.pad_token_id)).loss for e in encs])
    assert torch.equal(n_fast, n_full)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast, hf, rtol=1e-5, atol=1e-6)


def test_hidden_features_shape_determinism_and_padding(lora_model, encs):
    model, tok = lora_model
    batch = collate(encs, tok.pad_token_id)
    h1 = G.hidden_features(model, batch)
    h2 = G.hidden_features(model, batch)
    assert h1.shape == (len(encs), G.hidden_size(model))
    assert torch.equal(h1, h2)
    torch.testing.assert_close(h1.norm(dim=1), torch.ones(len(encs)))
    single = torch.cat([G.hidden_features(model, collate([e], tok.pad_token_id)) for e in encs])
    torch.testing.assert_close(h1, single, rtol=1e-5, atol=1e-6)


def test_left_truncated_row_gradient_equals_its_batch_size_one_gradient(lora_model, make_chats):
    """A row that lost its oldest prompt tokens (keep_answer) still has its answer, and its
    gradient in a padded batch is exactly the batch-size-1 gradient of the truncated row."""
    model, tok = lora_model
    chats = make_chats(4, seed=5)
    long_row = [{"role": "user", "content": "background " * 80}] + list(chats[0][-1:])
    right, _ = encode_chats([long_row], tok, max_length=48, truncation="right")
    assert right[0].n_labels == 0  # LESS's truncation loses the answer
    encs, report = encode_chats([long_row, *chats[1:]], tok, max_length=48)
    assert report.n_truncated >= 1 and report.n_no_labels == 0
    assert encs[0].truncated and len(encs[0].input_ids) == 48 and encs[0].n_labels > 0
    grads = G.per_sample_gradients(model, collate(encs, tok.pad_token_id), mode="sgd")
    for i, enc in enumerate(encs):
        assert rel_err(grads[i], reference_grad(model, tok, enc)) < 1e-5, i
