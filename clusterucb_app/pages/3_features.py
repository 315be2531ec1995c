"""Step 3: the model, the gradient features, and the background jobs that compute them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import streamlit as st

from clusterucb_app import engine, state, ui
from clusterucb_core import config

ws = ui.workspace()
ui.header(
    "Model & Features",
    "Turn every row into a vector: either a LoRA **gradient** (LESS) or a cheap hidden-state "
    "embedding. Long work runs in the background; you can leave the page or refresh.",
    """
* **Warm-up** (optional, LESS): a short LoRA training run on a random few percent of the pool
  gives a checkpoint and its Adam state. Gradient features at that checkpoint are more
  meaningful than at the base model, and the *adam* mode uses its Adam state.
* **Cluster features**: the vectors the clustering uses. *hidden* = forward-only mean-pooled
  hidden states (cheap: no backward pass), which is what makes ClusterUCB save work;
  *gradient* = the LESS gradient features themselves.
* **Reward features**: the LoRA gradient of each row, projected to `d` dimensions with a
  seeded random (Rademacher) matrix and normalised; the reward of a row is its influence score
  against the target. The UCB page computes these **lazily** for the rows it draws only.
* **Exhaustive scoring** (optional, for teaching): computes the reward of *every* row, so the
  UCB page can show the recall of the exhaustive top-p and the regret of the bandit.

Every feature store is resumable: cancel or crash a job, press Resume, and it carries on from
the rows already written.
""")

s = engine.specs(ws)
model, lora, warm, feat, cfeat = (s["model"], s["lora"], s["warmup"], s["features"],
                                  s["cluster_features"])

# ------------------------------------------------------------------------------ settings
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
        dropout = c[2].number_input("Dropout (warm-up only)", 0.0, 0.9, float(lora.dropout), 0.05)
        targets = c[3].text_input("Target modules", ",".join(lora.target_modules))
        st.markdown("**Warm-up**")
        c = st.columns(4)
        w_frac = c[0].number_input("Fraction of the pool", 0.001, 1.0, float(warm.fraction),
                                   0.01, format="%.3f")
        w_epochs = c[1].number_input("Epochs (one checkpoint each)", 1, 20, int(warm.epochs))
        w_steps = c[2].number_input("Max steps (0 = all epochs)", 0, 100000, int(warm.max_steps))
        w_lr = c[3].number_input("Learning rate", 1e-7, 1.0, float(warm.learning_rate),
                                 format="%.2e")
        st.markdown("**Features**")
        c = st.columns(5)
        try:
            from clusterucb_core.projection import PROJECTORS
        except ImportError:
            PROJECTORS = ("rademacher",)
        mode = c[0].selectbox("Reward gradient mode", ["adam", "sgd"],
                              index=["adam", "sgd"].index(feat.mode),
                              help="adam: the checkpoint's Adam update direction (LESS; needs a "
                                   "warm-up). sgd: the plain gradient.")
        proj = c[1].selectbox("Projection", PROJECTORS, index=PROJECTORS.index(feat.projection)
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
                    features=replace(feat, mode=mode, projection=proj, dim=int(dim),
                                     batch_size=int(bs)),
                    cluster_features=replace(cfeat, kind=ckind, dim=int(dim),
                                             projection=proj, batch_size=int(bs)))
                st.success("Saved. The next jobs use these settings.")
                st.rerun()


@st.cache_data(show_spinner=False)
def _device_found() -> tuple[str, str]:
    """(short name, details) of the device `auto` picks here."""
    try:
        import torch

        from clusterucb_core.model import resolve_device
    except ImportError:
        return "unknown", "torch is not importable"
    dev = resolve_device("auto")
    if dev.type == "cuda":
        return "CUDA", f"{torch.cuda.get_device_name(dev)}; bfloat16"
    if dev.type == "mps":
        return "MPS", "Apple GPU; float32"
    return "CPU", f"no GPU found; {torch.get_num_threads()} threads; float32"


model_ok = Path(model.name_or_path).exists() or not model.name_or_path.startswith(("/", ".", "~"))
c = st.columns(4)
c[0].metric("Model", Path(model.name_or_path).name or model.name_or_path)
dev_short, dev_detail = _device_found()
c[1].metric("Device (auto found)", dev_short, help=dev_detail)
c[2].metric("LoRA", f"r={lora.rank}, α={lora.alpha}")
c[3].metric("Reward features", f"{feat.mode if engine.use_warmup(ws) else 'sgd'}, "
                               f"d={feat.dim}")
if not model_ok:
    st.warning(f"No model folder at `{model.name_or_path}`. "
               + ("The bundled demo model is made by `python scripts/train_demo_model.py`."
                  if Path(model.name_or_path) == config.DEMO_MODEL
                  else "Fix the path in the settings above."))
if not ui.need(bool(state.pool_ref(ws)), "Choose a pool first.", "pages/1_pool.py"):
    st.stop()

ckpt = engine.checkpoint(ws)

# ------------------------------------------------------------------------------ 1. warm-up
st.subheader("1 · Warm-up (optional)")
st.caption(f"LoRA training on {warm.fraction:.1%} of the pool for "
           + (f"{warm.max_steps} steps" if warm.max_steps else f"{warm.epochs} epoch(s)")
           + ". " + (f"Latest checkpoint: `{ckpt}`." if ckpt else "No checkpoint yet: "
                     "features are taken at the base model with plain (sgd) gradients."))
uw = st.checkbox("Use a warm-up checkpoint for the reward features (LESS)",
                 value=engine.use_warmup(ws), key="use_warmup",
                 help="Off: gradients at the base model (plain sgd). On: the exhaustive job "
                      "trains the warm-up first when it is missing.")
if uw != engine.use_warmup(ws):
    ws.update_meta(use_warmup=bool(uw))
if st.button("Run warm-up", key="btn_warmup", disabled=not model_ok):
    engine.start_stage(ws, "warmup", "Warm-up", unit="steps")
ui.job_panel(ws, "warmup")

# ------------------------------------------------------------------------------ 2. cluster features
st.subheader("2 · Cluster features")
stores = ws.list("features")
st.caption(("Hidden-state embeddings (forward only)" if cfeat.kind == "hidden"
            else "Gradient features") + " of every row, for the clustering. "
           + (f"Feature stores in the workspace: {', '.join(f'`{n}`' for n in stores)}; "
              "running again only fills missing rows." if stores else ""))
if st.button("Compute cluster features", key="btn_cfeat", type="primary", disabled=not model_ok):
    engine.start_stage(ws, "cluster_features", "Cluster features")
ui.job_panel(ws, "cluster_features")

# ------------------------------------------------------------------------------ 3. exhaustive
st.subheader("3 · Exhaustive scoring (optional, for teaching)")
has_scores = state.exhaustive_scores(ws) is not None
st.caption("Computes the reward features of **every** row and their influence scores, so the "
           "UCB page can compare the bandit with scoring everything (recall, regret) — and "
           "replay runs instantly. ClusterUCB itself does not need it."
           + (" Scores present." if has_scores else ""))
if not state.target_ref(ws):
    st.info("Choose a target first (Target page) to score rows.")
elif st.button("Run exhaustive scoring", key="btn_exh", disabled=not model_ok):
    engine.start_stage(ws, "exhaustive", "Exhaustive scoring")
ui.job_panel(ws, "exhaustive")

st.page_link("pages/4_clusters.py", label="Next: clusters", icon=":material/arrow_forward:")
