"""Pure pieces of the Clusters page: the cluster table and the K-scan warning (no streamlit)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from . import marks

LOW_SILHOUETTE = 0.1  # below this the clusters barely separate (cosine silhouette)


def cluster_table(cs: Any, ledger_state: Any, scores: Any = None) -> pd.DataFrame:
    """One row per cluster: label (the user's name when given), size, sources, keywords, its
    curation marks and, when scores are known, the mean score of its scored rows."""
    labels = np.asarray(cs.labels)
    if cs.summary is not None:
        summ = cs.summary
        table = pd.DataFrame({
            "cluster": summ["cluster"].astype(int).to_numpy(),
            "label": [ledger_state.names.get(int(c), lab)
                      for c, lab in zip(summ["cluster"], summ["label"])],
            "size": summ["size"].astype(int).to_numpy(),
            "share": summ["share"].to_numpy(),
            "top source": summ["top_source"].to_numpy(),
            "source mix": [", ".join(f"{k} {v}" for k, v in list(d.items())[:4])
                           for d in summ["sources"]],
            "keywords": [", ".join(k) for k in summ["keywords"]],
            f"{summ.attrs.get('token_unit', 'tokens')} (median)":
                summ["tokens_median"].to_numpy(),
        })
    else:
        table = pd.DataFrame({"cluster": np.arange(cs.k),
                              "size": np.bincount(labels[labels >= 0], minlength=cs.k)})
    status = marks.cluster_status(cs.k, labels, ledger_state)
    table.insert(1, "curation", [status[int(c)] for c in table["cluster"]])
    if scores is not None:
        s = np.asarray(scores, dtype=np.float64)
        means = []
        for c in table["cluster"]:
            v = s[(labels == int(c)) & np.isfinite(s)]
            means.append(float(v.mean()) if len(v) else np.nan)
        table.insert(2, "mean score", means)
    return table


def kscan_warning(scan: Any, k: int) -> str | None:
    """What a curator should know about the K the scan picked, or None when it looks sound:
    the smallest K scanned, or clusters that barely separate."""
    if scan is None or not len(scan) or "silhouette" not in scan:
        return None
    sil = scan["silhouette"].to_numpy(dtype=float)
    best = float(np.nanmax(sil)) if np.isfinite(sil).any() else float("nan")
    ks = scan["k"].to_numpy()
    notes = []
    if k <= int(ks.min()):
        notes.append(f"K={k} is the smallest K the scan tried")
    if not best >= LOW_SILHOUETTE:
        notes.append(f"the best silhouette is {best:.3f} (below {LOW_SILHOUETTE}): the "
                     "features show little cluster structure")
    if not notes:
        return None
    return ("K auto picked " + f"K={k}, but " + " and ".join(notes) + ". With few arms the "
            "bandit can barely aim its budget; consider a fixed K (the paper uses 20), or "
            "check the cluster features.")


def k_sentence(meta: dict[str, Any], k: int) -> str:
    """How this clustering's K was chosen, when no scan is shown: by the K-auto rule (its
    spec's k is 0) or fixed by the user."""
    spec = meta.get("spec") or {}
    if int(spec.get("k", k) or 0) == 0:
        rule = spec.get("k_rule") or "auto"
        return f"K auto chose K={k} by the rule `{rule}`, without a scan."
    return f"This clustering used a fixed K={k}."
