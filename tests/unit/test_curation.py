"""The curation ledger: timestamped append-only edits folded into a state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clusterucb_core.config import SelectionSpec
from clusterucb_core.selection.curation import Ledger, fold
from clusterucb_core.selection.oracle import TableOracle
from clusterucb_core.selection.run import SelectionRun


def test_edits_fold_in_order(tmp_path):
    led = Ledger(tmp_path / "ledger.jsonl")
    assert led.state().n_edits == 0 and not led.state().banned
    led.ban(3, note="boilerplate")
    led.ban(4)
    led.unban(3)
    led.pin([1, 2, 3])
    led.reject([3, 9])  # reject wins over the earlier pin of 3
    led.unpin(2)
    led.pin(9)  # and pin wins over the earlier reject of 9
    led.unreject([9])
    led.note("looked at cluster 4", cluster=4)
    st = led.state()
    assert st.banned == {4}
    assert st.pinned == {1, 9} and st.rejected == {3}
    assert st.notes[0]["text"] == "looked at cluster 4" and st.n_edits == 9
    edits = led.edits()
    assert [e["op"] for e in edits][:3] == ["ban", "ban", "unban"]
    assert all("ts" in e for e in edits)
    assert edits[0]["note"] == "boilerplate"
    assert sorted(e["ts"] for e in edits) == [e["ts"] for e in edits]
    # append-only: every earlier line is still there, unchanged
    before = (tmp_path / "ledger.jsonl").read_bytes()
    led.ban(7)
    assert (tmp_path / "ledger.jsonl").read_bytes().startswith(before)


def test_bad_edits_refused_before_writing(tmp_path):
    led = Ledger(tmp_path / "ledger.jsonl")
    for bad in (lambda: led.ban(-1), lambda: led.pin([]), lambda: led.reject(["x"]),
                lambda: led.pin([1.5]), lambda: led.note("  ")):
        with pytest.raises(ValueError):
            bad()
    assert not (tmp_path / "ledger.jsonl").exists()


def test_torn_line_and_malformed_edits_are_skipped(tmp_path):
    path = tmp_path / "ledger.jsonl"
    led = Ledger(path)
    led.ban(1)
    with open(path, "ab") as fh:
        fh.write(b'{"op": "ban", "clus')  # a crash mid-append
    assert led.state().banned == {1}
    led.ban(2)  # the next edit starts on its own line
    st = led.state()
    assert st.banned == {1, 2} and len(st.problems) == 1
    st = fold([{"op": "pin"}, {"op": "explode"}, {"op": "pin", "rows": [5]}])
    assert st.pinned == {5} and len(st.problems) == 2
    assert all(json.loads(x) for x in path.read_text().splitlines()[-1:])


def test_bans_scoped_to_a_clustering(tmp_path):
    path = tmp_path / "ledger.jsonl"
    Ledger(path, clustering="k20").ban(3)
    Ledger(path, clustering="k50").ban(7)
    Ledger(path).ban(1)  # no clustering: applies everywhere
    assert Ledger(path, clustering="k20").state().banned == {1, 3}
    assert Ledger(path, clustering="k50").state().banned == {1, 7}
    assert Ledger(path).state().banned == {1, 3, 7}


def test_final_selection_applies_the_ledger(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 25)
    scores = rng.standard_normal(100)
    led = Ledger(tmp_path / "ledger.jsonl")
    run = SelectionRun(labels, TableOracle(scores),
                       SelectionSpec(cold_start=0.0, budget=1.0, top_p=0.1), ledger=led)
    run.run_to_end()
    top = np.argsort(-scores)[:10]
    np.testing.assert_array_equal(run.selected(), top)
    led.reject(top[:2].tolist())
    worst = int(np.argmin(scores))
    led.pin([worst])
    sel = run.selected()
    # pinned rows rank first, as the subtasks rule ranks them (issue 23, item 6)
    assert len(sel) == 10 and sel[0] == worst
    np.testing.assert_array_equal(sel[1:], np.argsort(-scores)[2:11])
    led.ban(int(labels[top[2]]))
    sel = run.selected()
    assert not np.any(labels[sel] == labels[top[2]]) and worst in sel
    assert run.budget_used == 100  # rejected rows' draws counted
