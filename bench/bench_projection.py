"""How well each projection preserves cosines, and how fast it is, side by side in one run.

For a batch of gradients X [B, dim_in] we compute the exact pairwise cosines (unprojected,
float64), then for each projector (projection.py) the cosines after projecting to d and
normalising: mean / max absolute error over all pairs, and the Spearman rank correlation of
the pairwise cosines with the exact ones. Speed: the first call (which generates the random
map) and a second call (cached where the projector caches), each as a ratio to the
LESS-faithful Rademacher projector measured in the same run.

Gradient sources:
  synthetic  LoRA-like: per module a low-rank (outer product) structure shared within
             clusters of samples, heavy-tailed scales across modules, plus noise.
  model      real per-sample LoRA gradients (clusterucb_core.features.gradients) of a randomly
             initialised Llama with LoRA B randomised (as after a warm-up), on demo-pool chats
             fed as UTF-8 bytes (so the task families give real structure). Uses the bundled
             demo model instead when sample_data/demo_model exists.

    python bench/bench_projection.py [--quick] [--source synthetic|model|both]

--quick (dim_in 65k, d 1024, B 32) takes well under a minute; the full run (dim_in 1M,
d 8192, B 64) takes ~5 minutes of CPU, most of it the dense Rademacher GEMMs. Its figures
are in projection.py's docstring, where they choose DEFAULT_PROJECTOR.

Last line: key=value pairs (errors for each projector, speed ratios vs rademacher).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clusterucb_core.features.projection import make_projector  # noqa: E402
from clusterucb_core.features.rowsource import normalize_rows  # noqa: E402

CONFIGS = [  # (label, name, options)
    ("rademacher", "rademacher", {}),
    ("rademacher_nocache", "rademacher", {"cache_bytes": 0}),
    ("countsketch", "countsketch", {}),
    ("sjlt4", "countsketch", {"nnz": 4}),
    ("srht", "srht", {}),
]


# ------------------------------------------------------------------------------ sources
def synthetic_gradients(B: int, dim_in: int, seed: int = 0) -> torch.Tensor:
    """LoRA-like gradients: modules of (rank-1 outer products shared by a cluster) + noise."""
    g = torch.Generator().manual_seed(seed)
    n_clusters, K = 8, 16
    # modules of ~sqrt-shaped matrices, until dim_in is covered
    sizes, total = [], 0
    while total < dim_in:
        rows = int(torch.randint(16, 64, (1,), generator=g))
        cols = int(torch.randint(256, 2048, (1,), generator=g))
        size = min(rows * cols, dim_in - total)
        sizes.append((rows, cols, size))
        total += size
    basis = torch.empty(K, dim_in)
    off = 0
    for rows, cols, size in sizes:
        u = torch.randn(K, rows, 1, generator=g)
        v = torch.randn(K, 1, cols, generator=g)
        scale = float(torch.exp(torch.randn(1, generator=g) * 1.5))  # heavy-tailed modules
        basis[:, off:off + size] = (u * v).reshape(K, -1)[:, :size] * scale
        off += size
    cluster = torch.randint(0, n_clusters, (B,), generator=g)
    own = torch.randn(n_clusters, K, generator=g) * (torch.rand(n_clusters, K, generator=g) < 0.3)
    mix = own[cluster] + 0.5 * torch.randn(B, K, generator=g)
    x = mix @ basis
    x += 0.5 * x.std() * torch.randn(B, dim_in, generator=g)
    return x


def model_gradients(B: int, quick: bool, seed: int = 0) -> tuple[torch.Tensor, str]:
    from clusterucb_core.config import DEMO_MODEL, DEMO_POOL, LoraSpec
    from clusterucb_core.features.gradients import per_sample_gradients
    from clusterucb_core.features.model import add_lora

    torch.manual_seed(seed)
    rows = [json.loads(line) for line in DEMO_POOL.read_text().splitlines()[:4 * B]]
    rng = np.random.default_rng(seed)
    rows = [rows[i] for i in rng.choice(len(rows), B, replace=False)]
    max_len = 48 if quick else 96
    if (DEMO_MODEL / "config.json").exists():
        from clusterucb_core.config import ModelSpec
        from clusterucb_core.data.formatting import collate, encode_chat
        from clusterucb_core.features.model import load_model

        model, tok, _, _ = load_model(ModelSpec(device="cpu"))
        encs = [encode_chat(r["messages"], tok, max_len) for r in rows]
        batch = collate(encs, tok.pad_token_id)
        what = f"demo model {DEMO_MODEL.name}"
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        hidden = 128 if quick else 384
        cfg = LlamaConfig(vocab_size=260, hidden_size=hidden, intermediate_size=2 * hidden,
                          num_hidden_layers=2 if quick else 4, num_attention_heads=4,
                          num_key_value_heads=4, max_position_embeddings=256)
        model = LlamaForCausalLM(cfg)
        ids = []
        for r in rows:
            text = "".join(f"<{m['role']}>\n{m['content']}\n" for m in r["messages"])
            ids.append(list(text.encode("utf-8"))[:max_len])
        L = max(map(len, ids))
        input_ids = torch.zeros(B, L, dtype=torch.long)
        mask = torch.zeros(B, L, dtype=torch.long)
        for i, seq in enumerate(ids):
            input_ids[i, :len(seq)] = torch.tensor(seq)
            mask[i, :len(seq)] = 1
        labels = input_ids.masked_fill(mask == 0, -100)
        batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
        what = f"random Llama h={hidden} on demo-pool bytes"
    model = add_lora(model, LoraSpec(rank=16, alpha=64, dropout=0.0))
    with torch.no_grad():  # as after a warm-up: B is not zero, so A gets gradient too
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    grads = per_sample_gradients(model, batch, mode="sgd")
    return grads, what


# ------------------------------------------------------------------------------ measuring
def pair_stats(exact: np.ndarray, approx: np.ndarray) -> dict[str, float]:
    from scipy.stats import spearmanr

    iu = np.triu_indices(len(exact), 1)
    e, a = exact[iu], approx[iu]
    err = np.abs(a - e)
    return {"mean_err": float(err.mean()), "max_err": float(err.max()),
            "spearman": float(spearmanr(e, a).statistic)}


def cosines(x: torch.Tensor) -> np.ndarray:
    u = normalize_rows(x.numpy())[0]
    return u.astype(np.float64) @ u.T.astype(np.float64)


def run_source(label: str, X: torch.Tensor, d: int, seeds: int) -> dict[str, dict[str, float]]:
    B, n = X.shape
    exact = cosines(X)
    iu = np.triu_indices(B, 1)
    print(f"\n== {label}: B={B} dim_in={n:,} d={d}  exact pairwise cosines: "
          f"mean {exact[iu].mean():.3f}, std {exact[iu].std():.3f}, "
          f"range [{exact[iu].min():.3f}, {exact[iu].max():.3f}]")
    print(f"   JL reference: std of a cosine estimate ~ sqrt((1+c^2)/d) = "
          f"{np.sqrt((1 + exact[iu] ** 2) / d).mean():.4f}; errors are averaged over "
          f"{seeds} seeds (one draw is noisy), times are seed 0's")
    print(f"{'projector':<20}{'first s':>9}{'warm s':>9}{'mean|err|':>16}{'max|err|':>10}"
          f"{'spearman':>10}")
    out = {}
    for name, kind, opts in CONFIGS:
        proj = make_projector(kind, n, d, seed=0, **opts)
        t0 = time.perf_counter()
        y = proj.project(X)
        first = time.perf_counter() - t0
        warm = []
        for _ in range(3 if first < 2 else 1):  # best of 3 when cheap (the machine is shared)
            t0 = time.perf_counter()
            y2 = proj.project(X)
            warm.append(time.perf_counter() - t0)
            assert torch.equal(y, y2), f"{name}: two calls disagree"
        del proj, y2
        if name == "rademacher_nocache":  # the same map as rademacher: only its speed differs
            stats = {k: v for k, v in out["rademacher"].items() if not k.endswith("_s")}
        else:
            runs = [pair_stats(exact, cosines(y))]
            for seed in range(1, seeds):
                runs.append(pair_stats(exact, cosines(
                    make_projector(kind, n, d, seed=seed, **opts).project(X))))
            stats = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
            stats["mean_err_sd"] = float(np.std([r["mean_err"] for r in runs]))
        del y
        stats.update(first_s=first, warm_s=min(warm))
        out[name] = stats
        print(f"{name:<20}{stats['first_s']:>9.3f}{stats['warm_s']:>9.3f}"
              f"{stats['mean_err']:>9.4f}+-{stats['mean_err_sd']:.4f}{stats['max_err']:>10.4f}"
              f"{stats['spearman']:>10.4f}")
    ref = out["rademacher"]
    print("ratios vs rademacher (speed = rademacher time / this time; err = this / rademacher):")
    for name in out:
        s = out[name]
        print(f"  {name:<20} speed first x{ref['first_s'] / s['first_s']:.1f}, "
              f"warm x{ref['warm_s'] / s['warm_s']:.1f}; mean err x"
              f"{s['mean_err'] / ref['mean_err']:.2f}, "
              f"max err x{s['max_err'] / ref['max_err']:.2f}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (well under a minute)")
    ap.add_argument("--source", choices=["synthetic", "model", "both"], default="both")
    ap.add_argument("--dim-in", type=int, default=None)
    ap.add_argument("--dim-out", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None, help="projection seeds per projector")
    args = ap.parse_args()
    n = args.dim_in or (65_000 if args.quick else 1_000_000)
    d = args.dim_out or (1024 if args.quick else 8192)
    B = args.batch or (32 if args.quick else 64)
    seeds = args.seeds or (4 if args.quick else 3)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    results = {}
    if args.source in ("synthetic", "both"):
        results["syn"] = run_source("synthetic LoRA-like", synthetic_gradients(B, n), d, seeds)
    if args.source in ("model", "both"):
        try:
            X, what = model_gradients(B, args.quick)
            results["model"] = run_source(f"model gradients ({what})", X, d, seeds)
        except Exception as exc:  # the engine's gradient module is optional here
            print(f"\nmodel gradients unavailable: {type(exc).__name__}: {exc}")
    kv = []
    for src, out in results.items():
        ref = out["rademacher"]
        for name, s in out.items():
            kv.append(f"{src}_{name}_err={s['mean_err']:.4f}")
            kv.append(f"{src}_{name}_maxerr={s['max_err']:.4f}")
            kv.append(f"{src}_{name}_spearman={s['spearman']:.4f}")
            if name != "rademacher":
                kv.append(f"{src}_{name}_speedup={ref['warm_s'] / s['warm_s']:.2f}")
        kv.append(f"{src}_rademacher_warm_s={ref['warm_s']:.3f}")
        kv.append(f"{src}_rademacher_first_s={ref['first_s']:.3f}")
    print(" ".join(kv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
