"""The cost plan as a background job the Model & Features page starts (no streamlit here:
the job process imports this module)."""

from __future__ import annotations

from typing import Any

from clusterucb_core.runtime.progress import Progress


def plan(workspace: str, recalibrate: bool = True, progress: Progress | None = None
         ) -> dict[str, Any]:
    """Calibrate on this machine's device and save the plan (W/plan/plan.json)."""
    from clusterucb_app.tasks import run_config
    from clusterucb_core.features.planner import make_plan

    def say(msg: str) -> None:
        print(msg, flush=True)
        if progress is not None:
            progress(0, None, msg.strip(), stage="calibration", unit="")

    out = make_plan(run_config(workspace), recalibrate=recalibrate, log=say)
    say(f"plan saved: predicted speed-up {out['predicted_speedup']:.2f}x (an estimate)")
    return {"predicted_speedup": out["predicted_speedup"], "device": out["device"]}
