"""The cost planner's arithmetic: FLOP counts, batching, fitting, the plan, the comparison,
and the stage clock (fake calibrations and known shapes; no model)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from clusterucb_core.features import cost
from clusterucb_core.features.memplan import ModelShape
from clusterucb_core.runtime import timings

# hidden 4, 1 layer, MLP 8, 1 head, vocabulary 10, LoRA rank 1 on q only
SHAPE = ModelShape(hidden=4, layers=1, intermediate=8, heads=1, kv_heads=1, vocab=10,
                   lora_rank=1, lora_targets=("q_proj",))


def test_flops_of_a_known_shape():
    linear = 2 * (2 * 16 + 2 * 16 + 3 * 32 + 1 * (4 + 4))  # q,o + k,v + MLP + LoRA on q
    attn = 4 * 3 * 4  # QK^T and AV at length 3
    assert cost.forward_flops(SHAPE, 2, 3, labelled=5) == 2 * 3 * (linear + attn) + 2 * 4 * 10 * 5
    assert cost.forward_flops(SHAPE, 2, 3, 5, head=False) == 2 * 3 * (linear + attn)
    # the backward: the forward again plus the attention's second pass
    assert cost.gradient_flops(SHAPE, 2, 3, 5) == 2 * cost.forward_flops(SHAPE, 2, 3, 5) \
        + 2 * 3 * attn
    deep = ModelShape(hidden=4, layers=4, intermediate=8, heads=1, kv_heads=1, vocab=10,
                      lora_rank=1, lora_targets=("q_proj",))
    one = cost.forward_flops(deep, 1, 5, 0, layers=1, head=False)
    assert cost.forward_flops(deep, 1, 5, 0, head=False) == 4 * one  # early exit: 1 of 4


def test_expected_max_of_random_rows():
    assert cost.expected_max(np.array([1, 2]), 1) == pytest.approx(1.5)
    assert cost.expected_max(np.array([1, 2]), 2) == pytest.approx(0.25 * 1 + 0.75 * 2)
    assert cost.expected_max(np.array([7, 7, 7]), 8) == pytest.approx(7)
    assert cost.expected_max(np.array([], dtype=int), 3) == 0.0


def test_sorted_pass_sorts_inside_chunks_only():
    lengths = np.array([5, 1, 4, 2, 9, 3])
    t = cost.Tokens(lengths, np.ones(6, dtype=int))
    seen = []

    def flops_of(rows, length, labelled):
        seen.append((rows, length, labelled))
        return float(rows * length)

    w = cost.sorted_pass(t, 2, flops_of=flops_of, chunk_rows=4)
    # chunk [5 1 4 2] sorted -> (1 2) (4 5); chunk [9 3] -> (3 9)
    assert seen == [(2, 2, 2.0), (2, 5, 2.0), (2, 9, 2.0)]
    assert (w.batches, w.rows, w.tokens) == (3, 6, 2 * 2 + 2 * 5 + 2 * 9)


def test_a_memory_limit_caps_rows_as_the_engine_does():
    # a row costs 10 bytes + 1 a token; 60 bytes hold 2 rows of 20 tokens, 1 of 40
    b = cost.Batching(max_rows=8, limit_bytes=60, token_bytes=1, row_bytes=10)
    assert (b.rows_at(20), b.rows_at(40), b.rows_at(500)) == (2, 1, 1)
    t = cost.Tokens(np.array([20, 20, 20, 40]), np.ones(4, dtype=int))
    w = cost.sorted_pass(t, b, flops_of=lambda r, L, y: 0.0)
    assert (w.batches, w.tokens) == (3, 2 * 20 + 20 + 40)
    rounds = cost.random_batches(t, 1, 4, lambda r, L, y: 0.0, b)
    assert rounds.rows == 4 and rounds.batches >= 2


def test_fit_op_recovers_known_rates():
    truth = cost.OpCost(per_batch_s=0.01, per_flop_s=1e-9, per_row_s=0.002)
    shapes = [(1, 2e7, 16), (1, 9e7, 16), (1, 1e7, 2), (2, 1e8, 32)]
    samples = [cost.Sample(b, f, r, truth.seconds(b, f, r)) for b, f, r in shapes]
    fit = cost.fit_op(samples)
    assert fit.per_batch_s == pytest.approx(truth.per_batch_s, rel=1e-6)
    assert fit.per_flop_s == pytest.approx(truth.per_flop_s, rel=1e-6)
    assert fit.per_row_s == pytest.approx(truth.per_row_s, rel=1e-6)
    assert cost.fit_op(samples[:3], per_row=False).per_row_s == 0.0
    with pytest.raises(ValueError, match="at least one"):
        cost.fit_op([])


def _calibration(per_batch=1.0, per_flop=0.0, per_row=0.0, load=2.0) -> cost.Calibration:
    op = cost.OpCost(per_batch, per_flop, per_row)
    return cost.Calibration("cpu", load, gradient=op, forward=op, train=op)


def test_calibration_round_trips_through_json():
    cal = _calibration(0.5, 1e-10, 0.01)
    assert cost.Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal


def _pool(n=320, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 200, n)
    return cost.Tokens(lengths, lengths // 2)


def test_plan_counts_batches_rounds_and_loads():
    pool, target = _pool(), cost.Tokens(np.full(10, 30), np.full(10, 3))
    run = cost.RunShape(n_rows=320, budget=0.2, cold_start=0.05, draw_batch=8, warmup=True,
                        warmup_fraction=0.1, warmup_epochs=2, warmup_batch=8,
                        cluster_batch=32, reward_batch=16)
    plan = cost.plan_stages(SHAPE, _calibration(), pool, target, run)
    s = plan.stages
    # one second a batch: the exhaustive pass is 320 / 16 batches, the cluster features 10
    assert s["exhaustive_gradients"].seconds == pytest.approx(20)
    assert s["cluster_features"].seconds == pytest.approx(10)
    assert s["target_gradients"].seconds == pytest.approx(1)
    # warm-up: 32 rows, 4 steps an epoch, 2 epochs
    assert s["warmup"].seconds == pytest.approx(8)
    # bandit: 64 rows = cold start (16 rows + K/2 = 1) sorted in 2 batches, then 6 rounds
    k = cost.arms(run)
    assert k == 2
    n_cold = 16 + k // 2
    assert s["bandit_gradients"].seconds == pytest.approx(
        math.ceil(n_cold / 16) + math.ceil((64 - n_cold) / 8))
    assert s["bandit_gradients"].rows == 64
    assert s["model_load"].seconds == pytest.approx(2.0 * 4)  # warm-up, 2 for ClusterUCB, 1
    per_load = 2.0
    ucb = (s["cluster_features"].seconds + s["kmeans"].seconds + s["target_gradients"].seconds
           + s["bandit_gradients"].seconds + 2 * per_load)
    exh = s["target_gradients"].seconds + s["exhaustive_gradients"].seconds + per_load
    assert plan.ucb_seconds == pytest.approx(ucb)
    assert plan.speedup == pytest.approx(exh / ucb)
    d = plan.to_dict()
    assert d["predicted_speedup"] == pytest.approx(exh / ucb, abs=1e-3)
    assert d["bound"] == pytest.approx(1 / (10 / 20 + 0.2), abs=1e-3)
    assert "cpu_hours" in d["stages"]["warmup"] and list(d["stages"]) == [
        n for n in cost.STAGES if n in d["stages"]]


def test_padding_and_per_row_costs_move_the_bandit():
    pool, target = _pool(), cost.Tokens(np.full(4, 30), np.full(4, 3))
    run = cost.RunShape(n_rows=320, warmup=False)
    flop = cost.plan_stages(SHAPE, _calibration(0.0, 1e-9), pool, target, run)
    # rounds pad 8 random rows to their longest; the sorted pass pads far less
    exh_row = flop.stages["exhaustive_gradients"].seconds / 320
    bandit_row = flop.stages["bandit_gradients"].seconds / 64
    assert bandit_row > 1.2 * exh_row
    measured = cost.plan_stages(SHAPE, _calibration(0.0, 1e-9), pool, target, run,
                                lazy_row_s=0.5)
    assert measured.stages["bandit_gradients"].seconds == pytest.approx(64 * 0.5)
    assert "warmup" not in measured.stages


def test_planner_error_is_the_largest_relative_error():
    assert cost.planner_error({"a": 12, "b": 9}, {"a": 10, "b": 10}) == pytest.approx(0.2)
    assert cost.planner_error({"a": 12, "c": 1}, {"a": 10, "b": 10}) == pytest.approx(0.2)
    assert cost.stage_errors({"a": 5}, {"a": 10, "z": 0}) == {"a": 0.5}
    with pytest.raises(ValueError, match="no stage"):
        cost.planner_error({"a": 1}, {"b": 2})


def test_compare_scales_to_the_rows_computed():
    plan = {"stages": {"model_load": {"seconds": 8.0, "rows": 4},
                       "warmup": {"seconds": 10.0, "rows": 100},
                       "exhaustive_gradients": {"seconds": 30.0, "rows": 300},
                       "cluster_features": {"seconds": 5.0, "rows": 300}}}
    measured = {"model_load": {"seconds": 5.0, "rows": 2},
                "warmup": {"seconds": 11.0, "rows": 100},
                "exhaustive_gradients": {"seconds": 25.0, "rows": 200},
                "cluster_features": {"seconds": 0.1, "rows": 0}}  # reused: not compared
    rows = {r["stage"]: r for r in cost.compare(plan, measured)}
    assert set(rows) == {"model_load", "warmup", "exhaustive_gradients"}
    assert rows["model_load"]["predicted_s"] == pytest.approx(4.0)
    assert rows["warmup"]["predicted_s"] == pytest.approx(12.0)  # plus its own model load
    assert rows["exhaustive_gradients"]["predicted_s"] == pytest.approx(20.0)
    assert rows["exhaustive_gradients"]["error"] == pytest.approx(0.2)


def test_stage_clock_is_exclusive_and_keyed(tmp_path, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(timings.time, "perf_counter", lambda: now[0])
    clock = timings.StageClock(tmp_path)
    with clock.stage("target_gradients", key="t", rows=10):
        now[0] += 1.0
        with clock.stage("model_load", key="rewards", rows=1):
            now[0] += 3.0
        now[0] += 2.0
    got = timings.read_timings(tmp_path)
    assert got["target_gradients"]["seconds"] == pytest.approx(3.0)
    assert got["model_load"]["seconds"] == pytest.approx(3.0)
    assert got["target_gradients"]["rows"] == 10
    with clock.stage("target_gradients", key="t", rows=5):  # resumed: adds up
        now[0] += 1.0
    assert timings.read_timings(tmp_path)["target_gradients"]["seconds"] == pytest.approx(4.0)
    with clock.stage("target_gradients", key="other", rows=2):  # other work: replaces
        now[0] += 0.5
    got = timings.read_timings(tmp_path)["target_gradients"]
    assert (got["seconds"], got["rows"], got["key"]) == (pytest.approx(0.5), 2, "other")
    with pytest.raises(RuntimeError), clock.stage("kmeans", key="k", rows=1):
        now[0] += 1.0
        raise RuntimeError("a failed stage still records its time")
    assert timings.read_timings(tmp_path)["kmeans"]["seconds"] == pytest.approx(1.0)
    assert timings.read_timings(tmp_path / "nowhere") == {}
