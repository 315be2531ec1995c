"""Ready for a big GPU, checked on the CPU: out-of-memory errors faked above a token count
(the features still equal an undisturbed run, and the learnt budget is kept across chunks),
one base model for several checkpoints, bf16 compute with float32 LoRA gradients, dtype and
device rules, the memory plan of a 7B model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clusterucb_core.config import FeatureSpec, LoraSpec, ModelSpec, WarmupSpec
from clusterucb_core.data.load import load_pool
from clusterucb_core.features import engine as F
from clusterucb_core.features import gradients as G
from clusterucb_core.features import memplan
from clusterucb_core.features import model as M
from clusterucb_core.features.projection import make_projector

LORA = LoraSpec(rank=4, alpha=16, dropout=0.0)
SPEC = FeatureSpec(kind="gradient", mode="sgd", dim=48, batch_size=8, store_dtype="float32")


@pytest.fixture(scope="module")
def pool(tiny_pool_file):
    return load_pool(tiny_pool_file)


@pytest.fixture(scope="module")
def mspec(tiny_model_dir):
    return ModelSpec(name_or_path=str(tiny_model_dir), max_length=64, device="cpu")


@pytest.fixture(scope="module")
def reference(pool, mspec, tmp_path_factory):
    eng = F.FeatureEngine(pool, mspec, LORA, None, SPEC, tmp_path_factory.mktemp("r") / "s")
    return eng.compute(progress=lambda *a, **k: None).read()


def _fake_oom(monkeypatch, limit_tokens: int) -> list[int]:
    """Make the per-sample gradient function raise CUDA OOM on batches above limit_tokens."""
    raised: list[int] = []
    real = G.run_per_sample

    def limited(model, batch, *args, **kwargs):
        tokens = batch["input_ids"].numel()
        if tokens > limit_tokens:
            raised.append(tokens)
            raise torch.cuda.OutOfMemoryError(f"fake: {tokens} tokens")
        return real(model, batch, *args, **kwargs)

    monkeypatch.setattr(G, "run_per_sample", limited)
    return raised


def _lengths(eng) -> list[int]:
    return [len(e.input_ids) for e in eng.encode(np.arange(len(eng.table)))]


def _compute(eng) -> np.ndarray:
    return eng.compute(progress=lambda *a, **k: None).read()


def test_oom_budget_is_learnt_once_and_kept_across_chunks(monkeypatch, pool, mspec, tmp_path,
                                                          reference):
    monkeypatch.setattr(F, "CHUNK_BATCHES", 2)  # 16-row chunks: three chunks of this pool
    eng = F.FeatureEngine(pool, mspec, LORA, None, SPEC, tmp_path / "s")
    assert eng.chunk_rows == 16 and len(eng.plan()) == 3
    first = sorted(_lengths(eng)[:16])[7] * 8  # chunk 0's first batch: its 8 shortest rows
    assert first > max(_lengths(eng))  # so a limit below it still fits every single row
    raised = _fake_oom(monkeypatch, limit_tokens=first - 1)
    feats = _compute(eng)
    assert len(raised) == 1 and eng.budget.ooms == 1  # not once per chunk
    np.testing.assert_allclose(np.nan_to_num(feats), np.nan_to_num(reference), atol=1e-6)
    np.testing.assert_array_equal(np.isnan(feats), np.isnan(reference))


def test_oom_down_to_single_rows_then_one_row_too_big(monkeypatch, pool, mspec, tmp_path,
                                                      reference):
    eng = F.FeatureEngine(pool, mspec, LORA, None, SPEC, tmp_path / "a")
    lengths = _lengths(eng)
    raised = _fake_oom(monkeypatch, limit_tokens=max(lengths))  # long rows only fit alone
    feats = _compute(eng)
    assert raised
    np.testing.assert_allclose(np.nan_to_num(feats), np.nan_to_num(reference), atol=1e-6)

    eng = F.FeatureEngine(pool, mspec, LORA, None, SPEC, tmp_path / "b")
    _fake_oom(monkeypatch, limit_tokens=min(lengths) - 1)
    with pytest.raises(ValueError, match=r"out of GPU memory on one row of \d+ tokens"):
        _compute(eng)


def test_oom_in_the_projection_flush_retries_with_fewer_rows(monkeypatch, pool, mspec,
                                                             tmp_path, reference):
    eng = F.FeatureEngine(pool, mspec, LORA, None, SPEC, tmp_path / "s")
    real = eng.projector.project
    calls: list[int] = []

    def limited(x):
        calls.append(x.shape[0])
        if x.shape[0] > 3:
            raise torch.cuda.OutOfMemoryError("fake projection OOM")
        return real(x)

    monkeypatch.setattr(eng.projector, "project", limited)
    feats = _compute(eng)
    assert max(calls) > 3 and calls[-1] <= 3
    np.testing.assert_allclose(np.nan_to_num(feats), np.nan_to_num(reference), atol=1e-6)

    eng = F.FeatureEngine(pool, mspec, LORA, None, SPEC, tmp_path / "t")

    def always(x):
        raise torch.cuda.OutOfMemoryError("fake projection OOM")

    monkeypatch.setattr(eng.projector, "project", always)
    with pytest.raises(ValueError, match="projecting one row"):
        _compute(eng)


def test_oom_in_the_buffer_allocation_is_handled(monkeypatch, pool, mspec, tmp_path,
                                                 reference):
    eng = F.FeatureEngine(pool, mspec, LORA, None, SPEC, tmp_path / "s")
    real_empty = torch.empty
    failed: list[tuple] = []

    def empty(*size, **kw):
        if len(size) == 2 and size[1] == eng.dim_in and not failed:
            failed.append(size)
            raise torch.cuda.OutOfMemoryError("fake buffer OOM")
        return real_empty(*size, **kw)

    monkeypatch.setattr(torch, "empty", empty)
    feats = _compute(eng)
    assert failed and eng.budget.ooms == 1
    np.testing.assert_allclose(np.nan_to_num(feats), np.nan_to_num(reference), atol=1e-6)


def test_gradient_buffer_is_sized_to_the_batch_not_the_row_limit(monkeypatch, pool, mspec,
                                                                 tmp_path):
    """A 0.54 GB-a-row model must not get a 16-row buffer: with a buffer budget below one
    row, the buffer holds exactly the current batch."""
    eng = F.FeatureEngine(pool, mspec, LORA, None, SPEC, tmp_path / "s")
    real_empty = torch.empty
    sizes: list[int] = []

    def empty(*size, **kw):
        if len(size) == 2 and size[1] == eng.dim_in:
            sizes.append(size[0])
        return real_empty(*size, **kw)

    monkeypatch.setattr(torch, "empty", empty)
    eng.budget = F.TokenBudget(16, limit_bytes=60, token_bytes=1)
    encs = eng.encode(np.arange(10))
    F.featurize(eng.model, eng.tok.pad_token_id, encs, SPEC, eng.dim, eng.projector,
                buffer_bytes=1, budget=eng.budget)
    lengths = sorted(len(e.input_ids) for e in encs)
    assert sizes and max(sizes) <= 60 // lengths[0] < 16


def test_two_checkpoints_share_one_base_model(monkeypatch, pool, mspec, tmp_path):
    from transformers import AutoModelForCausalLM

    from clusterucb_core.features.warmup import warmup

    ckpts = warmup(pool, mspec, LORA, WarmupSpec(fraction=0.25, epochs=2, batch_size=4,
                                                 learning_rate=1e-2), tmp_path / "ck",
                   progress=lambda *a, **k: None)
    assert len(ckpts) == 2
    spec = FeatureSpec(kind="gradient", mode="adam", dim=48, batch_size=8,
                       store_dtype="float32")
    rows = np.arange(12)
    alone = [F.FeatureEngine(pool, mspec, LORA, ck, spec, tmp_path / f"alone{i}")
             .compute(rows, progress=lambda *a, **k: None).read(rows)
             for i, ck in enumerate(ckpts)]
    calls: list[str] = []
    real = AutoModelForCausalLM.from_pretrained

    def counted(*args, **kwargs):
        calls.append(str(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", counted)
    base = M.SharedBase(mspec)
    engines = [F.FeatureEngine(pool, mspec, LORA, ck, spec, tmp_path / f"shared{i}", base=base)
               for i, ck in enumerate(ckpts)]
    assert len(calls) == 1
    assert engines[0].projector is engines[1].projector  # one hash for both
    assert engines[0].budget is engines[1].budget  # an OOM learnt by one holds for both
    # interleaved use: each engine switches to its own adapter and Adam state
    for _ in range(2):
        for eng in reversed(engines):
            eng.compute(rows, progress=lambda *a, **k: None)
    for eng, ref in zip(engines, alone):
        np.testing.assert_allclose(np.nan_to_num(eng.store().read(rows)), np.nan_to_num(ref),
                                   atol=1e-6)
    assert not np.allclose(np.nan_to_num(alone[0]), np.nan_to_num(alone[1]))
    assert engines[0].identity == F.FeatureEngine(pool, mspec, LORA, ckpts[0], spec,
                                                  tmp_path / "again").identity


def test_bf16_compute_keeps_float32_lora_and_gradients(monkeypatch, pool, tiny_model_dir):
    spec = ModelSpec(name_or_path=str(tiny_model_dir), max_length=64, device="cpu",
                     dtype="bfloat16")
    model, tok, _, dtype = M.prepare_model(spec, LORA)
    assert dtype == torch.bfloat16
    assert next(model.get_base_model().model.parameters()).dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for _, p in M.lora_parameters(model))
    seen: list[torch.dtype] = []
    real = G.run_per_sample

    def spy(model, batch, sink, *args, **kwargs):
        def checking(k, g):
            seen.append(g.dtype)
            sink(k, g)
        return real(model, batch, checking, *args, **kwargs)

    monkeypatch.setattr(G, "run_per_sample", spy)
    from clusterucb_core.data.formatting import encode_chats

    msgs = [list(pool.table["messages"].iat[i]) for i in range(4)]
    encs, _ = encode_chats(msgs, tok, 64, "tulu")
    proj = make_projector("countsketch", G.n_params(model), 48)
    feats, valid = F.featurize(model, tok.pad_token_id, encs, SPEC, 48, projector=proj)
    assert seen and set(seen) == {torch.float32}
    assert np.isfinite(feats[valid]).all() and valid.any()
    assert all(p.dtype == torch.float32 for _, p in M.lora_parameters(model))


def test_dtype_rules(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert M.resolve_dtype("auto", cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert M.resolve_dtype("auto", cuda) == torch.float32
    with pytest.raises(ValueError, match="does not support it"):
        M.resolve_dtype("bfloat16", cuda)
    for name in ("float16", "fp16"):
        with pytest.raises(ValueError, match="float16 is refused"):
            M.resolve_dtype(name, torch.device("cpu"))
    assert M.resolve_dtype("auto", torch.device("cpu")) == torch.float32


def test_more_processes_than_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "5")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(ValueError, match="8 processes on this machine but 2 GPU"):
        M.local_cuda_index()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert M.local_cuda_index() == 1
    # a launcher that pins each process to its own GPU: one visible, index LOCAL_RANK % 1
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert M.local_cuda_index() == 0


def test_memory_plan_of_a_7b_model():
    s = memplan.ModelShape()  # Llama-2-7B, LoRA r=128 on q/k/v/o, bf16
    assert s.lora_coords == 2 ** 27 and 6.7e9 < s.params < 6.8e9
    h100 = memplan.plan(s, 80 * 10 ** 9, 2048)
    h200 = memplan.plan(s, 141 * 10 ** 9, 2048)
    assert 1 <= h100.rows_at_max_length < h200.rows_at_max_length < 16
    assert h200.projection_bytes == 5 * 2 ** 27
    budget = F.TokenBudget(16, h200.usable_bytes, h200.token_bytes, h200.row_fixed_bytes)
    n = budget.rows([2048] * 16, 0)
    assert n == h200.rows_at_max_length
    assert budget.rows([256] * 16, 0) > n  # shorter rows: more of them per batch


def test_expandable_segments_by_default_unless_the_user_chose():
    import os
    import subprocess
    import sys

    code = "import os, clusterucb_core; print(os.environ['PYTORCH_CUDA_ALLOC_CONF'])"
    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_CUDA_ALLOC_CONF"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "expandable_segments:True", out.stderr
    env["PYTORCH_CUDA_ALLOC_CONF"] = "max_split_size_mb:128"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "max_split_size_mb:128", out.stderr


def test_pipeline_reward_checkpoints_share_one_model_and_are_freed(monkeypatch, tmp_path,
                                                                  tiny_pool_file, mspec,
                                                                  make_chats):
    import json

    from transformers import AutoModelForCausalLM

    from clusterucb_core.pipeline import Pipeline, RunConfig

    target = tmp_path / "target.jsonl"
    target.write_text("".join(json.dumps({"subtask": "ab"[i % 2], "messages": m}) + "\n"
                              for i, m in enumerate(make_chats(6, seed=7))))
    cfg = RunConfig(workspace=str(tmp_path / "ws"), pool=str(tiny_pool_file), target=str(target),
                    model=mspec, lora=LORA, reward_checkpoints="all",
                    warmup=WarmupSpec(fraction=0.25, epochs=2, batch_size=4,
                                      learning_rate=1e-3),
                    reward_features=FeatureSpec(kind="gradient", mode="adam", dim=32,
                                                batch_size=8))
    pipe = Pipeline(cfg, log=None)
    assert len(pipe.checkpoints) == 2  # the warm-up loads its own model, before counting
    calls: list[str] = []
    real = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: (calls.append(str(a[0])), real(*a, **k))[1])
    engines = pipe.reward_engines
    assert len(engines) == 2 and len(calls) == 1 and engines[0].model is engines[1].model
    pipe.compute_reward_rows(np.arange(6))
    pipe.release_engines()
    assert "reward_engines" not in pipe.__dict__ and engines[0].model is None


def test_memory_plan_counts_the_real_model(tiny_model_dir):
    """The plan's shape of a loaded model: its LoRA coordinates and parameters are the real
    ones (a grouped-query Llama here), so the 7B figures rest on the same formulas."""
    model, *_ = M.prepare_model(ModelSpec(name_or_path=str(tiny_model_dir), device="cpu"),
                                LoraSpec(rank=4, alpha=16))
    s = memplan.shape_of(model)
    assert s.lora_rank == 4 and s.kv_heads < s.heads
    assert s.lora_coords == G.n_params(model)
    base = model.get_base_model()
    assert s.params == sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n)


def test_memory_plan_saved_bytes_match_autograd(tmp_path):
    """What the plan says the backward keeps per token and layer (and per labelled token of
    the output layer) is what autograd saves, measured on bf16 Llamas of 1 and 2 layers."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from clusterucb_core.data.formatting import collate

    class Row:
        def __init__(self, ids):
            self.input_ids, self.labels = ids, list(ids)

    def saved_per_token(layers: int) -> tuple[float, memplan.ModelShape]:
        cfg = LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=688,
                          num_hidden_layers=layers, num_attention_heads=8,
                          num_key_value_heads=4, tie_word_embeddings=False)
        torch.manual_seed(0)
        base = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
        for p in base.parameters():
            p.requires_grad_(False)
        model = M.add_lora(base, LoraSpec(rank=8, alpha=16, dropout=0.0))
        g = torch.Generator().manual_seed(0)
        batch = collate([Row(torch.randint(3, 1000, (128,), generator=g).tolist())
                         for _ in range(2)], 0)
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        seen: dict[int, int] = {}

        def pack(t):
            st = t.untyped_storage()
            if st.data_ptr() not in params:
                seen[st.data_ptr()] = st.nbytes()
            return t

        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            G.row_losses(model, batch)
        return sum(seen.values()) / batch["input_ids"].numel(), memplan.shape_of(model)

    one, shape = saved_per_token(1)
    two, _ = saved_per_token(2)
    per_layer, head = memplan.saved_bytes_per_token(shape)
    assert shape.kv_heads == 4 and shape.dtype_bytes == 2
    assert abs((two - one) - per_layer) <= 0.1 * per_layer, (two - one, per_layer)
    labelled = 127 / 128  # the first position predicts nothing
    assert abs((one - (two - one)) - head * labelled) <= 0.1 * head, (one - (two - one), head)
