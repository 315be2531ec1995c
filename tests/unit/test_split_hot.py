"""Hot arms that split (`SelectionSpec.split_hot`, beyond the paper): on synthetic arms where
the right answer is known, through a log replay, with bans, in the app's arm tables, and the
setting's validation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from clusterucb_app import rounds
from clusterucb_core.config import ConfigError, SelectionSpec, from_dict, to_dict
from clusterucb_core.export.files import reproduce_selection
from clusterucb_core.selection.oracle import TableOracle, recall
from clusterucb_core.selection.run import LedgerView, SelectionRun

SPEC = SelectionSpec(cold_start=0.02, budget=0.2, top_p=0.05, draw_batch=8, seed=1)


def mixed_pool(seed: int, n_per: int = 200, k: int = 4):
    """k clusters of n_per rows; cluster 0 is the best on average but is half high, half low
    reward, the halves separable in the features; clusters 1.. are plain and lower. The
    exhaustive top-5% all lie in cluster 0's high half."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), n_per)
    high = (labels == 0) & (np.arange(k * n_per) % 2 == 1)
    X = 0.3 * rng.normal(size=(k * n_per, 16))
    X[labels == 0] += np.eye(16)[0]
    X[high] += 2 * np.eye(16)[1]
    for c in range(1, k):
        X[labels == c] += 3 * np.eye(16)[c + 2]
    scores = np.array([0.3, 0.2, 0.1, 0.0])[labels] + rng.normal(0, 0.05, len(labels))
    scores[labels == 0] += np.where(high[labels == 0], 0.4, -0.4)
    return labels, X, scores, high


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_hot_mixed_arm_splits_into_its_high_half_and_recall_rises(seed):
    labels, X, scores, high = mixed_pool(seed)
    spec = replace(SPEC, seed=seed)
    plain = SelectionRun(labels, TableOracle(scores), spec)
    plain.run_to_end()
    split = SelectionRun(labels, TableOracle(scores), replace(spec, split_hot=8), features=X)
    while split.K == 4:
        split.step()
    first = split.records[-1]
    assert first.kind == "bandit" and first.arm == 0  # a round that played the hot arm 0
    assert first.explanation["split"] == {"parent": 0, "children": [4, 5]}
    assert "Split arm 0 into arms 4, 5 because it is hot" in first.explanation["sentence"]
    # one child holds (nearly) only the high half, the other (nearly) only the low half
    purity = [high[split._order[c]].mean() for c in (4, 5)]
    assert max(purity) > 0.95 and min(purity) < 0.05
    # the parent is retired: no member, no history; its children belong to its cluster
    assert split.sizes[0] == 0 and split.stats().n[0] == 0
    assert list(split.arm_cluster[4:6]) == [0, 0] and list(split.arm_parent[4:6]) == [0, 0]
    split.run_to_end()
    n_top = split.n_top
    assert recall(split.selected(), scores, n_top) > recall(plain.selected(), scores, n_top)
    assert recall(split.selected(), scores, n_top) >= 0.95
    # the budget and the selection rule are unchanged
    assert split.budget_used == plain.budget_used and len(split.selected()) == n_top


def test_no_split_when_off_or_when_the_arm_is_not_hot():
    labels, X, scores, _ = mixed_pool(0)
    off = SelectionRun(labels, TableOracle(scores), SPEC, features=X)
    off.run_to_end()
    assert off.K == 4 and not any("split" in r.explanation for r in off.records)
    # cluster 0 made uniformly low: it is never the best arm, so it never splits
    low = np.where(labels == 0, -1.0, scores)
    run = SelectionRun(labels, TableOracle(low), replace(SPEC, split_hot=8), features=X)
    run.run_to_end()
    assert 0 not in set(run.arm_parent.tolist())


def test_a_split_run_reopens_from_its_log_exactly(tmp_path):
    labels, X, scores, _ = mixed_pool(3)
    spec = replace(SPEC, split_hot=8, seed=3)
    whole = SelectionRun(labels, TableOracle(scores), spec, tmp_path / "whole", features=X)
    whole.run_to_end()
    assert whole.K > 4
    cut = SelectionRun(labels, TableOracle(scores), spec, tmp_path / "cut", features=X)
    cut.run_to_end(max_rounds=3)  # the cold start and two rounds: past the first split
    assert cut.K > 4
    again = SelectionRun.open(tmp_path / "cut", labels, TableOracle(scores), features=X)
    assert again.K == cut.K
    np.testing.assert_array_equal(again.arm_parent, cut.arm_parent)
    again.run_to_end()
    np.testing.assert_array_equal(whole.round_drawn, again.round_drawn)
    np.testing.assert_array_equal(whole.arm_parent, again.arm_parent)
    assert [r.explanation for r in whole.records] == [r.explanation for r in again.records]
    done = SelectionRun.open(tmp_path / "whole", labels, TableOracle(scores), features=X)
    a, b = done.stats(), whole.stats()
    for name in ("n", "mean", "std", "remaining", "drawn"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for ra, rb in zip(a.rewards, b.rewards):
        np.testing.assert_array_equal(ra, rb)
    np.testing.assert_array_equal(done.selected(), whole.selected())
    with pytest.raises(ValueError, match="split_hot needs the cluster features"):
        SelectionRun.open(tmp_path / "whole", labels, TableOracle(scores))
    other = np.random.default_rng(9).normal(size=X.shape)
    with pytest.raises(ValueError, match="split|drew rows"):
        SelectionRun.open(tmp_path / "whole", labels, TableOracle(scores), features=other)


class _Ledger:
    """A ledger whose banned clusters the test changes between rounds."""

    def __init__(self):
        self.banned: set[int] = set()

    def state(self) -> LedgerView:
        return LedgerView(frozenset(self.banned))


def test_banning_a_split_arms_cluster_bans_its_children():
    labels, X, scores, _ = mixed_pool(0)
    ledger = _Ledger()
    run = SelectionRun(labels, TableOracle(scores), replace(SPEC, split_hot=8), ledger=ledger,
                       features=X)
    run.run_to_end(max_rounds=3)
    children = np.flatnonzero(run.arm_cluster == 0)[1:]
    assert len(children) >= 2
    ledger.banned = {0}
    assert run.banned_mask()[np.flatnonzero(run.arm_cluster == 0)].all()
    assert not run.banned_mask()[run.arm_cluster != 0].any()
    before = run.round_drawn >= 0
    run.run_to_end()
    newly = (run.round_drawn >= 0) & ~before
    assert newly.any() and not (labels[newly] == 0).any()  # no child of arm 0 drawn again
    assert not np.isin(run.selected(), np.flatnonzero(labels == 0)).any()
    # bans are recorded by cluster, so a rerun from a manifest replays them and the splits
    res = run.result()
    assert res.ban_changes[-1][1] == (0,) and res.k == 4
    man = {"clusters": {"labels_fingerprint": res.labels_fingerprint}, "spec": to_dict(res.spec),
           "counts": {"k": res.k},
           "ledger": {"ban_changes": [[r, list(b)] for r, b in res.ban_changes],
                      "banned": sorted(res.banned), "pinned": [], "rejected": []}}
    again = reproduce_selection(man, labels, TableOracle(scores), features=X)
    np.testing.assert_array_equal(again, run.selected())
    with pytest.raises(ValueError, match="split_hot needs the cluster features"):
        SelectionRun(labels, TableOracle(scores), replace(SPEC, split_hot=8))


def test_the_app_tables_grow_with_the_arms():
    labels, X, scores, _ = mixed_pool(0)
    run = SelectionRun(labels, TableOracle(scores), replace(SPEC, split_hot=8), features=X)
    run.run_to_end()
    names = {0: "mixed", 1: "b", 2: "c", 3: "d"}
    table = rounds.arm_table(run, names, None, None, LedgerView(frozenset({0})))
    assert len(table) == run.K and table["state"][0] == "split"
    # the curation marks of a split arm's children are their cluster's
    assert table["curation"][0] == table["curation"][4] == "banned"
    assert table["label"][4] == "mixed (split of arm 0)" and table["label"][1] == "b"
    h = rounds.history(run)
    assert h["values"].shape == (len(run.records), run.K)
    assert np.isnan(h["values"][0, 4:]).all()  # the children did not exist in the cold start


def test_split_hot_setting_is_validated_and_keeps_old_fingerprints():
    with pytest.raises(ConfigError, match="split_hot = 1: must be 0"):
        SelectionSpec(split_hot=1)
    with pytest.raises(ConfigError, match="split_hot"):
        SelectionSpec(split_hot=-2)
    with pytest.raises(ConfigError, match="split_hot"):
        SelectionSpec(split_hot=2.5)
    assert "split_hot" not in to_dict(SelectionSpec())  # off: an old spec's dict unchanged
    spec = SelectionSpec(split_hot=6)
    assert from_dict(SelectionSpec, to_dict(spec)) == spec
