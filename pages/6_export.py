"""Step 6: review the final selection, curate it by hand, and export it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from clusterucb_app import (
    curation_ui,
    export_panel,
    export_view,
    find,
    marks,
    quality_ui,
    rds_compare,
    rounds,
    slots,
    state,
    subtasks_ui,
    ui,
)

ws = ui.workspace()
ui.header(
    "Curate & Export",
    "The final selection: the top-p of every scored row, with your pins, rejections and bans "
    "applied. Export it in your pool's own format, or as LESS's files.",
    """
* **Selected** = `floor(N·p)` rows: every **pinned** row first, then the best-scored rows
  among those the bandit scored, leaving out **rejected** rows and rows of **banned**
  clusters (a pinned row stays even in a banned cluster). Pins take slots, so the export has
  the size top-p says; with more pins than slots every pin is kept and nothing else.
* Every hand edit is kept in the workspace's **ledger** (`ledger.jsonl`) with its time.
* The export folder holds: `selected.*` — your original records **byte for byte**;
  `selection.parquet`/`.csv` — every drawn, pinned or rejected row with score, cluster,
  round and status; LESS's `sorted.csv` and `top_p*.jsonl`; a Hugging Face `dataset/`; and
  `manifest.json` with every setting, seed, fingerprint and package version, so the selection
  can be reproduced.
""")

rid = rounds.current_id(ws)
if not ui.need(rid is not None, "No selection run yet: run the bandit on the UCB Rounds page.",
               "pages/5_rounds.py"):
    st.stop()
try:
    run = rounds.get(ws, rid)
    clustering, _ = rounds.run_inputs(ws, rid)
    clusters = state.load_clusters(ws, clustering)
    pool = state.load_pool(ws)
except Exception as exc:  # noqa: BLE001
    ui.show_error(exc, f"Opening run {rid}", "check the pool and clusters, or start a new run")
    st.stop()
if len(pool) != run.N:
    st.error(f"The run covers {run.N:,} rows but the pool has {len(pool):,}: choose the "
             "pool the run was made on (Pool page).")
    st.stop()

from clusterucb_core.export.files import selection_table  # noqa: E402

lg = state.ledger(ws, clustering)
led = lg.state()
sub = subtasks_ui.view(ws, run, rid)  # the engine's result under the chosen rule, when readable
result = sub.result if sub.result is not None else run.result(lg)
names = find.cluster_names(clusters, led)
table = selection_table(pool, result, names, led.tags)

run_name = rounds.describe(ws, rid)
curation_ui.flush_toast()
st.markdown(f"**Run:** {ui.plain(run_name)} — change it on the UCB Rounds page.")
if not run.done:
    st.warning(f"The run is not finished: {run.budget_used:,} of {run.budget_total:,} budget "
               "rows scored. The selection below is the best so far.")
m = st.columns(5)
m[0].metric("Selected", f"{len(result.rows):,}", help=f"top-p target: {result.n_top:,} rows")
m[1].metric("Scored (budget)", f"{result.budget_used:,} / {result.budget_total:,}")
m[2].metric("Pinned", len(result.pinned))
m[3].metric("Rejected", len(result.rejected))
m[4].metric("Banned clusters", len(result.banned))
quality_ui.takeover_note(ws, run, sub, rid, key="ex")
if warn := slots.over_slots(len(result.pinned), result.n_top):
    st.warning(warn, icon=":material/push_pin:")
if sub.result is not None and sub.shown:
    subtasks_ui.balance_picker(ws, rid, run.spec, key="ex_balance")
st.caption(ui.plain(marks.selection_rule(result.n_top, len(result.pinned), run.N,
                                         run.spec.top_p, result.spec.balance)))

# ------------------------------------------------------------------------------ the selection
st.subheader("Selection")
c = st.columns([1, 2, 2, 2])
only_sel = c[0].toggle("Selected only", value=True, key="ex_only")
srcs = sorted(table["source"].astype(str).unique())
f_src = c[1].multiselect("Sources", srcs, key="ex_src", placeholder="all sources")
cl_opts = sorted(int(x) for x in table["cluster"].unique() if x >= 0)
f_cl = c[2].multiselect("Clusters", cl_opts, format_func=lambda k: names.get(k, k),
                        key="ex_cl", placeholder="all clusters")
f_tag = c[3].multiselect("Tags", list(led.tag_counts()), key="ex_tag", placeholder="any tags")
hits = find.found("ex_found")
view = find.with_rows(table, pool, hits["rows"], result, names, led.tags) if hits else table
view = export_view.filter_rows(
    view, only_selected=only_sel and not hits, sources=f_src, clusters=f_cl,
    tag_rows={r for t in f_tag for r in led.rows_tagged(t)} if f_tag else None)
if hits:
    st.caption(f"Showing the {len(hits['rows']):,} rows found by {hits['label']} (drawn or not; "
               "**Clear** below to see the selection again).")
prev = ui.preview_frame(pool.frame(view["row"].to_numpy()))
shown = export_view.curate_table(view, prev["prompt"].to_numpy(), run.labels, led)
# keyed by the rows it lists: a selection is read against the frame it was made on, and an
# edit or a filter that changes the rows starts a fresh, empty selection
sel = st.dataframe(shown, hide_index=True, on_select="rerun", selection_mode="multi-row",
                   key=export_view.table_key("ex_table", shown),
                   height=min(360, ui.table_height(len(shown))),
                   column_config={"status": curation_ui.status_column()})
st.caption(f"{len(view):,} rows shown. Select rows (left edge) to read them or edit them.")
chosen = export_view.chosen_rows(shown, sel.selection.rows)
ids = dict(zip(chosen[:6], map(str, pool.column("id", chosen[:6]))))  # the toast's names
b = st.columns(5)
for i, (op, label, icon) in enumerate([("pin", "Pin", ":material/push_pin:"),
                                       ("reject", "Reject", ":material/block:"),
                                       ("unpin", "Unpin", None), ("unreject", "Unreject", None)]):
    if b[i].button(label, icon=icon, disabled=not chosen, key=f"ex_{op}"):
        curation_ui.edit(lg, op, chosen, "Curate & Export", ids)
        st.rerun()
with b[4]:
    curation_ui.undo_button(lg, "ex_undo")
if find.tag_panel(lg, chosen, "ex_tags"):
    st.rerun()  # the table shows the new tags
st.caption("Find rows in the whole pool, or rows like those chosen in the table:")
find.finder("ex_found", pool, find.features_of(ws, clusters), seed_rows=chosen)
if chosen:
    r = chosen[0]
    st.caption(f"row {r} · id `{pool.column('id', [r])[0]}` · score "
               f"{result.scores[r]:.4f}" if np.isfinite(result.scores[r]) else f"row {r}")
    ui.show_text(ui.chat_text(pool.messages([r])[0]), height=260)

# ------------------------------------------------------------------------------ breakdowns
export_panel.breakdowns(table[table["selected"]], names)
subtasks_ui.coverage_panel(ws, sub, rid, run.spec, key="ex", picker=False)
rds_compare.panel(ws, rid, key="ex", rows=result.rows)

# ------------------------------------------------------------------------------ ledger
with st.expander(f"Ledger of hand edits ({len(lg.edits())})", expanded=False):
    edits = lg.edits()
    if edits:
        st.dataframe(pd.DataFrame(edits), hide_index=True)
    else:
        st.caption("No edits yet. Pin, reject or ban on this page, the Clusters page or the UCB "
                   "page.")

# ------------------------------------------------------------------------------ export
export_panel.section(ws, rid, run_name, run, pool, result, clustering, names, lg)
