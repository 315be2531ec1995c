"""A saved clustering in the workspace: labels, centroids, meta, summary and K scan files."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clusterucb_core.clustering.conditioning import Conditioner
from clusterucb_core.clustering.kmeans import KMeansResult
from clusterucb_core.config import to_dict
from clusterucb_core.features.rowsource import as_source, chunk_rows_for
from clusterucb_core.features.store import FeatureStore
from clusterucb_core.runtime import atomic

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from clusterucb_core.workspace import Workspace


LABELS = "labels.npy"
CENTROIDS = "centroids.npy"
META = "meta.json"
SUMMARY = "summary.json"
KSCAN = "kscan.csv"


@dataclass
class ClusterSet:
    """A saved clustering: labels [N] (-1 = no features), centroids [K, d], meta, and the
    summary / K scan tables when they were saved."""

    name: str
    path: Path
    labels: np.ndarray
    centroids: np.ndarray
    meta: dict[str, Any]
    summary: pd.DataFrame | None = None
    kscan: pd.DataFrame | None = None

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def cluster_names(self) -> dict[int, str]:
        """cluster -> "3: word, word, word" (or "cluster 3" without a summary)."""
        if self.summary is not None and "label" in self.summary.columns:
            return {int(c): f"{int(c)}: {lab}" for c, lab in
                    zip(self.summary["cluster"], self.summary["label"])}
        return {c: f"cluster {c}" for c in range(self.k)}


def save_clusters(ws: Workspace, name: str, result: KMeansResult, *,
                  features_fingerprint: str | None, spec: Any = None,
                  features_name: str | None = None, summary: pd.DataFrame | None = None,
                  kscan: pd.DataFrame | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write ws.clusters(name)/ {labels.npy, centroids.npy, meta.json, summary.json, kscan.csv}
    as one atomic folder swap: a reader sees the old set or the new one, never a mix."""


    target = ws.clusters(name)
    if spec is not None and dataclasses.is_dataclass(spec):
        spec = to_dict(spec)
    meta = {
        "name": name,
        "k": result.k,
        "n_rows": int(len(result.labels)),
        "n_invalid": int(result.n_invalid),
        "inertia": float(result.inertia),
        "n_iter": int(result.n_iter),
        "converged": bool(result.converged),
        "n_reseeded": int(result.n_reseeded),
        "mode": result.mode,
        "sizes": [int(s) for s in result.sizes()],
        "features": features_name,
        "features_fingerprint": features_fingerprint,
        "spec": spec,
        "info": result.info,
    }
    if extra:
        meta.update(extra)
    with atomic.atomic_dir(target) as tmp:
        np.save(tmp / LABELS, result.labels.astype(np.int64))
        np.save(tmp / CENTROIDS, result.centroids.astype(np.float32))
        if summary is not None:
            (tmp / SUMMARY).write_text(summary.to_json(orient="records", indent=1))
            meta["summary_attrs"] = dict(summary.attrs)
        if kscan is not None:
            kscan.to_csv(tmp / KSCAN, index=False)
            meta["kscan_rule"] = kscan.attrs.get("rule")
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return target


def load_clusters(ws: Workspace, name: str, features_fingerprint: str | None = None) -> ClusterSet:
    """Read a saved clustering. With ``features_fingerprint``, refuse one made from other
    features (labels from a different pool or checkpoint would silently mismatch)."""
    import pandas as pd

    path = ws.clusters(name)
    if not (path / META).exists():
        raise FileNotFoundError(f"no clusters named {name!r} in {ws.root} "
                                f"(have: {', '.join(ws.list('clusters')) or 'none'})")
    meta = json.loads((path / META).read_text())
    if (
        features_fingerprint is not None
        and meta.get("features_fingerprint") != features_fingerprint
    ):
        raise ValueError(f"clusters {name!r} were made from features with fingerprint "
                         f"{meta.get('features_fingerprint')}, not {features_fingerprint}; "
                         "re-run `clusterucb cluster`")
    summary = kscan = None
    if (path / SUMMARY).exists():
        summary = pd.DataFrame(json.loads((path / SUMMARY).read_text()))
        summary.attrs.update(meta.get("summary_attrs") or {})
    if (path / KSCAN).exists():
        kscan = pd.read_csv(path / KSCAN)
        kscan.attrs["rule"] = meta.get("kscan_rule")
    return ClusterSet(name=name, path=path, labels=np.load(path / LABELS),
                      centroids=np.load(path / CENTROIDS), meta=meta, summary=summary,
                      kscan=kscan)


def cluster_rows(ws: Workspace, cs: ClusterSet) -> np.ndarray:
    """The features a clustering was made from, conditioned as it was ([N, d] float32, unit
    rows; zeros for rows without features): what a run whose settings need them
    (`SelectionSpec.needs_features`) reads. Filled chunk by chunk: one [N, d] array in all."""

    name = cs.meta.get("features")
    if not name:
        raise ValueError(f"clusters {cs.name!r} do not record their feature store; re-run "
                         "`clusterucb cluster`")
    store = FeatureStore.open(ws.features(name))
    if cs.meta.get("features_fingerprint") not in (None, store.fingerprint):
        raise ValueError(f"the feature store {name!r} changed since clusters {cs.name!r} were "
                         "made from it; re-run `clusterucb cluster`")
    cond = Conditioner.load(cs.path)
    out = np.empty((store.n_rows, cond.out_dim(store.dim)), dtype=np.float32)
    for start, chunk in as_source(store).chunks(chunk_rows_for(store.dim)):
        # rows without features (in no arm) become zeros, so the run uses `out` uncopied
        out[start:start + len(chunk)] = np.nan_to_num(cond.transform(chunk))
    return out
