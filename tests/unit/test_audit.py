"""The audit meter (estimated recall of the exhaustive top-p without scoring every row) and the
subtask takeover note, on pools whose truth is known."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from clusterucb_core.config import SelectionSpec
from clusterucb_core.export import files as ex
from clusterucb_core.export import hub
from clusterucb_core.selection.audit import audit_result, audit_run, cold_start_rows
from clusterucb_core.selection.oracle import TableOracle, recall
from clusterucb_core.selection.run import SelectionRun
from clusterucb_core.selection.takeover import counts_of, takeover


def clustered_pool(seed: int, n: int = 1600, k: int = 20, dim: int = 16):
    """Cluster means plus row noise, with features that carry a row's own deviation too."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(k, size=n)
    centres = rng.normal(size=(k, dim))
    X = centres[labels] + rng.normal(scale=0.5, size=(n, dim))
    w = rng.normal(size=dim)
    scores = rng.normal(0, 0.03, k)[labels] + 0.01 * (X - centres[labels]) @ w / dim ** 0.5 \
        + rng.normal(0, 0.01, n)
    F = X / np.linalg.norm(X, axis=1, keepdims=True)
    return labels, F.astype(np.float32), scores


def played(labels, scores, F=None, **spec):
    s = SelectionSpec(**{"cold_start": 0.05, "budget": 0.2, "top_p": 0.05, **spec})
    run = SelectionRun(labels, TableOracle(scores), s, features=F if s.needs_features else None)
    run.run_to_end()
    return run


@pytest.mark.parametrize("draw_order", ["random", "predicted"])
def test_the_interval_holds_the_true_recall_on_synthetic_pools(draw_order):
    hits, errs = [], []
    for seed in range(6):
        labels, F, scores = clustered_pool(seed)
        run = played(labels, scores, F, seed=seed, draw_order=draw_order)
        a = audit_run(run, n_boot=100)
        truth = recall(run.selected(), scores, run.n_top)
        hits.append(a.recall.low <= truth <= a.recall.high)
        errs.append(abs(a.recall.value - truth))
        assert 0 <= a.recall.low <= a.recall.value <= a.recall.high <= 1
        assert a.n_unscored == len(labels) - run.budget_used
    assert np.mean(hits) >= 4 / 6, (hits, errs)
    assert np.median(errs) <= 0.08, errs


def test_with_every_row_scored_the_estimate_is_the_truth():
    labels, F, scores = clustered_pool(0, n=400)
    run = played(labels, scores, seed=1, budget=1.0)
    a = audit_run(run, n_boot=20)
    truth = recall(run.selected(), scores, run.n_top)
    assert a.n_unscored == 0
    assert a.recall.low == a.recall.value == a.recall.high == pytest.approx(truth)
    assert a.mass_share.value == pytest.approx(1.0)


def test_the_cold_start_is_the_seeded_uniform_draw_under_predicted_draws():
    labels, F, scores = clustered_pool(2)
    run = played(labels, scores, F, seed=5, draw_order="predicted")
    rows = cold_start_rows(run.round_drawn, run.labels, run.spec.seed)
    assert rows is not None and len(rows) == int((run.round_drawn == 0).sum())
    # a cold start that is not the seeded draw (another seed's rows) is refused, not audited
    tampered = run.round_drawn.copy()
    c0 = np.flatnonzero((labels == labels[rows[0]]) & (tampered != 0))[0]
    tampered[rows[0]], tampered[c0] = -1, 0
    assert cold_start_rows(tampered, run.labels, run.spec.seed) is None
    res = replace(run.result(), round_drawn=tampered)
    assert audit_result(res) is None


def test_the_manifest_and_the_card_carry_the_estimate(tmp_path):
    from clusterucb_core.data.load import load_pool

    src = tmp_path / "pool.jsonl"
    import json

    labels, F, scores = clustered_pool(3, n=400)
    src.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}) + "\n"
        for i in range(400)))
    run = played(labels, scores, seed=2)
    out = ex.export_selection(tmp_path / "exp", load_pool(src), run.result(), run_id="r",
                              with_dataset=False,
                              extra={"subtask_note": {"sentence": "One subtask takes it."}})
    man = ex.load_manifest(out)
    est = man["audit"]["recall_estimate"]
    assert set(est) == {"value", "low", "high"} and est["low"] <= est["value"] <= est["high"]
    assert set(man["audit"]["mass_share_estimate"]) == {"value", "low", "high"}
    assert man["audit"]["audit"]["unscored_rows"] == 400 - run.budget_used
    card = hub.dataset_card(man)
    assert "## How good is it" in card
    assert f"recall of the exhaustive top-p {est['value']:.2f}" in card
    assert "One subtask takes it." in card


def test_one_subtask_taking_a_max_rule_selection_is_said():
    counts = {"snarks": 110, "date": 1, "logic": 0}
    note = takeover(counts, "max", {"snarks": 37, "date": 37, "logic": 37})
    assert note.subtask == "snarks" and note.rows == 110 and note.selected == 111
    assert "110 of the 111" in note.sentence() and "serve 3 subtasks" in note.sentence()
    assert note.to_dict()["balanced"] == {"snarks": 37, "date": 37, "logic": 37}
    assert takeover(counts, "subtasks") is None  # the balanced rule already shares
    assert takeover({"snarks": 111}, "max") is None  # one subtask: nothing to take from
    assert takeover({"a": 5, "b": 5}, "max") is None  # half is not more than half
    assert counts_of([3, 4, 5, 9], {3: "a", 4: "b", 5: "a"}, ["a", "b"]) == {"a": 2, "b": 1}


def test_the_meter_audits_the_bandits_own_selection_not_the_pins():
    """Pins beyond the slots made the curated set's estimated mass share 3.6."""
    from clusterucb_core.config import SelectionSpec
    from clusterucb_core.selection.audit import audit_run
    from clusterucb_core.selection.oracle import TableOracle
    from clusterucb_core.selection.run import LedgerView, SelectionRun

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 8, 2000)
    scores = rng.normal(size=8)[labels] + 0.3 * rng.normal(size=2000)
    run = SelectionRun(labels, TableOracle(scores), SelectionSpec(cold_start=0.1, budget=0.3))
    run.run_to_end()
    worst = frozenset(int(r) for r in np.argsort(scores)[:4 * run.n_top])
    own = audit_run(run)
    pinned = audit_run(run, ledger=LedgerView(pinned=worst))
    assert own.mass_share.value <= 1.05 and own.recall.value > pinned.recall.value
