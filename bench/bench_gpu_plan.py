"""What per-row LoRA gradient features of a big model cost on a GPU: the plan, and (on CUDA) a
measurement.

For a Llama-style model (default: Llama-2-7B's shape, LoRA r=128 on q/k/v/o, bf16) at
max_length tokens (default 2048), print for each device memory size the plan the feature
engine starts from (clusterucb_core/features/memplan.py): weights, the count sketch's resident hash,
bytes per row, rows and tokens per batch, and the overhead over a plain forward+backward
expected from counted work (datasheet rates derated 50%).

On a CUDA machine (or with --time) it then builds a randomly initialised model of that shape
on the GPU (no download), rows of max_length random tokens with the second half labelled, and
times, on the same batches: (f) `features.featurize` -- per-row Adam-preconditioned LoRA
gradients, count sketch to d, normalisation -- with the engine's own memory-planned budget;
(b) the plain batched forward+backward of the same loss into the LoRA weights' .grad (what any
LoRA training step costs). The last line is

    tokens_per_s=<featurized tokens/s> overhead_vs_fwd_bwd=<f/b> peak_mem_gb=<peak in (f)>

Before the timing it prints the cost planner's whole-path prediction for this shape
(clusterucb_core/features/cost.py, the formula `clusterucb plan` uses): a pool of --pool-rows
rows of max_length tokens, ClusterUCB at a 20% budget with first-block cluster features
against exhaustive LESS. Without a GPU its rates are an estimate: the gradient pass at
--tokens-per-s (default: the H200 measurement in the README), the forward-only features at the
same FLOP rate, model loads at 2 GB/s; its line is

    predicted_speedup=<s> bound=<1/(c+b)> c=<cluster features / gradient pass> (estimates)

    python bench/bench_gpu_plan.py [--device-gb 80,141] [--layers 32] [--rows N] [--no-time]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clusterucb_core.features import memplan  # noqa: E402
from clusterucb_core.selection import topm  # noqa: E402

GB = 1e9


def print_plan(shape: memplan.ModelShape, device_gb: list[float], max_length: int) -> None:
    print(f"model: {shape.params / 1e9:.2f}B parameters (hidden {shape.hidden}, {shape.layers} "
          f"layers, MLP {shape.intermediate}, vocabulary {shape.vocab}), LoRA r={shape.lora_rank}"
          f" on {', '.join(shape.lora_targets)}: {shape.lora_coords:,} gradient coordinates a "
          f"row ({4 * shape.lora_coords / GB:.2f} GB in float32), max_length {max_length}")
    head = (f"{'device':>12} {'weights':>8} {'proj':>6} {'act/token':>10} {'row':>8} "
            f"{'rows/batch':>10} {'tokens/batch':>12} {'exp. overhead':>13}")
    print(head)
    for gb in device_gb:
        p = memplan.plan(shape, int(gb * GB), max_length)
        name = next((n for n, v in memplan.DEVICES.items() if abs(v[0] / GB - gb) < 1), None)
        bw, fl = memplan.DEVICES.get(name, (0, 3.35e12, 0.5 * 989e12))[1:]
        over = memplan.expected_overhead(shape, max(1, p.rows_at_max_length),
                                         max(1, p.tokens_per_batch), bw, fl)
        print(f"{(name or f'{gb:g} GB'):>12} {p.weights_bytes / GB:>7.1f}G "
              f"{p.projection_bytes / GB:>5.2f}G {p.token_bytes / 1e6:>8.2f}MB "
              f"{p.row_bytes / GB:>7.2f}G {p.rows_at_max_length:>10} {p.tokens_per_batch:>12,} "
              f"{over:>12.3f}x")


def print_path_plan(shape: memplan.ModelShape, max_length: int, n_rows: int, n_target: int,
                    tokens_per_s: float, device_gb: float) -> None:
    """The planner's stages and whole-path speed-up for this shape, from estimated rates."""
    import numpy as np

    from clusterucb_core.features import cost
    from clusterucb_core.features.planner import format_plan

    grad_tok = cost.gradient_flops(shape, 1, max_length, max_length / 2) / max_length
    op = cost.OpCost(per_batch_s=0.0, per_flop_s=1.0 / (tokens_per_s * grad_tok))
    cal = cost.Calibration(device="cuda (estimate)", model_load_s=shape.params * 2 / 2e9,
                           gradient=op, forward=op, train=op,
                           note=f"no GPU timed: gradient pass at {tokens_per_s:,.0f} tokens/s, "
                                "forward-only at the same FLOP rate, loads at 2 GB/s")
    def batching(kind: str, max_rows: int) -> cost.Batching:
        p = memplan.plan(shape, int(device_gb * GB), max_length, kind=kind)
        return cost.Batching(max_rows, p.usable_bytes, p.token_bytes, p.row_fixed_bytes)

    rb, cb = batching("gradient", 16), batching("hidden", 32)
    rows = rb.rows_at(max_length)
    pool = cost.Tokens(np.full(n_rows, max_length), np.full(n_rows, max_length // 2))
    target = cost.Tokens(np.full(n_target, max_length), np.full(n_target, 1))
    run = cost.RunShape(n_rows=n_rows, warmup=False, cluster_layers=1, reward_batching=rb,
                        cluster_batching=cb, cluster_dim=shape.hidden)
    plan = cost.plan_stages(shape, cal, pool, target, run).to_dict()
    plan["calibration"] = cal.to_dict()
    plan["calibrated_now"] = True
    print(f"\nthe planner on {n_rows:,} rows of {max_length} tokens, {n_target} target "
          f"examples, {rows} rows a batch ({device_gb:g} GB), budget 20%, first-block cluster "
          "features:")
    print(format_plan(plan))
    print(f"predicted_speedup={plan['predicted_speedup']:.2f} bound={plan['bound']:.2f} "
          f"c={plan['feature_cost_ratio']:.4f} (estimates: {plan['bound_formula']})",
          flush=True)


def print_round_tokens(shape: memplan.ModelShape, device_gb: list[float], max_length: int,
                       row_tokens: int, draw_batch: int = 8) -> None:
    """Tokens one lazy round hands the gradient pass: one arm's `draw_batch` rows against
    the top-m arms (SelectionSpec.arms_per_round) with m chosen to fill the token budget."""
    for gb in device_gb:
        p = memplan.plan(shape, int(gb * GB), max_length)
        m = topm.arms_for_budget(topm.rows_at_length(p.tokens_per_batch, [row_tokens]),
                                 draw_batch)
        one = min(draw_batch * row_tokens, p.tokens_per_batch)
        many = min(m * draw_batch * row_tokens, p.tokens_per_batch)
        print(f"{gb:g} GB, rows of {row_tokens} tokens, draw batch {draw_batch}: a round fills "
              f"{one:,} of {p.tokens_per_batch:,} tokens a batch with 1 arm "
              f"({one / max(p.tokens_per_batch, 1):.0%}), {many:,} with the top-{m} arms "
              f"({many / max(p.tokens_per_batch, 1):.0%})")


def build_model(shape: memplan.ModelShape, device):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from clusterucb_core.config import LoraSpec
    from clusterucb_core.features.model import add_lora

    cfg = LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.hidden,
                      intermediate_size=shape.intermediate, num_hidden_layers=shape.layers,
                      num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
                      max_position_embeddings=4096, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    lora = LoraSpec(rank=shape.lora_rank, alpha=4 * shape.lora_rank, dropout=0.0,
                    target_modules=shape.lora_targets)
    model = add_lora(model, lora, seed=0)
    with torch.no_grad():  # a warm-up-like state: B != 0
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1e-3)
    return model.to(device)


def make_rows(n: int, length: int, vocab: int, seed: int = 0):
    import torch

    from clusterucb_core.data.formatting import IGNORE_INDEX

    g = torch.Generator().manual_seed(seed)

    class Enc:  # the fields collate() reads
        def __init__(self, ids, labels):
            self.input_ids, self.labels = ids, labels

    rows = []
    for _ in range(n):
        ids = torch.randint(3, vocab, (length,), generator=g).tolist()
        labels = [IGNORE_INDEX] * (length // 2) + ids[length // 2:]
        rows.append(Enc(ids, labels))
    return rows


def time_features(shape: memplan.ModelShape, max_length: int, n_rows: int, dim: int,
                  device) -> None:
    import torch

    from clusterucb_core.config import FeatureSpec
    from clusterucb_core.data.formatting import collate
    from clusterucb_core.features import engine as F
    from clusterucb_core.features import gradients as G
    from clusterucb_core.features.projection import make_projector

    t0 = time.perf_counter()
    model = build_model(shape, device)
    torch.cuda.synchronize()
    print(f"built a random {shape.params / 1e9:.2f}B model on {torch.cuda.get_device_name()} in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    blocks = G.lora_blocks(model)
    adam = {}
    gen = torch.Generator(device=device).manual_seed(1)
    for b in blocks:
        m = torch.randn(b.shape, device=device, generator=gen) * 1e-4
        v = torch.rand(b.shape, device=device, generator=gen) * 1e-6
        adam[b.name] = (m, v)
    dim_in = sum(b.numel for b in blocks)
    proj = make_projector("countsketch", dim_in, dim, seed=0, device=device)
    t0 = time.perf_counter()
    proj.project(torch.zeros(1, dim_in, device=device))  # builds the resident hash
    torch.cuda.synchronize()
    print(f"count sketch hash: {proj.memory_plan()['state_bytes'] / GB:.2f} GB resident, built "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)
    spec = FeatureSpec(kind="gradient", mode="adam", dim=dim, batch_size=64)
    budget = F.initial_budget(model, spec, max_length, proj)
    planned = budget.rows([max_length] * 64, 0)
    limit = "no memory limit" if budget.limit_bytes is None else \
        f"limit {budget.limit_bytes / GB:.1f} GB of {torch.cuda.mem_get_info()[0] / GB:.1f} GB free"
    print(f"planned rows per batch at {max_length} tokens: {planned} ({limit})", flush=True)
    rows = make_rows(n_rows, max_length, shape.vocab)
    pad = 0

    def run_features(encs):
        return F.featurize(model, pad, encs, spec, dim, projector=proj, adam_state=adam,
                           budget=budget, buffer_bytes=0)

    run_features(rows[:max(1, planned)])  # warm-up (kernels, allocator); learns from an OOM
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    feats, valid = run_features(rows)
    torch.cuda.synchronize()
    t_feat = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / GB
    assert valid.all() and abs(float((feats ** 2).sum(1).mean()) - 1) < 1e-3
    used = budget.rows([max_length] * 64, 0)
    print(f"features: {n_rows} rows in {t_feat:.2f} s, {used} rows per batch "
          f"({budget.ooms} out-of-memory retries), peak {peak:.1f} GB", flush=True)

    params = [p for _, p in model.named_parameters() if p.requires_grad]

    def fwd_bwd(encs):
        for lo in range(0, len(encs), used):
            batch = collate(encs[lo:lo + used], pad)
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.enable_grad():
                losses, _ = G.row_losses(model, batch)
                losses.sum().backward()
            for p in params:
                p.grad = None

    fwd_bwd(rows[:used])
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fwd_bwd(rows)
    torch.cuda.synchronize()
    t_fb = time.perf_counter() - t0
    print(f"plain forward+backward of the same batches: {t_fb:.2f} s", flush=True)
    print(f"tokens_per_s={n_rows * max_length / t_feat:.0f} overhead_vs_fwd_bwd="
          f"{t_feat / t_fb:.3f} peak_mem_gb={peak:.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device-gb", default="80,141",
                    help="device memory sizes to plan for, GB (default: H100 80, H200 141)")
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--intermediate", type=int, default=11008)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--lora-rank", type=int, default=128)
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--dim", type=int, default=8192)
    ap.add_argument("--rows", type=int, default=0,
                    help="rows to time (default: 3 planned batches)")
    ap.add_argument("--no-time", action="store_true", help="print the plan only")
    ap.add_argument("--pool-rows", type=int, default=100_000,
                    help="pool rows for the whole-path prediction")
    ap.add_argument("--target-rows", type=int, default=285,
                    help="target examples for the whole-path prediction (MMLU's dev set: 285)")
    ap.add_argument("--tokens-per-s", type=float, default=10_621,
                    help="gradient-pass tokens/s the prediction assumes (default: measured on "
                         "an H200, README)")
    ap.add_argument("--row-tokens", type=int, default=0,
                    help="a pool row's typical tokens, for the round fill (default max length)")
    args = ap.parse_args()

    shape = memplan.ModelShape(hidden=args.hidden, layers=args.layers,
                               intermediate=args.intermediate, heads=args.heads,
                               kv_heads=args.kv_heads, vocab=args.vocab,
                               lora_rank=args.lora_rank)
    sizes = [float(x) for x in args.device_gb.split(",")]
    print_plan(shape, sizes, args.max_length)
    print_round_tokens(shape, sizes, args.max_length, args.row_tokens or args.max_length)
    print_path_plan(shape, args.max_length, args.pool_rows, args.target_rows,
                    args.tokens_per_s, sizes[-1])
    if args.no_time:
        return
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device here: the plan only (run on a GPU machine for the timing)")
        return
    free, total = torch.cuda.mem_get_info()
    print(f"this device: {torch.cuda.get_device_name()}, {total / GB:.1f} GB")
    print_plan(shape, [total / GB], args.max_length)
    rows = args.rows
    if rows <= 0:
        p = memplan.plan(shape, total, args.max_length)
        rows = 3 * max(1, p.rows_at_max_length)
    time_features(shape, args.max_length, rows, args.dim,
                  torch.device("cuda", torch.cuda.current_device()))


if __name__ == "__main__":
    main()
