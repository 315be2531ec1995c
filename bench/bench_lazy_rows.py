"""What a lazy row's gradient costs against an exhaustive row's, same model, same run.

On the demo (its shipped warm-up, reward features Adam + count sketch d1024), in CPU seconds
with one torch thread (steadier than wall time on a shared machine), alternated twice:
* exhaustive: whole 128-row chunks, length-sorted padded batches of 16 (the exhaustive pass);
* lazy padded: 24 rounds of 8 random rows, each padded to its longest (before packing);
* lazy packed: the same rounds, each packed into one sequence (what a lazy round does now);
* exhaustive packed, and two rounds packed together (16 rows), for comparison.

    python bench/bench_lazy_rows.py [--threads 1]

Last line: lazy_row_cost_ratio=<lazy packed / exhaustive> padded_ratio=<lazy padded /
exhaustive> (ms a row over ms a row).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clusterucb_core.cli.demo import DEMO_CONFIG  # noqa: E402
from clusterucb_core.config import DEMO_DIR, load_config  # noqa: E402
from clusterucb_core.pipeline import Pipeline  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true",
                    help="8 rounds and one 128-row chunk a case (checks the bench runs)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_lazy_rows_")) / "ws"
    shutil.copytree(DEMO_DIR / "demo_workspace", work)
    cfg = replace(load_config(DEMO_CONFIG), workspace=str(work), make_map=False)
    eng = Pipeline(cfg, log=None).reward_engines[0]
    rng = np.random.default_rng(0)
    n = eng.store().n_rows
    chunks = [eng.encode(np.arange(c * 128, (c + 1) * 128)) for c in range(1 if args.quick else 3)]
    rounds = [eng.encode(np.sort(rng.choice(n, 8, replace=False)))
              for _ in range(8 if args.quick else 24)]
    pairs = [rounds[i] + rounds[i + 1] for i in range(0, len(rounds), 2)]
    cases = {"exhaustive": (chunks, False), "lazy padded": (rounds, False),
             "lazy packed": (rounds, True), "exhaustive packed": (chunks, True),
             "2 rounds packed": (pairs, True)}
    best: dict[str, float] = {}
    for _ in range(2):
        for name, (groups, pack) in cases.items():
            t0 = time.process_time()
            for encs in groups:
                eng.featurize(encs, pack=pack)
            ms = (time.process_time() - t0) * 1e3 / sum(len(g) for g in groups)
            best[name] = min(best.get(name, np.inf), ms)
    for name, ms in best.items():
        print(f"{name:<18} {ms:6.2f} ms a row (CPU time, best of 2)")
    shutil.rmtree(work.parent, ignore_errors=True)
    print(f"lazy_row_cost_ratio={best['lazy packed'] / best['exhaustive']:.2f} "
          f"padded_ratio={best['lazy padded'] / best['exhaustive']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
