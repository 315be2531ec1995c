"""What the app remembers about a workspace, kept in the workspace itself.

`workspace.json` holds, besides the lead's `name`/`version`:

    "pool":     {"path": str, "format": "auto"|..., "shape": "auto"|...,
                 "id_field": str, "source_field": str}   ("" = the usual columns)
    "target":   {"path": str, "kind": "auto"|..., "trim": bool}
    "config":   the workspace's one RunConfig (clusterucb_core.config), as
                `config_to_dict` writes it; pages read and save its sections

Paths are stored as given; relative ones resolve against the workspace, then the repository.
Loaders here are cached by file identity (path, size, mtime) so reruns are instant.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import streamlit as st

from clusterucb_core import config
from clusterucb_core.selection.exhaustive import saved_exhaustive
from clusterucb_core.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent


def resolve(ws: Workspace, path: str | Path) -> Path:
    """A path typed by the user: absolute, relative to the workspace, the project or the
    working folder, or a Hub dataset (hf://ORG/NAME...), saved once as a local folder."""
    from clusterucb_core.data import sources

    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    for base in (ws.root, ROOT, Path.cwd()):
        if (base / p).exists():
            return (base / p).resolve()
    if sources.parse_hub(path) is not None:
        return sources.resolve(path)
    return (ROOT / p).resolve()


# ---------------------------------------------------------------------------------------------
# references and settings
# ---------------------------------------------------------------------------------------------

def pool_ref(ws: Workspace) -> dict[str, Any] | None:
    ref = ws.meta().get("pool")
    if isinstance(ref, str):
        ref = {"path": ref}
    return ref or None


def set_pool_ref(ws: Workspace, path: str | Path, format: str = "auto",
                 shape: str = "auto", id_field: str = "", source_field: str = "") -> None:
    ws.update_meta(pool={"path": str(path), "format": format, "shape": shape,
                         "id_field": id_field, "source_field": source_field})


def target_ref(ws: Workspace) -> dict[str, Any] | None:
    ref = ws.meta().get("target")
    if isinstance(ref, str):
        ref = {"path": ref}
    return ref or None


def set_target_ref(ws: Workspace, path: str | Path, kind: str = "auto",
                   trim: bool = False) -> None:
    ws.update_meta(target={"path": str(path), "kind": kind, "trim": bool(trim)})


def settings(ws: Workspace, name: str) -> Any:
    """The spec of section `name` in the workspace's config; the
    defaults when none was saved, or when what was saved no longer passes the rules."""
    section = config.section_name(name)
    saved = (ws.meta().get("config") or {}).get(section) or {}
    try:
        cfg = config.config_from_dict({section: saved}, lenient=True)
    except ValueError:
        cfg = config.RunConfig()
    return getattr(cfg, section)


def use_warmup(ws: Workspace) -> bool:
    """`[warmup] enabled` of the workspace's config."""
    return bool(((ws.meta().get("config") or {}).get("warmup") or {}).get("enabled", True))


def set_use_warmup(ws: Workspace, enabled: bool) -> None:
    """Store `[warmup] enabled` in the workspace's config, beside the warm-up's settings."""
    ws.update_config("warmup", {"enabled": bool(enabled)})


def specs(ws: Workspace) -> dict[str, Any]:
    """Every settings section, by its name."""
    return {name: settings(ws, name) for name in config.SECTIONS}


def checkpoints(ws: Workspace) -> list[Path]:
    """Every warm-up checkpoint in the workspace (newest set last)."""
    # lazy: features.model imports torch (about a second), which the sidebar does not need
    from clusterucb_core.features.model import find_checkpoints

    root = ws.checkpoints()
    if not root.is_dir():
        return []
    out: list[Path] = []
    sets = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.stat().st_mtime)
    for s in sets:
        out.extend(Path(c) for c in find_checkpoints(s))
    return out


def checkpoint(ws: Workspace) -> Path | None:
    found = checkpoints(ws)
    return found[-1] if found else None


def save_settings(ws: Workspace, **specs: Any) -> None:
    """Store specs (by section name) in the workspace's one config, every field written: a
    value equal to the spec class's default may differ from RunConfig's (draw_order), so
    the fingerprint form (`config.to_dict`, which leaves such fields out) would lose it."""
    cfg = dict(ws.meta().get("config") or {})
    for name, spec in specs.items():
        cfg[config.section_name(name)] = json.loads(json.dumps(dataclasses.asdict(spec)))
    ws.update_meta(config=cfg)


DEMO_CONFIG = config.DEMO_DIR / "demo_run.toml"


def _demo_config() -> dict[str, Any]:
    """Settings, pool and target of the bundled demo (sample_data/demo_run.toml), in the
    app's workspace.json form; empty when the file or the pipeline is missing."""
    try:
        cfg = config.load_config(DEMO_CONFIG)
    except (OSError, ValueError):
        return {}
    model = config.to_dict(cfg.model)
    name = str(model.get("name_or_path", ""))
    if not Path(name).is_absolute() and (config.DEMO_DIR / name).resolve() == config.DEMO_MODEL:
        model["name_or_path"] = str(config.DEMO_MODEL)  # not trained yet: keep it a path
    return {
        "pool": {"path": cfg.pool, "format": "auto", "shape": "auto"},
        "target": {"path": cfg.target, "kind": "auto", "trim": False},
        "config": {**config.config_to_dict(cfg), "model": model},
    }


def apply_demo_defaults(ws: Workspace) -> None:
    """A fresh demo workspace gets the bundled demo's settings, pool and target (those of
    `clusterucb demo`, so the app and the CLI share its files)."""
    meta = ws.meta()
    changes: dict[str, Any] = {}
    if "demo_defaults" not in meta:
        changes["demo_defaults"] = True
        demo = _demo_config()
        for key in ("pool", "target", "config"):
            if key in demo and not meta.get(key):
                changes[key] = demo[key]
        meta = {**meta, **changes}
    if not meta.get("pool") and config.DEMO_POOL.exists():
        changes["pool"] = {"path": str(config.DEMO_POOL), "format": "auto", "shape": "auto"}
    if not meta.get("target"):
        bundled = bundled_targets()
        if bundled:
            first = sorted(bundled)[0]
            changes["target"] = {"path": str(bundled[first]), "kind": "auto", "trim": False}
    if changes:
        ws.update_meta(**changes)


def bundled_targets() -> dict[str, Path]:
    from clusterucb_core.data.targets import bundled_targets as _bt

    return dict(_bt())


# ---------------------------------------------------------------------------------------------
# cached loaders
# ---------------------------------------------------------------------------------------------

def file_key(path: Path) -> tuple[str, int, int]:
    """Identity of a file or folder for caching: path, size, newest mtime."""
    path = Path(path)
    if path.is_dir():
        stats = [p.stat() for p in path.rglob("*") if p.is_file()]
        return (str(path), sum(s.st_size for s in stats),
                max((s.st_mtime_ns for s in stats), default=0))
    st_ = path.stat()
    return (str(path), st_.st_size, st_.st_mtime_ns)


@st.cache_resource(max_entries=4, show_spinner="Reading the pool...")
def _load_pool(key: tuple, format: str, shape: str, cache_dir: str, id_field: str,
               source_field: str) -> Any:
    """One Pool per file version, named columns and process: memory-mapped from the
    workspace's pool cache (parsed there once, shared with the CLI), so a rerun never copies
    the pool."""
    from clusterucb_core.data.load import load_pool

    return load_pool(Path(key[0]), format=format, shape=shape, cache_dir=cache_dir,
                     id_field=id_field or None, source_field=source_field or None)


def load_pool(ws: Workspace) -> Any | None:
    """The workspace's pool (`clusterucb_core.data.pool.Pool`), or None when none is chosen."""
    ref = pool_ref(ws)
    if not ref:
        return None
    path = resolve(ws, ref["path"])
    if not path.exists():
        raise FileNotFoundError(f"the pool file {path} is gone; choose it again on the Pool page")
    return _load_pool(file_key(path), ref.get("format", "auto"), ref.get("shape", "auto"),
                      str(ws.pool_cache()), ref.get("id_field") or "",
                      ref.get("source_field") or "")


@st.cache_resource(max_entries=4, show_spinner="Reading the target...")
def _load_target(key: tuple, kind: str, trim: bool) -> Any:
    from clusterucb_core.data.targets import load_target

    return load_target(Path(key[0]), kind=kind, trim=trim)


def load_target(ws: Workspace) -> Any | None:
    ref = target_ref(ws)
    if not ref:
        return None
    path = resolve(ws, ref["path"])
    if not path.exists():
        raise FileNotFoundError(f"the target {path} is gone; choose it again on the Target page")
    return _load_target(file_key(path), ref.get("kind", "auto"), bool(ref.get("trim", False)))


# ---------------------------------------------------------------------------------------------
# progress overview for the sidebar
# ---------------------------------------------------------------------------------------------

def progress_summary(ws: Workspace, running: Iterable[str] = ()) -> list[tuple[str, bool]]:
    """(step, done) for the sidebar. A step counts as done only when its result is complete
    (a checkpoint saved, a feature store with every row) and no job of `running` (job kinds)
    is still making it."""
    meta = ws.meta()
    busy = set(running)
    return [
        ("Pool chosen", bool(meta.get("pool"))),
        ("Target chosen", bool(meta.get("target"))),
        ("Warm-up checkpoint", bool(checkpoints(ws)) and "warmup" not in busy),
        ("Features", _complete_store(ws) and "cluster_features" not in busy),
        ("Clusters", bool(cluster_names(ws)) and "clusters" not in busy),
        ("UCB run", bool(ws.list("runs"))),
        ("Export", any((ws.exports(r) / "manifest.json").exists() for r in ws.list("exports"))),
    ]


def _complete_store(ws: Workspace) -> bool:
    """True when a feature store of the workspace has every row computed."""
    from clusterucb_core.features.store import FeatureStore

    for name in ws.list("features"):
        try:
            if FeatureStore.open(ws.features(name)).complete:
                return True
        except (OSError, ValueError):
            continue
    return False


# ---------------------------------------------------------------------------------------------
# clusters, map, scores (engine files in the workspace)
# ---------------------------------------------------------------------------------------------


def cluster_names(ws: Workspace) -> list[str]:
    return [n for n in ws.list("clusters") if (ws.clusters(n) / "meta.json").exists()]


def current_clusters_name(ws: Workspace) -> str | None:
    names = cluster_names(ws)
    if not names:
        return None
    chosen = ws.meta().get("clusters")
    if chosen in names:
        return chosen
    # the most recent one
    return max(names, key=lambda n: (ws.clusters(n) / "meta.json").stat().st_mtime)


@st.cache_resource(max_entries=8, show_spinner=False)
def _load_clusters(root: str, name: str, mtime: int) -> Any:
    from clusterucb_core.clustering.clusterset import load_clusters

    return load_clusters(Workspace.open(root, create=False), name)


def load_clusters(ws: Workspace, name: str | None = None) -> Any | None:
    name = name or current_clusters_name(ws)
    if not name:
        return None
    meta = ws.clusters(name) / "meta.json"
    return _load_clusters(str(ws.root), name, meta.stat().st_mtime_ns)


def map_files(ws: Workspace) -> list[Path]:
    folder = ws.maps()
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.glob("*.npz") if not p.name.startswith(".")),
                  key=lambda p: p.stat().st_mtime, reverse=True)


@st.cache_resource(max_entries=4, show_spinner=False)
def _read_map(path: str, mtime: int, n_rows: int) -> Any:
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        for key in ("xy", "coords", "embedding", "coordinates"):
            if key in z.files and z[key].ndim == 2 and z[key].shape == (n_rows, 2):
                return z[key].astype(np.float32)
        for key in z.files:
            if z[key].ndim == 2 and z[key].shape == (n_rows, 2):
                return z[key].astype(np.float32)
    return None


def load_map(ws: Workspace, n_rows: int) -> Any | None:
    """2-D coordinates [n_rows, 2] of the newest map that fits the pool, or None."""
    for path in map_files(ws):
        xy = _read_map(str(path), path.stat().st_mtime_ns, int(n_rows))
        if xy is not None:
            return xy
    return None


def map_note(ws: Workspace, n_rows: int) -> str | None:
    """How the newest map was made (fit on a sample or on everything), when known."""
    try:
        from clusterucb_core.clustering.embedding2d import cached_maps
        maps = [m for m in cached_maps(ws) if m.n_rows == n_rows]
    except (ImportError, OSError, ValueError):
        return None
    if not maps:
        return None
    note = maps[0].note
    return str(note() if callable(note) else note)


def load_kscan(ws: Workspace, features: str | None) -> Any | None:
    """A K scan made by the app's 'Scan K' job for a feature store (W/kscan/<store>.csv)."""
    import json

    import pandas as pd

    if not features:
        return None
    path = ws.root / "kscan" / f"{features}.csv"
    if not path.exists():
        return None
    df = pd.read_csv(path)
    side = path.with_suffix(".json")
    if side.exists():
        df.attrs.update(json.loads(side.read_text()))
    return df


def exhaustive_scores(ws: Workspace, n_rows: int | None = None) -> Any | None:
    """The exhaustive scores when they are this pool's and this target's, else None (the
    engine's check, from the files: the pages stay fast)."""
    try:
        pool, target = load_pool(ws), load_target(ws)
    except (OSError, ValueError):
        return None
    if pool is None or target is None or (n_rows is not None and n_rows != len(pool)):
        return None
    return saved_exhaustive(ws, pool.fingerprint, target.fingerprint, len(pool))


def ledger(ws: Workspace, clustering: str | None = None) -> Any:
    from clusterucb_core.selection.curation import Ledger

    return Ledger(ws.ledger_path, clustering=clustering)
