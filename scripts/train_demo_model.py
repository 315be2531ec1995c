#!/usr/bin/env python3
"""Train the bundled demo model: a byte-level BPE tokenizer and a small Llama, on the demo pool.

    python scripts/make_demo_data.py      # first: the pool this trains on
    python scripts/train_demo_model.py    # then: writes sample_data/demo_model/
                                          # (about 5 min on 2 CPU cores)

What it does (seeded; same inputs and thread count give the same weights):
1. Renders every pool chat in the Tulu format of docs/METHOD.md s.1
   (`<|system|>\\n..\\n<|user|>\\n..\\n<|assistant|>\\n..</s>\\n`) and holds out 5% of the rows.
2. Trains a byte-level BPE tokenizer (Hugging Face `tokenizers`) on the training rows, with
   special tokens <unk>, <s>, </s>. Like Llama's tokenizer it prepends <s> and appends nothing.
   There is no separate pad token: pad = <unk> (so LESS-style code that adds a pad token only
   when it is missing does not resize the embeddings; padded positions are masked anyway).
   The tokenizer carries a Tulu chat template, so "the model's own template" is Tulu too.
3. Trains a LlamaForCausalLM from a seeded random init: next-token loss on all tokens of the
   training rows, packed into fixed-length blocks; float32 on CPU; AdamW with warm-up and
   cosine decay; a fixed number of steps.
4. Measures the held-out mean token loss of the untrained model (the same seeded init) and of
   the trained one, over all tokens and over assistant tokens only (what LESS gradients use),
   and writes them with the sizes to demo_model/training_report.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_POOL = REPO / "sample_data" / "demo_pool.jsonl"
DEFAULT_OUT = REPO / "sample_data" / "demo_model"

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2
TULU_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    "{% endfor %}"
)


def render_tulu(messages: list[dict], eos: str = "</s>") -> tuple[str, list[tuple[int, int]]]:
    """Tulu text of a chat, and the character spans of assistant content + eos (the trained
    part)."""
    text, spans = "", []
    for m in messages:
        role, content = m["role"], m["content"]
        if role == "assistant":
            text += "<|assistant|>\n"
            start = len(text)
            text += content + eos
            spans.append((start, len(text)))
            text += "\n"
        else:
            text += f"<|{role}|>\n{content}\n"
    return text, spans


def load_rows(pool: Path) -> list[dict]:
    with open(pool, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def split_rows(n: int, holdout: float, seed: int) -> tuple[list[int], list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_held = max(1, int(round(n * holdout)))
    return sorted(order[n_held:]), sorted(order[:n_held])


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    return tok


def wrap_tokenizer(tok, max_length: int):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        model_max_length=max_length,
        padding_side="right",
        truncation_side="right",
        clean_up_tokenization_spaces=False,
    )
    hf.chat_template = TULU_CHAT_TEMPLATE
    return hf


def encode_rows(hf_tok, rows: list[dict], max_length: int) -> list[tuple[list[int], list[int]]]:
    """(input_ids with <s>, assistant mask) per row, truncated to max_length."""
    out = []
    for row in rows:
        text, spans = render_tulu(row["messages"], hf_tok.eos_token)
        enc = hf_tok(text, add_special_tokens=True, return_offsets_mapping=True)
        ids, offs = enc["input_ids"], enc["offset_mapping"]
        mask = []
        for i, (a, b) in enumerate(offs):
            inside = ids[i] != hf_tok.bos_token_id and any(s <= a < e for s, e in spans) and b > a
            mask.append(1 if inside else 0)
        out.append((ids[:max_length], mask[:max_length]))
    return out


def heldout_loss(model, encoded, pad_id: int, batch_size: int = 16) -> dict:
    """Token-weighted mean next-token loss over held-out rows: all tokens, and assistant tokens
    only."""
    import torch
    import torch.nn.functional as F

    model.eval()
    tot_all = n_all = tot_asst = n_asst = 0.0
    with torch.no_grad():
        for i in range(0, len(encoded), batch_size):
            chunk = encoded[i:i + batch_size]
            L = max(len(ids) for ids, _ in chunk)
            inp = torch.full((len(chunk), L), pad_id, dtype=torch.long)
            att = torch.zeros((len(chunk), L), dtype=torch.long)
            am = torch.zeros((len(chunk), L), dtype=torch.bool)
            for j, (ids, mask) in enumerate(chunk):
                inp[j, :len(ids)] = torch.tensor(ids)
                att[j, :len(ids)] = 1
                am[j, :len(ids)] = torch.tensor(mask, dtype=torch.bool)
            logits = model(input_ids=inp, attention_mask=att).logits[:, :-1].float()
            tgt = inp[:, 1:]
            valid = att[:, 1:].bool()
            nll = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), reduction="none"
            ).view_as(tgt)
            tot_all += nll[valid].sum().item()
            n_all += valid.sum().item()
            asst = valid & am[:, 1:]
            tot_asst += nll[asst].sum().item()
            n_asst += asst.sum().item()
    return {"all_tokens": tot_all / n_all, "assistant_tokens": tot_asst / max(n_asst, 1),
            "n_tokens": int(n_all), "n_assistant_tokens": int(n_asst)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Train the bundled demo tokenizer + Llama on the demo pool."
    )
    ap.add_argument("--pool", default=str(DEFAULT_POOL))
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=688)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup-steps", type=int, default=30)
    ap.add_argument("--holdout", type=float, default=0.05)
    args = ap.parse_args(argv)

    # Idle OpenMP workers sleep instead of spinning: much faster when other work shares the cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    t_start, cpu_start = time.time(), time.process_time()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)

    rows = load_rows(Path(args.pool))
    train_idx, held_idx = split_rows(len(rows), args.holdout, args.seed)
    train_rows = [rows[i] for i in train_idx]
    held_rows = [rows[i] for i in held_idx]
    print(
        f"pool: {len(rows)} rows -> train {len(train_rows)}, held out {len(held_rows)}", flush=True
    )

    # 1-2. tokenizer
    train_texts = [render_tulu(r["messages"])[0] for r in train_rows]
    tok = train_tokenizer(train_texts, args.vocab_size)
    hf_tok = wrap_tokenizer(tok, args.max_length)
    vocab = len(hf_tok)
    print(
        f"tokenizer: vocab {vocab}, bos {hf_tok.bos_token_id}, eos {hf_tok.eos_token_id}, "
        f"pad {hf_tok.pad_token_id}",
        flush=True,
    )

    train_enc = encode_rows(hf_tok, train_rows, args.max_length)
    held_enc = encode_rows(hf_tok, held_rows, args.max_length)
    n_train_tokens = sum(len(ids) for ids, _ in train_enc)
    print(
        f"train tokens {n_train_tokens}, mean row length {n_train_tokens / len(train_enc):.1f}",
        flush=True,
    )

    # 3. model
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=args.max_length,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        tie_word_embeddings=True,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        use_cache=True,
    )
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config).float()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters", flush=True)

    t0 = time.time()
    loss_init = heldout_loss(model, held_enc, hf_tok.pad_token_id)
    print(f"held-out loss, untrained: {loss_init} ({time.time() - t0:.1f}s)", flush=True)

    # packed training stream, rows in a seeded order (re-shuffled every pass)
    rng = random.Random(args.seed + 1)
    block, bs = args.block_size, args.batch_size

    def blocks():
        while True:
            order = list(range(len(train_enc)))
            rng.shuffle(order)
            stream: list[int] = []
            for i in order:
                stream.extend(train_enc[i][0])
                while len(stream) >= block * bs:
                    chunk = torch.tensor(stream[: block * bs], dtype=torch.long).view(bs, block)
                    stream = stream[block * bs:]
                    yield chunk

    opt = torch.optim.AdamW(
        model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01, eps=1e-8
    )

    def lr_at(step: int) -> float:
        if step < args.warmup_steps:
            return args.lr * (step + 1) / args.warmup_steps
        p = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    model.train()
    gen = blocks()
    t_train, cpu_train = time.time(), time.process_time()
    losses = []
    for step in range(args.steps):
        x = next(gen)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        out = model(input_ids=x, labels=x)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(out.loss.item())
        if step % 10 == 0 or step == args.steps - 1:
            el = time.time() - t_train
            print(f"step {step:4d}  loss {out.loss.item():.4f}  lr {lr_at(step):.2e}  "
                  f"{el:.0f}s  ({el / (step + 1):.2f}s/step)", flush=True)
    train_wall, train_cpu = time.time() - t_train, time.process_time() - cpu_train

    loss_final = heldout_loss(model, held_enc, hf_tok.pad_token_id)
    print(f"held-out loss, trained: {loss_final}", flush=True)

    # 4. save (into a temporary sibling, then swap, so a crash never leaves half a model)
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.config.use_cache = True
    model.generation_config.bos_token_id = hf_tok.bos_token_id
    model.generation_config.eos_token_id = hf_tok.eos_token_id
    model.generation_config.pad_token_id = hf_tok.pad_token_id
    model.save_pretrained(tmp)
    hf_tok.save_pretrained(tmp)
    # Name the class by its portable alias so transformers 4.x and 5.x both load it.
    tc_path = tmp / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text(encoding="utf-8"))
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    tc_path.write_text(json.dumps(tc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for p in tmp.iterdir():
        p.chmod(0o644)
    weight_bytes = (tmp / "model.safetensors").stat().st_size
    report = {
        "seed": args.seed,
        "threads": args.threads,
        "pool": os.path.relpath(args.pool, REPO) if Path(args.pool).is_absolute() else args.pool,
        "pool_rows": len(rows),
        "train_rows": len(train_rows),
        "heldout_rows": len(held_rows),
        "train_tokens_per_pass": n_train_tokens,
        "tokenizer": {
            "type": "byte-level BPE (HF tokenizers)",
            "vocab_size": vocab,
            "special_tokens": SPECIAL_TOKENS,
            "pad_token": "<unk> (no separate pad)",
            "adds_bos": True,
            "adds_eos": False,
        },
        "model": {
            "architecture": "LlamaForCausalLM",
            "hidden_size": args.hidden,
            "num_hidden_layers": args.layers,
            "num_attention_heads": args.heads,
            "num_key_value_heads": args.heads,
            "intermediate_size": args.intermediate,
            "max_position_embeddings": args.max_length,
            "tie_word_embeddings": True,
            "dtype": "float32",
        },
        "parameters": n_params,
        "training": {
            "objective": "next-token loss on all tokens, packed blocks",
            "block_size": block,
            "batch_size": bs,
            "steps": args.steps,
            "tokens_seen": args.steps * bs * block,
            "optimizer": "AdamW(betas=(0.9, 0.95), wd=0.01)",
            "lr": args.lr,
            "schedule": f"linear warm-up {args.warmup_steps} steps, cosine to 10%",
            "grad_clip": 1.0,
            "first_loss": losses[0],
            "last10_mean_loss": sum(losses[-10:]) / len(losses[-10:]),
        },
        "heldout_loss": {
            "untrained": loss_init,
            "trained": loss_final,
            "log_vocab": math.log(vocab),
        },
        "train_wall_seconds": round(train_wall, 1),
        "train_cpu_seconds": round(train_cpu, 1),
        "total_wall_seconds": round(time.time() - t_start, 1),
        "total_cpu_seconds": round(time.process_time() - cpu_start, 1),
        "load_average_at_end": list(os.getloadavg()),
        "weights_bytes": weight_bytes,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": sys.version.split()[0],
        },
    }
    (tmp / "training_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    folder_bytes = sum(p.stat().st_size for p in tmp.iterdir() if p.is_file())
    report["folder_bytes"] = folder_bytes
    (tmp / "training_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    # reload check: offline, Auto classes
    m2 = AutoModelForCausalLM.from_pretrained(tmp)
    t2 = AutoTokenizer.from_pretrained(tmp)
    text, _ = render_tulu(held_rows[0]["messages"], t2.eos_token)
    ids = t2(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        check = m2(input_ids=ids, labels=ids).loss.item()
    assert math.isfinite(check), check
    print(f"reload check: loss {check:.4f} on a held-out row", flush=True)

    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    print(json.dumps(report, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
