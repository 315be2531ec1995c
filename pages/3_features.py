"""Step 3: the model, the gradient features, and the background jobs that compute them."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from clusterucb_app import engine, features_ui, plan_panel, state, ui
from clusterucb_core import config
from clusterucb_core.features.scorable import workspace_sentence as scorable_sentence

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
  seeded random matrix (count sketch by default; Rademacher reproduces LESS exactly; set in
  the settings above) and normalised; the reward of a row is its influence score
  against the target. The UCB page computes these **lazily** for the rows it draws only.
* **Exhaustive scoring** (optional, for teaching): computes the reward of *every* row, so the
  UCB page can show the recall of the exhaustive top-p and the regret of the bandit.

Every feature store is resumable: cancel or crash a job, press Resume, and it carries on from
the rows already written.
""")

s = state.specs(ws)
model, lora, warm, feat, cfeat = (s["model"], s["lora"], s["warmup"], s["reward_features"],
                                  s["cluster_features"])

features_ui.settings_form(ws, s)


@st.cache_data(show_spinner=False)
def _device_found() -> tuple[str, str]:
    """(short name, details) of the device `auto` picks here."""
    try:
        import torch

        from clusterucb_core.features.model import resolve_device
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
c[3].metric("Reward features", f"{feat.mode if state.use_warmup(ws) else 'sgd'}, "
                               f"d={feat.dim}")
if not model_ok:
    st.warning(f"No model folder at `{model.name_or_path}`. "
               + ("The bundled demo model is made by `python scripts/train_demo_model.py`."
                  if Path(model.name_or_path) == config.DEMO_MODEL
                  else "Fix the path in the settings above."))
if not ui.need(bool(state.pool_ref(ws)), "Choose a pool first.", "pages/1_pool.py"):
    st.stop()

ckpt = state.checkpoint(ws)
if state.target_ref(ws):
    plan_panel.plan_panel(ws)  # what each stage will cost here, before any work

# ------------------------------------------------------------------------------ 1. warm-up
st.subheader("1 · Warm-up (optional)")
st.caption(f"LoRA training on {warm.fraction:.1%} of the pool for "
           + (f"{warm.max_steps} steps" if warm.max_steps else f"{warm.epochs} epoch(s)")
           + ". " + (f"Latest checkpoint: `{ckpt}`." if ckpt else "No checkpoint yet: "
                     "features are taken at the base model with plain (sgd) gradients."))
uw = st.checkbox("Use a warm-up checkpoint for the reward features (LESS)",
                 value=state.use_warmup(ws), key="use_warmup",
                 help="Off: gradients at the base model (plain sgd). On: the exhaustive job "
                      "trains the warm-up first when it is missing.")
if uw != state.use_warmup(ws):
    state.set_use_warmup(ws, uw)
busy = ui.busy(ws)  # one job at a time: every job button says which one runs
if st.button("Run warm-up", key="btn_warmup", disabled=not model_ok or bool(busy), help=busy):
    engine.start_stage(ws, "warmup", "Warm-up", unit="steps")
ui.job_panel(ws, "warmup")
st.caption("The warm-up loss is measured per batch, each batch a different mix of the pool's "
           "tasks, over only a few steps: it jumps around (e.g. 7.26 → 8.05 on the demo) and "
           "that is fine. LESS needs a checkpoint that has seen the data and its Adam state, "
           "not a converged model; a loss that becomes NaN or keeps growing over several "
           "epochs means the learning rate is too high.")

# ------------------------------------------------------------------------------ 2. cluster features
st.subheader("2 · Cluster features")
stores = ws.list("features")
st.caption(("Hidden-state embeddings (forward only)" if cfeat.kind == "hidden"
            else "Gradient features") + " of every row, for the clustering. "
           + (f"Feature stores in the workspace: {', '.join(f'`{n}`' for n in stores)}; "
              "running again only fills missing rows." if stores else ""))
unscorable = scorable_sentence(ws.root)
if unscorable:
    (st.warning if "cannot be scored" in unscorable else st.caption)(unscorable)
if st.button("Compute cluster features", key="btn_cfeat", type="primary",
             disabled=not model_ok or bool(busy), help=busy):
    engine.start_stage(ws, "cluster_features", "Cluster features")
ui.job_panel(ws, "cluster_features")

# ------------------------------------------------------------------------------ 3. exhaustive
st.subheader("3 · Exhaustive scoring (optional, for teaching)")
has_scores = state.exhaustive_scores(ws) is not None
st.caption("Computes the reward features of **every** row and their influence scores, so the "
           "UCB page can compare the bandit with scoring everything (recall, regret) — and "
           "replay runs instantly. ClusterUCB itself does not need it."
           + (" Scores for this pool and target are present." if has_scores else ""))
if not state.target_ref(ws):
    st.info("Choose a target first (Target page) to score rows.")
elif st.button("Run exhaustive scoring", key="btn_exh", disabled=not model_ok or bool(busy),
               help=busy):
    engine.start_stage(ws, "exhaustive", "Exhaustive scoring")
st.caption("It first computes the target examples' gradients (counted in examples), then every "
           "pool row's (counted in rows); Cancel keeps both, and Resume carries on from them.")
ui.job_panel(ws, "exhaustive")

st.page_link("pages/4_clusters.py", label="Next: clusters", icon=":material/arrow_forward:")
