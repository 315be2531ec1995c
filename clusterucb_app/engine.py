"""Wiring from the app's buttons to the engine (no algorithm here).

* `command_*` build `clusterucb` command lines from the workspace's saved settings; the pages
  run them as background jobs (`clusterucb_core.jobs`), so the app and the CLI write the
  same files.
* `lazy_oracle(ws)` keeps one loaded model in the server process (cached) and scores the
  rows a UCB round draws, through the same feature store the exhaustive job fills.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from clusterucb_core.config import FeatureSpec, LoraSpec, ModelSpec
from clusterucb_core.workspace import Workspace

from . import state

CLUSTER_STORE = {"hidden": "cluster-hidden", "gradient": "cluster-gradient"}


def model_argv(model: ModelSpec, lora: LoraSpec) -> list[str]:
    argv = ["--model", model.name_or_path, "--max-length", str(model.max_length),
            "--template", model.chat_template, "--device", model.device, "--dtype", model.dtype,
            "--lora-rank", str(lora.rank), "--lora-alpha", str(lora.alpha),
            "--lora-dropout", str(lora.dropout), "--lora-targets", ",".join(lora.target_modules)]
    if model.trust_remote_code:
        argv.append("--trust-remote-code")
    return argv


def specs(ws: Workspace) -> dict[str, Any]:
    return {name: state.settings(ws, name) for name in state.SPEC_CLASSES}


def checkpoint(ws: Workspace) -> Path | None:
    """The latest warm-up checkpoint, or None."""
    try:
        from clusterucb_core.model import find_checkpoints
    except ImportError:
        return None
    found = find_checkpoints(ws.checkpoints("warmup")) if ws.checkpoints("warmup").is_dir() else []
    return Path(found[-1]) if found else None


def reward_spec(ws: Workspace) -> FeatureSpec:
    """The reward features' spec; 'adam' falls back to 'sgd' when there is no checkpoint."""
    from dataclasses import replace

    spec = state.settings(ws, "features")
    spec = replace(spec, kind="gradient")
    if spec.mode == "adam" and checkpoint(ws) is None:
        spec = replace(spec, mode="sgd")
    return spec


def reward_store_name(ws: Workspace) -> str:
    from clusterucb_core.features import store_name

    return store_name(reward_spec(ws), checkpoint(ws))


def command_warmup(ws: Workspace) -> list[str]:
    s = specs(ws)
    w = s["warmup"]
    return (["warmup", "--workspace", str(ws.root), "--fraction", str(w.fraction),
             "--epochs", str(w.epochs), "--max-steps", str(w.max_steps),
             "--lr", str(w.learning_rate), "--batch-size", str(w.batch_size),
             "--seed", str(w.seed)] + model_argv(s["model"], s["lora"]))


def command_cluster_features(ws: Workspace) -> tuple[list[str], str]:
    s = specs(ws)
    f = s["cluster_features"]
    name = CLUSTER_STORE.get(f.kind, "cluster-features")
    argv = ["features", "--workspace", str(ws.root), "--name", name, "--kind", f.kind,
            "--dim", str(f.dim), "--batch-size", str(f.batch_size),
            "--projection", f.projection, "--seed", str(f.seed)]
    if f.kind == "gradient":
        argv += ["--mode", f.mode if checkpoint(ws) is not None else "sgd"]
    return argv + model_argv(s["model"], s["lora"]), name


def command_reward_features(ws: Workspace) -> tuple[list[str], str]:
    s = specs(ws)
    f = reward_spec(ws)
    name = reward_store_name(ws)
    ref = state.target_ref(ws)
    if not ref:
        raise ValueError("choose a target first (Target page)")
    argv = ["features", "--workspace", str(ws.root), "--name", name, "--kind", "gradient",
            "--mode", f.mode, "--checkpoint", "last" if checkpoint(ws) else "none",
            "--dim", str(f.dim), "--projection", f.projection, "--seed", str(f.seed),
            "--batch-size", str(f.batch_size),
            "--target", str(state.resolve(ws, ref["path"]))]
    return argv + model_argv(s["model"], s["lora"]), name


# ---------------------------------------------------------------------------------------------
# lazy rewards: features of the drawn rows only, in the server process
# ---------------------------------------------------------------------------------------------

def lazy_oracle_available(ws: Workspace) -> bool:
    try:
        import clusterucb_core.features  # noqa: F401
        import clusterucb_core.influence  # noqa: F401
    except ImportError:
        return False
    model = state.settings(ws, "model")
    local = Path(model.name_or_path).expanduser()
    has_model = local.exists() or not (model.name_or_path.startswith(("/", ".", "~")))
    return bool(state.pool_ref(ws) and state.target_ref(ws) and has_model)


@st.cache_resource(max_entries=2, show_spinner="Loading the model for lazy rewards...")
def _engine(pool_key: tuple, model: ModelSpec, lora: LoraSpec, ckpt: str | None,
            spec: FeatureSpec, store_path: str, ws_root: str) -> Any:
    from clusterucb_core.features import FeatureEngine

    ws = Workspace.open(ws_root, create=False)
    return FeatureEngine(state.load_pool(ws), model, lora, ckpt, spec, store_path)


def lazy_oracle(ws: Workspace) -> Any:
    from clusterucb_core.features import target_features, target_name
    from clusterucb_core.oracle import LazyOracle

    s = specs(ws)
    ckpt = checkpoint(ws)
    spec = reward_spec(ws)
    pool_ref = state.pool_ref(ws)
    pool_key = state.file_key(state.resolve(ws, pool_ref["path"]))
    engine = _engine(pool_key, s["model"], s["lora"], None if ckpt is None else str(ckpt), spec,
                     str(ws.features(reward_store_name(ws))), str(ws.root))
    target = state.load_target(ws)
    feats, ids = target_features(target, engine.model_spec, engine.lora_spec, ckpt, spec,
                                 out_dir=ws.targets(target_name(target, ckpt)), engine=engine)
    store = engine.store()

    def compute_rows(rows: Any) -> None:
        engine.compute(rows, rank=0, world=1)

    oracle = LazyOracle.from_store(store, compute_rows, feats, ids, flagged=None)
    read = oracle.read_scores

    def read_scores(rows: Any) -> Any:  # flagged rows (no gradient) score NaN
        import numpy as np

        out = np.asarray(read(rows), dtype=float)
        return np.where(np.asarray(store.flagged)[rows], np.nan, out)

    oracle.read_scores = read_scores
    return oracle
