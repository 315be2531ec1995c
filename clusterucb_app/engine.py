"""Wiring from the app's buttons to the engine (no algorithm here).

* Long stages run as background jobs of `clusterucb_app.tasks.stage` — one stage of
  `clusterucb_core.pipeline.Pipeline`, the code `clusterucb run` uses — so the app and the CLI
  write the same files under the same names.
* `lazy_oracle(ws)` keeps one pipeline (its loaded model) in the server process and scores
  the rows a UCB round draws, through the same feature store the exhaustive job fills.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from clusterucb_core.workspace import Workspace

from . import state, tasks


def start_stage(ws: Workspace, name: str, title: str, unit: str = "rows") -> None:
    from . import ui

    ui.start_job(ws, name, target="clusterucb_app.tasks:stage",
                 kwargs={"workspace": str(ws.root), "name": name}, title=title, unit=unit)


def model_available(ws: Workspace) -> bool:
    model = state.settings(ws, "model")
    local = Path(model.name_or_path).expanduser()
    return local.exists() or not model.name_or_path.startswith(("/", ".", "~"))


# ---------------------------------------------------------------------------------------------
# lazy rewards
# ---------------------------------------------------------------------------------------------

def lazy_oracle_available(ws: Workspace) -> bool:
    return bool(state.pool_ref(ws) and state.target_ref(ws) and model_available(ws))


@st.cache_resource(max_entries=2, show_spinner="Loading the model for lazy rewards...")
def _pipeline(ws_root: str, cfg_key: str, _cfg: Any) -> Any:
    from clusterucb_core.pipeline import Pipeline

    return Pipeline(_cfg, log=None)


def pipeline(ws: Workspace) -> Any:
    """The server's one pipeline for the workspace's settings (its model loads on first use).

    A warm-up checkpoint is used only when it is already trained for the current settings;
    this never trains inside the web server (the Model & Features page runs warm-up as a job).
    """
    import dataclasses

    from clusterucb_core.config import config_to_dict, fingerprint
    from clusterucb_core.pipeline import Pipeline

    cfg = tasks.run_config(ws.root)
    if cfg.use_warmup:
        probe = Pipeline(cfg, log=None)
        if not probe.warmup_ready():
            cfg = dataclasses.replace(cfg, use_warmup=False)
    return _pipeline(str(ws.root), fingerprint(config_to_dict(cfg)), cfg)


def lazy_oracle(ws: Workspace) -> Any:
    """Scores drawn rows on demand (features computed once, into the workspace's store)."""
    return pipeline(ws).oracle
