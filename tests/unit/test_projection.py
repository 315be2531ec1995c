"""Projections: a fixed map whatever the batch, chunk, block split or cache; JL sanity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clusterucb_core.features.projection import (
    GEN_ROWS,
    PROJECTION_VERSION,
    PROJECTORS,
    SRHTProjector,
    make_projector,
)
from clusterucb_core.features.rowsource import normalize_rows


def grads(B: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, n, generator=g)


def test_rademacher_matrix_is_the_documented_one():
    n, d = GEN_ROWS + 300, 40
    proj = make_projector("rademacher", n, d, seed=5)
    M = proj.matrix_rows(0, n).numpy()
    row_bytes = -(-d // 8)
    want = []
    for block, rows in ((0, GEN_ROWS), (1, 300)):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(5, spawn_key=(block,))))
        raw = np.frombuffer(rng.bytes(rows * row_bytes), dtype=np.uint8).reshape(rows, -1)
        bits = np.unpackbits(raw, axis=1, count=d, bitorder="little").astype(np.float32)
        want.append((2 * bits - 1) / math.sqrt(d))
    np.testing.assert_array_equal(M, np.concatenate(want))
    # pinned first row for seed 0, d 16: a change of the matrix must bump PROJECTION_VERSION
    first = make_projector("rademacher", 3000, 16, seed=0).matrix_rows(0, 1) * 4
    assert first.int().tolist()[0] == [-1, 1, 1, 1, -1, 1, 1, 1, -1, 1, 1, -1, 1, 1, 1, -1]
    assert PROJECTION_VERSION == 1


@pytest.mark.parametrize("name", PROJECTORS)
def test_same_map_for_any_batch_chunk_and_block_split(name):
    n, d = 9000, 96
    x = grads(9, n)
    proj = make_projector(name, n, d, seed=1)
    y = proj.project(x)
    assert y.shape == (9, d) and y.dtype == torch.float32
    # block split (module by module): exactly the same computation
    cuts = [0, 7, 1000, 1024, 4500, 8999, n]
    blocks = [x[:, a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    assert torch.equal(proj.project_blocks(blocks), y)
    acc = proj.accumulator(9)
    for block in blocks:
        acc.add(block)
    assert torch.equal(acc.result(), y)
    # batch size: same map, BLAS may round differently
    parts = torch.cat([proj.project(x[:1]), proj.project(x[1:4]), proj.project(x[4:])])
    torch.testing.assert_close(parts, y, rtol=1e-5, atol=1e-4)
    # a fresh instance is the same map; another seed is not
    assert torch.equal(make_projector(name, n, d, seed=1).project(x), y)
    assert not torch.allclose(make_projector(name, n, d, seed=2).project(x), y)
    # explicit matrix agrees with the projection
    M = proj.matrix_rows(0, 2000)
    xs = x.clone()
    xs[:, 2000:] = 0
    torch.testing.assert_close(proj.project(xs), xs[:, :2000] @ M, rtol=1e-4, atol=1e-4)
    # each input coordinate's column has unit norm (E|Rx|^2 = |x|^2)
    torch.testing.assert_close((M ** 2).sum(1), torch.ones(2000), rtol=1e-5, atol=1e-5)
    # any input dtype is projected as float32
    torch.testing.assert_close(proj.project(x.double()), y)


def test_rademacher_chunk_size_and_cache_modes_do_not_change_the_map():
    n, d = 10000, 256
    x = grads(5, n, seed=3)
    ref = make_projector("rademacher", n, d, seed=3)
    y = ref.project(x)
    assert ref.cache_mode == "float32"
    for cache_bytes, mode in [(n * d, "int8"), (n * d // 8, "bits"), (40000, "bits"), (0, "bits")]:
        proj = make_projector("rademacher", n, d, seed=3, cache_bytes=cache_bytes)
        assert proj.cache_mode == mode
        assert torch.equal(proj.project(x), y)
        assert torch.equal(proj.project(x), y)  # second call: from the cache where cached
        assert proj.cached_bytes <= cache_bytes
    for chunk_rows in (GEN_ROWS, 3 * GEN_ROWS, 100000):
        proj = make_projector("rademacher", n, d, seed=3, chunk_rows=chunk_rows)
        torch.testing.assert_close(proj.project(x), y, rtol=1e-5, atol=1e-4)
    # a longer input extends the same matrix (rows are a prefix)
    longer = make_projector("rademacher", n + 777, d, seed=3)
    assert torch.equal(longer.matrix_rows(9990, 10000), ref.matrix_rows(9990, 10000))


def test_countsketch_nnz_and_spec():
    n, d = 5000, 64
    proj = make_projector("countsketch", n, d, seed=0, nnz=4)
    M = proj.matrix_rows(0, 300)
    assert ((M != 0).sum(1) <= 4).all() and ((M != 0).sum(1) >= 1).all()
    assert proj.spec == {"projection": "countsketch", "dim_in": n, "dim_out": d, "seed": 0,
                         "version": PROJECTION_VERSION, "nnz": 4}
    assert make_projector("rademacher", n, d).spec["projection"] == "rademacher"


def test_srht_hadamard_is_sylvester():
    from scipy.linalg import hadamard

    proj = SRHTProjector(300, 16)  # N = 512 = 128 x 4: two Kronecker factors
    assert proj.N == 512
    x = grads(3, 512)
    H = torch.tensor(hadamard(512), dtype=torch.float32)
    torch.testing.assert_close(proj.hadamard(x), x @ H, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("name", PROJECTORS)
def test_jl_cosines_preserved(name):
    # structured vectors (shared directions) so cosines span a range, not all ~0
    n, d, B = 30000, 2048, 24
    g = torch.Generator().manual_seed(7)
    basis = torch.randn(4, n, generator=g)
    x = torch.randn(B, 4, generator=g) @ basis + 0.7 * torch.randn(B, n, generator=g)
    x = x * torch.exp(torch.randn(n, generator=g))  # heavy-tailed coordinate scales
    exact = normalize_rows(x)[0] @ normalize_rows(x)[0].T
    approx = normalize_rows(make_projector(name, n, d, seed=0).project(x))[0]
    approx = approx @ approx.T
    err = (approx - exact).abs()
    iu = torch.triu_indices(B, B, 1)
    # JL: per-pair std ~ sqrt((1 + cos^2) / d) ~ 0.03 here; 5 sigma bound on the max
    assert err[iu[0], iu[1]].max() < 5 * math.sqrt(2 / d)
    assert err[iu[0], iu[1]].mean() < 1.5 * math.sqrt(2 / d)
    assert exact[iu[0], iu[1]].std() > 0.2  # the check is not vacuous


def test_errors_and_normalize():
    proj = make_projector("rademacher", 100, 8)
    with pytest.raises(ValueError):
        proj.project(torch.zeros(2, 99))
    with pytest.raises(ValueError):
        proj.project_blocks([torch.zeros(2, 60), torch.zeros(2, 30)])
    with pytest.raises(ValueError):
        proj.project_blocks([torch.zeros(2, 60), torch.zeros(2, 50)])
    with pytest.raises(ValueError, match="unknown projection"):
        make_projector("gaussian", 100, 8)
    assert proj.project(torch.zeros(0, 100)).shape == (0, 8)

    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-6, 0.0]])
    n, ok = normalize_rows(x)
    torch.testing.assert_close(n, torch.tensor([[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]]))
    assert ok.tolist() == [True, False, True]
    n_np, ok_np = normalize_rows(x.numpy())
    np.testing.assert_allclose(n_np, n.numpy())
    assert n_np.dtype == np.float32 and ok_np.tolist() == ok.tolist()
    bad, ok_bad = normalize_rows(torch.tensor([[float("nan"), 1.0]]))
    assert not ok_bad.any() and torch.equal(bad, torch.zeros(1, 2))


def test_gpu_code_paths_give_the_same_map_on_cpu():
    """The paths used on CUDA (torch bit unpacking, gather+sum count sketch) run here too."""
    n, d = 70000, 128
    x = grads(4, n, seed=9)
    rad = make_projector("rademacher", 5000, d, seed=4, cache_bytes=0)
    gpu_style = make_projector("rademacher", 5000, d, seed=4, cache_bytes=0)
    gpu_style._numpy_unpack = False
    assert torch.equal(gpu_style.project(x[:, :5000]), rad.project(x[:, :5000]))
    cs = make_projector("countsketch", n, d, seed=4, nnz=2)
    fold = make_projector("countsketch", n, d, seed=4, nnz=2, method="fold")
    assert cs.method == "index_add"
    torch.testing.assert_close(fold.project(x), cs.project(x), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError):
        make_projector("countsketch", n, d, method="atomic")


def _count_rng_calls(monkeypatch) -> list[int]:
    from clusterucb_core.features import projection as P

    calls: list[int] = []
    real = P._rng

    def counted(seed, block):
        calls.append(block)
        return real(seed, block)

    monkeypatch.setattr(P, "_rng", counted)
    return calls


@pytest.mark.parametrize("method", ["index_add", "fold"])
def test_countsketch_hash_is_made_once(monkeypatch, method):
    """The whole hash (5 bytes a coordinate) is made on the first call and kept: a second
    project() draws no random numbers, even where a 12-byte-a-coordinate cache would not fit."""
    calls = _count_rng_calls(monkeypatch)
    n, d = 5 * 65536 + 123, 256
    proj = make_projector("countsketch", n, d, seed=2, method=method, cache_bytes=6 * n)
    assert calls == []  # nothing is made before it is needed
    x = grads(3, n, seed=1)
    y = proj.project(x)
    assert sorted(calls) == list(range(proj.n_chunks))
    calls.clear()
    torch.testing.assert_close(proj.project(x), y)
    assert calls == []
    plan = proj.memory_plan()
    assert plan["regenerated_bytes_per_call"] == 0 and plan["state_bytes"] <= 6 * n


def test_rademacher_cached_matrix_is_made_once(monkeypatch):
    calls = _count_rng_calls(monkeypatch)
    proj = make_projector("rademacher", 3000, 64, seed=1)
    x = grads(2, 3000)
    y = proj.project(x)
    assert calls
    calls.clear()
    assert torch.equal(proj.project(x), y) and calls == []


def test_countsketch_plans_a_7b_hash_within_budget():
    """LoRA r=128 on q/k/v/o of a 7B Llama: 2^27 coordinates; the whole hash must be resident
    within the default 1 GiB (int32 index + int8 sign), nothing regenerated per call."""
    proj = make_projector("countsketch", 2 ** 27, 8192, device="cpu", method="fold")
    plan = proj.memory_plan()
    assert proj.resident_chunks == proj.n_chunks == 2048
    assert plan["state_bytes"] == 5 * 2 ** 27 <= proj.cache_bytes
    assert plan["regenerated_bytes_per_call"] == 0
    assert proj._span(4) > proj.chunk_rows  # many blocks per gather, not 2,048 small steps


def test_countsketch_partly_resident_hash_gives_the_same_map():
    n, d = 3 * 65536 + 5, 128
    x = grads(2, n, seed=5)
    full = make_projector("countsketch", n, d, seed=6, method="fold")
    part = make_projector("countsketch", n, d, seed=6, method="fold", cache_bytes=65536 * 5)
    assert part.resident_chunks == 1 and part.memory_plan()["regenerated_bytes_per_call"] > 0
    torch.testing.assert_close(part.project(x), full.project(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(part.project_blocks([x[:, :1000], x[:, 1000:]]), full.project(x),
                               rtol=1e-5, atol=1e-5)


def test_rademacher_refused_off_the_cpu_when_it_would_be_regenerated():
    with pytest.raises(ValueError, match="use projection 'countsketch'"):
        make_projector("rademacher", 2 ** 27, 8192, device="meta")
    small = make_projector("rademacher", 1000, 64, device="meta")  # fits: cached, then GEMMs
    assert small.cache_mode == "float32"
