"""The pure parts behind issue 23's app fixes: keywords without markup, round regret ticks,
the race's draw order and its agreement with a run, the K sentence, a stale export, and an
Undo read from the ledger."""

from __future__ import annotations

import numpy as np
import pytest

from clusterucb_app import clusters_view, export_view, marks, plots_rounds
from clusterucb_core.config import SelectionSpec
from clusterucb_core.selection.curation import Ledger
from clusterucb_core.selection.oracle import TableOracle, recall
from clusterucb_core.selection.run import SelectionRun
from clusterucb_core.teach import race as rc


def test_cluster_keywords_never_come_from_markup():
    from clusterucb_core.clustering.summaries import class_tfidf_keywords

    texts = ["first line<br />second line<br/>done"] * 3 + ["&nbsp;<b>bold</b> words here"] * 3
    kw = class_tfidf_keywords(texts, np.array([0, 0, 0, 1, 1, 1]), 2)
    words = {w for k in kw for w in k}
    assert not words & {"br", "nbsp", "b"}
    assert {"line", "bold", "words"} <= words


@pytest.mark.parametrize("top", [0.905, 0.109, 3.2, 17.0, 0.0])
def test_regret_axis_ticks_are_round(top):
    fig = plots_rounds.regret_chart([0, 1, 2], [0.2, 0.5, 0.9], [0.12, 0.5, top])
    ticks = list(fig.layout.yaxis2.tickvals)
    step = ticks[1] - ticks[0]
    mant = step / 10 ** np.floor(np.log10(step))
    assert ticks[0] == 0 and round(mant, 9) in (1, 2, 5)
    assert np.allclose(np.diff(ticks), step) and ticks[-1] >= max(top, 0.5)


def _planted(n=200, k=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), n // k)
    feats = rng.normal(size=(n, 6)).astype(np.float32)
    scores = feats[:, 0] * 0.1 + 0.05 * labels
    return labels, scores, feats


def test_race_draw_order_needs_features_and_matches_a_run():
    labels, scores, feats = _planted()
    spec = rc.RaceSpec(contestants=(rc.Contestant("ucb_beta", beta=1.0),), seeds=(3,),
                       draw_order="predicted")
    with pytest.raises(ValueError, match="needs the clustering's features"):
        rc.run_race(labels, scores, spec)
    res = rc.run_race(labels, scores, spec, features=feats)
    run = SelectionRun(labels, TableOracle(scores),
                       SelectionSpec(seed=3, draw_order="predicted"), None, features=feats)
    run.run_to_end()
    want = recall(run.selected(), scores, run.n_top)
    got = res.summary.set_index("contestant").loc["ucb_beta β=1", "recall_mean"]
    assert got == pytest.approx(want)
    assert rc.RaceSpec.from_dict(spec.to_dict()).draw_order == "predicted"


def test_k_sentence_says_auto_or_fixed():
    assert clusters_view.k_sentence({"spec": {"k": 0, "k_rule": "size8"}}, 5) == \
        "K auto chose K=5 by the rule `size8`, without a scan."
    assert clusters_view.k_sentence({"spec": {"k": 7}}, 7) == "This clustering used a fixed K=7."


def test_stale_export_names_what_changed():
    manifest = {"selected": {"rows": [1, 2, 3]}, "tags": {"rows": {"2": ["x"]}},
                "spec": {"balance": "max"}}
    assert export_view.stale_export(manifest, [1, 2, 3], {2: ("x",)}, "max") is None
    assert export_view.stale_export(manifest, [1, 2, 4], {2: ("x",)}, "max") == \
        "1 row(s) added and 1 removed"
    assert export_view.stale_export(manifest, [3, 2, 1], {2: ("x",)}, "max") == \
        "the rows' order changed"
    assert "tags changed" in export_view.stale_export(manifest, [1, 2, 3], {}, "max")
    assert "subtasks" in export_view.stale_export(manifest, [1, 2, 3], {2: ("x",)}, "subtasks")


def test_last_action_is_read_from_the_ledger(tmp_path):
    lg = Ledger(tmp_path / "ledger.jsonl", clustering="k4")
    assert marks.last_action(lg.edits(), "k4") is None
    lg.pin([1, 2], note="old")  # an edit that names no action (the CLI, older apps)
    assert marks.last_action(lg.edits(), "k4") is None
    lg.reject([5], action="a1")
    lg.ban(2, action="a2")
    lg.ban(3, action="a2")
    last = marks.last_action(Ledger(lg.path, clustering="k4").edits(), "k4")  # a reload
    assert (last["op"], last["items"]) == ("ban", [2, 3])
    assert last["before"].banned == frozenset() and last["before"].rejected == {5}
    assert marks.last_action(lg.edits(), "other") is None  # bans of another clustering
    marks.apply_edits(lg, marks.restore_edits(lg.state(), last["before"], rows=[],
                                              clusters=[2, 3]), "undo", action="undo:a2")
    assert lg.state().banned == frozenset()
    assert marks.last_action(lg.edits(), "k4") is None  # the last action was an undo
