"""Gradient features: this engine vs the LESS reference path vs the unavoidable work, side by side.

On the same rows and the same model (LoRA with a warm-up-like state: B != 0, Adam m, v), time

  (a) the LESS-style reference path as it runs on a CPU: a loop over rows at batch size 1
      (`model(**batch).loss.backward()`, full-vocabulary logits), the full flattened LoRA
      gradient, the Adam transform, then every 16 rows a projection to d with a faithful clone
      of TRAK's `BasicProjector` (what LESS falls back to without CUDA): the +-1 matrix in
      column blocks of 128, every block regenerated with `bernoulli_` at every call;
  (b) this engine: `features.featurize` -- rows sorted by length, batched per-sample gradients
      by per-layer capture (gradients.py), Adam transform, the engine's default projection
      (projection.py; also timed with the cached Rademacher one, bR), normalisation;
  (c) the bare batched forward+backward of the same batches with nothing else: the same loss
      (per-row means, output layer on labelled positions only) and one `backward()` -- the
      work no per-sample method can avoid.

Agreement: the reference gradients are also projected with *our* Rademacher matrix (regenerated
at every call, `cache_bytes=0`, timed separately as a'), so (a') and the engine with the
Rademacher projection (bR) must agree row by row (cosine >= 0.999). FLOP rate: (b)'s
floating-point operations (counted with torch.utils.flop_counter in a separate pass) per second
of (b), as a fraction of the float32 matmul rate measured in the same run (square GEMMs, best
of several).

Models: the bundled demo model on demo-pool chats (skipped when sample_data/demo_model is
missing), and a randomly initialised Llama (~58M parameters: hidden 512, 8 layers, vocabulary
32000) on synthetic rows of ~256 tokens (the last 40% trained on).

    python bench/bench_gradients.py [--quick] [--rows N] [--batch-size B] [--dim D]

`--quick` (under a minute): a ~6M-parameter Llama at ~128 tokens, d=2048, 16 rows.
Last line: `speedup=<(a)/(b)> overhead=<(b)/(c)> flops_fraction=<f>` for the largest model.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clusterucb_core.config import (  # noqa: E402
    DEMO_MODEL,
    DEMO_POOL,
    FeatureSpec,
    LoraSpec,
    ModelSpec,
)
from clusterucb_core.data.formatting import Encoded, collate, encode_chats  # noqa: E402
from clusterucb_core.features import engine as F  # noqa: E402
from clusterucb_core.features import gradients as G  # noqa: E402
from clusterucb_core.features import model as M  # noqa: E402
from clusterucb_core.features.projection import make_projector  # noqa: E402
from clusterucb_core.features.rowsource import normalize_rows  # noqa: E402

LESS_INTERVAL = 16  # LESS projects every 16 rows
TRAK_BLOCK = 128  # LESS passes block_size=128 to TRAK's projector


class TrakBasicProjector:
    """CPU clone of trak.projectors.BasicProjector (proj_type rademacher)."""

    def __init__(self, grad_dim: int, proj_dim: int, seed: int = 0, block_size: int = TRAK_BLOCK):
        self.grad_dim, self.proj_dim = grad_dim, proj_dim
        self.block_size = min(proj_dim, block_size)
        self.num_blocks = math.ceil(proj_dim / self.block_size)
        self.generator = torch.Generator()
        self.proj_matrix = torch.empty(grad_dim, self.block_size, dtype=torch.float32)
        self.generator_states = []
        for i in range(self.num_blocks):
            self.generator = self.generator.manual_seed(seed + int(1e4) * i)
            self.generator_states.append(self.generator.get_state())

    def generate_sketch_matrix(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)
        self.proj_matrix.bernoulli_(p=0.5, generator=self.generator)
        self.proj_matrix *= 2.0
        self.proj_matrix -= 1.0

    def project(self, grads: torch.Tensor) -> torch.Tensor:
        sketch = torch.zeros(grads.size(0), self.proj_dim, dtype=torch.float32)
        for ind in range(self.num_blocks):
            self.generate_sketch_matrix(self.generator_states[ind])
            st, ed = ind * self.block_size, min((ind + 1) * self.block_size, self.proj_dim)
            sketch[:, st:ed] = grads @ self.proj_matrix[:, : ed - st]
        return sketch


# ------------------------------------------------------------------------------ setup
def matmul_rate(n: int = 2048, reps: int = 3) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def random_llama(folder: Path, hidden: int, layers: int, vocab: int, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if (folder / "config.json").exists() and (folder / "tokenizer.json").exists():
        return folder
    # a word-level tokenizer of the right size (rows are synthetic ids; eos/unk are needed)
    vocab_map = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab)}}
    tk = Tokenizer(models.WordLevel(vocab_map, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(folder)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=int(hidden * 2.6875),
                      num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                      num_key_value_heads=max(1, hidden // 64), max_position_embeddings=2048,
                      tie_word_embeddings=False)
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def synthetic_rows(n: int, seq: int, vocab: int, seed: int = 0) -> list[Encoded]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        length = int(rng.integers(int(seq * 0.75), int(seq * 1.25) + 1))
        ids = rng.integers(3, vocab, size=length).tolist()
        cut = int(length * 0.6)
        rows.append(Encoded(ids, [-100] * cut + ids[cut:], False))
    return rows


def demo_rows(tok, n: int, max_length: int) -> list[Encoded]:
    chats = []
    with open(DEMO_POOL) as fh:
        for line in fh:
            rec = json.loads(line)
            if "messages" in rec:
                chats.append(rec["messages"])
            if len(chats) >= 4 * n:
                break
    encs, _ = encode_chats(chats, tok, max_length)
    return [e for e in encs if e.n_labels > 0][:n]


def warm_state(model, seed: int = 0) -> dict:
    """Make the LoRA look trained (B != 0, else every A gradient is 0) + an Adam state."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    with torch.no_grad():
        for name, p in M.lora_parameters(model):
            if ".lora_B." in name:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            m = 1e-4 * torch.randn(p.shape, generator=gen)
            v = 1e-8 * torch.rand(p.shape, generator=gen)
            state[name] = (m, v)
    return state


# ------------------------------------------------------------------------------ the three paths
def path_reference(model, pad_id, encs, state, dim, seed):
    """(a): LESS loop. Returns (times dict, features projected by TRAK clone, by our matrix)."""
    params = [p for _, p in M.lora_parameters(model)]
    m = torch.cat([state[n][0].reshape(-1) for n, _ in M.lora_parameters(model)])
    v = torch.cat([state[n][1].reshape(-1) for n, _ in M.lora_parameters(model)])
    P = m.numel()
    trak = TrakBasicProjector(P, dim, seed=seed)
    ours = make_projector("rademacher", P, dim, seed=seed, cache_bytes=0)
    t_grad = t_trak = t_ours = 0.0
    buf: list[torch.Tensor] = []
    out_trak, out_ours = [], []
    for i, enc in enumerate(encs):
        t = time.perf_counter()
        batch = collate([enc], pad_id)
        model.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        g = torch.cat([p.grad.reshape(-1) for p in params])
        g = (0.9 * m + 0.1 * g) / torch.sqrt(0.999 * v + 0.001 * g * g + 1e-8)
        buf.append(g)
        t_grad += time.perf_counter() - t
        if len(buf) == LESS_INTERVAL or i == len(encs) - 1:
            stack = torch.stack(buf)
            t = time.perf_counter()
            out_trak.append(trak.project(stack))
            t_trak += time.perf_counter() - t
            t = time.perf_counter()
            out_ours.append(ours.project(stack))
            t_ours += time.perf_counter() - t
            buf.clear()
    model.zero_grad(set_to_none=True)
    feats_trak = normalize_rows(torch.cat(out_trak))[0]
    feats_ours = normalize_rows(torch.cat(out_ours))[0]
    return {"grad": t_grad, "trak": t_trak, "ours_regen": t_ours}, feats_trak, feats_ours


def path_engine(model, pad_id, encs, state, projector, batch_size):
    spec = FeatureSpec(kind="gradient", mode="adam", dim=projector.dim_out,
                       batch_size=batch_size)
    t = time.perf_counter()
    feats, valid = F.featurize(model, pad_id, encs, spec, projector.dim_out,
                               projector=projector, adam_state=state)
    return time.perf_counter() - t, feats, valid


def batches_like_engine(encs, batch_size):
    order = sorted(range(len(encs)), key=lambda i: (len(encs[i].input_ids), i))
    return [order[k:k + batch_size] for k in range(0, len(order), batch_size)]


def path_bare(model, pad_id, encs, batch_size, hf_loss: bool = False):
    """(c): the same batches, one plain forward+backward each (LoRA .grad accumulated)."""
    t = time.perf_counter()
    for idx in batches_like_engine(encs, batch_size):
        batch = collate([encs[i] for i in idx], pad_id)
        model.zero_grad(set_to_none=True)
        if hf_loss:
            loss = model(**batch).loss
        else:
            losses, _ = G.row_losses(model, batch)
            loss = losses.sum()
        loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


# ------------------------------------------------------------------------------ one model
def bench_model(label, model_dir, encs_fn, args, rates):
    spec = ModelSpec(name_or_path=str(model_dir), max_length=args.max_length)
    lora = LoraSpec(rank=args.lora_rank, alpha=4 * args.lora_rank)
    model, tok, _, _ = M.prepare_model(spec, lora, None, seed=0)
    state = warm_state(model)
    encs = encs_fn(tok)
    n_params = sum(p.numel() for p in model.parameters())
    P = G.n_params(model)
    tokens = sum(len(e.input_ids) for e in encs)
    print(f"\n== {label}: {n_params / 1e6:.1f}M parameters, LoRA r={args.lora_rank} on "
          f"q,k,v,o = {P:,} gradient coordinates, {len(encs)} rows, {tokens / len(encs):.0f} "
          f"tokens/row, d={args.dim}, batch {args.batch_size}", flush=True)

    default = FeatureSpec().projection  # what the engine uses unless told otherwise
    names = ["rademacher"] + ([default] if default != "rademacher" else [])
    projectors, setup = {}, {}
    for name in names:  # one-time generation of each random map, timed on its own
        projectors[name] = make_projector(name, P, args.dim, seed=0)
        t = time.perf_counter()
        projectors[name].project(torch.zeros(1, P))
        setup[name] = time.perf_counter() - t
    # (b) for each projection and (c), interleaved, best of `reps` each (the machine is shared)
    t_b = {name: float("inf") for name in names}
    feats_b: dict = {}
    t_c = float("inf")
    for _ in range(args.reps):
        rates.append(matmul_rate())
        for name in names:
            tb, feats_b[name], valid = path_engine(model, tok.pad_token_id, encs, state,
                                                   projectors[name], args.batch_size)
            assert valid.all()
            t_b[name] = min(t_b[name], tb)
        t_c = min(t_c, path_bare(model, tok.pad_token_id, encs, args.batch_size))
    t_c_hf = path_bare(model, tok.pad_token_id, encs, args.batch_size, hf_loss=True)
    # (a)
    times_a, a_trak, a_ours = path_reference(model, tok.pad_token_id, encs, state, args.dim, 0)
    t_a = times_a["grad"] + times_a["trak"]
    t_a_ours = times_a["grad"] + times_a["ours_regen"]
    rates.append(matmul_rate())
    rate = max(rates)  # the machine's best observed GEMM rate
    cos = (torch.from_numpy(feats_b["rademacher"]) * a_ours).sum(dim=1).numpy()
    cos_trak_vs_ours = float(((a_trak * a_ours).sum(dim=1)).abs().mean())

    # matmul FLOPs seen by torch's counter (linear layers, per-sample bmm, GEMM projections);
    # it misses the Rademacher projector's in-place addmm_, added as 2 * rows * P * d.
    # Attention and the count sketch's sparse adds (~2 * rows * P) are not counted.
    def flops_of(name: str) -> int:
        extra = 2 * len(encs) * P * args.dim if name == "rademacher" else 0
        return count_flops(lambda: path_engine(model, tok.pad_token_id, encs, state,
                                               projectors[name], args.batch_size)) + extra

    flops_b = flops_of(default)
    flops_c = count_flops(lambda: path_bare(model, tok.pad_token_id, encs, args.batch_size))

    n = len(encs)
    print(f"(a)  LESS reference, batch size 1 + TRAK BasicProjector : {t_a:8.2f} s "
          f"({n / t_a:6.2f} rows/s)  [fwd+bwd+adam {times_a['grad']:.2f} s, "
          f"projection {times_a['trak']:.2f} s]")
    print(f"(a') LESS reference + our matrix regenerated per call  : {t_a_ours:8.2f} s "
          f"({n / t_a_ours:6.2f} rows/s)  [projection {times_a['ours_regen']:.2f} s]")
    for name in names:
        tag = "(b) " if name == default else "(bR)"
        extra = f", cache {projectors[name].cache_mode}" if name == "rademacher" else ""
        print(f"{tag} this engine, {name + (' (default)' if name == default else ''):<27}   : "
              f"{t_b[name]:8.2f} s ({n / t_b[name]:6.2f} rows/s)  [+ one-time map "
              f"generation {setup[name]:.2f} s{extra}]")
    print(f"(c)  bare batched forward+backward                     : {t_c:8.2f} s "
          f"({n / t_c:6.2f} rows/s)  [HF loss with full-vocab logits: {t_c_hf:.2f} s]")
    print(f"agreement (a') vs this engine with Rademacher: cosine per row min {cos.min():.6f} "
          f"mean {cos.mean():.6f} (need >= 0.999); |cos| TRAK-matrix vs our-matrix features "
          f"(different random maps, for scale): {cos_trak_vs_ours:.3f}")
    tb = t_b[default]
    fr_b = flops_b / tb
    print(f"FLOPs (matmuls; attention not counted): (b) {flops_b / 1e9:.1f} GFLOP = "
          f"{fr_b / 1e9:.1f} GFLOP/s = {fr_b / rate:.2f} of the fp32 matmul rate "
          f"{rate / 1e9:.1f} GFLOP/s; (c) {flops_c / 1e9:.1f} GFLOP = "
          f"{flops_c / t_c / 1e9:.1f} GFLOP/s")
    speedup, overhead = t_a / tb, tb / t_c
    line = (f"ratios: speedup (a)/(b) = {speedup:.2f} (incl. one-time map generation: "
            f"{t_a / (tb + setup[default]):.2f}), overhead (b)/(c) = {overhead:.3f}")
    if default != "rademacher":
        tr = t_b["rademacher"]
        line += (f"; with Rademacher: speedup {t_a / tr:.2f} (vs a': {t_a_ours / tr:.2f}), "
                 f"overhead {tr / t_c:.3f}")
    print(line, flush=True)
    if cos.min() < 0.999:
        raise SystemExit(f"FAIL: (a') and the engine disagree (min cosine {cos.min():.6f})")
    return speedup, overhead, fr_b / rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smaller run, under a minute")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--dim", type=int, default=None)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=320)
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--reps", type=int, default=None,
                    help="runs of (b) and (c), best taken (default 3; 2 with --quick)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: steady on a shared machine; 0 = "
                         "torch.s choice)")
    ap.add_argument("--cache", default=str(ROOT / "test-artifacts" / "bench_models"))
    args = ap.parse_args()
    args.reps = args.reps or (2 if args.quick else 3)
    if args.quick:
        args.rows = args.rows or 16
        args.dim = args.dim or 2048
        hidden, layers, vocab, seq = 256, 4, 8000, 128
    else:
        args.rows = args.rows or 32
        args.dim = args.dim or 8192
        hidden, layers, vocab, seq = 512, 8, 32000, 256
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rates = [matmul_rate()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32; fp32 matmul "
          f"rate (2048^3 GEMM, best of 3, re-measured between runs, max kept): "
          f"{rates[0] / 1e9:.1f} GFLOP/s now", flush=True)
    results = []
    if not args.skip_demo and (DEMO_MODEL / "config.json").exists():
        results.append(bench_model("demo model", DEMO_MODEL,
                                   lambda tok: demo_rows(tok, args.rows, args.max_length),
                                   args, rates))
    elif not args.skip_demo:
        print("\n(demo model missing: sample_data/demo_model; skipped)")
    folder = random_llama(Path(args.cache) / f"llama_h{hidden}_l{layers}_v{vocab}", hidden,
                          layers, vocab)
    results.append(bench_model(f"random Llama h{hidden} x{layers}", folder,
                               lambda tok: synthetic_rows(args.rows, seq, vocab), args, rates))
    speedup, overhead, frac = results[-1]
    print(f"\nspeedup={speedup:.2f} overhead={overhead:.3f} flops_fraction={frac:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
