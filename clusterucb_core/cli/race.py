"""`clusterucb race --config race.toml`: race the arm policies headless (CSV + PNG).

The config names where the rewards come from and who races (see sample_data/race.toml):

    out = "race_out"                 # folder for the results (or --out)
    [race]                           # RaceSpec: seeds (a list or a count), budget, top_p,
    seeds = 5                        #   cold_start, draw_batch, grid_points
    budget = 0.2
    [[race.contestants]]             # one table per contestant (default: every policy)
    policy = "ucb_beta"              #   policy, beta, quantile, cold_start, draw_batch, label
    beta = 1.0
    [playground]                     # synthetic arms (PlaygroundSpec), or instead:
    n_arms = 8                       # [workspace] path = "W", clusters = "k12",
                                     #   scores = "scores/exhaustive.npy"

Writes curves.csv, band.csv, draws.csv, summary.csv, race.json and race.png into `out`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "race the arm policies on a playground or a workspace's exhaustive scores (CSV + PNG)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, help="race settings (TOML)")
    parser.add_argument("--out", "-o", help="output folder (default: the config's `out`, "
                                            "else race_out)")
    parser.add_argument("--seeds", type=int, help="override: race with seeds 0..N-1")
    parser.add_argument("--no-png", action="store_true", help="write the CSVs only")


def _resolve(path: str, base: Path) -> Path:
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return base / p if (base / p).exists() else p


def load_config(path: str | Path) -> tuple[dict, object]:
    """(config dict, RaceSpec) from a race TOML, with the errors a user can make named."""
    from clusterucb_core.config import load_toml
    from clusterucb_core.teach.race import RaceSpec

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no race config at {path}")
    try:
        cfg = load_toml(path)
    except Exception as exc:  # tomllib.TOMLDecodeError names line and column
        raise ValueError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(cfg) - {"out", "race", "playground", "workspace"})
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {', '.join(unknown)}; expected out, "
                         "[race], and one of [playground] or [workspace]")
    if ("playground" in cfg) == ("workspace" in cfg):
        raise ValueError(f"{path}: give exactly one of [playground] or [workspace]")
    return cfg, RaceSpec.from_dict(cfg.get("race") or {})


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from clusterucb_core.teach import playground as pgm
    from clusterucb_core.teach import race as rc

    cfg_path = Path(args.config)
    cfg, spec = load_config(cfg_path)
    if args.seeds is not None:
        if args.seeds < 1:
            raise ValueError("--seeds must be >= 1")
        spec = dataclasses.replace(spec, seeds=tuple(range(args.seeds)))
    base = cfg_path.resolve().parent
    if "playground" in cfg:
        pg = pgm.build(pgm.PlaygroundSpec.from_dict(cfg["playground"]))
        labels, rewards, names, source = rc.playground_source(pg)
        print(f"playground: {pg.describe()}", flush=True)
    else:
        from clusterucb_core.workspace import Workspace

        w = cfg["workspace"]
        unknown = sorted(set(w) - {"path", "clusters", "scores"})
        if unknown or "path" not in w:
            raise ValueError(f"[workspace] takes path (required), clusters, scores; got "
                             f"{', '.join(sorted(w)) or 'nothing'}")
        root = _resolve(w["path"], base)
        if not root.is_dir():
            raise FileNotFoundError(f"no workspace folder at {root}")
        ws = Workspace.open(root, create=False)
        labels, rewards, names, source = rc.workspace_source(ws, w.get("clusters"),
                                                             w.get("scores"))
        print(f"workspace {ws.root}: {len(labels):,} rows, clustering "
              f"{source['clusters']!r}", flush=True)
    n_runs = len(spec.contestants) * len(spec.seeds)
    print(f"racing {len(spec.contestants)} contestant(s) x {len(spec.seeds)} seed(s) = "
          f"{n_runs} runs; budget {spec.budget:g}, top-p {spec.top_p:g}, cold start "
          f"{spec.cold_start:g}, draw batch {spec.draw_batch}", flush=True)
    result = rc.run_race(labels, rewards, spec, names=names, source=source)
    out = Path(args.out or cfg.get("out") or "race_out")
    paths = rc.write_race(result, out, png=not args.no_png)
    s = result.summary
    width = max(len(n) for n in s["contestant"])
    print(f"\n{'contestant':<{width}}  recall (mean ± std)   regret vs oracle   best-arm share")
    for _, r in s.iterrows():
        print(f"{r['contestant']:<{width}}  {r['recall_mean']:6.3f} ± {r['recall_std']:.3f}"
              f"        {r['regret_vs_oracle_mean']:10.3f}        {r['best_arm_share_mean']:.3f}")
    print(f"\n(recall of the true top {result.n_top} rows after scoring "
          f"{spec.budget:.0%} of the pool)")
    for name, p in paths.items():
        print(f"{name}: {p}")
    return 0
