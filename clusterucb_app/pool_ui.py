"""The Pool page's parts: choosing the pool (with its id and source columns) and the tabs that
describe it (sources, token lengths, validation report)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from clusterucb_core import config
from clusterucb_core.data import load as load_mod
from clusterucb_core.data import pool as pool_mod
from clusterucb_core.runtime import atomic
from clusterucb_core.workspace import Workspace

from . import state, ui

FORMATS = ("auto", *pool_mod.FORMATS)
SHAPES = ("auto", *pool_mod.SHAPES)
SOURCES = ["Bundled demo pool", "Upload a file", "Local path"]


def columns_of(pool: Any) -> list[str]:
    """The columns (fields) of the pool's first record, read from its original text."""
    if pool is None or not len(pool):
        return []
    raw = pool.records([0])[0].decode("utf-8", "replace")
    if pool.format in ("csv", "tsv"):
        from clusterucb_core.export.files import delimited_header

        head = delimited_header(pool.path, "," if pool.format == "csv" else "\t")
        row = next(csv.reader(io.StringIO(head.decode("utf-8", "replace").lstrip("\ufeff")),
                              delimiter="," if pool.format == "csv" else "\t"), [])
        return [c for c in row if c]
    try:
        obj = json.loads(raw)
    except ValueError:
        return []
    return list(obj) if isinstance(obj, dict) else []


def _try_use(ws: Workspace, path: Path, fmt: str, shape: str, id_f: str, src_f: str) -> bool:
    """Load the pool; only a pool that loads becomes the workspace's pool."""
    had = state.pool_ref(ws) is not None
    try:
        load_mod.load_pool(path, format=fmt, shape=shape, cache_dir=ws.pool_cache(),
                           id_field=id_f or None, source_field=src_f or None)
    except (pool_mod.PoolError, FileNotFoundError, NotADirectoryError, OSError) as exc:
        ui.show_error(exc, f"Reading {path.name}",
                      "check the file, or force the format / chat shape / columns above if "
                      "the detection guessed wrong. "
                      + ("The previous pool stays selected." if had else "No pool is chosen."))
        report = getattr(exc, "report", None)
        if report is not None and report.problems:
            with st.expander(f"{len(report.problems)} problems found"):
                st.dataframe(pd.DataFrame([vars(p) for p in report.problems[:2000]]),
                             hide_index=True)
        return False
    state.set_pool_ref(ws, path, fmt, shape, id_f, src_f)
    return True


def chooser(ws: Workspace, current: Any) -> None:
    """Format, chat shape, id / source columns, and where the pool comes from."""
    ref = state.pool_ref(ws) or {}
    uploads = ws.root / "uploads"
    st.subheader("Choose the pool")
    c1, c2, c3 = st.columns([3, 1, 1])
    fmt = c2.selectbox("Format", FORMATS, index=FORMATS.index(ref.get("format", "auto"))
                       if ref.get("format", "auto") in FORMATS else 0,
                       help="'auto' detects it from the extension and the content.")
    shape = c3.selectbox("Chat shape", SHAPES, index=SHAPES.index(ref.get("shape", "auto"))
                         if ref.get("shape", "auto") in SHAPES else 0,
                         help="'auto' detects it from the first records' fields.")
    cols = columns_of(current)
    c = st.columns(2)
    id_f = c[0].text_input("Id column", value=ref.get("id_field") or "", key="pool_id_field",
                           placeholder="id", help="Blank: the `id` field, else one is made "
                           "from the source and the record's position.")
    src_f = c[1].text_input("Source column", value=ref.get("source_field") or "",
                            key="pool_source_field", placeholder="dataset / source",
                            help="Blank: the `dataset` or `source` field, else the file name.")
    if cols:
        st.caption("Columns of the current pool's first record: "
                   + ", ".join(f"`{c_}`" for c_ in cols))
    with c1:
        source = st.radio("Source", SOURCES, horizontal=True, key="pool_source",
                          index=0 if not ref or Path(ref.get("path", "")) == config.DEMO_POOL
                          else 2)
    args = (fmt, shape, id_f.strip(), src_f.strip())
    if source == SOURCES[0]:
        st.caption(f"`{config.DEMO_POOL}` — chats from several task families, with a few "
                   "deliberately bad rows.")
        if st.button("Use the demo pool", type="primary", key="pool_use_demo",
                     disabled=not config.DEMO_POOL.exists()) and \
                _try_use(ws, config.DEMO_POOL, *args):
            st.rerun()
    elif source == SOURCES[1]:
        up = st.file_uploader("Pool file", type=["jsonl", "ndjson", "json", "csv", "tsv",
                                                 "parquet"], key="pool_upload",
                              help="The size limit is set in .streamlit/config.toml "
                                   "(server.maxUploadSize).")
        if up is not None and st.button("Use this file", type="primary", key="pool_use_upload"):
            dest = uploads / Path(up.name).name
            try:
                atomic.write_bytes(dest, up.getvalue())
            except OSError as exc:
                ui.show_error(exc, "Saving the upload", "free some disk space and try again")
            else:
                if _try_use(ws, dest, *args):
                    st.rerun()
    else:
        path_text = st.text_input("Path to a pool file (may be .gz), a `datasets` or Parquet-"
                                  "shards folder, or a Hub dataset `hf://ORG/NAME?split=train`",
                                  value=ref.get("path", ""), key="pool_path")
        if st.button("Use this path", type="primary", key="pool_use_path"):
            if not path_text.strip():
                st.error("Type a path first.")
            elif _try_use(ws, state.resolve(ws, path_text.strip()), *args):
                st.rerun()


def empty_hint(source: str | None) -> str:
    """What to do when no pool is chosen yet, for the source picked above."""
    return {SOURCES[1]: "No pool chosen yet: upload your file above and press **Use this "
                        "file**.",
            SOURCES[2]: "No pool chosen yet: type the path of your file above and press "
                        "**Use this path**."}.get(
        source or "", "No pool chosen yet: press **Use the demo pool** above, or pick "
                      "*Upload a file* / *Local path* for yours.")


@st.cache_data(show_spinner="Counting tokens...", max_entries=4)
def _lengths(ws_root: str, fingerprint: str, model_path: str, template: str,
             sample: int) -> list[int] | None:
    from clusterucb_core.data.formatting import token_lengths
    from clusterucb_core.features.model import load_tokenizer

    rows = _sample(state.load_pool(Workspace.open(ws_root, create=False)), sample)
    if model_path.startswith(("/", ".", "~")) and not Path(model_path).expanduser().exists():
        return None
    try:
        tok = load_tokenizer(config.ModelSpec(name_or_path=model_path, chat_template=template))
    except (OSError, ValueError):  # no model yet: count words instead (said on the page)
        return None
    return token_lengths(list(rows["messages"]), tok, template=template)


def _sample(pool: Any, sample: int) -> pd.DataFrame:
    """`sample` random rows of the pool (all when fewer): the rows DataFrame.sample would take,
    read alone, so a big pool is never turned into one frame."""
    pick = pd.RangeIndex(len(pool)).to_series()
    return pool.frame(pick if len(pool) <= sample else pick.sample(sample, random_state=0))


def lengths_tab(ws: Workspace, pool: Any) -> None:
    model = state.settings(ws, "model")
    sample = 5000
    with ui.guard("Counting tokens", "check the model on the Model & Features page"):
        lengths = _lengths(str(ws.root), pool.fingerprint, model.name_or_path,
                           model.chat_template, sample)
        unit = "tokens"
        if lengths is None:
            st.info(f"The model `{model.name_or_path}` is not available, so these are "
                    "whitespace **word** counts, not tokens.")
            rows = _sample(pool, sample)
            lengths, unit = [len(ui.chat_text(m).split()) for m in rows["messages"]], "words"
        lens = pd.Series(lengths, name=unit)
        over = int((lens > model.max_length).sum())
        fig = px.histogram(lens, nbins=60, title=f"{unit.title()} per chat (rendered)",
                           labels={"value": unit})
        fig.add_vline(x=model.max_length, line_dash="dash", line_color="red",
                      annotation_text=f"max length {model.max_length}")
        fig.update_layout(showlegend=False)
        st.plotly_chart(fig, key="pool_len_fig")
        note = (f"Counted on a random sample of {sample:,} rows." if len(pool) > sample
                else "Counted on every row.")
        st.caption(f"{note} Tokenizer: `{model.name_or_path}`. {over:,} chats "
                   f"({over / max(len(lens), 1):.1%}) are longer than the max length "
                   f"{model.max_length} and will be truncated.")


def report_tab(report: Any) -> None:
    if not report.problems:
        st.success("No problems: every record is usable.")
        return
    st.warning(f"{len(report.errors):,} rows were skipped and {len(report.warnings):,} kept "
               "with a warning. The line numbers are the file's own.")
    probs = pd.DataFrame([{"line": p.line, "severity": p.severity, "reason": p.reason}
                          for p in report.problems])
    sev = st.multiselect("Show", ["error", "warning"], default=["error", "warning"],
                         key="pool_sev")
    st.dataframe(probs[probs["severity"].isin(sev)], hide_index=True,
                 height=min(300, ui.table_height(len(probs))))
