"""The cost planner in the app: the plan before a run (Model & Features page) and predicted
against measured seconds per stage after one (UCB page)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from clusterucb_core.features import cost, planner
from clusterucb_core.runtime.timings import read_timings
from clusterucb_core.workspace import Workspace

from . import tasks, ui

JOB = "plan"
EXPLAIN = (
    "Before any work, the planner predicts what each stage costs on this machine: it counts "
    "the pool's and the target's tokens, reads the model's shape, and times about ten "
    "batches of real pool rows on the device (one model load, per-row LoRA gradients, the "
    "forward-only cluster features, warm-up steps: a few seconds on a GPU or an idle CPU, "
    "longer on a busy one). It then adds up the batches each stage will run, padded as the "
    "engine pads them. The calibration is kept per device and settings, so changing a "
    "budget re-plans at once without timing anything again. The speed-up is an estimate; "
    "the UCB page shows each stage's measured seconds beside it after a run.")


def _config(ws: Workspace):
    try:
        return tasks.run_config(ws.root)
    except (ValueError, TypeError):
        return None


def _replan(ws: Workspace, cfg) -> dict[str, Any] | None:
    """The plan for the current settings from a kept calibration (no timing), if any."""
    from clusterucb_core.features.model import resolve_device

    key = planner.calibration_key(cfg, str(resolve_device(cfg.model.device)))
    if planner.load_calibration(ws.root, key) is None:
        return None
    with st.spinner("Re-planning for the changed settings (no timing)..."):
        return planner.make_plan(cfg)


def short(seconds: float) -> str:
    """A duration that fits a metric: seconds, minutes or hours."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_table(plan: dict[str, Any]) -> pd.DataFrame:
    hours = "GPU-hours" if plan["device"].startswith("cuda") else "CPU-hours"
    return pd.DataFrame([{"stage": s["title"], "predicted": ui.fmt_duration(s["seconds"]),
                          "seconds": round(s["seconds"], 1), hours: round(s["seconds"] / 3600, 4),
                          "what": s["note"]} for s in cost.ordered_stages(plan)])


def plan_panel(ws: Workspace) -> None:
    """What the run will cost: a table per stage, the two paths and the speed-up."""
    st.subheader("0 · What this run will cost")
    st.caption(EXPLAIN)
    cfg = _config(ws)
    plan = planner.load_plan(ws.root)
    stale = cfg is not None and plan is not None and \
        plan.get("config_key") != planner.plan_config_key(cfg)
    running = bool(_active(ws))
    if cfg is not None and (stale or plan is None) and not running:
        try:
            plan = _replan(ws, cfg) or plan
        except (ValueError, OSError) as exc:
            ui.show_error(exc, "Planning")
        stale = plan is not None and plan.get("config_key") != planner.plan_config_key(cfg)
    if st.button("Calibrate on this device", key="btn_plan", disabled=cfg is None,
                 help="Load the model and time about ten batches of real pool rows on this "
                      "device, then predict every stage"):
        ui.start_job(ws, JOB, target="clusterucb_app.plan_job:plan",
                     kwargs={"workspace": str(ws.root)}, title="Calibration", unit="")
    ui.job_panel(ws, JOB)
    if plan is None:
        st.info("No plan yet: press **Calibrate on this device** to see what the warm-up, "
                "the cluster features, the bandit's gradients and exhaustive LESS will cost "
                "here.")
        return
    if stale:
        st.warning("This plan was made for other settings; calibrate again to plan these.")
    c = st.columns(4)
    c[0].metric("ClusterUCB path", short(plan["ucb_path_seconds"]),
                help="2 model loads, cluster features, k-means, target gradients, the "
                     "bandit's gradients (the warm-up is shared by both paths)")
    c[1].metric("Exhaustive LESS path", short(plan["exhaustive_path_seconds"]),
                help="1 model load, target gradients, every row's gradient")
    c[2].metric("Predicted speed-up", f"{plan['predicted_speedup']:.2f}x",
                help="An estimate: exhaustive LESS path / ClusterUCB path, from the calibration")
    c[3].metric("Bound", f"{plan['bound']:.2f}x", help=f"{plan['bound_formula']}: c = cluster "
                "features / exhaustive gradients, b = budget; what the path would reach if "
                "nothing else cost anything")
    st.dataframe(plan_table(plan), hide_index=True, key="plan_table",
                 height=ui.table_height(len(plan["stages"])))
    cal = plan.get("calibration") or {}
    st.caption(f"Calibrated on **{plan['device']}** in {cal.get('seconds', 0):.1f} s "
               f"({cal.get('note', '')}); {plan.get('tokens_note', '')}.")


def _active(ws: Workspace):
    from clusterucb_core.runtime import jobs

    return jobs.active(ws, JOB)


def comparison_table(ws: Workspace) -> pd.DataFrame | None:
    """Predicted against measured for the stages this workspace has run (None: no plan)."""
    plan = planner.load_plan(ws.root)
    if plan is None:
        return None
    rows = cost.compare(plan, read_timings(ws.root))
    return pd.DataFrame([{"stage": r["title"], "rows": int(r["rows"]),
                          "predicted s": round(r["predicted_s"], 1),
                          "measured s": round(r["actual_s"], 1),
                          "error": f"{r['error']:.0%}"} for r in rows])


def comparison_panel(ws: Workspace) -> None:
    """The UCB page's panel: each stage's predicted and measured seconds."""
    with st.expander("Cost: predicted against measured, per stage", expanded=False):
        table = comparison_table(ws)
        if table is None:
            st.caption("No plan was made for this workspace: the Model & Features page "
                       "calibrates and predicts each stage before a run.")
            return
        if table.empty:
            st.caption("No stage has been measured in this workspace yet: they are timed as "
                       "they run (features, k-means, target and bandit gradients).")
            return
        st.dataframe(table, hide_index=True, key="plan_vs_actual",
                     height=ui.table_height(len(table)))
        st.caption("Predictions are scaled to the rows each stage actually computed (a "
                   "resumed stage computes part of its rows; rows already stored cost "
                   "nothing). The bandit's row is every lazy gradient this workspace's runs "
                   "computed so far. Error = |predicted − measured| / measured.")
