"""The Target page's parts: how the model's max length cuts the target's examples."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import streamlit as st

from clusterucb_core.workspace import Workspace

from . import state


@st.cache_data(show_spinner=False, max_entries=8)
def _truncation_sentence(_ws: Workspace, _target: Any, fingerprint: str, model_path: str,
                         max_length: int) -> str:
    """How max_length cuts the target's examples (tokenizer only; cached per target)."""
    from clusterucb_core.features.model import load_tokenizer
    from clusterucb_core.features.scorable import target_report, target_sentence

    spec = replace(state.settings(_ws, "model"), name_or_path=model_path)
    return target_sentence(target_report(_target.examples, load_tokenizer(spec), max_length))


def truncation_note(ws: Workspace, target: Any) -> None:
    """Says how many target tokens the max length cuts (a warning when any are lost)."""
    model = state.settings(ws, "model")
    try:
        cut = _truncation_sentence(ws, target, target.fingerprint, model.name_or_path,
                                   int(model.max_length))
        (st.info if "lost" in cut else st.caption)(cut)
    except Exception as exc:  # noqa: BLE001 - the tokenizer may not be reachable yet
        st.caption("Truncation not counted yet (the model's tokenizer could not be loaded: "
                   f"{exc}).")
