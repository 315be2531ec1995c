"""Shared fixtures: a tiny random Llama with a tokenizer trained on the fly, the demo model, a
tiny pool. Everything offline and seeded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread: the test models are tiny, and on a shared 2-core machine OpenMP's
# spin-waiting threads make each small op 10x slower under load (measured: 16 s vs 1 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
DEMO_MODEL_DIR = REPO / "sample_data" / "demo_model"

_WORDS = ("the cat sat on a mat while two dogs ran past seven red boxes and one blue kite "
          "answer question explain why because first then finally sum add plus minus equals "
          "water fire earth air city river mountain number letter word sentence story").split()


def tiny_corpus(n: int = 300, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        q = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
        a = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 15)))
        out.append(f"<|user|>\n{q} {i}?\n<|assistant|>\n{a}.</s>\n")
    return out


def tiny_chats(n: int = 40, seed: int = 1) -> list[list[dict]]:
    """Chats of mixed lengths; a few with a system turn."""
    import random

    rng = random.Random(seed)
    chats = []
    for i in range(n):
        q = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 30)))
        a = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 25)))
        msgs = [{"role": "user", "content": f"{q} {i}?"}, {"role": "assistant", "content": a}]
        if i % 7 == 3:
            msgs.insert(0, {"role": "system", "content": "Be brief."})
        chats.append(msgs)
    return chats


def build_tiny_model(folder: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A random Llama (hidden 32, 2 layers) + a byte-level BPE tokenizer (eos '</s>', no pad
    token, like Llama's), saved as a normal Hugging Face folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(tiny_corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    fast.save_pretrained(folder)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, bos_token_id=fast.bos_token_id,
                      eos_token_id=fast.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def lora_model(tiny_model_dir):
    """The tiny model with rank-4 LoRA adapters moved away from peft's B = 0 start (where
    every A gradient is 0), on the CPU: (model, tokenizer)."""
    import torch

    from clusterucb_core.config import LoraSpec, ModelSpec
    from clusterucb_core.features import model as M

    model, tok, _, _ = M.prepare_model(ModelSpec(name_or_path=str(tiny_model_dir), device="cpu"),
                                       LoraSpec(rank=4, alpha=16), seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in M.lora_parameters(model):
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model, tok


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    if not (DEMO_MODEL_DIR / "config.json").exists():
        pytest.skip("sample_data/demo_model is missing (python scripts/train_demo_model.py)")
    return DEMO_MODEL_DIR


@pytest.fixture(scope="session")
def make_chats():
    """tiny_chats(n, seed) as a fixture (test modules cannot import conftest)."""
    return tiny_chats


@pytest.fixture(scope="session")
def tiny_pool_file(tmp_path_factory) -> Path:
    """A 40-row JSONL pool in the open-instruct `messages` shape; row 5 has an empty answer
    after a very long question (no label survives max_length=64)."""
    chats = tiny_chats(40)
    chats[5] = [{"role": "user", "content": " ".join(["word"] * 200)},
                {"role": "assistant", "content": "late answer"}]
    path = tmp_path_factory.mktemp("pool") / "pool.jsonl"
    with open(path, "w") as fh:
        for i, msgs in enumerate(chats):
            fh.write(json.dumps({"id": f"r{i}", "source": "tiny", "messages": msgs}) + "\n")
    return path


@pytest.fixture(scope="module")
def demo_workspace_copy(tmp_path_factory) -> Path:
    """A copy of the shipped demo workspace, in another folder (nothing may depend on where it
    lies); skipped when it is missing."""
    import shutil

    shipped = Path(__file__).resolve().parents[1] / "sample_data" / "demo_workspace"
    if not (shipped / "workspace.json").exists():
        pytest.skip("sample_data/demo_workspace is missing (python scripts/make_demo_workspace.py)")
    ws = tmp_path_factory.mktemp("demo") / "ws"
    shutil.copytree(shipped, ws)
    return ws
