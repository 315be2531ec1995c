"""Policy races (same seeds, same rewards, tidy results, CSV/PNG) and run comparison."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clusterucb_app import plots_teach as pt
from clusterucb_core.config import SelectionSpec
from clusterucb_core.selection.oracle import TableOracle
from clusterucb_core.selection.run import SelectionRun
from clusterucb_core.teach import playground as pgm
from clusterucb_core.teach import race as rc
from clusterucb_core.teach.race import Contestant, RaceSpec


@pytest.fixture(scope="module")
def pg():
    return pgm.build(pgm.PlaygroundSpec(n_arms=6, seed=1, size_min=40, size_max=90))


SMALL = RaceSpec(contestants=(Contestant("ucb_beta"), Contestant("ucb_beta", beta=0.0),
                              Contestant("random"), Contestant("thresh_hard", quantile=0.3),
                              Contestant("oracle")),
                 seeds=(0, 1, 2), budget=0.25, top_p=0.05, cold_start=0.05, draw_batch=6)


@pytest.fixture(scope="module")
def result(pg):
    labels, rewards, names, source = rc.playground_source(pg)
    return rc.run_race(labels, rewards, SMALL, names=names, source=source)


def test_identical_seeds_give_identical_races(pg, result):
    again = rc.run_race(pg.labels, pg.rewards, SMALL)
    pd.testing.assert_frame_equal(result.curves, again.curves)
    pd.testing.assert_frame_equal(result.draws, again.draws)
    pd.testing.assert_frame_equal(result.summary, again.summary)
    other = rc.run_race(pg.labels, pg.rewards,
                        RaceSpec(contestants=SMALL.contestants, seeds=(5, 6, 7),
                                 budget=0.25, top_p=0.05, cold_start=0.05, draw_batch=6))
    assert not result.draws.equals(other.draws)


def test_contestants_share_the_cold_start_of_a_seed(result):
    d = result.draws[result.draws["round"] == 0]
    a = d[d.contestant == "ucb_beta β=1"].drop(columns="contestant").reset_index(drop=True)
    b = d[d.contestant == "random"].drop(columns="contestant").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert (result.curves.loc[result.curves.contestant == "oracle", "kind"] != "cold_start").all()


def test_tidy_results_are_consistent(pg, result):
    c = result.curves
    assert set(c.contestant) == set(result.contestants) and set(c.seed) == {0, 1, 2}
    budget_total = int(0.25 * pg.N)
    for _, g in c.groupby(["contestant", "seed"]):
        assert g["round"].iloc[0] == -1 and g["recall"].iloc[0] == 0
        assert (np.diff(g["budget_used"]) > 0).all() and g["budget_used"].iloc[-1] == budget_total
        assert (np.diff(g["recall"]) >= 0).all()
        # the last point of a curve is the final recall in the summary's per-seed mean
    s = result.summary.set_index("contestant")
    finals = c.groupby(["contestant", "seed"])["recall"].last().groupby("contestant").mean()
    for name in result.contestants:
        assert finals[name] == pytest.approx(s.loc[name, "recall_mean"])
        band = result.band[(result.band.contestant == name) & (result.band.metric == "recall")]
        assert band["mean"].iloc[-1] == pytest.approx(s.loc[name, "recall_mean"])
        assert (band["lo"] <= band["mean"] + 1e-12).all() and (
            band["mean"] <= band["hi"] + 1e-12
        ).all()
    # draws add up to the budget, per contestant and seed
    tot = result.draws.groupby(["contestant", "seed"])["draws"].sum()
    assert (tot == budget_total).all()
    mat, labels = rc.draw_matrix(result.draws, "random", result.k, 3)
    assert mat.shape[0] == result.k and labels[0] == "cold start"
    assert mat.sum() * 3 == pytest.approx(3 * budget_total)
    np.testing.assert_allclose(
        result.band[(result.band.contestant == "oracle")
                    & (result.band.metric == "regret_vs_oracle")]["mean"], 0.0)


def test_ucb_beats_random_on_the_gem(result):
    s = result.summary.set_index("contestant")
    assert s.loc["ucb_beta β=1", "recall_mean"] > s.loc["random", "recall_mean"]
    assert s.loc["random", "regret_vs_oracle_mean"] > s.loc["ucb_beta β=1", "regret_vs_oracle_mean"]
    r = result.recall_at(0.25)
    assert list(r.contestant) == result.contestants
    assert r.set_index("contestant").loc["random", "recall_mean"] == pytest.approx(
        s.loc["random", "recall_mean"])


def test_spec_from_plain_data_and_errors():
    spec = RaceSpec.from_dict({"seeds": 3, "budget": 0.3, "contestants": [
        {"policy": "ucb_beta", "beta": 2.0}, {"policy": "oracle"}]})
    assert spec.seeds == (0, 1, 2) and spec.contestants[0].name == "ucb_beta β=2"
    assert RaceSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown setting"):
        RaceSpec.from_dict({"budgt": 0.2})
    with pytest.raises(ValueError, match="share the name"):
        RaceSpec(contestants=(Contestant("ucb1"), Contestant("ucb1"))).check()
    with pytest.raises(ValueError, match="unknown policy"):
        RaceSpec(contestants=(Contestant("greedy"),)).check()
    with pytest.raises(ValueError, match="top_p"):
        RaceSpec(budget=0.01, top_p=0.05).check()


def test_write_race_csv_and_png(result, tmp_path):
    paths = rc.write_race(result, tmp_path / "out")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = pd.read_csv(paths["summary"])
    assert list(back["contestant"]) == result.contestants
    np.testing.assert_allclose(back["recall_mean"], result.summary["recall_mean"])
    meta = json.loads(paths["settings"].read_text())
    assert meta["race"]["seeds"] == [0, 1, 2] and meta["source"]["kind"] == "playground"


def test_figures_have_one_line_per_contestant(result):
    fig = pt.race_curve_chart(result.band, "recall")
    lines = [t for t in fig.data if t.mode == "lines" and t.fill is None]
    assert [t.name for t in lines][:len(result.contestants)] == result.contestants
    assert lines[-1].name.startswith("scoring random rows")
    assert len([t for t in fig.data if t.fill == "toself"]) == len(result.contestants)
    fig = pt.race_heatmaps(result.draws, result.contestants, result.k, 3,
                           best=result.best_arm)
    assert len(fig.data) == len(result.contestants)
    assert fig.data[0].y[result.best_arm].startswith("★")
    fig = pt.race_summary_chart(result.summary)
    assert list(fig.data[0].x) == result.contestants


# ---------------------------------------------------------------------------------------
# a workspace with exhaustive scores and two saved runs


def _workspace(tmp_path):
    from clusterucb_core.clustering.clusterset import save_clusters
    from clusterucb_core.clustering.kmeans import KMeansResult
    from clusterucb_core.workspace import Workspace

    ws = Workspace.open(tmp_path / "ws")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), [30, 20, 40, 10])
    labels[5] = -1  # a row without features
    scores = np.array([0.05, 0.1, 0.0, 0.3])[np.maximum(labels, 0)] + 0.03 * rng.normal(
        size=len(labels))
    scores[5] = np.nan
    save_clusters(ws, "k4", KMeansResult(labels, np.eye(4, dtype=np.float32), 0.0, 1),
                  features_fingerprint="x")
    (ws.root / "scores").mkdir()
    np.save(ws.root / "scores" / "exhaustive.npy", scores)
    ws.update_meta(clusters="k4")
    for run_id, spec in (("run-a", SelectionSpec(beta=1.0, budget=0.3, top_p=0.1, seed=1)),
                         ("run-b", SelectionSpec(beta=0.0, budget=0.5, top_p=0.1, seed=2))):
        run = SelectionRun(labels, TableOracle(scores), spec, ws.runs(run_id),
                           meta={"clustering": "k4", "reward": "exhaustive"})
        run.run_to_end()
    return ws, labels, scores


def _from_log(path):
    """Scores and plain top-n selection of a run, read straight from its log."""
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    head, rounds = lines[0], lines[1:]
    got = {}
    for r in rounds:
        for row, s in zip(r["rows"], r["rewards"]):
            got[row] = s
    ok = [(-s, row) for row, s in got.items() if s is not None]
    top = [row for _, row in sorted(ok)[:head["n_top"]]]
    return got, set(top)


def test_workspace_race_source(tmp_path):
    ws, labels, scores = _workspace(tmp_path)
    lab, rew, names, source = rc.workspace_source(ws)
    np.testing.assert_array_equal(lab, labels)
    assert source["clusters"] == "k4" and len(names) == 4
    res = rc.run_race(lab, rew, RaceSpec(contestants=(Contestant("ucb_beta"),
                                                      Contestant("oracle")), seeds=(0,)))
    assert res.best_arm == 3 and res.k == 4
    np.save(ws.root / "scores" / "exhaustive.npy", scores[:-1])
    with pytest.raises(ValueError, match="different pools"):
        rc.workspace_source(ws)


def test_comparison_csv_matches_the_logs(tmp_path):
    ws, labels, scores = _workspace(tmp_path)
    sources = np.array([f"s{i % 3}" for i in range(len(labels))])
    cmp = rc.compare_runs(ws, "run-a", "run-b", sources=sources)
    table = pd.read_csv(pd.io.common.StringIO(cmp.to_csv()))
    got_a, top_a = _from_log(ws.runs("run-a") / "log.jsonl")
    got_b, top_b = _from_log(ws.runs("run-b") / "log.jsonl")
    assert set(table["row"]) == top_a | top_b
    for _, r in table.iterrows():
        row = int(r["row"])
        assert r["in_a"] == (row in top_a) and r["in_b"] == (row in top_b)
        for got, col in ((got_a, "score_a"), (got_b, "score_b")):
            if row in got:
                assert r[col] == pytest.approx(got[row])
            else:
                assert np.isnan(r[col])
        assert r["source"] == sources[row] and r["cluster"] == labels[row]
    ov = cmp.overlap
    assert ov["both"] == len(top_a & top_b) and ov["only_a"] == len(top_a - top_b)
    assert cmp.clusters["a"].sum() == len(top_a) and cmp.sources["b"].sum() == len(top_b)
    changed = set(cmp.settings.loc[cmp.settings.changed, "setting"])
    assert {"beta", "budget", "seed"} <= changed and "top_p" not in changed
    assert cmp.same_clusters
    sel = cmp.scores[(cmp.scores.run == "A") & (cmp.scores.set == "selected")]
    assert set(sel["row"]) == top_a
    # a pin in the ledger is in the selection (what an export gives), unless asked not to
    from clusterucb_core.selection.curation import Ledger

    outside = next(r for r in range(len(labels)) if r not in top_a and labels[r] >= 0)
    Ledger(ws.ledger_path, clustering="k4").pin([outside])
    assert outside in rc.load_run(ws, "run-a").selected
    assert outside not in rc.load_run(ws, "run-a", apply_ledger=False).selected
    for fig in (pt.overlap_chart(ov), pt.counts_chart(cmp.clusters, "cluster"),
                pt.score_dist_chart(cmp.scores)):
        assert len(fig.data) >= 2


def test_cli_race(tmp_path, capsys):
    from clusterucb_core.cli import main

    cfg = tmp_path / "race.toml"
    cfg.write_text('out = "ignored"\n[race]\nseeds = 2\nbudget = 0.2\n'
                   '[[race.contestants]]\npolicy = "ucb_beta"\n'
                   '[[race.contestants]]\npolicy = "random"\n'
                   '[playground]\nn_arms = 4\nseed = 2\n')
    out = tmp_path / "out"
    assert main(["race", "--config", str(cfg), "--out", str(out), "--no-png"]) == 0
    text = capsys.readouterr().out
    assert "ucb_beta β=1" in text and "random" in text
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["contestant"]) == ["ucb_beta β=1", "random"]
    assert not (out / "race.png").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text('[playground]\n[workspace]\npath = "x"\n')
    assert main(["race", "--config", str(bad)]) == 2
    assert "exactly one of" in capsys.readouterr().err
