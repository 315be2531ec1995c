"""Step 6: review the final selection, curate it by hand, and export it."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from clusterucb_app import rounds, state, ui

ws = ui.workspace()
ui.header(
    "Curate & Export",
    "The final selection: the top-p of every scored row, with your pins, rejections and bans "
    "applied. Export it in your pool's own format, or as LESS's files.",
    """
* **Selected** = the `floor(N·p)` best-scored rows among those the bandit scored, plus every
  **pinned** row, minus **rejected** rows and rows of **banned** clusters (unless pinned).
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

from clusterucb_core.export import export_selection, selection_table  # noqa: E402

lg = state.ledger(ws, clustering)
result = run.result(lg)
names = clusters.cluster_names()
table = selection_table(pool, result, names)

if not run.done:
    st.warning(f"The run is not finished: {run.budget_used:,} of {run.budget_total:,} budget "
               "rows scored. The selection below is the best so far.")
m = st.columns(5)
m[0].metric("Selected", f"{len(result.rows):,}", help=f"top-p target: {result.n_top:,} rows")
m[1].metric("Scored (budget)", f"{result.budget_used:,} / {result.budget_total:,}")
m[2].metric("Pinned", len(result.pinned))
m[3].metric("Rejected", len(result.rejected))
m[4].metric("Banned clusters", len(result.banned))

# ------------------------------------------------------------------------------ the selection
st.subheader("Selection")
c = st.columns([1, 2, 2, 2])
only_sel = c[0].toggle("Selected only", value=True, key="ex_only")
srcs = sorted(table["source"].astype(str).unique())
f_src = c[1].multiselect("Sources", srcs, key="ex_src", placeholder="all sources")
cl_opts = sorted(int(x) for x in table["cluster"].unique() if x >= 0)
f_cl = c[2].multiselect("Clusters", cl_opts, format_func=lambda k: names.get(k, k),
                        key="ex_cl", placeholder="all clusters")
query = c[3].text_input("Text contains", key="ex_q")
view = table
if only_sel:
    view = view[view["selected"]]
if f_src:
    view = view[view["source"].astype(str).isin(f_src)]
if f_cl:
    view = view[view["cluster"].isin(f_cl)]
if query.strip():
    q = query.strip().lower()
    hit = [q in ui.chat_text(m).lower() for m in pool.messages(view["row"].to_numpy())]
    view = view[np.asarray(hit, dtype=bool)]
prev = ui.preview_frame(pool.frame(view["row"].to_numpy()))
shown = view.reset_index(drop=True).copy()
shown.insert(3, "prompt", prev["prompt"].to_numpy())
cols = [c_ for c_ in ["rank", "row", "id", "prompt", "source", "cluster", "cluster_label",
                      "score", "round_drawn", "selected", "pinned", "rejected"] if c_ in shown]
sel = st.dataframe(shown[cols], hide_index=True, on_select="rerun", selection_mode="multi-row",
                   key="ex_table", height=360)
st.caption(f"{len(view):,} rows shown. Select rows (left edge) to read them or edit them.")
chosen = [int(shown["row"].iat[i]) for i in sel.selection.rows]
b = st.columns(4)
if b[0].button("Pin", icon=":material/push_pin:", disabled=not chosen, key="ex_pin"):
    lg.pin(chosen, note="Curate & Export")
    st.rerun()
if b[1].button("Reject", icon=":material/block:", disabled=not chosen, key="ex_reject"):
    lg.reject(chosen, note="Curate & Export")
    st.rerun()
if b[2].button("Unpin", disabled=not chosen, key="ex_unpin"):
    lg.unpin(chosen, note="Curate & Export")
    st.rerun()
if b[3].button("Unreject", disabled=not chosen, key="ex_unreject"):
    lg.unreject(chosen, note="Curate & Export")
    st.rerun()
if chosen:
    r = chosen[0]
    st.caption(f"row {r} · id `{pool.column('id', [r])[0]}` · score "
               f"{result.scores[r]:.4f}" if np.isfinite(result.scores[r]) else f"row {r}")
    ui.show_text(ui.chat_text(pool.messages([r])[0]), height=260)

# ------------------------------------------------------------------------------ breakdowns
selected = table[table["selected"]]
left, right = st.columns(2)
by_cl = (selected.assign(cluster=[names.get(int(k), str(k)) for k in selected["cluster"]])
         .groupby("cluster").size().reset_index(name="rows").sort_values("rows", ascending=False))
left.plotly_chart(px.bar(by_cl, x="cluster", y="rows", title="Selected rows per cluster"),
                  key="ex_by_cluster")
by_src = selected.groupby("source").size().reset_index(name="rows").sort_values(
    "rows", ascending=False)
right.plotly_chart(px.bar(by_src, x="source", y="rows", title="Selected rows per source"),
                   key="ex_by_source")

# ------------------------------------------------------------------------------ ledger
with st.expander(f"Ledger of hand edits ({len(lg.edits())})", expanded=False):
    edits = lg.edits()
    if edits:
        st.dataframe(pd.DataFrame(edits), hide_index=True)
    else:
        st.caption("No edits yet. Pin, reject or ban on this page, the Clusters page or the UCB "
                   "page.")

# ------------------------------------------------------------------------------ export
st.subheader("Export")
out_dir = ws.exports(rid)
st.caption(f"Saved into the workspace at `{out_dir}`; each save replaces the previous one "
           "whole (never half-written).")
with_ds = st.checkbox("Also write a Hugging Face `datasets` folder", value=True, key="ex_ds")
if st.button("Save export to the workspace", icon=":material/save:", type="primary", key="ex_save"):
    with st.spinner("Writing the export..."):
        try:
            export_selection(out_dir, pool, result, run_id=rid, clustering=clustering,
                             cluster_names=names, oracle_info=(run.header.get("oracle")
                                                               if hasattr(run, "header") else None),
                             ledger_state=lg.state(), log_path=run.log_path,
                             exhaustive=state.exhaustive_scores(ws, run.N),
                             with_dataset=with_ds)
        except Exception as exc:  # noqa: BLE001
            ui.show_error(exc, "Writing the export", "check free disk space; nothing half-"
                          "written was left behind")
        else:
            st.success(f"Export written: {len(result.rows):,} rows.")

if (out_dir / "manifest.json").exists():
    files = sorted(p for p in out_dir.iterdir() if p.is_file())
    st.markdown("**Downloads**")
    kinds = {".jsonl": "application/jsonl", ".json": "application/json", ".csv": "text/csv",
             ".tsv": "text/tab-separated-values", ".parquet": "application/octet-stream"}
    cols = st.columns(4)
    for i, p in enumerate(files):
        cols[i % 4].download_button(
            p.name,
            icon=":material/download:",
            data=p.read_bytes(),
            file_name=p.name,
            mime=kinds.get(p.suffix, "application/octet-stream"),
            key=f"ex_dl_{p.name}",
            on_click="ignore",
        )

    @st.cache_data(show_spinner=False, max_entries=2)
    def _zip(folder: str, stamp: float) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(Path(folder).rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(folder))
        return buf.getvalue()

    stamp = (out_dir / "manifest.json").stat().st_mtime
    st.download_button(
        "Everything (zip)",
        icon=":material/folder_zip:",
        data=_zip(str(out_dir), stamp),
        file_name=f"{ws.name}-{rid}.zip",
        mime="application/zip",
        key="ex_dl_zip",
        on_click="ignore",
    )
