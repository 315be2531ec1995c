"""The CUDA paths on a real GPU (skipped without one; bench/gpu_check.sh runs them): the count
sketch's resident hash gives the CPU's map, Rademacher runs as cached GEMMs or is refused,
features on the GPU (float32 and bf16) match the CPU's, the memory plan sets a budget, an
out-of-memory error is recovered from, and micro-batched warm-up equals one batch."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from clusterucb_core.config import FeatureSpec, LoraSpec, ModelSpec, WarmupSpec  # noqa: E402
from clusterucb_core.data.load import load_pool  # noqa: E402
from clusterucb_core.features import engine as F  # noqa: E402
from clusterucb_core.features import gradients as G  # noqa: E402
from clusterucb_core.features import model as M  # noqa: E402
from clusterucb_core.features.projection import make_projector  # noqa: E402

LORA = LoraSpec(rank=4, alpha=16, dropout=0.0)
SPEC = FeatureSpec(kind="gradient", mode="sgd", dim=48, batch_size=8, store_dtype="float32")


@pytest.fixture(scope="module")
def pool(tiny_pool_file):
    return load_pool(tiny_pool_file)


def _mspec(tiny_model_dir, device: str, dtype: str = "float32") -> ModelSpec:
    return ModelSpec(name_or_path=str(tiny_model_dir), max_length=64, device=device,
                     dtype=dtype)


def _features(pool, spec: ModelSpec, path, fspec=SPEC) -> tuple[np.ndarray, F.FeatureEngine]:
    eng = F.FeatureEngine(pool, spec, LORA, None, fspec, path)
    return eng.compute(progress=lambda *a, **k: None).read(), eng


def test_countsketch_on_cuda_is_the_cpu_map_and_built_once(monkeypatch):
    from clusterucb_core.features import projection as P

    n, d = 3 * 65536 + 77, 512
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, n, generator=g)
    for nnz in (1, 2):
        cpu = make_projector("countsketch", n, d, seed=3, nnz=nnz)
        gpu = make_projector("countsketch", n, d, seed=3, nnz=nnz, device="cuda")
        assert gpu.method == "fold"
        torch.testing.assert_close(gpu.project(x.cuda()).cpu(), cpu.project(x),
                                   rtol=1e-5, atol=1e-4)
        blocks = [x[:, :1000].cuda(), x[:, 1000:].cuda()]
        torch.testing.assert_close(gpu.project_blocks(blocks).cpu(), cpu.project(x),
                                   rtol=1e-5, atol=1e-4)
    calls: list[int] = []
    real = P._rng
    monkeypatch.setattr(P, "_rng", lambda s, b: (calls.append(b), real(s, b))[1])
    gpu.project(x.cuda())
    assert calls == []  # the hash stays on the device


def test_rademacher_on_cuda_gemm_or_refused():
    n, d = 5000, 256
    x = torch.randn(4, n)
    cpu = make_projector("rademacher", n, d, seed=1)
    gpu = make_projector("rademacher", n, d, seed=1, device="cuda")
    torch.testing.assert_close(gpu.project(x.cuda()).cpu(), cpu.project(x), rtol=1e-4,
                               atol=1e-4)
    with pytest.raises(ValueError, match="countsketch"):
        make_projector("rademacher", 2 ** 27, 8192, device="cuda")


def test_features_on_cuda_match_the_cpu(pool, tiny_model_dir, tmp_path):
    cpu, _ = _features(pool, _mspec(tiny_model_dir, "cpu"), tmp_path / "cpu")
    gpu, eng = _features(pool, _mspec(tiny_model_dir, "cuda"), tmp_path / "gpu")
    assert eng.device.type == "cuda" and eng.budget.limit_bytes is not None
    np.testing.assert_array_equal(np.isnan(gpu), np.isnan(cpu))
    np.testing.assert_allclose(np.nan_to_num(gpu), np.nan_to_num(cpu), atol=2e-4)


def test_bf16_on_cuda_keeps_float32_lora_and_close_features(pool, tiny_model_dir, tmp_path):
    assert torch.cuda.is_bf16_supported()
    assert M.resolve_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16
    ref, _ = _features(pool, _mspec(tiny_model_dir, "cuda"), tmp_path / "f32")
    got, eng = _features(pool, _mspec(tiny_model_dir, "cuda", "auto"), tmp_path / "bf16")
    assert eng.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for _, p in M.lora_parameters(eng.model))
    ok = np.isfinite(ref).all(1)
    cos = (np.nan_to_num(ref[ok]) * np.nan_to_num(got[ok])).sum(1)
    assert cos.min() > 0.9, cos.min()


def test_oom_on_cuda_is_recovered(monkeypatch, pool, tiny_model_dir, tmp_path):
    ref, _ = _features(pool, _mspec(tiny_model_dir, "cuda"), tmp_path / "ref")
    real = G.run_per_sample
    raised: list[int] = []

    def limited(model, batch, *a, **k):
        if batch["input_ids"].shape[0] > 2:
            raised.append(batch["input_ids"].shape[0])
            raise torch.cuda.OutOfMemoryError("fake")
        return real(model, batch, *a, **k)

    monkeypatch.setattr(G, "run_per_sample", limited)
    got, eng = _features(pool, _mspec(tiny_model_dir, "cuda"), tmp_path / "oom")
    assert raised and eng.budget.ooms >= 1
    np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(ref), atol=2e-4)


def test_warmup_micro_batches_on_cuda(pool, tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from clusterucb_core.features.warmup import warmup

    spec = WarmupSpec(fraction=0.2, epochs=1, batch_size=4, learning_rate=5e-3, seed=3)
    out = []
    for micro in (1, 4):
        ck = warmup(pool, _mspec(tiny_model_dir, "cuda"), LORA,
                    replace(spec, micro_batch_size=micro), tmp_path / f"m{micro}",
                    progress=lambda *a, **k: None)[-1]
        out.append(load_file(str(ck / "adam_state.safetensors")))
    for k in out[0]:
        torch.testing.assert_close(out[0][k], out[1][k], rtol=1e-3, atol=1e-8)
