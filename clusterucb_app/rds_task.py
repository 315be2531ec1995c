"""The background job that computes a workspace's RDS+ scores (no Streamlit here: it runs
in the job's own process)."""

from __future__ import annotations

from typing import Any

from clusterucb_app import tasks


def rds_job(workspace: str, progress: Any = None) -> dict[str, Any]:
    """RDS+ scores of every pool row (selection/rds.py), kept in W/scores/rds.npy."""
    from clusterucb_core.pipeline import Pipeline
    from clusterucb_core.selection.rds import workspace_rds

    if progress is not None:
        progress(0, None, "reading the pool and the target, loading the model",
                 stage="starting", unit="")
    pipe = Pipeline(tasks.run_config(workspace), log=lambda msg: print(msg, flush=True))
    res = workspace_rds(pipe, progress=progress)
    return {"rows": int(len(res.scores)), "features": res.features, "store": res.store}
