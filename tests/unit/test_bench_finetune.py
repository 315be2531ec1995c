"""The fine-tune bench's bookkeeping: the MMLU split, RDS+ scores, resumable results, the table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from clusterucb_core.data.targets import load_target

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_finetune",
                                               ROOT / "bench" / "bench_finetune.py")
B = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(B)


def test_split_mmlu_holds_out_the_last_dev_rows_of_every_subject(tmp_path):
    src = tmp_path / "mmlu" / "dev"
    src.mkdir(parents=True)
    for subj in ("anatomy", "virology"):
        rows = [f'"{subj} q{i}, with a comma",a,b,c,d,{"ABCD"[i % 4]}' for i in range(5)]
        (src / f"{subj}_dev.csv").write_text("\n".join(rows) + "\n")
    sel, held = B.split_mmlu(tmp_path / "mmlu", tmp_path / "split")
    s, h = load_target(sel), load_target(held)
    assert s.counts() == {"anatomy": 3, "virology": 3}
    assert h.counts() == {"anatomy": 2, "virology": 2}
    assert not {e.prompt for e in s.examples} & {e.prompt for e in h.examples}
    assert "virology q4, with a comma" in h.examples[-1].prompt
    assert [e.completion for e in h.examples] == [" D", " A", " D", " A"]


def test_split_mmlu_refuses_a_subject_with_nothing_to_hold_out(tmp_path):
    (tmp_path / "m" / "dev").mkdir(parents=True)
    (tmp_path / "m" / "dev" / "x_dev.csv").write_text("q,a,b,c,d,A\n" * 3)
    with pytest.raises(ValueError, match="3 rows, need more than 3"):
        B.split_mmlu(tmp_path / "m", tmp_path / "out")


def test_rds_scores_are_the_max_over_subtasks_of_the_mean_cosine():
    rng = np.random.default_rng(0)
    pool, target = rng.normal(size=(40, 6)), rng.normal(size=(9, 6))
    ids = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    cos = unit(pool) @ unit(target).T
    brute = np.max([cos[:, ids == s].mean(axis=1) for s in range(3)], axis=0)
    np.testing.assert_allclose(B.rds_scores(pool, target, ids), brute, rtol=1e-5, atol=1e-6)


def test_results_resume_past_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "r.jsonl"
    B.append_result(path, {"target": "t", "subset": "a", "seed": 0, "loss": 1.0})
    with open(path, "a") as fh:
        fh.write('{"target": "t", "subset": "b", "se')
    assert [r["subset"] for r in B.load_results(path)] == ["a"]


def _rec(subset, seed, loss, steps=60, target="t"):
    return {"target": target, "subset": subset, "seed": seed, "steps": steps, "loss": loss}


def test_summary_is_mean_and_sd_over_seeds_and_the_verdict_reads_the_means():
    res = [_rec(B.BASE, 0, 3.0, steps=0)]
    for seed, (ucb, less, rds, r0, r1) in enumerate([(2.0, 2.0, 2.5, 2.6, 2.4),
                                                     (2.2, 2.1, 2.7, 2.8, 2.6)]):
        res += [_rec(B.UCB, seed, ucb), _rec(B.LESS, seed, less), _rec(B.RDS, seed, rds),
                _rec("random 0", seed, r0), _rec("random 1", seed, r1)]
    res += [_rec(B.UCB, 0, 9.0, steps=10), _rec(B.UCB, 0, 9.0, target="other")]
    table = {r["subset"]: r for r in B.summarize(res, "t", 60)}
    assert table[B.UCB]["n"] == 2 and table[B.UCB]["mean"] == pytest.approx(2.1)
    assert table[B.UCB]["sd"] == pytest.approx(np.std([2.0, 2.2], ddof=1))
    assert table[B.BASE]["n"] == 1 and np.isnan(table[B.BASE]["sd"])
    v = B.verdict(list(table.values()))
    assert v["vs_less"] == pytest.approx(2.1 / 2.05 - 1)
    assert not v["within_1pct"] and v["below_rds"] and v["below_every_random"]
    assert B.verdict([table[B.UCB], table[B.LESS]]) is None  # no RDS+ or random yet
    line = B.report(["t"], res, 60, log=lambda m: None)
    assert line == ("ucb_within_1pct_of_less=0/1 ucb_below_rds=1/1 "
                    "ucb_below_every_random=1/1")
    assert json.dumps(line)
