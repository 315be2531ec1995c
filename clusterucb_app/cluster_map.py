"""The Clusters page's map: a fragment that redraws alone, selections over every row, search
and "more like this" highlighted on it, and actions on the chosen rows.

Two fragments: the map (colour, search, the figure) reruns on its own widgets and on a box or
lasso; the action panel under it (pin, reject, unpin, unreject, ban, tag) is nested, so its
choices rerun only the panel, and an edit reruns the page's counts and cluster table with it
(keyed fragments), never the map. A box or lasso means every row inside the shape
(`mapselect`, over the full coordinates), not only the sample drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from clusterucb_app import curation_ui, engine, find, map_context, marks, rounds, state, ui
from clusterucb_app import plots_rounds as pr
from clusterucb_app.cluster_panels import TABLE
from clusterucb_core.clustering import mapselect

FOUND = "cl_found"  # session key of the search / neighbour results
MAP_KEY = "cl_map_fig"
COUNTS, ACTIONS = "cl_counts", "cl_actions"  # fragment keys: the page's counts, this panel


def _selection(event: Any) -> Any:
    """The `selection` of a chart event or of the chart's session state (either shape)."""
    if event is None:
        return None
    if isinstance(event, dict):
        return event.get("selection")
    return getattr(event, "selection", None)


def _figure(ws: Any, xy: np.ndarray, labels: np.ndarray, names: dict[int, str], pool: Any,
            led: Any, colour: str) -> go.Figure:
    """The base map, kept in the session while its inputs stay the same. No hover text per
    point: a point's text is read when it is clicked (`map_context`)."""
    sig = (str(ws.root), id(xy), colour, tuple(sorted(names.items())), led.fingerprint,
           tuple(sorted(led.tags.items())), None if pool is None else pool.fingerprint)
    cached = st.session_state.get("_cl_fig")
    if cached is not None and cached[0] == sig:
        return cached[1]
    status = marks.all_status(labels, led)
    # pinned rows as a star, rejected as a cross, over every colouring but the status one
    overlays = [(marks.PINNED, sorted(led.pinned), marks.COLOURS[marks.PINNED], "star"),
                (marks.REJECTED, sorted(led.rejected), marks.COLOURS[marks.REJECTED], "x")]
    if colour == "cluster":
        fig = pr.cluster_map(xy, [names.get(int(c), str(c)) if c >= 0 else "no features"
                                  for c in labels], title="Clusters",
                             overlays=overlays)
    elif colour == "curation status":
        fig = pr.cluster_map(xy, status, title="Curation status",
                             colours=marks.COLOURS)
    elif colour == "source":
        fig = pr.cluster_map(xy, pool.column("source").astype(str),
                             title="Sources", overlays=overlays)
    else:
        scores, title = _scores(ws, len(labels), colour)
        fig = pr.cluster_map(xy, scores, kind="continuous", title=title,
                             color_title="score", overlays=overlays)
    fig = map_context.grey_unselected(fig)  # rows outside a box or lasso stay, in grey
    st.session_state["_cl_fig"] = (sig, fig)
    return fig


def _scores(ws: Any, n: int, colour: str) -> tuple[np.ndarray, str]:
    if colour == "exhaustive score":
        return state.exhaustive_scores(ws, n), "Exhaustive influence score"
    rid = rounds.current_id(ws)
    return rounds.get(ws, rid).scores, f"Scores drawn so far in {rid}"


def section(ws: Any, cs: Any, pool: Any, clustering: str) -> None:
    """The map heading, the compute button when there is no map yet, and the map fragment."""
    st.subheader("Map")
    n = len(cs.labels)
    xy = state.load_map(ws, n)
    if xy is None:
        st.info("No 2-D map yet. UMAP places rows with similar features close together; it "
                "takes a minute on the demo (the first run in a process compiles UMAP's "
                "kernels).")
        busy = ui.busy(ws)
        if st.button("Compute the 2-D map (UMAP)", key="cl_map2", type="primary",
                     disabled=bool(busy), help=busy):
            engine.start_stage(ws, "map", "UMAP map")
    ui.job_panel(ws, "map")
    if xy is not None:
        map_fragment(ws, cs, pool, clustering, xy)


@st.fragment
def map_fragment(ws: Any, cs: Any, pool: Any, clustering: str, xy: np.ndarray) -> None:
    labels = np.asarray(cs.labels)
    led = state.ledger(ws, clustering).state()
    names = find.cluster_names(cs, led)
    opts = ["cluster", "curation status"] + (["source"] if pool is not None else []) \
        + (["exhaustive score"] if state.exhaustive_scores(ws, len(labels)) is not None
           else []) + (["score (current run)"] if rounds.current_id(ws) is not None else [])
    colour = st.radio("Colour by", opts, horizontal=True, key="cl_colour")
    # the chart's selection (its widget state, the same as the event it returns below), so
    # "more like this" can start from it before the chart is drawn
    picked = mapselect.rows_in_selection(xy, _selection(st.session_state.get(MAP_KEY)))
    if pool is not None:
        find.finder(FOUND, pool, find.features_of(ws, cs), seed_rows=picked)
    hits = find.found(FOUND)
    fig = _figure(ws, xy, labels, names, pool, led, colour)
    if hits:
        fig = go.Figure(fig)  # a copy: the cached base stays without highlights
        fig.add_trace(find.highlight_trace(xy, hits["rows"], f"found: {hits['label']}"))
        st.caption(f"Found {len(hits['rows']):,} rows ({hits['label']}), ringed on the map.")
    st.plotly_chart(fig, key=MAP_KEY, on_select="rerun",
                    selection_mode=("points", "box", "lasso"))  # its state gave `picked`
    note = state.map_note(ws, len(labels))
    st.caption((f"{note} " if note else "") + "Drag a box or lasso (toolbar, top right of the "
               "map) to select rows: every row inside the shape is selected, also those not "
               "drawn when the map shows a sample; the rest stay in grey. Click a point to "
               "read its row. ★ pinned, × rejected (the marks follow a pin or reject when the "
               "map next redraws).")
    if len(picked) == 1:
        map_context.row_panel(pool, picked[0], labels, names, led)
    actions(ws, clustering, picked.tolist(), [] if not hits else hits["rows"], pool)


def _edit(lg: Any, op: str, rows: list[int], ids: dict[int, str]) -> None:
    """A map edit's callback: the edit, then a rerun of the page's counts, the cluster table
    and this panel only (the map's points are not sent again; its marks follow the next
    time the map redraws)."""
    curation_ui.edit(lg, op, rows, "map selection", ids)
    st.rerun([COUNTS, TABLE, ACTIONS])


@st.fragment(key=ACTIONS)
def actions(ws: Any, clustering: str, picked: list[int], hits: list[int], pool: Any) -> None:
    """Pin, reject, ban or tag the map selection or the found rows (reruns alone)."""
    choices = {f"map selection ({len(picked):,})": picked} if picked else {}
    if hits:
        choices[f"found rows ({len(hits):,})"] = hits
    if not choices:
        return
    which = st.radio("Act on", list(choices), horizontal=True, key="cl_act_on")
    rows = choices[which]
    lg = state.ledger(ws, clustering)
    cs = state.load_clusters(ws, clustering)
    labels = np.asarray(cs.labels)
    # the toast names rows by id too (the first ones: it lists six)
    ids = {} if pool is None else dict(zip(rows[:6], map(str, pool.column("id", rows[:6]))))
    led = lg.state()
    n_pinned, n_rejected = (sum(1 for r in rows if r in s) for s in (led.pinned, led.rejected))
    b = st.columns([1, 1, 1, 1, 1.2, 1.4])
    for i, (op, label, icon, hint) in enumerate([
            ("pin", f"Pin {len(rows):,} rows", ":material/push_pin:", None),
            ("reject", f"Reject {len(rows):,} rows", ":material/block:", None),
            ("unpin", "Unpin", None, f"{n_pinned:,} of these rows are pinned"),
            ("unreject", "Unreject", None, f"{n_rejected:,} of these rows are rejected")]):
        off = (op == "unpin" and not n_pinned) or (op == "unreject" and not n_rejected)
        b[i].button(label, icon=icon, key=f"cl_{op}", disabled=off, help=hint,
                    on_click=_edit, args=(lg, op, rows, ids))
    curation_ui.flush_toast()  # a map edit reruns this panel, not the page
    clusters = sorted({int(c) for c in labels[rows] if c >= 0})
    if b[4].button(f"Ban their {len(clusters)} cluster(s)", icon=":material/do_not_disturb_on:",
                   key="cl_ban_sel", disabled=not clusters):
        curation_ui.edit(lg, "ban", clusters, "map selection",
                         names=find.cluster_names(cs, lg.state()))
        st.rerun()  # the page's counts and table show bans (and the toast)
    with b[5]:
        curation_ui.undo_button(lg, "cl_map_undo")
    find.tag_panel(lg, rows, "cl_tags")
    if pool is not None:
        head = rows[:2000]
        st.dataframe(ui.preview_frame(pool.frame(head), None, {
            "cluster": labels[head], "status": marks.row_status(head, labels, led),
            "tags": find.tag_text(led.tags, head)}), hide_index=True, height=240,
            column_config={"status": curation_ui.status_column()})
