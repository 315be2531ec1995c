"""The bundled demo workspace matches the demo configuration: opening a copy of it (as the app
does on first run) reuses every shipped stage instead of recomputing it."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

from clusterucb_core.cli.demo import DEMO_CONFIG
from clusterucb_core.config import DEMO_DIR, load_config
from clusterucb_core.pipeline import Pipeline

SHIPPED = DEMO_DIR / "demo_workspace"


@pytest.fixture(scope="module")
def demo_pipe(tmp_path_factory):
    if not (SHIPPED / "workspace.json").exists():
        pytest.skip("sample_data/demo_workspace is missing (python scripts/make_demo_workspace.py)")
    ws = tmp_path_factory.mktemp("moved") / "demo"  # another path: nothing may depend on it
    shutil.copytree(SHIPPED, ws)
    return Pipeline(replace(load_config(DEMO_CONFIG), workspace=str(ws)), log=None)


def test_shipped_stages_are_reused_not_recomputed(demo_pipe, monkeypatch):
    import clusterucb_core.clustering.kmeans as kmeans
    import clusterucb_core.features.warmup as warmup

    def refuse(*_a, **_k):
        raise AssertionError("a shipped stage was recomputed")

    monkeypatch.setattr(warmup, "warmup", refuse)
    monkeypatch.setattr(kmeans, "cluster_features", refuse)
    assert demo_pipe.warmup_ready()
    assert len(demo_pipe.checkpoints) == demo_pipe.cfg.warmup.epochs
    store = demo_pipe.cluster_store
    assert store.complete
    from clusterucb_core.clustering.krule import choose_k

    spec = demo_pipe.cfg.clusters
    want = spec.k or choose_k(spec.k_rule, store.n_rows, demo_pipe.cfg.selection.cold_start)[0]
    assert demo_pipe.clusters.k == want
    assert demo_pipe.clusters.meta["k_reason"].startswith(f"K={want}")
    scores = demo_pipe.known_exhaustive()
    assert scores is not None and scores.shape == (store.n_rows,)
    assert np.isfinite(scores).mean() > 0.99


def test_shipped_rewards_make_rounds_instant(demo_pipe):
    """Every reward row is in the shipped store, so the bandit computes no gradient."""
    run = demo_pipe.selection("shipped-check")
    for _ in range(3):
        run.step()
    assert demo_pipe.work["reward_gradient_rows"] == 0
    drawn = run.round_drawn >= 0
    # Same features; float32 sums in another chunking differ in the last bits only.
    np.testing.assert_allclose(run.scores[drawn], demo_pipe.known_exhaustive()[drawn],
                               rtol=1e-4, atol=1e-7)


def test_target_family_scores_highest(demo_pipe):
    """The demo's arithmetic target should favour the pool's arithmetic families."""
    scores = demo_pipe.known_exhaustive()
    table = demo_pipe.pool.table
    top = np.argsort(-np.nan_to_num(scores, nan=-np.inf))[: len(scores) // 20]
    arithmetic = table["source"].str.startswith("arithmetic")
    # More than twice the families' share of the pool (21%): the selection finds them.
    assert arithmetic.iloc[top].mean() > 2 * arithmetic.mean()
