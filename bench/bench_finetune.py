"""Does the selection help? The claim the method exists for, measured with error bars.

The same LoRA fine-tune (same steps, learning rate, fresh adapters) on each subset, once per
fine-tune seed (the seed sets the LoRA init, the data order and dropout), then the loss on the
target's *held-out* examples (prompts never seen by the selection). Lower is better; "base" is
the model before any fine-tuning. Subsets, each 5% of the pool:

* ClusterUCB at a 20% gradient budget, max rule (LESS) and `balance = "subtasks"` (the top-5%
  filled round-robin over the target's subtasks);
* exhaustive LESS (every row scored), both rules;
* RDS+ (arXiv 2503.01807): rows ranked by the cosine of their pooled hidden states (the
  cluster-feature store) to each target subtask's mean, max over subtasks; no gradient;
* random subsets.

Targets: the four bundled ones on the bundled demo workspace (exhaustive gradients shipped;
held-out sets in sample_data/targets/heldout/), and `flan_mmlu`: the real Flan CoT pool with
LESS's MMLU target (../shared/data/real; skipped when absent). MMLU has no held-out split, so
each subject's first 3 dev questions are the selection target and its last 2 the held-out set.
Its workspace (warm-up, 1,800 reward gradients) is made once under bench/.cache/finetune/.

Every fine-tune's result is appended to a JSONL file as soon as it ends (`--results`), and a
rerun skips what the file already holds for the same settings: a killed run resumes. Subsets
with the same rows (e.g. ClusterUCB finding exactly LESS's top) are trained once.

    python bench/bench_finetune.py [--quick] [--targets arithmetic,...,flan_mmlu] [--seeds 3]
        [--random-subsets 3] [--steps 60] [--results FILE] [--table-only]

Last line: ucb_within_1pct_of_less=<k>/<n> ucb_below_rds=<k>/<n> ucb_below_every_random=<k>/<n>
(max rule, mean over seeds; the same for the balanced rule with `bal_` in front).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clusterucb_core.config import DEMO_DIR  # noqa: E402
from clusterucb_core.runtime import atomic  # noqa: E402
from clusterucb_core.selection.rds import rds_scores  # noqa: E402

CACHE = ROOT / "bench" / ".cache" / "finetune"
_REAL_CANDIDATES = [ROOT.parent / "shared" / "data" / "real",
                    ROOT.parent.parent / "shared" / "data" / "real"]
REAL = Path(os.environ["FIDELITY_REAL"]) if os.environ.get("FIDELITY_REAL") else next(
    (p for p in _REAL_CANDIDATES if p.exists()), _REAL_CANDIDATES[0])
DEMO_TARGETS = ("arithmetic", "classification", "language", "reasoning_mix")
MMLU_SELECT = 3  # of each subject's 5 dev questions; the rest are held out
UCB, UCB_BAL = "ClusterUCB max", "ClusterUCB balanced"
LESS, LESS_BAL = "exhaustive LESS max", "exhaustive LESS balanced"
RDS, BASE = "RDS+", "base (no fine-tune)"


# ----------------------------------------------------------------------------- subsets
def target_hidden_features(pipe, target) -> tuple[np.ndarray, np.ndarray]:
    """The target examples' features in the cluster-feature space (same model, pooling,
    layers and length cap as the pool's store): [M, d] and subtask codes [M]."""
    from clusterucb_core.data.formatting import encode_prompt_completion
    from clusterucb_core.features.engine import FeatureEngine

    spec = pipe.cfg.cluster_features
    if spec.kind != "hidden":
        raise ValueError(f"RDS+ needs hidden-state cluster features, not {spec.kind!r}")
    eng = FeatureEngine(pipe.pool, pipe.cfg.model, pipe.cfg.lora, None, spec,
                        store_path=Path("/nonexistent"))
    max_len = min(pipe.cfg.model.max_length, spec.max_length or pipe.cfg.model.max_length)
    encs = [encode_prompt_completion(ex.prompt, ex.completion, eng.tok, max_len)
            for ex in target.examples]
    feats, valid = eng.featurize(encs)
    eng.release()
    code = {s: i for i, s in enumerate(target.subtasks)}
    ids = np.array([code[ex.subtask] for ex in target.examples], dtype=np.int64)
    return feats[valid], ids[valid]


def top_rows(scores: np.ndarray, n: int) -> np.ndarray:
    from clusterucb_core.selection.oracle import exhaustive_top

    return np.sort(exhaustive_top(scores, n))


def make_subsets(pipe) -> dict[str, list[int]]:
    """name -> sorted pool rows of each selection, all of ClusterUCB's top-p size."""
    from clusterucb_core.selection.subtasks import balanced_top

    exhaustive = pipe.exhaustive_scores()
    pipe.run_selection(pipe.cfg.run_id)
    run = pipe.selection(pipe.cfg.run_id)
    ucb = np.sort(pipe.result(run).rows)
    n_sel, n = len(ucb), len(pipe.pool.table)
    scored = np.flatnonzero(np.isfinite(exhaustive))
    feats, ids = target_hidden_features(pipe, pipe.target)
    out = {UCB: ucb,
           UCB_BAL: np.sort(pipe.result(run, balance="subtasks").rows),
           LESS: top_rows(exhaustive, n_sel),
           LESS_BAL: np.sort(balanced_top(scored, pipe.subtask_scores(scored), n_sel)),
           RDS: top_rows(rds_scores(pipe.cluster_store.read(np.arange(n)), feats, ids), n_sel)}
    return {k: [int(r) for r in v] for k, v in out.items()}


# ----------------------------------------------------------------------------- targets
def split_mmlu(src: Path, out: Path, n_select: int = MMLU_SELECT) -> tuple[Path, Path]:
    """Each subject's first `n_select` dev rows -> out/select/dev, the rest -> out/heldout/dev
    (the CSV rows copied unchanged, so both load as LESS's MMLU layout)."""
    files = sorted((src / "dev").glob("*_dev.csv"))
    if not files:
        raise FileNotFoundError(f"{src}/dev: no MMLU *_dev.csv files")
    for part in ("select", "heldout"):
        (out / part / "dev").mkdir(parents=True, exist_ok=True)
    for f in files:
        rows = [r for r in csv.reader(f.read_text(encoding="utf-8").splitlines()) if r]
        if len(rows) <= n_select:
            raise ValueError(f"{f}: {len(rows)} rows, need more than {n_select} to hold some out")
        for part, chunk in (("select", rows[:n_select]), ("heldout", rows[n_select:])):
            buf = out / part / "dev" / f.name
            with atomic.atomic_path(buf) as tmp, open(tmp, "w", newline="",
                                                      encoding="utf-8") as fh:
                csv.writer(fh).writerows(chunk)
    return out / "select", out / "heldout"


def target_pipeline(name: str):
    """(pipeline for the selection, held-out target path) of one bench target."""
    from clusterucb_core.cli.demo import DEMO_CONFIG
    from clusterucb_core.config import load_config
    from clusterucb_core.pipeline import Pipeline

    if name in DEMO_TARGETS:
        ws = CACHE / "demo"
        if not ws.exists():
            shutil.copytree(DEMO_DIR / "demo_workspace", ws)
        cfg = load_config(DEMO_CONFIG)
        target, heldout = (DEMO_DIR / "targets" / f"{name}.jsonl",
                           DEMO_DIR / "targets" / "heldout" / f"{name}.jsonl")
    elif name == "flan_mmlu":
        target, heldout = split_mmlu(REAL / "eval" / "mmlu", CACHE / "mmlu_split")
        cfg = replace(load_config(DEMO_DIR / "real_flan_mmlu.toml"),
                      pool=str(REAL / "flan_cot_pool.jsonl"))
        ws = CACHE / "flan_mmlu"
    else:
        raise ValueError(f"unknown target {name!r}: one of {', '.join(DEMO_TARGETS)}, flan_mmlu")
    cfg = replace(cfg, workspace=str(ws), target=str(target), run_id=f"bench-{name}",
                  make_map=False, exhaustive=False)
    return Pipeline(cfg, log=None), heldout


# ----------------------------------------------------------------------------- results
def rows_key(rows: list[int]) -> str:
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def load_results(path: Path) -> list[dict]:
    """Every complete line of the results file (a line cut by a kill is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def append_result(path: Path, rec: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(rec) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def summarize(results: list[dict], target: str, steps: int) -> list[dict]:
    """Per subset of `target` at `steps`: mean, sd (ddof=1; NaN for one seed), n seeds."""
    by: dict[str, dict[int, float]] = {}
    for r in results:
        if r["target"] == target and r["steps"] in (steps, 0):
            by.setdefault(r["subset"], {})[r["seed"]] = r["loss"]
    out = []
    for name, per_seed in by.items():
        v = np.array([per_seed[s] for s in sorted(per_seed)], dtype=np.float64)
        out.append({"subset": name, "mean": float(v.mean()),
                    "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
                    "n": len(v), "seeds": v.tolist()})
    return out


def verdict(table: list[dict], max_name: str = UCB, less_name: str = LESS) -> dict | None:
    """The issue's test on one target (means over seeds): within 1% of exhaustive LESS,
    below RDS+, below every random subset. None while a needed subset is missing."""
    mean = {r["subset"]: r["mean"] for r in table}
    rnd = [v for k, v in mean.items() if k.startswith("random")]
    if max_name not in mean or less_name not in mean or RDS not in mean or not rnd:
        return None
    ucb = mean[max_name]
    return {"vs_less": ucb / mean[less_name] - 1, "within_1pct": ucb <= mean[less_name] * 1.01,
            "below_rds": ucb < mean[RDS], "below_every_random": ucb < min(rnd)}


def format_table(table: list[dict]) -> str:
    order = [BASE, UCB, UCB_BAL, LESS, LESS_BAL, RDS]
    table = sorted(table, key=lambda r: (order.index(r["subset"]) if r["subset"] in order
                                         else len(order), r["subset"]))
    lines = [f"  {'subset':<26} {'mean':>7} {'sd':>7}  n  per seed"]
    for r in table:
        sd = "" if np.isnan(r["sd"]) else f"{r['sd']:.4f}"
        lines.append(f"  {r['subset']:<26} {r['mean']:7.4f} {sd:>7} {r['n']:2d}  "
                     + " ".join(f"{v:.4f}" for v in r["seeds"]))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- running
def run_target(name: str, seeds: list[int], n_random: int, steps: int, results_path: Path,
               log) -> None:
    from clusterucb_core.data.targets import load_target
    from clusterucb_core.selection.evaluate import baseline_loss, finetune_and_evaluate

    pipe, heldout_path = target_pipeline(name)
    subsets_path = CACHE / "subsets" / f"{name}.json"
    if subsets_path.exists():
        subsets = json.loads(subsets_path.read_text())
    else:
        log(f"{name}: selecting (ClusterUCB, exhaustive LESS, RDS+)")
        subsets = make_subsets(pipe)
        atomic.write_json(subsets_path, subsets)
    n, n_sel = len(pipe.pool.table), len(subsets[UCB])
    for s in range(n_random):
        rng = np.random.default_rng(1000 + s)
        subsets[f"random {s}"] = np.sort(rng.choice(n, size=n_sel, replace=False)).tolist()
    pipe.release_engines()
    heldout = load_target(heldout_path)
    cfg = pipe.cfg
    done = load_results(results_path)
    have = {(r["target"], r["rows"], r["seed"], r["steps"]): r for r in done
            if r["target"] == name}
    if not any(r["subset"] == BASE for r in have.values()):
        append_result(results_path, {"target": name, "subset": BASE, "rows": "", "seed": 0,
                                     "steps": 0, "n_rows": 0,
                                     **baseline_loss(heldout, cfg.model, cfg.lora)})
    log(f"{name}: pool {n} rows, {n_sel} per "
        f"subset; held-out {heldout_path} ({len(heldout.examples)} examples); {steps} steps, "
        f"lr {cfg.warmup.learning_rate}, batch {cfg.warmup.batch_size}")
    for seed in seeds:
        for subset, rows in subsets.items():
            key = (name, rows_key(rows), seed, steps)
            named = {r["subset"] for r in done if (r["target"], r["rows"], r["seed"],
                                                   r["steps"]) == key}
            if subset in named:
                continue
            if key in have:  # the same rows under another name: reuse the fine-tune
                rec = {**have[key], "subset": subset, "same_rows_as": have[key]["subset"]}
            else:
                log(f"{name}: fine-tuning on {subset} (seed {seed})")
                train = replace(cfg.warmup, max_steps=steps, seed=seed)
                res = finetune_and_evaluate(pipe.pool, np.array(rows), heldout, cfg.model,
                                            cfg.lora, train)
                rec = {"target": name, "subset": subset, "rows": key[1], "seed": seed,
                       "steps": steps, **res}
                have[key] = rec
            append_result(results_path, rec)
            done.append(rec)
            log(f"  {subset} seed {seed}: loss {rec['loss']:.4f}")


def report(targets: list[str], results: list[dict], steps: int, log) -> str:
    counts: dict[str, list[int]] = {}
    for name in targets:
        table = summarize(results, name, steps)
        if not table:
            continue
        log(f"\n{name} (held-out loss, {steps} steps; mean and sd over fine-tune seeds)")
        log(format_table(table))
        for tag, a, b in (("", UCB, LESS), ("bal_", UCB_BAL, LESS_BAL)):
            v = verdict(table, a, b)
            if v is None:
                continue
            log(f"  {a}: {v['vs_less']:+.2%} vs {b}; below RDS+ {v['below_rds']}; below "
                f"every random {v['below_every_random']}")
            for k in ("within_1pct", "below_rds", "below_every_random"):
                c = counts.setdefault(f"{tag}{k}", [0, 0])
                c[0] += int(v[k])
                c[1] += 1
    names = {"within_1pct": "ucb_within_1pct_of_less", "below_rds": "ucb_below_rds",
             "below_every_random": "ucb_below_every_random"}
    return " ".join(f"{'bal_' if k.startswith('bal_') else ''}{names[k.removeprefix('bal_')]}"
                    f"={c[0]}/{c[1]}" for k, c in counts.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="arithmetic only, one seed, one random subset, 5 steps")
    ap.add_argument("--targets", default=",".join(DEMO_TARGETS + ("flan_mmlu",)),
                    help="comma-separated, run in this order (each to its last seed)")
    ap.add_argument("--seeds", type=int, default=None, help="fine-tune seeds (default 3)")
    ap.add_argument("--random-subsets", type=int, default=None, help="default 3")
    ap.add_argument("--steps", type=int, default=None, help="fine-tune steps (default 60)")
    ap.add_argument("--results", default=None,
                    help="JSONL of finished fine-tunes, appended to and resumed from "
                         "(default bench/.cache/finetune/results.jsonl)")
    ap.add_argument("--table-only", action="store_true", help="print the table, train nothing")
    args = ap.parse_args(argv)
    targets = ["arithmetic"] if args.quick else [t for t in args.targets.split(",") if t]
    seeds = args.seeds or (1 if args.quick else 3)
    n_random = args.random_subsets or (1 if args.quick else 3)
    steps = args.steps or (5 if args.quick else 60)
    results_path = Path(args.results) if args.results else CACHE / (
        "results-quick.jsonl" if args.quick else "results.jsonl")

    def log(msg: str) -> None:
        print(msg, flush=True)

    if not args.table_only:
        for name in targets:
            if name == "flan_mmlu" and not REAL.exists():
                log(f"flan_mmlu: {REAL} is missing; skipped")
                continue
            run_target(name, list(range(seeds)), n_random, steps, results_path, log)
    log(report(targets, load_results(results_path), steps, log))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
