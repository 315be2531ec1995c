"""How close is the cost planner? Predicted against measured seconds per stage, same run.

For a run config (default: the bundled demo; `--config sample_data/real_flan_mmlu.toml` for
the Flan pool + MMLU), in a fresh workspace: make the plan (token counts, a calibration on
this device), run the whole path (warm-up, cluster features, k-means, target gradients, the
bandit's lazy gradients, export; no map), then score the remaining rows (exhaustive LESS: its
gradients for the rows the bandit did not draw; the prediction is scaled to those rows). Each
stage's measured seconds come from W/timings.json, the same file the run summary reads.

    python bench/bench_planner.py [--quick] [--config C] [--workdir W]

Last line: planner_error=<largest |predicted - actual| / actual over the stages>
predicted_speedup=<plan> stage_speedup=<the same formula on the measured stages>.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clusterucb_core.config import load_config  # noqa: E402
from clusterucb_core.features import cost  # noqa: E402
from clusterucb_core.features.planner import format_plan, make_plan  # noqa: E402
from clusterucb_core.pipeline import Pipeline  # noqa: E402
from clusterucb_core.runtime.timings import read_timings  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "sample_data" / "demo_run.toml"


def measured_speedup(timings: dict, n_rows: int) -> float:
    """The plan's whole-path formula on measured stages (the exhaustive pass scaled to every
    row: the bench's exhaustive step computed only the rows the bandit had not drawn)."""
    sec = {k: v["seconds"] for k, v in timings.items()}
    loads = timings.get("model_load", {})
    per_load = loads["seconds"] / loads["rows"] if loads.get("rows") else 0.0
    exh = timings["exhaustive_gradients"]
    exh_all = exh["seconds"] * n_rows / max(exh["rows"], 1)
    ucb = sum(sec.get(s, 0.0) for s in cost.UCB_PATH) + cost.UCB_MODEL_LOADS * per_load
    full = sec.get("target_gradients", 0.0) + exh_all + cost.EXHAUSTIVE_MODEL_LOADS * per_load
    return full / ucb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(DEMO), help="run settings (default: the demo)")
    ap.add_argument("--quick", action="store_true", help="the pool's first 600 rows")
    ap.add_argument("--workdir", help="folder for the workspace (default: temporary)")
    args = ap.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_planner_"))
    work.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config)
    cfg = replace(cfg, workspace=str(work / "ws"), make_map=False, exhaustive=False)
    if args.quick:
        small = work / "pool.jsonl"
        with open(cfg.pool, "rb") as src, open(small, "wb") as dst:
            for i, line in enumerate(src):
                if i >= 600:
                    break
                dst.write(line)
        cfg = replace(cfg, pool=str(small))
    t0 = time.perf_counter()
    plan = make_plan(cfg, recalibrate=True, log=print)
    print(format_plan(plan), flush=True)
    pipe = Pipeline(cfg, log=None)
    pipe.run_all()
    pipe.exhaustive_scores()
    timings = read_timings(pipe.ws.root)
    rows = cost.compare(plan, timings)
    print(f"\nmeasured in the same run ({time.perf_counter() - t0:.0f} s in all):")
    print(f"{'stage':<27} {'predicted s':>11} {'actual s':>10} {'error':>7}  rows")
    for r in rows:
        print(f"{r['title']:<27} {r['predicted_s']:>11.2f} {r['actual_s']:>10.2f} "
              f"{r['error']:>7.1%}  {r['rows']:,.0f}")
    err = cost.planner_error({r["stage"]: r["predicted_s"] for r in rows},
                             {r["stage"]: r["actual_s"] for r in rows})
    print(f"planner_error={err:.3f} predicted_speedup={plan['predicted_speedup']:.2f} "
          f"stage_speedup={measured_speedup(timings, len(pipe.pool)):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
