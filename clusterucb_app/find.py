"""Finding and labelling rows on the Clusters and Curate pages: text / regex search, "more like
this" (cosine neighbours on the cluster features), free-form tags, cluster names.

Results live in `st.session_state[key]` as {"label", "rows"} so the map can highlight them and
the action buttons can act on them; tags and names are ledger edits (on disk), so they survive a
refresh or a server restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from clusterucb_app.plots import escape
from clusterucb_core.clustering import search

MAX_FOUND = 100_000  # search results kept (the map highlights them all)


# ------------------------------------------------------------------------------ pure helpers
def highlight_trace(xy: np.ndarray, rows: Sequence[int], name: str) -> go.Scattergl:
    """Open rings over `rows` (rows without coordinates skipped); customdata = row index, so a
    click or a box on them selects them like any point."""
    rows = np.asarray(rows, dtype=np.int64)
    rows = rows[np.isfinite(np.asarray(xy)[rows]).all(axis=1)] if len(rows) else rows
    return go.Scattergl(x=np.asarray(xy)[rows, 0], y=np.asarray(xy)[rows, 1], mode="markers",
                        name=escape(name), customdata=rows, hoverinfo="skip",
                        marker={"size": 11, "symbol": "circle-open", "color": "#111",
                                "line": {"width": 2}})


def tag_text(tags: dict[int, tuple[str, ...]], rows: Sequence[int]) -> list[str]:
    return [", ".join(tags.get(int(r), ())) for r in rows]


def cluster_names(cs: Any, led: Any) -> dict[int, str]:
    """Generated labels, overridden by the names the user gave in the ledger."""
    names = dict(cs.cluster_names())
    names.update({int(k): f"{int(k)}: {v}" for k, v in led.names.items()})
    return names


def with_rows(table: Any, pool: Any, rows: Sequence[int], result: Any,
              names: dict[int, str], tags: dict[int, tuple[str, ...]]) -> Any:
    """The selection table (`export.selection_table`) cut to `rows`, plus a line for each of
    `rows` it does not list (never drawn: no score, not selected), in the order of `rows`."""
    import pandas as pd

    rows = np.asarray(rows, dtype=np.int64)
    have = table[table["row"].isin(rows)]
    new = np.setdiff1d(rows, have["row"].to_numpy())
    lab = np.asarray(result.labels)[new]
    extra = pd.DataFrame({
        "row": new, "id": pool.column("id", new).astype(str),
        "source": pool.column("source", new).astype(str),
        "line_no": pool.column("line_no", new).astype(np.int64), "cluster": lab,
        "cluster_label": [names.get(int(c), f"cluster {int(c)}") if c >= 0 else ""
                          for c in lab],
        "score": np.full(len(new), np.nan),
        "round_drawn": pd.array([None] * len(new), dtype="Int64"),
        "selected": np.zeros(len(new), dtype=bool),
        "rank": pd.array([None] * len(new), dtype="Int64"),
        "pinned": np.isin(new, list(result.pinned)),
        "rejected": np.isin(new, list(result.rejected)),
        "tags": tag_text(tags, new)})
    extra = extra.reindex(columns=have.columns)  # a column the table has and extra lacks: NA
    out = pd.concat([have, extra], ignore_index=True) if len(new) else have
    order = {int(r): i for i, r in enumerate(rows)}
    return out.iloc[np.argsort([order[int(r)] for r in out["row"]], kind="stable")]


@st.cache_resource(max_entries=2, show_spinner="Indexing the pool's text...")
def _texts(fingerprint: str, n_rows: int, _pool: Any) -> list[str]:
    return search.pool_texts(_pool)


def pool_texts(pool: Any) -> list[str]:
    return _texts(pool.fingerprint, len(pool), pool)


@st.cache_resource(max_entries=2, show_spinner=False)
def _store(path: str, mtime: int) -> Any | None:
    from clusterucb_core.features.store import FeatureStore

    try:
        return FeatureStore.open(path)
    except (OSError, ValueError):
        return None


def features_of(ws: Any, cs: Any) -> Any | None:
    """The feature store the clustering was made from (for "more like this"), or None."""
    name = (cs.meta or {}).get("features")
    folder = ws.features(name) if name else None
    if folder is None or not folder.is_dir():
        return None
    return _store(str(folder), folder.stat().st_mtime_ns)


# ------------------------------------------------------------------------------ widgets
def found(key: str) -> dict[str, Any] | None:
    return st.session_state.get(key)


def finder(key: str, pool: Any, features: Any = None, seed_rows: Sequence[int] = ()) -> None:
    """Search box, regex switch, "more like this" and Clear; results go to
    st.session_state[key] (call it before drawing what shows them: they are ready in the same
    run). The buttons act in callbacks, before the page draws them, so Clear is on as soon as
    there is something to clear; "more like this" starts from `seed_rows` (the rows chosen),
    else from the rows found."""
    seeds = [int(r) for r in seed_rows] or list((found(key) or {}).get("rows", []))
    with st.form(f"{key}_form", border=False):
        c = st.columns([4, 1, 1, 1])
        c[0].text_input("Find rows", key=f"{key}_q", placeholder="text in the id, "
                        "source or conversation", label_visibility="collapsed")
        c[1].toggle("Regex", key=f"{key}_re")
        c[2].toggle("Aa", key=f"{key}_case", help="match upper/lower case exactly")
        c[3].form_submit_button("Find", icon=":material/search:", key=f"{key}_go",
                                on_click=_find, args=(key, pool))
    c = st.columns([2, 1, 1])
    c[1].number_input("Neighbours", 1, 5000, 50, key=f"{key}_k",
                      label_visibility="collapsed", help="how many similar rows")
    what = "chosen" if len(seed_rows) else "found"
    c[0].button(f"More like these {len(seeds):,} {what} rows" if seeds else
                "More like this (select or find rows first)", key=f"{key}_like",
                icon=":material/hub:", disabled=not seeds or features is None,
                on_click=_like, args=(key, features, seeds, what),
                help="nearest rows by cosine on the cluster features")
    c[2].button("Clear", key=f"{key}_clear", disabled=found(key) is None,
                on_click=lambda: st.session_state.pop(key, None))
    if err := st.session_state.pop(f"{key}_error", None):
        st.error(err)


def _find(key: str, pool: Any) -> None:
    """Find's callback: the rows whose text matches the query."""
    ss = st.session_state
    query = str(ss.get(f"{key}_q") or "")
    if not query.strip():
        return
    try:
        rows = search.search_texts(pool_texts(pool), query,
                                   "regex" if ss.get(f"{key}_re") else "text",
                                   case=bool(ss.get(f"{key}_case")), limit=MAX_FOUND)
    except ValueError as exc:
        ss[f"{key}_error"] = str(exc)
        return
    ss[key] = {"label": f"'{query}'", "rows": rows.tolist()}


def _like(key: str, features: Any, seeds: list[int], what: str) -> None:
    """More like this's callback: the nearest rows to `seeds` on the cluster features."""
    try:
        rows, _ = search.neighbours(features, seeds, k=int(st.session_state.get(f"{key}_k", 50)))
    except ValueError as exc:
        st.session_state[f"{key}_error"] = str(exc)
        return
    st.session_state[key] = {"label": f"{len(rows)} like the {len(seeds)} {what}",
                             "rows": rows.tolist()}


def tag_panel(lg: Any, rows: Sequence[int], key: str) -> bool:
    """Add or remove a free-form tag on `rows`; True when the ledger changed."""
    rows = [int(r) for r in rows]
    led = lg.state()
    known = list(led.tag_counts())
    c = st.columns([3, 1, 1])
    tag = c[0].text_input("Tag", key=f"{key}_tag", placeholder="a tag, e.g. needs review"
                          + (f" (used: {', '.join(known[:5])})" if known else ""),
                          label_visibility="collapsed")
    if c[1].button("Tag", key=f"{key}_add", icon=":material/sell:",
                   disabled=not rows or not tag.strip()):
        return _edit(lambda: lg.tag(rows, tag), f"Tagged {len(rows):,} rows '{tag.strip()}'.")
    if c[2].button("Untag", key=f"{key}_rm", disabled=not rows or not tag.strip()):
        return _edit(lambda: lg.untag(rows, tag),
                     f"Removed '{tag.strip()}' from {len(rows):,} rows.")
    return False


def rename_panel(lg: Any, k: int, names: dict[int, str], key: str) -> None:
    """Give a cluster a name (an empty name restores the generated label)."""
    c = st.columns([2, 3, 1])
    pick = c[0].selectbox("Cluster", list(range(k)), format_func=lambda i: names.get(i, i),
                          key=f"{key}_pick", label_visibility="collapsed")
    name = c[1].text_input("Name", key=f"{key}_name", label_visibility="collapsed",
                           placeholder="a name for this cluster (empty: the generated label)")
    if c[2].button("Rename", key=f"{key}_go", icon=":material/edit:"):
        _edit(lambda: lg.name_cluster(int(pick), name), "Renamed.")
        st.rerun()


def _edit(fn: Any, ok: str) -> bool:
    try:
        fn()
    except ValueError as exc:
        st.error(str(exc))
        return False
    st.toast(ok)
    return True
