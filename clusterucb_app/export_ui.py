"""The Curate & Export page's downloads: every file of a saved export, and all as a zip."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import streamlit as st


@st.cache_data(show_spinner=False, max_entries=2)
def _zip(folder: str, stamp: float) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder))
    return buf.getvalue()


def downloads(out_dir: Path, zip_name: str) -> None:
    if not (out_dir / "manifest.json").exists():
        return
    files = sorted(p for p in out_dir.iterdir() if p.is_file())
    st.markdown("**Downloads**")
    kinds = {".jsonl": "application/jsonl", ".json": "application/json", ".csv": "text/csv",
             ".tsv": "text/tab-separated-values", ".parquet": "application/octet-stream"}
    cols = st.columns(4)
    for i, p in enumerate(files):
        cols[i % 4].download_button(p.name, icon=":material/download:", data=p.read_bytes(),
                                    file_name=p.name, key=f"ex_dl_{p.name}", on_click="ignore",
                                    mime=kinds.get(p.suffix, "application/octet-stream"))
    stamp = (out_dir / "manifest.json").stat().st_mtime
    st.download_button("Everything (zip)", icon=":material/folder_zip:",
                       data=_zip(str(out_dir), stamp), file_name=zip_name,
                       mime="application/zip", key="ex_dl_zip", on_click="ignore")
