"""RDS+ (selection/rds.py) against a brute-force cosine; its same-budget baselines; the API
estimator; `clusterucb select --method rds` as an exportable run on a tiny workspace."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clusterucb_core.api import RDSPlus
from clusterucb_core.config import FeatureSpec
from clusterucb_core.selection import baselines as bl
from clusterucb_core.selection.rds import (
    pool_spec,
    rds_scores,
    rds_subtask_scores,
    screen,
    top_rows,
)


def brute_rds(pool: np.ndarray, target: np.ndarray, subtasks: np.ndarray) -> np.ndarray:
    """max over subtasks of the mean over the subtask's examples of cos(row, example),
    one pair at a time."""
    out = np.full(len(pool), np.nan)
    for i, p in enumerate(pool):
        if not np.isfinite(p).all() or not np.any(p):
            continue
        best = -np.inf
        for s in np.unique(subtasks):
            cos = [float(p @ t / (np.linalg.norm(p) * np.linalg.norm(t)))
                   for t in target[subtasks == s]]
            best = max(best, float(np.mean(cos)))
        out[i] = best
    return out


def test_rds_scores_equal_a_brute_force_cosine():
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(60, 12)) + 0.5
    target = rng.normal(size=(9, 12)) * rng.uniform(0.1, 5, size=(9, 1))  # norms differ
    subtasks = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pool[7] = 0.0  # no direction
    pool[11, 3] = np.nan
    got = rds_scores(pool, target, subtasks)
    want = brute_rds(pool, target, subtasks)
    assert np.isnan(got[7]) and np.isnan(got[11])
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-5, atol=1e-6)
    per = rds_subtask_scores(pool, target, subtasks)
    assert per.shape == (60, 3)
    np.testing.assert_allclose(np.nanmax(per[ok], axis=1), want[ok], rtol=1e-5, atol=1e-6)


def test_a_subtask_without_a_usable_example_takes_no_part_in_the_max():
    rng = np.random.default_rng(1)
    pool = rng.normal(size=(20, 6))
    target = rng.normal(size=(4, 6))
    target[2:] = 0.0  # subtask 1 has no direction at all
    with pytest.warns(UserWarning):
        got = rds_scores(pool, target, np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(got, brute_rds(pool, target[:2], np.array([0, 0])), rtol=1e-5,
                               atol=1e-6)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no target subtask"):
        rds_scores(pool, np.zeros((2, 6)), np.array([0, 1]))


def test_screen_scores_the_rds_top_and_keeps_the_best_by_reward():
    rds = np.array([0.9, 0.8, np.nan, 0.7, 0.1, 0.6])
    rewards = np.array([1.0, 5.0, 9.0, 3.0, 8.0, 2.0])
    asked = []

    def fn(rows):
        asked.append(np.sort(rows).tolist())
        return rewards[rows]

    assert top_rows(rds, 3).tolist() == [0, 1, 3]
    assert screen(rds, fn, n_budget=4, n_top=2).tolist() == [1, 3]  # rows 2, 4 never scored
    assert asked == [[0, 1, 3, 5]]
    with pytest.raises(ValueError, match="cannot exceed"):
        screen(rds, rewards, n_budget=1, n_top=2)


def test_rds_plus_estimator_pure_and_at_a_budget():
    rng = np.random.default_rng(2)
    X, T = rng.normal(size=(200, 8)), rng.normal(size=(5, 8))
    pure = RDSPlus(top_p=0.05).fit(X, T)
    want = brute_rds(X, T, np.zeros(5, dtype=int))
    assert pure.selected_.tolist() == np.argsort(-want)[:10].tolist()
    rewards = rng.normal(size=200)
    with pytest.raises(ValueError, match="needs rewards"):
        RDSPlus(budget=0.2).fit(X, T)
    at = RDSPlus(top_p=0.05, budget=0.2).fit(X, T, rewards=rewards)
    screened = np.argsort(-want)[:40]
    assert set(at.selected_) == set(screened[np.argsort(-rewards[screened])[:10]])
    from clusterucb_core.config import ConfigError

    with pytest.raises(ConfigError, match="top_p"):
        RDSPlus(top_p=0.5, budget=0.2).fit(X, T, rewards=rewards)


def test_baselines_at_the_same_budget_with_exhaustive_scores():
    rng = np.random.default_rng(3)
    n = 400
    ex = rng.normal(size=n)
    labels = rng.integers(0, 5, size=n)
    labels[:10] = -1  # unscorable (no score), never drawn by the run: out of every baseline
    ex[:10] = np.nan
    rds = ex + rng.normal(scale=0.5, size=n)
    run_rows = np.argsort(-np.where(labels >= 0, ex, -np.inf))[:20][::-1]
    b = bl.baselines(run_rows, labels, n_top=20, n_budget=80, seed=0, rds=rds, exhaustive=ex)
    assert b.same_budget and list(b.rows) == [bl.RANDOM, bl.RDS, bl.UCB, bl.EXHAUSTIVE]
    assert b.gradients == {bl.RANDOM: 80, bl.RDS: 80, bl.UCB: 80, bl.EXHAUSTIVE: 390}
    for rows in b.rows.values():
        assert len(rows) == 20 and (labels[rows] >= 0).all()
    masked = np.where(labels >= 0, rds, np.nan)
    assert b.rows[bl.RDS].tolist() == screen(masked, ex, 80, 20).tolist()
    summ = bl.summary(b, 20, ex).set_index("method")
    assert summ.loc[bl.EXHAUSTIVE, "recall"] == 1.0 and summ.loc[bl.UCB, "recall"] == 1.0
    assert summ.loc[bl.RANDOM, "recall"] < 0.5
    ov = bl.overlap(b)
    assert np.diag(ov.to_numpy()).tolist() == [20, 20, 20, 20]
    assert ov.loc[bl.UCB, bl.EXHAUSTIVE] == 20
    best = rng.integers(-1, 3, size=n)
    per = bl.per_subtask(b, best, ["a", "b", "c"])
    for m, rows in b.rows.items():
        assert per[m].sum() == int((best[rows] >= 0).sum())


def test_baselines_without_exhaustive_scores_spend_no_gradient():
    labels = np.zeros(100, dtype=int)
    rds = np.arange(100, dtype=float)
    b = bl.baselines(np.arange(5), labels, n_top=5, n_budget=20, seed=1, rds=rds)
    assert not b.same_budget and bl.EXHAUSTIVE not in b.rows
    assert b.gradients[bl.RANDOM] == 0 and b.gradients[bl.RDS] == 0
    assert b.rows[bl.RDS].tolist() == [99, 98, 97, 96, 95]
    assert "recall" not in bl.summary(b, 5).columns


def test_pool_spec_reuses_hidden_cluster_features_and_falls_back_to_the_final_layer():
    hidden = FeatureSpec(kind="hidden", layers=1, pooling="answer", batch_size=8)
    assert pool_spec(hidden)[0] == hidden
    spec, why = pool_spec(FeatureSpec(kind="gradient", dim=64, batch_size=8))
    assert spec.kind == "hidden" and spec.layers == 0 and spec.pooling == "mean"
    assert "final layer" in why


@pytest.fixture(scope="module")
def target_file(tmp_path_factory, make_chats) -> Path:
    path = tmp_path_factory.mktemp("target") / "target.jsonl"
    with open(path, "w") as fh:
        for i, msgs in enumerate(make_chats(8, seed=7)):
            fh.write(json.dumps({"subtask": "ab"[i % 2], "messages": msgs}) + "\n")
    return path


def test_select_method_rds_writes_an_exportable_run(tmp_path, tiny_pool_file, target_file,
                                                    tiny_model_dir, capsys):
    from clusterucb_core.cli import main
    from clusterucb_core.config import ClusterSpec, LoraSpec, ModelSpec, RunConfig
    from clusterucb_core.features.store import FeatureStore
    from clusterucb_core.pipeline import Pipeline
    from clusterucb_core.selection.rds import load_rds, target_hidden_states

    cfg = RunConfig(workspace=str(tmp_path / "ws"), pool=str(tiny_pool_file),
                    target=str(target_file), model=ModelSpec(name_or_path=str(tiny_model_dir),
                                                             max_length=64, device="cpu"),
                    lora=LoraSpec(rank=2, alpha=4), use_warmup=False,
                    cluster_features=FeatureSpec(kind="hidden", pooling="answer", batch_size=8),
                    clusters=ClusterSpec(k=3), make_map=False)
    pipe = Pipeline(cfg, log=None)
    _ = pipe.clusters
    assert main(["select", "--workspace", cfg.workspace, "--method", "rds", "--budget",
                 "0.5"]) != 0
    assert "--budget do not apply" in capsys.readouterr().err
    assert main(["select", "--workspace", cfg.workspace, "--method", "rds",
                 "--top-p", "0.1"]) == 0
    res = load_rds(pipe.ws)
    assert res.store == pipe.cluster_store.path.name  # the cluster features were reused
    X = FeatureStore.open(pipe.cluster_store.path).read()
    T, ids = target_hidden_states(pipe.target, cfg.model, cfg.lora, cfg.cluster_features)
    want = brute_rds(X, T, ids)
    ok = np.isfinite(want)
    np.testing.assert_allclose(res.scores[ok], want[ok], rtol=1e-4, atol=1e-5)
    from clusterucb_core.selection.runs import open_run

    run = open_run(pipe.ws, "rds")
    assert run.done and sorted(run.selected()) == sorted(np.argsort(-np.where(
        ok & (run.labels >= 0), want, -np.inf))[:4])
    assert main(["export", "--workspace", cfg.workspace, "--run", "rds", "--out",
                 str(tmp_path / "out"), "--no-dataset"]) == 0
    lines = (tmp_path / "out" / "selected.jsonl").read_text().splitlines()
    assert len(lines) == 4
    out = capsys.readouterr().out
    assert "no gradient computed" in out and "exported run rds" in out
