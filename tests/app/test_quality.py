"""The audit meter on the UCB page and the subtask takeover note on the UCB and Export pages,
on the demo workspace (its arithmetic target has two subtasks, add and multiply)."""

from __future__ import annotations

import pytest

from clusterucb_core.config import DEMO_DIR
from clusterucb_core.selection import runs, takeover
from clusterucb_core.selection.audit import audit_run
from clusterucb_core.workspace import Workspace
from tests.app.conftest import metric, ok

START = "FormSubmitter:ucb_settings-Start a new run"
SWITCH = "ucb_takeover_switch"

needs_demo = pytest.mark.skipif(not (DEMO_DIR / "demo_workspace" / "workspace.json").exists(),
                                reason="sample_data/demo_workspace is missing")


def _finished(app_env):
    at = app_env("pages/5_rounds.py", ws="demo")
    at.run()
    at.button(key=START).click().run()
    at.button(key="ucb_end").click().run()
    ok(at)
    ws = Workspace.open(app_env.root / "demo")
    return at, ws, ws.meta()["current_run"]


def _engine_counts(ws, rid, rule):
    from clusterucb_app.tasks import run_config
    from clusterucb_core.pipeline import Pipeline

    pipe = Pipeline(run_config(ws.root), log=None)
    run = runs.open_run(ws, rid)
    return pipe.subtask_counts(pipe.result(run, balance=rule))


def _notes(at):
    return [w.value for w in at.warning if "One subtask takes the selection" in w.value]


@needs_demo
def test_ucb_page_shows_the_estimated_recall_of_the_run(app_env):
    at, ws, rid = _finished(app_env)
    want = audit_run(runs.open_run(ws, rid))
    assert metric(at, "Estimated recall") == f"{want.recall.value:.2f}"
    assert metric(at, "Estimated score mass") == f"{want.mass_share.value:.2f}"
    said = [c.value.replace("\\", "") for c in at.caption  # markdown escapes taken out
            if c.value.startswith("estimated recall")]
    assert said == [want.sentence() + "."]
    assert f"estimated recall {want.recall.text()}; checking it exhaustively would cost " \
        f"{want.n_unscored:,} gradients" in said[0]


@needs_demo
def test_the_note_shows_exactly_when_one_subtask_takes_the_selection(app_env):
    at, ws, rid = _finished(app_env)
    counts = _engine_counts(ws, rid, "max")
    assert bool(_notes(at)) == (takeover.takeover(counts, "max") is not None)


@needs_demo
def test_the_note_shows_the_balanced_counts_and_switches_the_rule(app_env, monkeypatch):
    monkeypatch.setattr(takeover, "SHARE", 0.0)  # any largest subtask "takes" the selection
    at, ws, rid = _finished(app_env)
    counts = _engine_counts(ws, rid, "max")
    balanced = _engine_counts(ws, rid, "subtasks")
    top = max(counts, key=counts.get)
    (note,) = _notes(at)
    assert f"{counts[top]:,} of the {sum(counts.values()):,} selected rows" in note
    assert f"would give {top!r} {balanced[top]:,}" in note
    table = next(d.value for d in at.dataframe if "Round-robin over subtasks" in d.value.columns)
    assert dict(zip(table["subtask"], table["Round-robin over subtasks"])) == balanced
    assert dict(zip(table["subtask"], table["Top-p by score (LESS)"])) == counts
    at.button(key=SWITCH).click().run()
    ok(at)
    assert ws.meta()["final_rule"][rid] == "subtasks"
    assert not _notes(at)  # the balanced rule is not a takeover
    assert at.radio(key="ucb_balance").value == "subtasks"
    ex = app_env("pages/6_export.py", ws="demo")
    ex.run()
    ok(ex)
    assert not _notes(ex) and ex.radio(key="ex_balance").value == "subtasks"
