"""Background tasks the app starts through `clusterucb_core.runtime.jobs` (run in a child process).

Each task runs one stage of `clusterucb_core.pipeline.Pipeline` — the same code
`clusterucb run` and `clusterucb demo` use — configured from the workspace's saved settings,
so the browser and the CLI write the same files under the same names. No streamlit here (the
job process imports this module).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clusterucb_core.config import config_from_dict
from clusterucb_core.runtime.progress import Progress
from clusterucb_core.workspace import Workspace

STAGES = ("warmup", "cluster_features", "clusters", "map", "kscan", "exhaustive")
KSCAN_DIR = "kscan"
# what each pipeline progress stage counts (the job panel shows "12 / 40 examples")
STAGE_UNITS = {"warm-up": "steps", "cluster features": "rows", "k-means": "iterations",
               "map": "rows", "target gradients": "examples", "reward gradients": "rows"}
FIRST_STEP = {"warmup": "reading the pool and loading the model",
              "cluster_features": "reading the pool and loading the model",
              "clusters": "reading the cluster features",
              "map": "reading the cluster features",
              "kscan": "reading a sample of the cluster features",
              "exhaustive": "reading the pool and the target, loading the model"}

def _resolve(ws: Workspace, p: str) -> str:
    path = Path(p).expanduser()
    if path.is_absolute():
        return str(path)
    for base in (ws.root, Path(__file__).resolve().parent.parent, Path.cwd()):
        if (base / path).exists():
            return str((base / path).resolve())
    return p


def run_config(workspace: str | Path) -> Any:
    """The pipeline configuration a workspace's saved settings describe (its `config`, with
    the pool and target the app's pages chose)."""
    ws = Workspace.open(workspace)
    meta = ws.meta()
    pool = meta.get("pool") or {}
    target = meta.get("target") or {}
    pool = {"path": pool} if isinstance(pool, str) else pool
    target = {"path": target} if isinstance(target, str) else target
    cfg = config_from_dict(meta.get("config") or {}, lenient=True)
    kw: dict[str, Any] = {"workspace": str(ws.root)}
    if pool.get("path"):
        kw["pool"] = _resolve(ws, pool["path"])
        kw["pool_format"] = pool.get("format") or "auto"
        kw["pool_shape"] = pool.get("shape") or "auto"
        kw["pool_id_field"] = pool.get("id_field") or ""
        kw["pool_source_field"] = pool.get("source_field") or ""
    if target.get("path"):
        kw["target"] = _resolve(ws, target["path"])
    return dataclasses.replace(cfg, **kw)


def stage(workspace: str, name: str, progress: Progress | None = None) -> dict[str, Any]:
    """Run one pipeline stage for the workspace (it resumes / reuses what is on disk)."""
    from clusterucb_core.pipeline import Pipeline

    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; one of {', '.join(STAGES)}")
    if progress is not None:  # a stage name from the first second, not "0 rows"
        progress(0, None, FIRST_STEP.get(name, "starting"), stage="starting", unit="")
    pipe = Pipeline(run_config(workspace), log=lambda msg: print(msg, flush=True))
    if progress is not None:
        def per_stage(label: str) -> Callable[..., None]:
            def report(done: Any, total: Any, message: str = "", **extra: Any) -> None:
                progress(done, total, message or label, stage=label,
                         unit=STAGE_UNITS.get(label, "rows"), **{
                             k: v for k, v in extra.items() if k not in ("rate", "eta_s")})
            return report
        pipe.progress = per_stage  # type: ignore[method-assign]
    if name == "warmup":
        pipe.cfg = dataclasses.replace(pipe.cfg, use_warmup=True)
        ckpts = pipe.checkpoints
        Workspace.open(workspace).update_config("warmup", {"enabled": True})
        return {"checkpoints": [str(c) for c in ckpts]}
    if name == "cluster_features":
        store = pipe.cluster_store
        return {"store": store.path.name, "rows": int(store.n_rows)}
    if name == "clusters":
        cs = pipe.clusters
        Workspace.open(workspace).update_meta(clusters=cs.name)
        return {"clusters": cs.name, "k": int(cs.k)}
    if name == "kscan":
        from clusterucb_core.clustering.kscan import k_scan
        from clusterucb_core.runtime import atomic

        store = pipe.cluster_store
        scan = k_scan(store, seed=pipe.cfg.clusters.seed, progress=progress)
        out = pipe.ws.root / KSCAN_DIR / f"{store.path.name}.csv"
        atomic.write_text(out, scan.to_csv(index=False))
        atomic.write_json(out.with_suffix(".json"), {"rule": scan.attrs.get("rule"),
                                                     "n_sample": scan.attrs.get("n_sample")})
        chosen = scan.loc[scan["chosen"], "k"]
        return {"kscan": str(out), "chosen": int(chosen.iloc[0]) if len(chosen) else None}
    if name == "map":
        res = pipe.map
        note = res.note() if callable(res.note) else res.note
        return {"map": str(res.path), "note": str(note)}
    scores = pipe.exhaustive_scores()
    import numpy as np

    return {"scores": str(pipe.scores_path), "n_rows": int(len(scores)),
            "n_nan": int(np.isnan(scores).sum())}
