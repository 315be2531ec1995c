"""Build sample_data/demo_workspace: the bundled demo's pipeline, run up to the bandit.

`make run` opens the app on a copy of this workspace (workspaces/demo), so a first visit shows
real clusters, a map, and every row's exhaustive score at once; the UCB rounds are left for the
user to step through (their rewards are read from the shipped feature store, so each round is
instant). Everything is made by the same `Pipeline` as `clusterucb demo`, from
sample_data/demo_run.toml, and is seeded.

    python scripts/make_demo_workspace.py            # about 5-10 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from clusterucb_core.cli.demo import DEMO_CONFIG  # noqa: E402
from clusterucb_core.config import load_config  # noqa: E402
from clusterucb_core.pipeline import Pipeline  # noqa: E402
from clusterucb_core.runtime import atomic  # noqa: E402

# Settings carry this machine's absolute paths; the app fills in its own when it opens the
# copy (clusterucb_app.state.apply_demo_defaults), so they are not shipped.
MACHINE_KEYS = ("config", "pool", "target", "demo_defaults")


def build(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    cfg = replace(load_config(DEMO_CONFIG), workspace=str(out), exhaustive=True)
    pipe = Pipeline(cfg)
    _ = pipe.pool, pipe.target, pipe.checkpoints, pipe.clusters, pipe.map
    scores = pipe.exhaustive_scores()
    print(f"exhaustive scores: {len(scores)} rows")
    meta = {k: v for k, v in pipe.ws.meta().items() if k not in MACHINE_KEYS}
    atomic.write_json(pipe.ws.meta_path, meta)
    shutil.rmtree(pipe.ws.jobs(), ignore_errors=True)
    # the pool cache indexes this machine's absolute paths; the copy rebuilds its own
    shutil.rmtree(out / "pool_cache", ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "sample_data" / "demo_workspace")
    build(ap.parse_args().out.resolve())


if __name__ == "__main__":
    main()
