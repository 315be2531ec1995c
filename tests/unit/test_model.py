"""Model loading, LoRA wrapping, checkpoints with Adam state."""

from __future__ import annotations

import json

import pytest
import torch

from clusterucb_core.config import DEMO_MODEL, LoraSpec, ModelSpec
from clusterucb_core.features import model as M


def test_load_model_cpu_float32_frozen_and_pad(tiny_model_dir):
    spec = ModelSpec(name_or_path=str(tiny_model_dir), device="cpu")
    model, tok, device, dtype = M.load_model(spec)
    assert device.type == "cpu" and dtype == torch.float32
    assert next(model.parameters()).dtype == torch.float32
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    # no pad token in the tokenizer: pad = unk, and the vocabulary is not resized
    assert tok.pad_token == "<unk>"
    assert model.get_input_embeddings().weight.shape[0] == len(tok)


def test_device_and_dtype_resolution():
    assert M.resolve_device("cpu").type == "cpu"
    auto = M.resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    assert M.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert M.resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        M.resolve_dtype("int3", torch.device("cpu"))


def test_model_source(tmp_path):
    assert M.model_source(str(tmp_path)) == (str(tmp_path.resolve()), True)
    assert M.model_source("meta-llama/Llama-2-7b-hf") == ("meta-llama/Llama-2-7b-hf", False)
    with pytest.raises(FileNotFoundError, match="no model folder"):
        M.model_source(str(tmp_path / "missing"))
    if not DEMO_MODEL.exists():
        with pytest.raises(FileNotFoundError, match="train_demo_model"):
            M.model_source("demo")
    (tmp_path / "f.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file"):
        M.model_source(str(tmp_path / "f.bin"))


def test_trust_remote_code_only_when_asked(tiny_model_dir, monkeypatch):
    import transformers

    seen = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    M.load_model(ModelSpec(name_or_path=str(tiny_model_dir), device="cpu"))
    M.load_model(ModelSpec(name_or_path=str(tiny_model_dir), device="cpu",
                           trust_remote_code=True))
    assert seen == [False, True]


def test_add_lora_shapes_and_paper_setting(tiny_model_dir):
    spec = ModelSpec(name_or_path=str(tiny_model_dir), device="cpu")
    model, *_ = M.prepare_model(spec, LoraSpec(rank=128, alpha=512), seed=0)
    params = M.lora_parameters(model)
    # 2 layers x 4 attention projections x (A, B)
    assert len(params) == 16
    a = dict(params)["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"]
    assert a.shape == (128, 32)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == pytest.approx(4.0)
    assert not model.training
    # seeded: same seed, same A; other seed, other A
    again, *_ = M.prepare_model(spec, LoraSpec(rank=128, alpha=512), seed=0)
    other, *_ = M.prepare_model(spec, LoraSpec(rank=128, alpha=512), seed=1)
    a2 = dict(M.lora_parameters(again))[
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"]
    a3 = dict(M.lora_parameters(other))[
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"]
    assert torch.equal(a, a2) and not torch.equal(a, a3)


def test_target_modules_fallback_for_other_architectures():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50))
    assert M.resolve_target_modules(gpt2, LoraSpec()) == ["c_attn", "c_proj"]
    with pytest.raises(ValueError, match="none of the LoRA target modules"):
        M.resolve_target_modules(torch.nn.Sequential(torch.nn.Linear(2, 2)), LoraSpec())


def test_checkpoint_roundtrip_with_adam_state(tiny_model_dir, tmp_path):
    spec = ModelSpec(name_or_path=str(tiny_model_dir), device="cpu")
    model, tok, *_ = M.prepare_model(spec, LoraSpec(rank=4, alpha=16), seed=0)
    opt = torch.optim.AdamW([p for _, p in M.lora_parameters(model)], lr=1e-2)
    batch = tok(["the cat sat on a mat"], return_tensors="pt")
    for _ in range(2):
        out = model(input_ids=batch["input_ids"], labels=batch["input_ids"])
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    ckpt = M.save_checkpoint(model, opt, tmp_path / "ckpt-1", {"epoch": 1, "avg_lr": 0.01})
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["avg_lr"] == 0.01 and len(meta["fingerprint"]) == 16
    assert M.checkpoint_fingerprint(ckpt) == meta["fingerprint"]
    assert M.find_checkpoints(tmp_path) == [ckpt]

    base, *_ = M.load_model(spec)
    loaded = M.load_adapter(base, ckpt)
    state = M.load_adam_state(loaded, ckpt)
    want = dict(M.lora_parameters(model))
    got = dict(M.lora_parameters(loaded))
    assert set(got) == set(want) == set(state)
    for name, p in want.items():
        assert torch.equal(got[name], p)
        assert got[name].requires_grad
        m, v = state[name]
        assert torch.equal(m, opt.state[p]["exp_avg"])
        assert torch.equal(v, opt.state[p]["exp_avg_sq"])
    assert not loaded.training

    # a Hugging Face Trainer checkpoint (LESS): optimizer.pt, read with weights_only=True
    trainer = tmp_path / "checkpoint-10"
    trainer.mkdir()
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        (trainer / f).write_bytes((ckpt / f).read_bytes())
    params = [p for _, p in M.lora_parameters(model)]
    torch.save({"state": {i: {"exp_avg": opt.state[p]["exp_avg"],
                              "exp_avg_sq": opt.state[p]["exp_avg_sq"], "step": torch.tensor(2.)}
                          for i, p in enumerate(params)}, "param_groups": []},
               trainer / "optimizer.pt")
    state2 = M.load_adam_state(loaded, trainer)
    for name in state:
        assert torch.equal(state2[name][0], state[name][0])
    assert M.checkpoint_meta(trainer)["avg_lr"] is None

    with pytest.raises(FileNotFoundError, match="no Adam state"):
        M.load_adam_state(loaded, tmp_path)


def test_weights_fingerprint_changes_with_weights(tiny_model_dir, tmp_path):
    import shutil

    fp = M.weights_fingerprint(str(tiny_model_dir))
    assert fp == M.weights_fingerprint(str(tiny_model_dir))
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert M.weights_fingerprint(str(copy)) == fp
    w = copy / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 1
    w.write_bytes(bytes(data))
    assert M.weights_fingerprint(str(copy)) != fp


def test_chosen_target_modules_are_used_or_refused(tiny_model_dir):
    """Bug 8: LoRA on the last block only (`layers.1.self_attn.q_proj`) silently fell back to
    every attention layer. Names the user chose are used as given, or refused naming the
    modules that exist; only the defaults fall back."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    last = LoraSpec(rank=2, target_modules=("layers.1.self_attn.q_proj",))
    assert M.resolve_target_modules(base, last) == ["layers.1.self_attn.q_proj"]
    names = [n for n, _ in M.lora_parameters(M.add_lora(base, last))]
    assert names and all(".layers.1.self_attn.q_proj." in n for n in names)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match=r"c_attn not in this model; its linear layers are .*"
                                         r"q_proj"):
        M.resolve_target_modules(base, LoraSpec(target_modules=("q_proj", "c_attn")))


def test_layers_to_transform_reaches_peft(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = M.add_lora(base, LoraSpec(rank=2, layers_to_transform=(0,)))
    names = [n for n, _ in M.lora_parameters(model)]
    assert names and all(".layers.0." in n for n in names)
    with pytest.raises(ValueError, match=r"layers_to_transform = \[5\]: this model has layers "
                                         r"0\.\.1"):
        M.add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                   LoraSpec(layers_to_transform=(5,)))
