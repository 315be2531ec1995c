"""The app's pure helpers (marks, tables, run names, chart fixes of issue 13): no streamlit."""

from __future__ import annotations

import numpy as np
import pandas as pd

from clusterucb_app import clusters_view, export_view, marks, rounds
from clusterucb_app import plots_rounds as pr
from clusterucb_core.selection.curation import Ledger, LedgerState


def _state(banned=(), pinned=(), rejected=()):
    return LedgerState(frozenset(banned), frozenset(pinned), frozenset(rejected))


def test_row_and_cluster_status():
    labels = np.array([0, 0, 1, 1, 2])
    st = _state(banned={1}, pinned={3}, rejected={0})
    assert marks.row_status(range(5), labels, st) == ["rejected", "", "banned cluster",
                                                      "pinned", ""]
    assert list(marks.all_status(labels, st)) == ["rejected", "", "banned cluster", "pinned", ""]
    assert marks.cluster_status(3, labels, st) == ["1 rejected", "banned, 1 pinned", ""]


def test_undo_restores_only_what_the_edit_touched(tmp_path):
    lg = Ledger(tmp_path / "ledger.jsonl")
    lg.reject([1])
    before = lg.state()
    lg.pin([1, 2])  # un-rejects 1
    lg.pin([7])  # an edit from another tab, after
    edits = marks.restore_edits(lg.state(), before, rows=[1, 2], clusters=[])
    assert edits == [("unpin", [1, 2]), ("reject", [1])]
    marks.apply_edits(lg, edits, note="undo")
    after = lg.state()
    assert after.rejected == {1} and after.pinned == {7}
    lg.ban(3)
    assert marks.restore_edits(lg.state(), after, rows=[], clusters=[3]) == [("unban", 3)]


def test_edit_messages_name_rows_and_clusters():
    assert marks.edit_message("pin", [4], {4: "a"}) == "Pinned row: 4 (a)."
    assert marks.edit_message("ban", [5, 6], names={5: "5: maths"}) == \
        "Banned 2 clusters: 5: maths, 6."
    many = marks.edit_message("reject", list(range(10)))
    assert many.startswith("Rejected 10 rows: 0, 1") and "and 4 more" in many
    assert marks.undo_label("unban", [5]) == "Undo: unban 1 cluster"


def test_selection_rule_counts_pins_in_the_slots():
    text = marks.selection_rule(20, 6, 400, 0.05)
    assert "floor(400 × 0.05) = 20" in text and "(6), then the 14 best-scored" in text
    assert "every pin is kept" in marks.selection_rule(2, 5)


def test_kscan_warning_on_the_smallest_k_or_a_low_silhouette():
    scan = pd.DataFrame({"k": [2, 4, 8], "silhouette": [0.30, 0.29, 0.1]})
    assert "smallest K" in clusters_view.kscan_warning(scan, 2)
    assert clusters_view.kscan_warning(scan, 4) is None
    flat = pd.DataFrame({"k": [2, 4, 8], "silhouette": [0.02, 0.03, 0.01]})
    assert "little cluster structure" in clusters_view.kscan_warning(flat, 4)


def test_curate_table_has_status_and_no_none_ranks():
    view = pd.DataFrame({"rank": pd.array([1, pd.NA], dtype="Int64"), "row": [3, 5],
                         "id": ["a", "b"], "source": ["s", "s"], "cluster": [0, 1],
                         "cluster_label": ["x", "y"], "score": [0.5, 0.1],
                         "round_drawn": pd.array([0, pd.NA], dtype="Int64"),
                         "selected": [True, False], "pinned": [True, False],
                         "rejected": [False, False]})
    labels = np.array([0, 0, 0, 0, 1, 1])
    out = export_view.curate_table(view, ["p1", "p2"], labels, _state(pinned={3}, banned={1}))
    assert out["rank"].tolist() == ["1", "—"]
    assert out["status"].tolist() == ["pinned", "banned cluster"]
    assert out["round_drawn"].tolist() == ["0", ""]


def test_run_label_names_settings_and_time():
    spec = {"policy": "ucb_beta", "beta": 1.0, "budget": 0.2, "top_p": 0.05, "draw_batch": 8,
            "seed": 42}
    text = rounds.label(spec, "lazy", "run-20261128-174012-123")
    assert text == "ucb_beta β=1 · budget 0.2 · top-p 0.05 · batch 8 · seed 42 · lazy · " \
                   "11-28 17:40:12"


def _rgb(h):
    return np.array([int(h[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)


def test_cluster_palette_neighbours_are_distinct():
    """Item 17: clusters 0 and 3 got nearly the same purple."""
    cols = [_rgb(c) for c in pr.PALETTE]
    for i in range(len(cols)):
        for j in range(i + 1, min(i + 4, len(cols))):
            assert np.linalg.norm(cols[i] - cols[j]) > 80, (pr.PALETTE[i], pr.PALETTE[j])
    assert all(np.ptp(c) > 20 for c in cols[:10])  # no grey among the first ten


def test_arm_chart_shows_pulls_in_ticks_and_banned_arms():
    """Item 17: pulls hidden under the diamond, title under the toolbar, banned arm blank."""
    mean = np.array([0.1, np.nan, 0.3])
    fig = pr.arm_chart(mean, [0.01, np.nan, 0.02], [4, 0, 6], [0.2, -np.inf, 0.5],
                       banned=[False, True, False], next_arm=2, title="Arms")
    assert [t.split("n=")[1].split("<")[0] for t in fig.layout.xaxis.ticktext] == ["4", "0",
                                                                                  "6"]
    assert fig.layout.title.x == 0 and fig.layout.margin.t >= 60
    empty = [t for t in fig.data if t.name == "not drawn"]
    assert empty and list(empty[0].x) == [1] and empty[0].marker.symbol[0] == "x"


def test_regret_axis_ticks_are_rounded():
    fig = pr.regret_chart([0, 1], [0.1, 0.5], [0.0975712, 0.2])
    assert fig.layout.yaxis2.tickformat and fig.layout.yaxis.tickformat == ".0%"


def test_map_overlays_mark_pinned_and_rejected_rows():
    xy = np.random.default_rng(0).normal(size=(10, 2))
    fig = pr.cluster_map(xy, ["a"] * 10, overlays=[("pinned", [1, 2], "#2b8a3e", "star")])
    marks_trace = [t for t in fig.data if t.name.startswith("pinned")]
    assert marks_trace and list(marks_trace[0].customdata) == [1, 2]
    status = pr.cluster_map(xy, ["", "pinned"] * 5, colours=marks.COLOURS)
    assert {t.marker.color for t in status.data} == {marks.COLOURS[""],
                                                     marks.COLOURS["pinned"]}


def test_best_subtask_column_and_coverage():
    """The column names each scored row's subtask ('—' unscored or unknown); the coverage
    counts the given rows per subtask in the target's order, and its caption says the rule."""
    from clusterucb_app import subtask_view

    scores = np.array([0.5, np.nan, 0.2, 0.1])
    best = {0: "add", 2: "multiply", 1: "add"}  # row 1 has no score: never shown
    assert subtask_view.best_column([0, 1, 2, 3], scores, best) == ["add", "—", "multiply", "—"]
    assert subtask_view.best_column([0], scores, None) == ["—"]
    table = subtask_view.coverage_of([0, 2, 3], best, ["multiply", "add", "sub"])
    assert table.to_dict("list") == {"subtask": ["multiply", "add", "sub"], "rows": [1, 1, 0]}
    text = subtask_view.coverage_caption(table, "subtasks", 3)
    assert "of the 3 selected rows" in text and "Round-robin over subtasks" in text
    assert "1 selected row(s) have no score" in text
    assert "so they can differ" not in text  # 1, 1, 0: as even as round-robin makes them
    uneven = pd.DataFrame({"subtask": ["a", "b"], "rows": [1, 5]})
    assert "so they can differ" in subtask_view.coverage_caption(uneven, "subtasks", 6)
    assert "so they can differ" not in subtask_view.coverage_caption(uneven, "max", 6)
    assert "Top-p by score (LESS)" in subtask_view.coverage_caption(table, "max", 2)
    assert "so far (the run is not finished)" in subtask_view.coverage_caption(
        table, "max", 2, final=False)


def test_selection_rule_names_the_balance():
    assert "best-scored rows" in marks.selection_rule(5, 0, 100, 0.05)
    text = marks.selection_rule(5, 1, 100, 0.05, balance="subtasks")
    assert "4 rows the bandit scored, taken round-robin over the target's subtasks" in text


def test_curate_table_shows_best_subtask_only_for_scored_rows():
    view = pd.DataFrame({"rank": [1, None], "row": [3, 4], "id": ["a", "b"],
                         "source": ["s", "s"], "cluster": [0, 1], "cluster_label": ["x", "y"],
                         "score": [0.4, np.nan], "best_subtask": ["add", np.nan],
                         "round_drawn": [0, None], "selected": [True, False],
                         "pinned": [False, True], "rejected": [False, False], "tags": ["", ""]})
    shown = export_view.curate_table(view, ["p", "q"], np.array([0, 0, 0, 0, 1]), _state())
    assert list(shown["best subtask"]) == ["add", "—"]
    assert list(shown.columns).index("best subtask") < list(shown.columns).index("prompt")
    assert "best_subtask" not in shown
