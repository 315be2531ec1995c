"""The Model & Features page's settings form (model, LoRA, warm-up, features)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import streamlit as st

from clusterucb_core import config
from clusterucb_core.features.projection import PROJECTORS
from clusterucb_core.workspace import Workspace

from . import state


def settings_form(ws: Workspace, s: dict[str, Any]) -> None:
    model, lora, warm, feat, cfeat = (s["model"], s["lora"], s["warmup"], s["reward_features"],
                                      s["cluster_features"])
    with st.expander("Settings (model, LoRA, features)", expanded=False):
        with st.form("features_settings"):
            st.markdown("**Model**")
            c = st.columns([1.3, 2])
            is_demo = Path(model.name_or_path) == config.DEMO_MODEL
            which = c[0].radio("Model", ["Bundled demo model", "Local folder or hub id"],
                               index=0 if is_demo else 1, horizontal=True)
            path = c[1].text_input("Folder or hub id (e.g. meta-llama/Llama-3.2-1B)",
                                   value="" if is_demo else model.name_or_path)
            c = st.columns(5)
            max_length = c[0].number_input("Max length (tokens)", 16, 32768, int(model.max_length))
            template = c[1].selectbox("Chat rendering", ["tulu", "model"],
                                      index=["tulu", "model"].index(model.chat_template))
            devices = ["auto", "cpu", "cuda", "mps"]
            device = c[2].selectbox("Device", devices, index=devices.index(model.device)
                                    if model.device in devices else 0)
            dtypes = ["auto", "float32", "bfloat16", "float16"]
            dtype = c[3].selectbox("Dtype", dtypes, index=dtypes.index(model.dtype)
                                   if model.dtype in dtypes else 0)
            trust = c[4].checkbox("Trust remote code", value=model.trust_remote_code,
                                  help="Runs Python code shipped with the model. Only for models "
                                       "you trust.")
            st.markdown("**LoRA** (gradients are taken w.r.t. the LoRA A/B matrices; LESS: r=128, "
                        "alpha=512)")
            c = st.columns(4)
            rank = c[0].number_input("Rank r", 1, 1024, int(lora.rank))
            alpha = c[1].number_input("Alpha", 1, 4096, int(lora.alpha))
            dropout = c[2].number_input("Dropout (warm-up only)", 0.0, 0.9, float(lora.dropout),
                                        0.05)
            targets = c[3].text_input("Target modules", ",".join(lora.target_modules))
            st.markdown("**Warm-up**")
            c = st.columns(4)
            w_frac = c[0].number_input("Fraction of the pool", 0.001, 1.0, float(warm.fraction),
                                       0.01, format="%.3f")
            w_epochs = c[1].number_input("Epochs (one checkpoint each)", 1, 20, int(warm.epochs))
            w_steps = c[2].number_input("Max steps (0 = all epochs)", 0, 100000,
                                        int(warm.max_steps))
            w_lr = c[3].number_input("Learning rate", 1e-7, 1.0, float(warm.learning_rate),
                                     format="%.2e")
            st.markdown("**Features**")
            c = st.columns(5)
            mode = c[0].selectbox("Reward gradient mode", ["adam", "sgd"],
                                  index=["adam", "sgd"].index(feat.mode),
                                  help="adam: the checkpoint's Adam update direction (LESS; "
                                       "needs a warm-up). sgd: the plain gradient.")
            proj = c[1].selectbox("Projection", PROJECTORS,
                                  index=PROJECTORS.index(feat.projection)
                                  if feat.projection in PROJECTORS else 0)
            dim = c[2].number_input("Projection dim d", 8, 65536, int(feat.dim),
                                    help="LESS uses 8192 for 7B models; the demo model needs less.")
            bs = c[3].number_input("Batch size", 1, 4096, int(feat.batch_size))
            ckind = c[4].selectbox("Cluster features", ["hidden", "gradient"],
                                   index=["hidden", "gradient"].index(cfeat.kind))
            if st.form_submit_button("Save settings", type="primary"):
                name = str(config.DEMO_MODEL) if which == "Bundled demo model" else path.strip()
                if not name:
                    st.error("Type a model folder or hub id, or pick the bundled demo model.")
                else:
                    mods = tuple(t.strip() for t in targets.split(",") if t.strip())
                    state.save_settings(
                        ws,
                        model=replace(model, name_or_path=name, max_length=int(max_length),
                                      chat_template=template, device=device, dtype=dtype,
                                      trust_remote_code=bool(trust)),
                        lora=replace(lora, rank=int(rank), alpha=int(alpha),
                                     dropout=float(dropout), target_modules=mods),
                        warmup=replace(warm, fraction=float(w_frac), epochs=int(w_epochs),
                                       max_steps=int(w_steps), learning_rate=float(w_lr)),
                        reward_features=replace(feat, mode=mode, projection=proj, dim=int(dim),
                                                batch_size=int(bs)),
                        cluster_features=replace(cfeat, kind=ckind, dim=int(dim),
                                                 projection=proj, batch_size=int(bs)))
                    st.success("Saved. The next jobs use these settings.")
                    st.rerun()


