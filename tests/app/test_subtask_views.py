"""Which subtask a row serves (issue 12, part 7), on the demo workspace (its arithmetic target
has two subtasks, add and multiply, and its reward features are shipped for every row): the
UCB and Curate pages show the engine's best subtask per scored row and the coverage of the
selection under either final-selection rule, and the export is made with the rule shown."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest

from clusterucb_core.config import DEMO_DIR
from clusterucb_core.selection import runs, subtasks
from clusterucb_core.workspace import Workspace
from tests.app.conftest import frame, ok

START = "FormSubmitter:ucb_settings-Start a new run"

needs_demo = pytest.mark.skipif(not (DEMO_DIR / "demo_workspace" / "workspace.json").exists(),
                                reason="sample_data/demo_workspace is missing")


def _bars(at, key):
    """(x, y) of the bar chart with this key, from the figure the page sent."""
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith(key) or key in c.proto.id]
    assert charts, f"no chart {key!r}"
    bar = json.loads(charts[0].proto.spec)["data"][0]
    y = bar["y"]
    if isinstance(y, dict):  # plotly's typed-array encoding
        y = np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"]).tolist()
    return list(bar["x"]), [int(v) for v in y]


def _engine(root):
    """An independent pipeline over the workspace's settings: the numbers to match."""
    from clusterucb_app.tasks import run_config
    from clusterucb_core.pipeline import Pipeline

    return Pipeline(run_config(root), log=None)


def _coverage(pipe, run, balance):
    res = pipe.result(run, balance=balance)
    names = list(pipe.target.subtasks)
    code = {s: i for i, s in enumerate(names)}
    best = np.array([code.get(res.best_subtask.get(int(r), ""), -1) for r in res.rows])
    return res, subtasks.coverage(best, names)


@needs_demo
def test_ucb_page_shows_best_subtask_and_coverage_for_both_rules(app_env):
    at = app_env("pages/5_rounds.py", ws="demo")
    at.run()
    ok(at)
    at.button(key=START).click().run()  # the default rule: top-p by score
    at.button(key="ucb_end").click().run()
    ok(at)
    ws = Workspace.open(app_env.root / "demo")
    rid = ws.meta()["current_run"]
    run = runs.open_run(ws, rid)
    pipe = _engine(ws.root)
    shown = frame(at, "best subtask")
    rows = shown["row"].tolist()
    assert rows == [int(r) for r in run.records[-1].rows]
    want = pipe.best_subtasks(np.array(rows))
    assert list(shown["best subtask"]) == [want.get(r, "—") for r in rows]
    assert set(shown["best subtask"]) <= {"add", "multiply", "—"}
    counts = {}
    for rule in ("max", "subtasks"):
        if rule != "max":
            at.radio(key="ucb_balance").set_value(rule).run()
            ok(at)
        res, table = _coverage(pipe, run, rule)
        x, y = _bars(at, "ucb_coverage")
        assert x == list(table["subtask"]) == ["add", "multiply"]
        assert y == list(table["rows"]) and sum(y) == len(res.rows)
        counts[rule] = y
        assert any("selected rows serve each subtask best" in c.value for c in at.caption)
    # the demo's max rule leans on one subtask; round-robin gives the other more places
    assert min(counts["subtasks"]) > min(counts["max"]), counts
    assert any("not which subtask picked it" in c.value for c in at.caption)
    # the choice is kept with the workspace: a new session on the Curate page shows it
    ex = app_env("pages/6_export.py", ws="demo")
    ex.run()
    ok(ex)
    assert ex.radio(key="ex_balance").value == "subtasks"
    assert _bars(ex, "ex_coverage")[1] == counts["subtasks"]


@needs_demo
def test_curate_page_table_coverage_and_export_follow_the_rule(app_env):
    at = app_env("pages/5_rounds.py", ws="demo")
    at.run()
    at.selectbox(key="ucb_new_balance").set_value("subtasks")
    at.button(key=START).click().run()
    at.button(key="ucb_end").click().run()
    ok(at)
    ws = Workspace.open(app_env.root / "demo")
    rid = ws.meta()["current_run"]
    run = runs.open_run(ws, rid)
    assert run.spec.balance == "subtasks"  # the form's rule is the run's
    pipe = _engine(ws.root)
    ex = app_env("pages/6_export.py", ws="demo")
    ex.run()
    ok(ex)
    assert ex.radio(key="ex_balance").value == "subtasks"
    for rule in ("subtasks", "max"):
        if rule != "subtasks":
            ex.radio(key="ex_balance").set_value(rule).run()
            ok(ex)
        res, table = _coverage(pipe, run, rule)
        shown = frame(ex, "best subtask")  # the selected rows, best first
        assert sorted(shown["row"]) == sorted(res.rows.tolist())
        want = pipe.best_subtasks(shown["row"].to_numpy())
        assert list(shown["best subtask"]) == [want[int(r)] for r in shown["row"]]
        assert _bars(ex, "ex_coverage")[1] == list(table["rows"])
    ex.checkbox(key="ex_ds").uncheck().run()
    ex.button(key="ex_save").click().run()  # exported under the rule shown: max
    ok(ex)
    out = ws.exports(rid)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec"].get("balance", "max") == "max"
    sel = pd.read_csv(out / "selection.csv")
    chosen = sel[sel["selected"]]
    assert sorted(chosen["row"]) == sorted(res.rows.tolist())
    want = pipe.best_subtasks(chosen["row"].to_numpy())
    assert list(chosen["best_subtask"]) == [want[int(r)] for r in chosen["row"]]


def _one_round_without_the_column(app_env):
    """The UCB page after a new run's first round, showing no best-subtask column."""
    at = app_env("pages/5_rounds.py")
    at.run()
    at.button(key=START).click().run()
    at.button(key="ucb_step1").click().run()
    ok(at)
    assert not [d for d in at.dataframe if "best subtask" in d.value.columns]
    return at


def test_without_stored_reward_features_the_pages_say_why(app_env):
    """The fixture workspace has two subtasks but no feature store: no column, a reason."""
    at = _one_round_without_the_column(app_env)
    assert any("not computed yet" in c.value for c in at.caption)


def test_one_subtask_target_gets_a_short_note_and_no_column(app_env):
    root = app_env.root / "fixture"
    one = root / "target.jsonl"
    lines = [json.loads(x) for x in one.read_text().splitlines()]
    one.write_text("".join(json.dumps({**x, "subtask": "math"}) + "\n" for x in lines))
    at = _one_round_without_the_column(app_env)
    assert any("The target has one subtask" in c.value for c in at.caption)
    assert not at.get("radio")  # no rule to choose
