"""Step 2: the target set whose gradients the selection should agree with."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from clusterucb_app import state, target_ui, ui
from clusterucb_core.runtime import atomic

ws = ui.workspace()
ui.header(
    "Target",
    "The target is a small validation set of the skill you want the fine-tuned model to gain.",
    """
A training row is *influential* when its gradient points the same way as the target's
gradients: one step on it lowers the target loss. The score of a row is the **mean cosine**
between its gradient and the gradients of one subtask's examples, **maximised over
subtasks** (LESS). So every subtask counts equally, however many examples it has — which is
why subtasks must have the same number of examples (or be trimmed to the smallest, reported).

Use a bundled target, a folder in the LESS layout (`eval/mmlu/dev/*_dev.csv`,
`eval/bbh/bbh-three-shot.json`, `eval/tydiqa/tydiqa-one-shot.json`), or any pool-like file
whose rows carry a `subtask` field. Only the completion (the answer) is trained on.
""")

try:
    from clusterucb_core.data import targets as targets_mod
    KINDS = ("auto",) + tuple(getattr(targets_mod, "KINDS", ()))
except ImportError:
    targets_mod = None
    KINDS = ("auto",)

ref = state.target_ref(ws) or {}
bundled = state.bundled_targets()


def _try_use(path: Path, kind: str, trim: bool) -> bool:
    if targets_mod is None:
        st.error("The target reader (clusterucb_core.data.targets) is not installed yet.")
        return False
    try:
        targets_mod.load_target(path, kind=kind, trim=trim)
    except (ValueError, FileNotFoundError, NotADirectoryError, OSError) as exc:
        ui.show_error(exc, f"Reading the target {path.name}",
                      "check the file or folder; when subtasks have different sizes, tick "
                      "'Trim subtasks to the smallest'. The previous target stays selected.")
        return False
    state.set_target_ref(ws, path, kind, trim)
    return True


with st.container(border=True):
    st.subheader("Choose the target")
    c1, c2, c3 = st.columns([3, 1, 1.4])
    kind = c2.selectbox("Kind", KINDS, index=KINDS.index(ref.get("kind", "auto"))
                        if ref.get("kind", "auto") in KINDS else 0,
                        help="'auto' recognises the LESS layouts and pool files with a "
                             "`subtask` field.")
    trim = c3.checkbox("Trim subtasks to the smallest", value=bool(ref.get("trim", False)),
                       help="Subtasks must have equal counts; trimming drops the extra "
                            "examples (reported below).")
    in_bundled = ref and any(str(p) == ref.get("path") for p in bundled.values())
    options = ["Bundled target", "LESS folder or local file", "Upload a file"]
    with c1:
        source = st.radio("Source", options, horizontal=True, key="target_source",
                          index=0 if (not ref or in_bundled) else 1)
    if source == "Bundled target":
        if not bundled:
            st.warning("No bundled targets were found in sample_data/targets/ yet.")
        else:
            names = sorted(bundled)
            current = next((n for n, p in bundled.items() if str(p) == ref.get("path")), names[0])
            name = st.selectbox("Target", names, index=names.index(current), key="target_bundled")
            if st.button("Use this target", type="primary", key="target_use_bundled"):
                if _try_use(bundled[name], kind, trim):
                    st.rerun()
    elif source == "LESS folder or local file":
        path_text = st.text_input("Path (a LESS `eval` folder, one of its task folders, a "
                                  "file with a `subtask` field, or a Hub dataset "
                                  "`hf://ORG/NAME`)", value=ref.get("path", ""),
                                  key="target_path")
        if st.button("Use this path", type="primary", key="target_use_path"):
            if not path_text.strip():
                st.error("Type a path first.")
            elif _try_use(state.resolve(ws, path_text.strip()), kind, trim):
                st.rerun()
    else:
        up = st.file_uploader("Target file (rows with a `subtask` field, or a LESS JSON/CSV)",
                              type=["jsonl", "json", "csv", "tsv", "parquet"], key="target_upload")
        if up is not None and st.button("Use this file", type="primary", key="target_use_upload"):
            dest = ws.root / "uploads" / "targets" / Path(up.name).name
            try:
                atomic.write_bytes(dest, up.getvalue())
            except OSError as exc:
                ui.show_error(exc, "Saving the upload", "free some disk space and try again")
            else:
                if _try_use(dest, kind, trim):
                    st.rerun()

if not ui.need(bool(ref), "No target chosen yet: pick a bundled target above and press "
                          "**Use this target**."):
    st.stop()

try:
    target = state.load_target(ws)
except Exception as exc:  # noqa: BLE001
    ui.show_error(exc, "Reading the target", "choose the target again above")
    st.stop()

counts = target.counts()
m = st.columns(4)
m[0].metric("Target", target.name)
m[1].metric("Kind", target.kind)
m[2].metric("Subtasks", len(target.subtasks))
m[3].metric("Examples", f"{len(target.examples):,}")
target_ui.truncation_note(ws, target)
if getattr(target, "trimmed", None):
    st.info("Trimmed to equal subtask sizes: "
            + ", ".join(f"{k}: -{v}" for k, v in target.trimmed.items() if v))

c1, c2 = st.columns([1, 2])
df = pd.DataFrame({"subtask": list(counts), "examples": list(counts.values())})
c1.dataframe(df, hide_index=True, height=min(400, 40 + 35 * len(df)))
c2.plotly_chart(px.bar(df, x="subtask", y="examples", title="Examples per subtask"),
                key="target_counts_fig")

st.subheader("Preview")
st.caption("The exact text the model sees: the rendered prompt, then the completion (the only "
           "part that is trained on).")
sub = st.selectbox("Subtask", target.subtasks, key="target_sub")
examples = [e for e in target.examples if e.subtask == sub]
idx = st.number_input("Example", min_value=1, max_value=max(len(examples), 1), value=1,
                      key="target_ex") - 1
if examples:
    ex = examples[int(idx)]
    c1, c2 = st.columns([3, 1])
    with c1:
        st.markdown("**Prompt**")
        ui.show_text(ex.prompt, height=320)
    with c2:
        st.markdown("**Completion**")
        ui.show_text(ex.completion)

st.page_link("pages/3_features.py", label="Next: model & features", icon=":material/arrow_forward:")
