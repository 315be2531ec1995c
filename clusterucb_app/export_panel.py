"""The Curate & Export page's panels: the selection's breakdowns, and the export section (save
the export into the workspace, download its files, publish it to the Hugging Face Hub with a
dataset card)."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

import streamlit as st

from clusterucb_app import export_view, state, ui
from clusterucb_core.export.files import load_manifest

KINDS = {".jsonl": "application/jsonl", ".json": "application/json", ".csv": "text/csv",
         ".tsv": "text/tab-separated-values", ".parquet": "application/octet-stream"}


def card_extra(ws: Any) -> dict[str, Any]:
    """What the dataset card states besides the manifest's own facts: target and model."""
    target = state.target_ref(ws) or {}
    model = state.settings(ws, "model")
    return {"workspace": str(ws.root), "target": target.get("path"),
            "model": getattr(model, "name_or_path", None)}


def breakdowns(selected: Any, names: dict[int, str]) -> None:
    """Selected rows per cluster and per source, side by side."""
    import plotly.express as px

    left, right = st.columns(2)
    by_cl = (selected.assign(cluster=[names.get(int(k), str(k)) for k in selected["cluster"]])
             .groupby("cluster").size().reset_index(name="rows")
             .sort_values("rows", ascending=False))
    left.plotly_chart(px.bar(by_cl, x="cluster", y="rows", title="Selected rows per cluster"),
                      key="ex_by_cluster")
    by_src = selected.groupby("source").size().reset_index(name="rows").sort_values(
        "rows", ascending=False)
    right.plotly_chart(px.bar(by_src, x="source", y="rows", title="Selected rows per source"),
                       key="ex_by_source")


def section(ws: Any, rid: str, run_name: str, run: Any, pool: Any, result: Any,
            clustering: str, names: dict[int, str], lg: Any) -> None:
    from clusterucb_core.export.files import export_selection

    st.subheader("Export")
    out_dir = ws.exports(rid)
    st.caption(f"Exports the run {ui.plain(run_name)} into the workspace at `{out_dir}`; each "
               "save replaces the previous one whole (never half-written).")
    with_ds = st.checkbox("Also write a Hugging Face `datasets` folder", value=True, key="ex_ds")
    if st.button("Save export to the workspace", icon=":material/save:", type="primary",
                 key="ex_save"):
        with st.spinner("Writing the export..."):
            try:
                export_selection(out_dir, pool, result, run_id=rid, clustering=clustering,
                                 cluster_names=names,
                                 oracle_info=(run.header.get("oracle")
                                              if hasattr(run, "header") else None),
                                 ledger_state=lg.state(), log_path=run.log_path,
                                 exhaustive=state.exhaustive_scores(ws, run.N),
                                 with_dataset=with_ds, extra=card_extra(ws),
                                 features=run.features)  # the audit meter's, as on the UCB page
            except Exception as exc:  # noqa: BLE001
                ui.show_error(exc, "Writing the export", "check free disk space; nothing half-"
                              "written was left behind")
            else:
                st.success(f"Export written: {len(result.rows):,} rows of run "
                           f"{ui.plain(run_name)}.")
    if (out_dir / "manifest.json").exists():
        stale = _stale(out_dir, result, lg)
        if stale:
            st.warning(f"**The saved export is older than the selection below:** {stale}. The "
                       "downloads are the saved files; press **Save export to the workspace** "
                       "to save the selection as it is now.", icon=":material/history:")
        downloads(ws, rid, out_dir, stale=bool(stale))
        publish(out_dir)


def _stale(out_dir: Path, result: Any, lg: Any) -> str | None:
    """Why the saved export differs from the live selection (None when it matches)."""
    try:
        manifest = load_manifest(out_dir)
    except (OSError, ValueError):
        return "its manifest cannot be read"
    return export_view.stale_export(manifest, result.rows, lg.state().tags,
                                    getattr(result.spec, "balance", "max"))


def downloads(ws: Any, rid: str, out_dir: Path, stale: bool = False) -> None:
    files = sorted(p for p in out_dir.iterdir() if p.is_file())
    saved = load_manifest(out_dir).get("created", "?")
    st.markdown(f"**Downloads** of the export saved {saved}"
                + (" (older than the selection above)" if stale else ""))
    cols = st.columns(4)
    for i, p in enumerate(files):
        cols[i % 4].download_button(p.name, icon=":material/download:", data=p.read_bytes(),
                                    file_name=p.name,
                                    mime=KINDS.get(p.suffix, "application/octet-stream"),
                                    key=f"ex_dl_{p.name}", on_click="ignore")
    stamp = (out_dir / "manifest.json").stat().st_mtime
    st.download_button("Everything (zip)", icon=":material/folder_zip:",
                       data=_zip(str(out_dir), stamp), file_name=f"{ws.name}-{rid}.zip",
                       mime="application/zip", key="ex_dl_zip", on_click="ignore")


@st.cache_data(show_spinner=False, max_entries=2)
def _zip(folder: str, stamp: float) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder))
    return buf.getvalue()


def publish(out_dir: Path) -> None:
    """Push the saved export to a Hub dataset repository, with its card."""
    from clusterucb_core.export.hub import dataset_card, push_to_hub

    with st.expander("Publish to the Hugging Face Hub"):
        c = st.columns([3, 1])
        repo = c[0].text_input("Repository", key="ex_hub_repo", placeholder="ORG/NAME")
        private = c[1].toggle("Private", value=True, key="ex_hub_private")
        token = st.text_input("Token (write access)", type="password", key="ex_hub_token",
                              help="Used for this upload only, never stored. Leave empty to use "
                                   "HF_TOKEN or your `huggingface-cli login`.")
        st.caption("The card that goes with it (README.md):")
        ui.show_text(dataset_card(load_manifest(out_dir), repo.strip() or None), height=220)
        if st.button("Push to the Hub", icon=":material/cloud_upload:", key="ex_hub_push",
                     disabled=not repo.strip() or not (out_dir / "dataset").is_dir(),
                     help="needs the datasets folder in the export"):
            with st.spinner("Uploading..."):
                try:
                    url = push_to_hub(out_dir, repo.strip(), private=private,
                                      token=token.strip() or os.environ.get("HF_TOKEN"))
                except Exception as exc:  # noqa: BLE001 - network, auth, a changed export
                    ui.show_error(exc, f"Pushing to {repo.strip()}", "check the repository "
                                  "name, your token's write access and the network")
                else:
                    st.success(f"Published: {url}")
