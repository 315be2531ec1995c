"""Which cluster features, conditioning and K make ClusterUCB's selection earn its budget?

For every candidate cluster feature, on (i) the bundled demo pool + arithmetic target (its
workspace ships exhaustive scores), (ii) the real Flan CoT pool + LESS's MMLU target
(../shared/data/real, demo model; skipped when absent) and (iii) synthetic clustered rewards:

* cost: seconds to compute the feature for a seeded sample of rows divided by the seconds for
  the reward features (LESS's Adam-preconditioned projected gradients) of the same rows,
  measured in this run (best of 2, alternated);
* recall of the exhaustive top-5% and mass share (the selection's summed scores / the
  exhaustive top-5%'s) after ClusterUCB at 10/20/30% budgets, over 5 seeds (k-means seed and
  bandit seed both vary), replayed on the exhaustive scores.

Candidates: forward-only hidden states (pooling mean / answer tokens / last token; the first
L decoder blocks only; a shorter max_length for the cluster features only), the LoRA gradient
of the top block only (projected to 256), and the reward gradients themselves (the quality
ceiling, at full cost); each conditioned none / center / whiten (conditioning.py). K is set by
each rule of krule.py and by a grid. Every replay uses the shipped selection settings
(RunConfig().selection: ucb_beta, predicted draw order) unless its `options` column names a
change: the paper's random draw order, similar order, pooled variance, split hot arms.
Feature matrices and exhaustive scores are cached under bench/.cache/fidelity/ (gitignored),
so reruns only replay.

    python bench/bench_fidelity.py [--quick] [--seeds 5] [--pools demo,flan_mmlu,synthetic] [--e2e]
        [--audit]

Last line: recall_at_20=<demo> recall_real_at_20=<flan+mmlu> mass_share_at_20=<demo>
e2e_speedup_vs_exhaustive=<demo> (the whole path timed, with --e2e), otherwise
e2e_bound=<demo>: the estimate 1 / (cluster-feature cost + 0.2), an upper bound that leaves
out k-means, targets and model loading; recall_rds_at_20=<demo>: RDS+ with the same gradient
budget (fidelity_rds.py; Flan's and the gradient-free figures on the line before); with
--audit also audit_coverage=<c> audit_median_err=<e> (bench_audit.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clusterucb_core.clustering import conditioning  # noqa: E402
from clusterucb_core.clustering.kmeans import cluster_features  # noqa: E402
from clusterucb_core.clustering.krule import RULES, choose_k  # noqa: E402
from clusterucb_core.config import (  # noqa: E402
    DEMO_DIR,
    FeatureSpec,
    RunConfig,  # noqa: E402
)
from clusterucb_core.selection.oracle import TableOracle, exhaustive_top, mass_share, recall  # noqa: E402
from clusterucb_core.selection.run import SelectionRun, count_of  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import fidelity_rds  # noqa: E402
from synthetic_pools import synthetic_pool  # noqa: E402

CACHE = ROOT / "bench" / ".cache" / "fidelity"
# ../shared/data/real beside the checkout or the folder of worktrees, or $FIDELITY_REAL
_REAL_CANDIDATES = [ROOT.parent / "shared" / "data" / "real",
                    ROOT.parent.parent / "shared" / "data" / "real"]
REAL = Path(os.environ["FIDELITY_REAL"]) if os.environ.get("FIDELITY_REAL") else next(
    (p for p in _REAL_CANDIDATES if p.exists()), _REAL_CANDIDATES[0])
TOP_P = 0.05
BUDGETS = (0.1, 0.2, 0.3)
CONDS = ("none", "center", "whiten")


# ----------------------------------------------------------------------------- pools
def pool_pipeline(name: str):
    """The cached workspace of a pool: warm-up, reward store and exhaustive scores."""
    from clusterucb_core.config import load_config
    from clusterucb_core.pipeline import Pipeline

    if name == "demo":
        cfg = load_config(DEMO_DIR / "demo_run.toml")
        ws = CACHE / "demo"
        if not ws.exists():
            shutil.copytree(DEMO_DIR / "demo_workspace", ws)
    else:
        cfg = load_config(DEMO_DIR / "real_flan_mmlu.toml")
        cfg = replace(cfg, pool=str(REAL / "flan_cot_pool.jsonl"),
                      target=str(REAL / "eval" / "mmlu"))
        ws = CACHE / "flan_mmlu"
    return Pipeline(replace(cfg, workspace=str(ws), make_map=False), log=None)


def candidates(n_layers: int, quick: bool, sketch: bool = True) -> dict[str, FeatureSpec]:
    """name -> cluster FeatureSpec (the reward-gradient ceiling is added separately).

    `sketch`: also the top-block gradient sketch (a backward pass per row: on a shared 2-core
    machine it is measured on the demo pool only)."""
    out: dict[str, FeatureSpec] = {}
    poolings = ("mean",) if quick else ("mean", "answer", "last")
    for pooling in poolings:
        out[f"hidden L{n_layers} {pooling}"] = FeatureSpec(kind="hidden", batch_size=32,
                                                           pooling=pooling)
    for L in ((1,) if quick else range(1, n_layers)):
        for pooling in (("mean", "answer") if quick else ("mean", "answer", "last")):
            out[f"hidden L{L} {pooling}"] = FeatureSpec(kind="hidden", batch_size=32, layers=L,
                                                        pooling=pooling)
    out[f"hidden L{n_layers} mean len64"] = FeatureSpec(kind="hidden", batch_size=32,
                                                        max_length=64)
    out["hidden L1 mean len64"] = FeatureSpec(kind="hidden", batch_size=32, layers=1,
                                              max_length=64)
    if sketch and not quick:
        out["gradient top1 d256"] = FeatureSpec(kind="gradient", mode="adam", dim=256,
                                                batch_size=16, top_blocks=1)
    return out


def engine_for(pipe, spec: FeatureSpec, tag: str):
    from clusterucb_core.features.engine import FeatureEngine

    ckpt = pipe.checkpoints[-1] if spec.kind == "gradient" else None
    return FeatureEngine(pipe.pool, pipe.cfg.model, pipe.cfg.lora, ckpt, spec,
                         CACHE / "stores" / tag)


def timed(engine, rows: np.ndarray) -> float:
    encs = engine.encode(rows)
    t0 = time.perf_counter()
    engine.featurize(encs)
    return time.perf_counter() - t0


def one_pass_hidden(engine, specs: dict[str, FeatureSpec], n: int) -> dict[str, np.ndarray]:
    """Every hidden-state candidate of one max_length from a single forward pass over all rows
    (all layers' states at once); `check_against_product` shows they equal the product path."""
    import torch

    from clusterucb_core.data.formatting import collate
    from clusterucb_core.features import gradients as G

    encs = engine.encode(np.arange(n))
    model = engine.model
    n_layers = len(G.decoder_layers(model))
    out = {name: np.zeros((n, engine.dim), dtype=np.float32) for name in specs}
    order = sorted(range(n), key=lambda i: len(encs[i].input_ids))
    for lo in range(0, n, 64):
        idx = order[lo:lo + 64]
        batch = collate([encs[i] for i in idx], engine.tok.pad_token_id)
        with torch.no_grad():
            res = G._unwrap(model)(input_ids=batch["input_ids"],
                                   attention_mask=batch["attention_mask"],
                                   output_hidden_states=True, use_cache=False)
        for name, spec in specs.items():
            layer = spec.layers or n_layers
            h = G.pool_states(res.hidden_states[layer], batch["attention_mask"],
                              batch["labels"], spec.pooling)
            out[name][idx] = G.normalize_rows(h)[0].numpy()
    return out


def check_against_product(engine, X: np.ndarray, rows: np.ndarray, name: str) -> None:
    got, _ = engine.featurize(engine.encode(rows))
    err = float(np.abs(got - X[rows]).max())
    if err > 1e-4:
        raise SystemExit(f"{name}: the bench's one-pass features differ from the product's "
                         f"(max abs {err:.2e})")


def build_features(pipe, name: str, quick: bool, sample: int, log, sketch: bool = True
                   ) -> tuple[dict, dict]:
    """{candidate: features [N, d]}, {candidate: cost as a fraction of a reward gradient}.

    Features for every row are cached; costs are timed now, through the product's own
    FeatureEngine, on a seeded sample of rows, alternated with the reward gradients."""
    from clusterucb_core.features.gradients import decoder_layers

    folder = CACHE / name / "candidates"
    folder.mkdir(parents=True, exist_ok=True)
    reward = pipe.reward_engines[0]
    n = len(pipe.pool.table)
    rows = np.sort(np.random.default_rng(0).choice(n, size=min(sample, n), replace=False))
    n_layers = len(decoder_layers(reward.model))
    specs = candidates(n_layers, quick, sketch=sketch and name == "demo")
    feats: dict[str, np.ndarray] = {}
    engines = {c: engine_for(pipe, s, f"{name}-{c.replace(' ', '_')}") for c, s in specs.items()}
    path_of = {c: folder / (c.replace(" ", "_") + ".npy") for c in specs}
    todo = [c for c in specs if not path_of[c].exists()]
    by_len: dict[tuple[str, int], dict[str, FeatureSpec]] = {}
    for c in todo:
        s = specs[c]
        if s.kind == "hidden":
            by_len.setdefault((s.kind, s.max_length), {})[c] = s
    for (_, ml), group in by_len.items():
        log(f"  {name}: one forward pass for {len(group)} hidden-state candidates "
            f"(max_length {ml or pipe.cfg.model.max_length})")
        first = engines[next(iter(group))]
        for c, X in one_pass_hidden(first, group, n).items():
            check_against_product(engines[c], X, rows[:8], c)
            np.save(path_of[c], X)
    for c in todo:
        if specs[c].kind == "gradient":
            log(f"  {name}: computing {c} for {n} rows")
            X, _ = engines[c].featurize(engines[c].encode(np.arange(n)))
            np.save(path_of[c], X.astype(np.float32))
    t_cand: dict[str, list[float]] = {c: [] for c in specs}
    t_reward = []
    for _ in range(2):  # alternated with the reward gradients, best of 2
        t_reward.append(timed(reward, rows))
        for c in specs:
            t_cand[c].append(timed(engines[c], rows))
    t_r = min(t_reward)
    costs = {c: min(t) / t_r for c, t in t_cand.items()}
    for c in specs:
        feats[c] = np.load(path_of[c])
        engines[c].close()
    feats["reward gradient (ceiling)"] = reward.store().read()
    costs["reward gradient (ceiling)"] = 1.0
    log(f"  {name}: reward gradients {t_r / len(rows) * 1e3:.1f} ms/row on this machine")
    return feats, costs


# ----------------------------------------------------------------------------- replays
def random_budget(scores: np.ndarray, budget: float, seed: int) -> tuple[float, float]:
    n = len(scores)
    ok = np.flatnonzero(np.isfinite(scores))
    rng = np.random.default_rng([seed, 7])
    rows = rng.choice(ok, size=min(count_of(budget, n), len(ok)), replace=False)
    sub = np.full(n, np.nan)
    sub[rows] = scores[rows]
    sel = exhaustive_top(sub, count_of(TOP_P, n))
    return recall(sel, scores, count_of(TOP_P, n)), mass_share(sel, scores, count_of(TOP_P, n))


def conditioned(X: np.ndarray, cond: str, seed: int) -> np.ndarray:
    return conditioning.fit(X, cond, seed=seed).transform(X)


def cluster_labels(Y: np.ndarray, k: int, seed: int, scores: np.ndarray) -> np.ndarray:
    # the product's k-means with one k-means++ start per seed (the product keeps the best of
    # three; five seeds already vary the start, and the shared CPU is the limit here)
    labels = cluster_features(Y, k, seed=seed, n_init=1).labels
    labels = np.asarray(labels, dtype=np.int64).copy()
    labels[~np.isfinite(scores)] = -1  # unscorable rows are never drawn
    return labels


def evaluate(X, cond, k, scores, seeds, budgets=BUDGETS, options=None) -> dict[str, float]:
    """Mean recall and mass share over seeds (k-means and bandit seeds both vary)."""
    rec = {b: [] for b in budgets}
    mass = {b: [] for b in budgets}
    options = options or {}
    for s in range(seeds):
        Y = conditioned(X, cond, s)
        labels = cluster_labels(Y, k, s, scores)
        for b in budgets:
            spec = replace(RunConfig().selection, budget=b, top_p=TOP_P, seed=s, **options)
            run = SelectionRun(labels, TableOracle(scores), spec,
                               features=Y if spec.needs_features else None)
            run.run_to_end()
            sel = run.selected()
            rec[b].append(recall(sel, scores, run.n_top))
            mass[b].append(mass_share(sel, scores, run.n_top))
    out = {}
    for b in budgets:
        out[f"recall@{b:g}"] = float(np.mean(rec[b]))
        out[f"mass@{b:g}"] = float(np.mean(mass[b]))
    if 0.2 in rec:
        out["recall_std@0.2"] = float(np.std(rec[0.2]))
    return out


# ----------------------------------------------------------------------------- main
# each on top of the shipped selection settings (options "-"), whose draw order is predicted
PAPER = {"draw_order": "random"}
OPTIONS = {"paper draws (random order)": PAPER,
           "similar order": {"draw_order": "similar"},
           "pooled variance (2 draws)": {"pooled_variance": 2.0},
           "split hot arms (16 draws)": {"split_hot": 16},
           "paper draws + split hot": {**PAPER, "split_hot": 16}}


def pool_rows(name: str, feats: dict[str, np.ndarray], costs: dict[str, float],
              scores: np.ndarray, seeds: int, budgets, quick: bool, baseline: str, log,
              default: tuple[str, str, str] | None = None) -> list[dict]:
    """Stage A: every feature x conditioning at the size rule (and the old fixed K=12 for the
    baseline features); B: every K rule for the best three and the baseline; C: the
    beyond-the-paper options on the best and on the defaults. `default`: (features,
    conditioning, K rule) of the shipped defaults, always measured. --quick: the baseline,
    the defaults and every feature at the default rule."""
    n_ok = int(np.isfinite(scores).sum())
    cold = RunConfig().selection.cold_start
    rows: list[dict] = []
    done: set[tuple] = set()

    def add(cname, cond, rule, options_name="-", options=None):
        key = (cname, cond, rule, options_name)
        if key in done:
            return
        done.add(key)
        Y0 = conditioned(feats[cname], cond, 0)
        k, _ = choose_k(rule, n_rows=n_ok, cold_start=cold, X=Y0)
        res = evaluate(feats[cname], cond, k, scores, seeds, budgets, options)
        rows.append({"pool": name, "features": cname, "cond": cond, "k_rule": rule, "K": k,
                     "options": options_name, "cost": costs.get(cname, float("nan")), **res})

    for b in budgets:
        rr = [random_budget(scores, b, s) for s in range(seeds)]
        rows.append({"pool": name, "features": "random budget", "cond": "-", "k_rule": "-",
                     "K": 0, "options": "-", "cost": 0.0,
                     f"recall@{b:g}": np.mean([r for r, _ in rr]),
                     f"mass@{b:g}": np.mean([m for _, m in rr])})
    add(baseline, "none", "fixed12", "paper draws (random order)", PAPER)  # before
    if default is not None and default[0] in feats:
        add(*default)
        add(*default, "paper draws (random order)", PAPER)
    conds = ("none", "center") if quick else CONDS
    for cname in feats:
        for cond in conds:
            add(cname, cond, default[2] if quick and default else "size4")
        log(f"  {name}: {cname} replayed")
    if quick:
        return rows
    a = [r for r in rows if r["k_rule"] == "size4"]
    best = sorted(a, key=lambda r: -r["recall@0.2"])[:3]
    for r in best + [{"features": baseline, "cond": "none"}]:
        for rule in RULES:
            add(r["features"], r["cond"], rule)
    log(f"  {name}: K rules replayed")
    top = max((r for r in rows if r["options"] == "-" and r["features"] != "random budget"),
              key=lambda r: r["recall@0.2"])
    for oname, opts in OPTIONS.items():
        add(top["features"], top["cond"], top["k_rule"], oname, opts)
        if default is not None and default[0] in feats:
            add(*default, oname, opts)
    return rows


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, few candidates, cached pools")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--pools", default="demo,flan_mmlu,synthetic",
                    help="comma-separated: demo, flan_mmlu, synthetic")
    ap.add_argument("--sample", type=int, default=None,
                    help="rows timed for the costs (default 384; 128 with --quick)")
    ap.add_argument("--no-sketch", action="store_true",
                    help="leave out the top-block gradient sketch (a backward pass per row)")
    ap.add_argument("--audit", action="store_true",
                    help="also measure the audit meter (bench_audit.py, 20 seeds per pool) and "
                         "add audit_coverage and audit_median_err to the last line")
    ap.add_argument("--e2e", action="store_true",
                    help="also time the whole path against exhaustive LESS on the demo")
    args = ap.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 5)
    log = print
    budgets = (0.2,) if args.quick else BUDGETS
    t_start = time.perf_counter()
    want = [p.strip() for p in args.pools.split(",") if p.strip()]
    tag = "quick" if args.quick else "full"
    costs_by_pool: dict[str, dict[str, float]] = {}
    for name in want:
        if name == "flan_mmlu" and not REAL.exists():
            log(f"flan_mmlu: {REAL} is missing; skipped")
            continue
        if name == "flan_mmlu" and args.quick and \
                not (CACHE / "flan_mmlu" / "scores" / "exhaustive.npy").exists():
            log("flan_mmlu: no cached exhaustive scores; --quick skips it (run once without "
                "--quick)")
            continue
        if name == "synthetic":
            X, scores, _ = synthetic_pool()
            feats, costs, baseline = {"synthetic": X}, {"synthetic": float("nan")}, "synthetic"
            d = RunConfig()
            default = ("synthetic", d.clusters.condition,
                       d.clusters.k_rule if d.clusters.k == 0 else f"fixed{d.clusters.k}")
        else:
            pipe = pool_pipeline(name)
            scores = pipe.exhaustive_scores().astype(np.float64)
            feats, costs = build_features(pipe, name, args.quick,
                                          args.sample or (128 if args.quick else 384),
                                          log, sketch=not args.no_sketch)
            baseline = default_candidate(FeatureSpec(kind="hidden", batch_size=32), pipe)
            d = RunConfig()
            default = (default_candidate(d.cluster_features, pipe), d.clusters.condition,
                       d.clusters.k_rule if d.clusters.k == 0 else f"fixed{d.clusters.k}")
        costs_by_pool[name] = costs
        log(f"{name}: N={len(scores)}, {int(np.isfinite(scores).sum())} scorable; "
            f"{len(feats)} candidate features")
        rows = pool_rows(name, feats, costs, scores, seeds, budgets, args.quick, baseline, log,
                         default)
        if name != "synthetic":
            rows += fidelity_rds.rds_rows(pipe, name, scores, budgets, TOP_P)
        pd.DataFrame(rows).to_csv(CACHE / f"results_{tag}_{name}.csv", index=False)

    frames = [pd.read_csv(p) for p in sorted(CACHE.glob(f"results_{tag}_*.csv"))]
    df = pd.concat(frames, ignore_index=True)
    cols = ["pool", "features", "cond", "k_rule", "K", "options", "cost"] + \
        [c for b in budgets for c in (f"recall@{b:g}", f"mass@{b:g}")]
    with pd.option_context("display.width", 250, "display.max_rows", 500,
                           "display.max_columns", 30):
        print(df[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"({len(df)} rows, {seeds} seeds, {time.perf_counter() - t_start:.0f} s; pools "
          f"computed now: {', '.join(costs_by_pool) or 'none'}, the rest from "
          f"{CACHE}/results_{tag}_*.csv)")

    d = RunConfig()
    demo = pool_pipeline("demo")
    default_name = default_candidate(d.cluster_features, demo)
    dcond = d.clusters.condition
    drule = d.clusters.k_rule if d.clusters.k == 0 else f"fixed{d.clusters.k}"

    def pick(pool: str, col: str) -> float:
        m = df[(df["pool"] == pool) & (df["features"] == default_name) & (df["cond"] == dcond)
               & (df["k_rule"] == drule) & (df["options"] == "-")]
        return float(m[col].iloc[0]) if len(m) and col in m else float("nan")

    rec_demo, mass_demo = pick("demo", "recall@0.2"), pick("demo", "mass@0.2")
    rec_real = pick("flan_mmlu", "recall@0.2")
    print(f"defaults: cluster features {default_name!r}, conditioning {dcond}, K rule {drule}")
    if args.e2e:
        sys.path.insert(0, str(ROOT / "bench"))
        import tempfile

        from bench_selection import end_to_end

        speed = end_to_end(None, None, None, Path(tempfile.mkdtemp(prefix="fid_e2e_")))["speedup"]
        e2e = f"{speed:.2f}"
    else:
        c = costs_by_pool.get("demo", {}).get(default_name, float("nan"))
        e2e = f"{1.0 / (c + 0.2):.2f}"
        print(f"e2e speed-up estimated as 1 / (cluster-feature cost {c:.3f} + 20% budget), "
              "without k-means, targets and model loading; --e2e times the whole path")
    audit = ""
    if args.audit:
        from bench_audit import audit_line

        audit = " " + audit_line(["demo", "flan_mmlu", "syn0", "syn1"], 20)
    print(f"RDS+ recall@20%: same budget demo {fidelity_rds.pick(df, 'demo'):.3f} / Flan "
          f"{fidelity_rds.pick(df, 'flan_mmlu'):.3f}; no gradient demo "
          f"{fidelity_rds.pick(df, 'demo', label=fidelity_rds.NO_GRADIENT):.3f} / Flan "
          f"{fidelity_rds.pick(df, 'flan_mmlu', label=fidelity_rds.NO_GRADIENT):.3f}")
    print(f"recall_at_20={rec_demo:.3f} recall_real_at_20={rec_real:.3f} "
          f"mass_share_at_20={mass_demo:.3f} "
          f"{'e2e_speedup_vs_exhaustive' if args.e2e else 'e2e_bound'}={e2e} "
          f"recall_rds_at_20={fidelity_rds.pick(df, 'demo'):.3f}{audit}")
    return 0


def default_candidate(spec: FeatureSpec, pipe) -> str:
    """The bench's name for the configured cluster features."""
    from clusterucb_core.features.gradients import decoder_layers

    n_layers = len(decoder_layers(pipe.reward_engines[0].model))
    for name, cand in candidates(n_layers, quick=False).items():
        if replace(cand, batch_size=spec.batch_size) == spec:
            return name
    return f"hidden L{n_layers} mean"


if __name__ == "__main__":
    sys.exit(main())
