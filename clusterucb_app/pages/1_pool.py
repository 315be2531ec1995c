"""Step 1: the instruction pool to choose from."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from clusterucb_app import state, ui
from clusterucb_core import atomic, config

ws = ui.workspace()
ui.header(
    "Pool",
    "The pool is the big set of training chats you want to choose from.",
    """
The pool is every candidate training example (a chat: user / assistant turns). ClusterUCB will
score rows by how much their **gradient** agrees with the gradient of your *target* set, but
only for a *budget* of rows, chosen cluster by cluster.

Accepted: JSONL, JSON, CSV/TSV, Parquet or a Hugging Face `datasets` folder, in the shapes
`messages` (open-instruct / OpenAI), Alpaca (`instruction`/`input`/`output`), ShareGPT
(`conversations`) or `prompt`/`completion`. Bad rows are listed with their line number and
skipped; the rest still loads. Exports give back your **original lines**, byte for byte.
""")

try:
    from clusterucb_core import pool as pool_mod
    FORMATS = ("auto",) + tuple(pool_mod.FORMATS)
    SHAPES = ("auto",) + tuple(pool_mod.SHAPES)
except ImportError:
    pool_mod = None
    FORMATS, SHAPES = ("auto",), ("auto",)

ref = state.pool_ref(ws) or {}
UPLOADS = ws.root / "uploads"


def _try_use(path: Path, fmt: str, shape: str) -> bool:
    """Load the pool; only a pool that loads becomes the workspace's pool."""
    if pool_mod is None:
        st.error("The pool reader (clusterucb_core.pool) is not installed yet.")
        return False
    try:
        pool_mod.load_pool(path, format=fmt, shape=shape, cache_dir=ws.pool_cache())
    except (pool_mod.PoolError, FileNotFoundError, NotADirectoryError, OSError) as exc:
        ui.show_error(exc, f"Reading {path.name}",
                      "check the file, or force the format/shape below if the detection "
                      "guessed wrong. The previous pool stays selected.")
        report = getattr(exc, "report", None)
        if report is not None and report.problems:
            with st.expander(f"{len(report.problems)} problems found"):
                st.dataframe(pd.DataFrame([vars(p) for p in report.problems[:2000]]),
                             hide_index=True)
        return False
    state.set_pool_ref(ws, path, fmt, shape)
    return True


# ------------------------------------------------------------------------------ choose a pool
with st.container(border=True):
    st.subheader("Choose the pool")
    c1, c2, c3 = st.columns([3, 1, 1])
    fmt = c2.selectbox("Format", FORMATS,
                       index=FORMATS.index(ref.get("format", "auto"))
                       if ref.get("format", "auto") in FORMATS else 0,
                       help="'auto' detects it from the extension and the content.")
    shape = c3.selectbox("Chat shape", SHAPES,
                         index=SHAPES.index(ref.get("shape", "auto"))
                         if ref.get("shape", "auto") in SHAPES else 0,
                         help="'auto' detects it from the first records' fields.")
    with c1:
        source = st.radio("Source", ["Bundled demo pool", "Upload a file", "Local path"],
                          horizontal=True, key="pool_source",
                          index=0 if not ref or Path(ref.get("path", "")) == config.DEMO_POOL
                          else 2)
    if source == "Bundled demo pool":
        st.caption(f"`{config.DEMO_POOL}` — chats from several task families, with a few "
                   "deliberately bad rows.")
        if st.button("Use the demo pool", type="primary", key="pool_use_demo",
                     disabled=not config.DEMO_POOL.exists()):
            if _try_use(config.DEMO_POOL, fmt, shape):
                st.rerun()
        if not config.DEMO_POOL.exists():
            st.warning("The demo pool has not been generated yet "
                       "(`python scripts/make_demo_data.py`).")
    elif source == "Upload a file":
        up = st.file_uploader("Pool file", type=["jsonl", "ndjson", "json", "csv", "tsv",
                                                 "parquet"], key="pool_upload",
                              help="The size limit is set in .streamlit/config.toml "
                                   "(server.maxUploadSize).")
        if up is not None and st.button("Use this file", type="primary", key="pool_use_upload"):
            try:
                name = Path(up.name).name
                dest = UPLOADS / name
                atomic.write_bytes(dest, up.getvalue())
            except OSError as exc:
                ui.show_error(exc, "Saving the upload", "free some disk space and try again")
            else:
                if _try_use(dest, fmt, shape):
                    st.rerun()
    else:
        path_text = st.text_input("Path to a pool file (may be .gz), a `datasets` or Parquet-"
                                  "shards folder, or a Hub dataset `hf://ORG/NAME?split=train`",
                                  value=ref.get("path", ""), key="pool_path")
        if st.button("Use this path", type="primary", key="pool_use_path"):
            if not path_text.strip():
                st.error("Type a path first.")
            elif _try_use(state.resolve(ws, path_text.strip()), fmt, shape):
                st.rerun()

# ------------------------------------------------------------------------------ what we have
if not ui.need(bool(ref), "No pool chosen yet: pick the demo pool above (or upload yours) "
                          "and press the button."):
    st.stop()

try:
    pool = state.load_pool(ws)
except Exception as exc:  # noqa: BLE001
    ui.show_error(exc, "Reading the pool", "choose the pool again above")
    st.stop()

report = pool.report
m = st.columns(5)
m[0].metric("Usable rows", f"{report.n_valid:,}")
m[1].metric("Records in file", f"{report.n_records:,}")
m[2].metric("Problems", f"{len(report.problems):,}",
            help=f"{len(report.errors)} errors (row skipped), "
                 f"{len(report.warnings)} warnings (row kept)")
m[3].metric("Format", pool.format)
m[4].metric("Shape", pool.shape)
st.caption(f"File: `{pool.path}` · fingerprint `{pool.fingerprint[:16]}` · "
           "the detection can be overridden above.")
for note in getattr(pool, "notes", []) or []:
    st.info(note)

tab_prev, tab_src, tab_len, tab_rep = st.tabs(
    ["Preview", "Sources", "Token lengths", f"Validation report ({len(report.problems)})"])

with tab_prev:
    n_show = min(len(pool), 200)
    st.dataframe(ui.preview_frame(pool.frame(range(n_show))), hide_index=True, height=320)
    st.caption(f"The first {n_show} of {len(pool):,} rows. Pick a row to read it whole:")
    row = st.number_input("Row", min_value=0, max_value=len(pool) - 1, value=0,
                          key="pool_row")
    rec = pool.frame([int(row)]).iloc[0]
    st.caption(f"id `{rec['id']}` · source `{rec['source']}` · line {rec['line_no']} of the file")
    ui.show_text(ui.chat_text(rec["messages"]), height=300)

with tab_src:
    counts = pd.DataFrame(list(pool.sources().items()), columns=["source", "rows"])
    c1, c2 = st.columns([2, 1])
    c1.plotly_chart(px.bar(counts, x="source", y="rows", title="Rows per source"),
                    key="pool_sources_fig")
    c2.dataframe(counts, hide_index=True)


@st.cache_data(show_spinner="Counting tokens...", max_entries=4)
def _lengths(fingerprint: str, model_path: str, template: str, sample: int) -> list[int]:
    from clusterucb_core.formatting import token_lengths
    from clusterucb_core.model import load_tokenizer

    pool = state.load_pool(ws)
    pick = pd.RangeIndex(len(pool)).to_series()  # the rows DataFrame.sample would take
    rows = pool.frame(pick if len(pool) <= sample else pick.sample(sample, random_state=0))
    local = Path(model_path).expanduser()
    if model_path.startswith(("/", ".", "~")) and not local.exists():
        return None
    try:
        tok = load_tokenizer(config.ModelSpec(name_or_path=model_path, chat_template=template))
    except (OSError, ValueError):  # no model yet: count words instead (said on the page)
        return None
    return token_lengths(list(rows["messages"]), tok, template=template)


def _word_counts(sample: int) -> list[int]:
    pool = state.load_pool(ws)
    pick = pd.RangeIndex(len(pool)).to_series()  # the rows DataFrame.sample would take
    rows = pool.frame(pick if len(pool) <= sample else pick.sample(sample, random_state=0))
    return [len(ui.chat_text(m).split()) for m in rows["messages"]]


with tab_len:
    model = state.settings(ws, "model")
    sample = 5000
    with ui.guard("Counting tokens", "check the model on the Model & Features page"):
        lengths = _lengths(pool.fingerprint, model.name_or_path, model.chat_template, sample)
        unit = "tokens"
        if lengths is None:
            st.info(f"The model `{model.name_or_path}` is not available, so these are "
                    "whitespace **word** counts, not tokens.")
            lengths, unit = _word_counts(sample), "words"
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
        st.caption(f"{note} Tokenizer: `{model.name_or_path}`. "
                   f"{over:,} chats ({over / max(len(lens), 1):.1%}) are longer than the "
                   f"max length {model.max_length} and will be truncated.")

with tab_rep:
    if not report.problems:
        st.success("No problems: every record is usable.")
    else:
        st.warning(f"{len(report.errors):,} rows were skipped and {len(report.warnings):,} "
                   "kept with a warning. The line numbers are the file's own.")
        probs = pd.DataFrame([{"line": p.line, "severity": p.severity, "reason": p.reason}
                              for p in report.problems])
        sev = st.multiselect("Show", ["error", "warning"], default=["error", "warning"],
                             key="pool_sev")
        st.dataframe(probs[probs["severity"].isin(sev)], hide_index=True, height=300)

st.page_link("pages/2_target.py", label="Next: choose the target", icon=":material/arrow_forward:")
