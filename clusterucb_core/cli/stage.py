"""What a stage command (`warmup`, `features`, `cluster`, `select`, `export`) reads from its
workspace: the settings `run` or the app recorded there and the artefacts they made.

A flag given on the command line wins; a flag left out takes the workspace's recorded setting,
and only then the built-in default. So a workspace made by `run` can be continued stage by
stage (the same max_length, the warm-up `run` trained, the same feature store names), and a
workspace built stage by stage records its pool for `select` and `export`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from clusterucb_core.workspace import Workspace


def open_workspace(root: str | Path, create: bool = False) -> Workspace:
    """The workspace, with a copy of the bundled demo workspace given the demo's settings."""
    ws = Workspace.open(root, create=create)
    adopt_demo(ws)
    return ws


def recorded_config(ws: Workspace) -> Any:
    """The RunConfig recorded in the workspace (by `run`, `demo` or the app), else None."""
    from clusterucb_core.config import config_from_dict

    saved = ws.meta().get("config")
    if not saved:
        return None
    return dataclasses.replace(config_from_dict(saved), workspace=str(ws.root))


def settings(ws: Workspace) -> Any:
    """The recorded RunConfig, else the built-in defaults."""
    from clusterucb_core.config import RunConfig

    return recorded_config(ws) or RunConfig(workspace=str(ws.root))


def merged(base: Any, args: argparse.Namespace, flags: dict[str, str]) -> Any:
    """`base` (a spec) with the fields of the flags given (not None): {arg name: field}."""
    given = {field: getattr(args, flag) for flag, field in flags.items()
             if getattr(args, flag, None) is not None}
    return dataclasses.replace(base, **given) if given else base


def feature_base(cfg: Any, kind: str) -> Any:
    """The recorded feature settings a `features --kind KIND` run continues: the reward
    features for gradients, the cluster features for hidden states (as `run` computes them)."""
    from clusterucb_core.config import FeatureSpec

    if cfg is not None:
        for spec in ((cfg.reward_features, cfg.cluster_features) if kind == "gradient"
                     else (cfg.cluster_features, cfg.reward_features)):
            if spec.kind == kind:
                return spec
    return FeatureSpec(kind=kind)


def warmup_checkpoints(ws: Workspace, cfg: Any, pool: Any, model: Any, lora: Any) -> list[Path]:
    """The warm-up checkpoints a stage uses by default: those `run` trained for the recorded
    warm-up settings with this model and LoRA (W/checkpoints/warmup-<key>), else the newest
    warm-up set (`clusterucb warmup` writes W/checkpoints/warmup)."""
    from clusterucb_core.features.model import find_checkpoints
    from clusterucb_core.pipeline import warmup_name

    sets = []
    if cfg is not None and cfg.use_warmup:
        sets.append(ws.checkpoints(warmup_name(pool.fingerprint, model, lora, cfg.warmup)))
    base = ws.checkpoints()
    if base.is_dir():
        others = [p for p in base.glob("warmup*") if p.is_dir() and p not in sets]
        sets += sorted(others, key=lambda p: p.stat().st_mtime, reverse=True)
    for folder in sets:
        found = find_checkpoints(folder)
        if found:
            return found
    return []


# ----------------------------------------------------------------------- the bundled demo
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def store_pools(ws: Workspace) -> set[str]:
    """Fingerprints of the pools the workspace's feature stores were computed from."""
    out = set()
    for name in ws.list("features"):
        try:
            manifest = json.loads((ws.features(name) / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        pool = (manifest.get("identity") or {}).get("pool")
        if pool:
            out.add(str(pool))
    return out


def adopt_demo(ws: Workspace) -> bool:
    """A copy of the bundled demo workspace ships without its pool, target and settings (they
    would be the building machine's paths); give it the bundled demo's, as the app does when
    it opens one. Recognised by its feature stores having been made from the bundled pool.
    True when they were filled in."""
    from clusterucb_core.config import DEMO_DIR, DEMO_POOL, config_to_dict, load_config

    meta = ws.meta()
    demo_config = DEMO_DIR / "demo_run.toml"
    if meta.get("pool") or meta.get("config") or not DEMO_POOL.exists() or \
            not demo_config.exists():
        return False
    pools = store_pools(ws)
    if not pools:
        return False
    fingerprint = _sha256(DEMO_POOL)
    if fingerprint not in pools:
        return False
    cfg = dataclasses.replace(load_config(demo_config), workspace=str(ws.root))
    ws.update_meta(pool={"path": str(DEMO_POOL), "format": "auto", "shape": "auto",
                         "fingerprint": fingerprint},
                   target=meta.get("target") or {"path": cfg.target, "kind": "auto",
                                                  "trim": False},
                   config=config_to_dict(cfg), demo_defaults=True)
    return True


def clusters_name(ws: Any, name: str | None) -> str:
    """The clustering a command uses: `name`, else the workspace's current one, else the
    newest."""
    if name:
        return name
    names = ws.list("clusters")
    if not names:
        raise FileNotFoundError(f"no clusters in {ws.root}; run `clusterucb cluster` first")
    chosen = ws.meta().get("clusters")
    if chosen in names:
        return chosen
    return max(names, key=lambda n: (ws.clusters(n) / "meta.json").stat().st_mtime
               if (ws.clusters(n) / "meta.json").exists() else 0)
