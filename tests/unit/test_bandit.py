"""Arm policies on hand-made reward tables, and SelectionRun's rules (docs/METHOD.md section 4)."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterucb_core.config import SelectionSpec
from clusterucb_core.selection.curation import Ledger
from clusterucb_core.selection.oracle import TableOracle
from clusterucb_core.selection.policies import (
    POLICIES,
    ArmStats,
    NoEligibleArm,
    make_policy,
    policy_rng,
    top_quantile,
)
from clusterucb_core.selection.run import RunFinished, SelectionRun, count_of


def spec(**kw) -> SelectionSpec:
    base = dict(policy="ucb_beta", beta=1.0, cold_start=0.0, budget=0.5, top_p=0.1,
                draw_batch=4, seed=0)
    base.update(kw)
    return SelectionSpec(**base)


def clustered(n_per=(30, 30, 30), means=(0.0, 1.0, 0.5), noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, k) for k, n in enumerate(n_per)])
    scores = np.array([means[k] for k in labels]) + noise * rng.standard_normal(len(labels))
    return labels, scores


# ------------------------------------------------------------------ policies, hand-made


def test_ucb_beta_values_and_choice():
    stats = ArmStats.from_rewards([[0.1, 0.1], [0.5, 0.5], [0.2, 0.4]])
    pol = make_policy("ucb_beta", beta=1.0)
    np.testing.assert_allclose(pol.values(stats), [0.1, 0.5, 0.4])
    assert pol.choose(stats) == 1
    # a large beta prefers the uncertain arm (mean 0.3, population std 0.1)
    assert make_policy("ucb_beta", beta=10.0).choose(stats) == 2
    d = pol.decide(stats)
    assert d.reason == "max_value" and "arm 1" in d.sentence and "next best arm 2" in d.sentence


def test_ties_go_to_the_lowest_index_and_unplayed_arms_first():
    pol = make_policy("ucb_beta")
    assert pol.choose(ArmStats.from_rewards([[0.5], [0.5], [0.5]])) == 0
    stats = ArmStats.from_rewards([[0.9, 0.9], [], [0.1]])
    d = pol.decide(stats)
    assert d.arm == 1 and d.reason == "no_history"


@pytest.mark.parametrize("name", POLICIES)
def test_exhausted_and_banned_arms_never_chosen_even_all_negative(name):
    # arm 0 would win on every rule (largest rewards), but it is exhausted; arm 1 is banned
    stats = ArmStats.from_rewards([[-0.01, -0.02], [-0.03], [-0.9, -0.8], [-0.7]],
                                  remaining=[0, 5, 3, 2], banned=[1])
    pol = make_policy(name)
    for r in range(50):
        d = pol.decide(stats, policy_rng(0, r))
        assert d.arm in (2, 3)
        assert d.values[0] == -math.inf and d.values[1] == -math.inf
    with pytest.raises(NoEligibleArm):
        pol.decide(ArmStats.from_rewards([[0.1], [0.2]], remaining=[0, 0]), policy_rng(0, 0))


def test_ucb1_formula():
    stats = ArmStats.from_rewards([[0.5] * 10, [0.45]])
    v = make_policy("ucb1").values(stats)
    np.testing.assert_allclose(v, [0.5 + math.sqrt(2 * math.log(11) / 10),
                                   0.45 + math.sqrt(2 * math.log(11) / 1)])
    assert make_policy("ucb1").choose(stats) == 1


def test_thresh_hard_values_and_fallback():
    stats = ArmStats.from_rewards([[0.0, 0.0, 0.1, 0.2], [0.9, 0.8, 0.95, 0.85]])
    pol = make_policy("thresh_hard", quantile=0.25)
    # the top-25% quantile of the 8 draws (linear interpolation): 0.85 + 0.25 * 0.05
    assert top_quantile(stats.all_rewards, 0.25) == pytest.approx(0.8625)
    np.testing.assert_allclose(pol.values(stats), [0.0, 0.5])
    assert pol.choose(stats) == 1
    # every eligible arm is below tau (the draws above it are in an exhausted arm):
    # the eligible arm with the largest single draw is played
    stats = ArmStats.from_rewards([[1.0], [0.1, 0.2], [0.3]], remaining=[0, 1, 1])
    d = pol.decide(stats)
    assert d.arm == 2 and d.reason == "fallback_max_draw"


def test_thresh_normal_std_zero_defined_no_nan():
    pol = make_policy("thresh_normal", quantile=0.25)
    # tau = 0.625; arm 0 has std 0 and mean 0.5 < tau -> 0; arm 1 Normal(0.5, 0.5)
    stats = ArmStats.from_rewards([[0.5, 0.5], [0.0, 1.0]])
    v = pol.values(stats)
    assert v[0] == 0.0
    assert v[1] == pytest.approx(0.5 * math.erfc(0.125 / (0.5 * math.sqrt(2))))
    assert pol.choose(stats) == 1
    # std 0 and mean >= tau -> 1
    v = pol.values(ArmStats.from_rewards([[1.0, 1.0], [0.0, 0.2]]))
    assert v[0] == 1.0 and np.all(np.isfinite(v))
    # all single draws (std 0 everywhere): never NaN
    v = pol.values(ArmStats.from_rewards([[0.1], [0.2], [0.3], [0.4]]))
    assert np.all(np.isfinite(v)) and set(v.tolist()) <= {0.0, 1.0}


def test_random_policy_uniform_over_eligible_only():
    stats = ArmStats.from_rewards([[0.1], [], [0.3], [0.4]], remaining=[1, 1, 0, 1])
    pol = make_policy("random")
    picks = [pol.choose(stats, policy_rng(1, r)) for r in range(600)]
    counts = np.bincount(picks, minlength=4)
    assert counts[2] == 0
    assert all(150 <= c <= 250 for c in counts[[0, 1, 3]])  # ~200 each, not history-first


def test_thompson_prefers_a_clearly_better_arm_and_posterior_mean():
    rng = np.random.default_rng(0)
    stats = ArmStats.from_rewards([rng.normal(0.0, 0.1, 40), rng.normal(1.0, 0.1, 40)])
    pol = make_policy("thompson")
    picks = [pol.choose(stats, policy_rng(0, r)) for r in range(100)]
    assert sum(picks) >= 99
    allr = stats.all_rewards
    expect = (allr.mean() + np.array([h.sum() for h in stats.rewards])) / 41
    np.testing.assert_allclose(pol.values(stats), expect)


def test_unknown_policy_and_bad_settings():
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("ucb2")
    with pytest.raises(ValueError, match="quantile"):
        make_policy("thresh_hard", quantile=1.5)


# ------------------------------------------------------------------ budget arithmetic


def test_count_of_is_exact_for_decimals():
    assert count_of(0.29, 100) == 29  # 100 * 0.29 == 28.999999999999996 in floats
    assert count_of(0.05, 1000) == 50
    assert count_of(0.2, 7) == 1


@given(st.integers(0, 10_000), st.integers(1, 100_000))
def test_count_of_matches_fraction_floor(milli, n):
    frac = milli / 10_000
    assert count_of(frac, n) == (Fraction(milli, 10_000) * n).__floor__()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(0, 25), min_size=1, max_size=6),
       budget=st.integers(1, 100), cold=st.sampled_from([0.0, 0.05, 0.2, 0.5]),
       batch=st.integers(1, 9), top=st.integers(1, 100), seed=st.integers(0, 3),
       policy=st.sampled_from(POLICIES))
def test_budget_invariants(sizes, budget, cold, batch, top, seed, policy):
    labels = np.concatenate([np.full(s, k) for k, s in enumerate(sizes)] + [np.zeros(0)])
    labels = labels.astype(np.int64)
    n = len(labels)
    if n == 0:
        return
    b, p = budget / 100, min(top, budget) / 100
    scores = np.random.default_rng(seed).standard_normal(n)
    s = SelectionSpec(policy=policy, cold_start=cold, budget=b, top_p=p, draw_batch=batch,
                      seed=seed)
    total = count_of(b, n)
    cold_need = sum(min(max(count_of(cold, z), 1), z) for z in sizes if z) if cold else 0
    if cold_need > total:
        with pytest.raises(ValueError, match="cold start"):
            SelectionRun(labels, TableOracle(scores), s, n_clusters=len(sizes))
        return
    run = SelectionRun(labels, TableOracle(scores), s, n_clusters=len(sizes))
    assert run.budget_total == total and run.n_top == count_of(p, n)
    recs = run.run_to_end()
    drawn = np.concatenate([r.rows for r in recs]) if recs else np.zeros(0, int)
    assert len(set(drawn.tolist())) == len(drawn)  # without replacement
    assert run.budget_used == len(drawn) == min(total, n)
    used = 0
    left = np.array(sizes)
    for r in recs:
        if r.kind == "cold_start":
            assert len(r.rows) == cold_need
            np.testing.assert_array_equal(
                np.bincount(labels[r.rows], minlength=len(sizes)),
                [min(max(count_of(cold, z), 1), z) if z else 0 for z in sizes])
        else:
            assert len(r.rows) == min(batch, total - used, left[r.arm]) >= 1
            assert np.all(labels[r.rows] == r.arm)
        left -= np.bincount(labels[r.rows], minlength=len(sizes))
        used += len(r.rows)
        assert r.budget_used == used and r.budget_total == total
        np.testing.assert_array_equal(r.exhausted, left == 0)
    sel = run.selected()
    assert len(sel) == min(run.n_top, len(drawn))
    assert set(sel.tolist()) <= set(drawn.tolist())
    # the selection is the top of the scored rows
    if len(sel):
        assert scores[sel].min() >= np.sort(scores[drawn])[::-1][len(sel) - 1] - 1e-12


def test_top_p_above_budget_is_an_error():
    labels, scores = clustered()
    with pytest.raises(ValueError, match="top_p"):
        SelectionRun(labels, TableOracle(scores), spec(budget=0.1, top_p=0.2))


def test_cold_start_exhausting_a_one_row_cluster():
    labels = np.array([0] * 40 + [1] + [2] * 40)
    scores = np.where(labels == 1, 5.0, -1.0)  # the single row looks great, then is gone
    run = SelectionRun(labels, TableOracle(scores), spec(cold_start=0.05, budget=0.5))
    cold = run.step()
    assert cold.kind == "cold_start" and cold.arm is None
    np.testing.assert_array_equal(np.bincount(labels[cold.rows], minlength=3), [2, 1, 2])
    assert cold.exhausted.tolist() == [False, True, False]
    assert cold.value[1] == -math.inf
    for rec in run.run_to_end():
        assert rec.arm != 1 and len(rec.rows) >= 1


def test_all_negative_scores_exhausted_small_arm_never_drawn_again():
    # arm 0 has the best (least negative) rewards but only 3 members
    labels = np.array([0] * 3 + [1] * 30 + [2] * 30)
    scores = np.where(labels == 0, -0.01, np.where(labels == 1, -0.5, -0.9))
    run = SelectionRun(labels, TableOracle(scores), spec(budget=0.8, draw_batch=2))
    recs = run.run_to_end()
    arms = [r.arm for r in recs]
    assert arms[:3] == [0, 1, 2]  # unplayed arms first
    assert arms.count(0) == 2  # 2 + 1 rows, then exhausted
    assert all(len(r.rows) >= 1 for r in recs)
    assert run.budget_used == count_of(0.8, len(labels))


def test_known_best_arm_found_by_every_learning_policy():
    labels, scores = clustered(n_per=(60, 60, 60, 60), means=(0.0, 0.2, 1.0, 0.4))
    for name in ("ucb_beta", "ucb1", "thresh_hard", "thresh_normal", "thompson"):
        run = SelectionRun(labels, TableOracle(scores),
                           spec(policy=name, cold_start=0.05, budget=0.3, top_p=0.1))
        recs = run.run_to_end()
        counts = np.bincount([r.arm for r in recs if r.arm is not None], minlength=4)
        assert counts.argmax() == 2, (name, counts)
        assert np.all(labels[run.selected()] == 2)


# ------------------------------------------------------------------ determinism, resume


def _trace(run):
    return [(r.round, r.arm, r.rows.tolist(), r.rewards.tolist()) for r in run.records]


@pytest.mark.parametrize("name", ["ucb_beta", "random", "thompson"])
def test_determinism_by_seed(name):
    labels, scores = clustered(seed=3)
    runs = [SelectionRun(labels, TableOracle(scores), spec(policy=name, seed=s,
                                                            cold_start=0.1))
            for s in (7, 7, 8)]
    for r in runs:
        r.run_to_end()
    assert _trace(runs[0]) == _trace(runs[1])
    assert _trace(runs[0]) != _trace(runs[2])


@pytest.mark.parametrize("name", ["ucb_beta", "thresh_hard", "thompson", "random"])
def test_resume_from_log_equals_uninterrupted(tmp_path, name):
    labels, scores = clustered(n_per=(25, 40, 5, 30), means=(0.1, 0.3, 0.9, 0.2), seed=1)
    s = spec(policy=name, cold_start=0.1, budget=0.6, draw_batch=3, seed=11)
    whole = SelectionRun(labels, TableOracle(scores), s)
    whole.run_to_end()

    part = SelectionRun(labels, TableOracle(scores), s, log_dir=tmp_path / "run")
    part.run_to_end(max_rounds=4)
    del part
    again = SelectionRun.open(tmp_path / "run", labels, TableOracle(scores))
    assert again.next_round == 4
    again.run_to_end(max_rounds=3)
    # a crash mid-append leaves a torn line: it is dropped, the round is replayed
    with open(tmp_path / "run" / "log.jsonl", "ab") as fh:
        fh.write(b'{"round": 7, "kind": "bandit", "arm": 1, "ro')
    last = SelectionRun.open(tmp_path / "run", labels, TableOracle(scores))
    assert last.next_round == 7
    last.run_to_end()
    assert _trace(last) == _trace(whole)
    np.testing.assert_array_equal(last.selected(), whole.selected())
    # every line of the log is whole JSON again
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["kind"] for x in lines][0] == "header"
    assert len(lines) == 1 + len(whole.records)
    # replayed records carry the same per-arm stats as the live ones
    for a, b in zip(last.records, whole.records):
        np.testing.assert_array_equal(a.n, b.n)
        np.testing.assert_allclose(a.mean, b.mean)
        assert a.explanation["sentence"] == b.explanation["sentence"]


def test_open_refuses_other_labels_and_existing_log(tmp_path):
    labels, scores = clustered()
    run = SelectionRun(labels, TableOracle(scores), spec(), log_dir=tmp_path)
    run.step()
    with pytest.raises(FileExistsError):
        SelectionRun(labels, TableOracle(scores), spec(), log_dir=tmp_path)
    other = labels.copy()
    other[[0, -1]] = other[[-1, 0]]
    with pytest.raises(ValueError, match="other cluster labels"):
        SelectionRun.open(tmp_path, other, TableOracle(scores))
    ro = SelectionRun.open(tmp_path, labels)  # read-only: no oracle
    assert len(ro.records) == 1
    with pytest.raises(RuntimeError, match="without an oracle"):
        ro.step()


def test_step_after_the_end_and_oracle_failure_changes_nothing():
    labels, scores = clustered(n_per=(3, 3), means=(0, 1))

    class Flaky(TableOracle):
        fail = True

        def score(self, rows):
            if self.fail:
                self.fail = False
                raise RuntimeError("gpu fell over")
            return super().score(rows)

    run = SelectionRun(labels, Flaky(scores), spec(budget=1.0, top_p=0.5, draw_batch=2))
    with pytest.raises(RuntimeError, match="gpu"):
        run.step()
    assert run.budget_used == 0 and run.next_round == 1 and not run.records
    run.run_to_end()
    assert run.budget_used == 6
    with pytest.raises(RunFinished):
        run.step()


def test_nan_rows_count_but_are_never_selected():
    labels, scores = clustered(n_per=(20, 20), means=(0.0, 1.0))
    scores[labels == 1] = np.where(np.arange(20) % 2 == 0, np.nan, 1.0)
    run = SelectionRun(labels, TableOracle(scores), spec(budget=1.0, top_p=0.5))
    run.run_to_end()
    assert run.budget_used == 40
    sel = run.selected()
    assert len(sel) == 20 and np.all(np.isfinite(scores[sel]))
    for r in run.records:
        assert np.all(np.isfinite(r.mean[r.n > 0]))


def test_negative_labels_are_never_drawn():
    labels, scores = clustered(n_per=(10, 10), means=(0.0, 1.0))
    labels[:5] = -1
    run = SelectionRun(labels, TableOracle(scores), spec(budget=1.0, top_p=0.1))
    run.run_to_end()
    assert run.budget_used == 15 and np.all(run.round_drawn[:5] == -1)


# ------------------------------------------------------------------ the ledger


def test_ledger_bans_pins_rejects(tmp_path):
    labels, scores = clustered(n_per=(20, 20, 20), means=(0.0, 1.0, 0.5))
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.ban(2)
    run = SelectionRun(labels, TableOracle(scores), spec(budget=0.5, top_p=0.2),
                       ledger=ledger)
    run.step()
    run.step()
    ledger.unban(2)
    ledger.ban(1, note="too easy")  # mid-run: arm 1 is never drawn again
    recs = run.run_to_end()
    assert all(r.arm != 1 for r in recs)
    assert np.sum(run.round_drawn[labels == 2] >= 0) > 0
    assert recs[-1].banned.tolist() == [False, True, False]
    drawn = np.flatnonzero(run.round_drawn >= 0)
    pin = int(np.flatnonzero(labels == 0)[0])  # never drawn or low scored: pinned anyway
    rejected = drawn[np.argsort(-scores[drawn])][:3]
    ledger.pin([pin])
    ledger.reject(rejected.tolist())
    sel = run.selected()
    assert pin in sel and not set(rejected.tolist()) & set(sel.tolist())
    assert len(sel) == run.n_top
    assert not np.any(labels[sel] == 1)  # cluster 1 is banned: its drawn rows stay out
    assert run.budget_used == run.budget_total  # the rejected draws still counted


@pytest.mark.parametrize("name", ["ucb_beta", "thompson", "random"])
def test_peek_announces_exactly_what_step_does(name):
    labels, scores = clustered(seed=2)
    run = SelectionRun(labels, TableOracle(scores), spec(policy=name, cold_start=0.1))
    while not run.done:
        nxt = run.peek()
        rec = run.step()
        assert (nxt["round"], nxt["arm"]) == (rec.round, rec.arm)
        np.testing.assert_array_equal(nxt["rows"], rec.rows)
        assert nxt["explanation"]["sentence"] == rec.explanation["sentence"]
    assert run.peek() is None
