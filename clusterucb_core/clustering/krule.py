"""How many clusters the bandit gets (K), and why.

Silhouette picks K for geometry; the bandit needs arms it can tell apart with its cold start.
"size" gives every arm about `min_draws` cold-start draws: K = N * cold_start / min_draws
(clipped to [2, MAX_K]). Each arm then starts with a mean over several scores instead of one,
and there are as many arms as the cold start can afford. bench/bench_fidelity.py measured the
rules against each other on the demo, the Flan + MMLU pool and synthetic rewards; the chosen
rule and `min_draws` are ClusterSpec's defaults. Every rule is deterministic for a seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RULES = ("fixed12", "silhouette", "size2", "size4", "size8")
MIN_K, MAX_K = 2, 200


def size_k(n_rows: int, cold_start: float, min_draws: int) -> int:
    """K such that each arm gets about `min_draws` cold-start draws."""
    if min_draws < 1:
        raise ValueError(f"min_draws must be >= 1, got {min_draws}")
    if cold_start <= 0:
        return int(np.clip(round(np.sqrt(n_rows / 2)), MIN_K, MAX_K))
    return int(np.clip(round(n_rows * cold_start / min_draws), MIN_K, min(MAX_K, n_rows)))


def choose_k(rule: str, n_rows: int, cold_start: float, X: Any = None, seed: int = 0,
             fixed: int = 12, **scan_kw: Any) -> tuple[int, str]:
    """(K, a sentence saying why) for `rule`: "fixed<K>", "silhouette" (the K scan over `X`)
    or "size<m>" (each arm about m cold-start draws)."""
    k, why, _ = choose_k_with_scan(rule, n_rows, cold_start, X, seed, fixed, **scan_kw)
    return k, why


def choose_k_with_scan(rule: str, n_rows: int, cold_start: float, X: Any = None, seed: int = 0,
                       fixed: int = 12, **scan_kw: Any) -> tuple[int, str, Any]:
    """`choose_k` plus the K scan the silhouette rule ran (None for the other rules), which the
    CLI prints and the clustering saves; `scan_kw` goes to `kscan.k_scan`."""
    if rule.startswith("fixed"):
        k = int(rule[5:] or fixed)
        return k, f"K={k} was set by hand", None
    if rule.startswith("size"):
        m = int(rule[4:] or 4)
        k = size_k(n_rows, cold_start, m)
        if cold_start <= 0:
            return k, (f"K={k} = sqrt(N/2) for N={n_rows:,} scorable rows (no cold start to "
                       "size the arms by)"), None
        return k, (f"K={k} so that each cluster gets about {m} cold-start draws "
                   f"({n_rows:,} scorable rows x {cold_start:g} cold start / {m}): enough for "
                   "the bandit to tell the arms apart from the start"), None
    if rule == "silhouette":
        from clusterucb_core.clustering.kscan import k_scan, pick_k

        if X is None:
            raise ValueError("the silhouette rule needs the features (X)")
        scan = k_scan(X, seed=seed, **scan_kw)
        k = pick_k(scan)
        return k, (f"K={k} had the best silhouette of the K scan "
                   f"({scan.attrs.get('rule', '')})"), scan
    raise ValueError(f"unknown K rule {rule!r}; choose one of {', '.join(RULES)}, or fixed<K>, "
                     "size<m>")


def clusters_sentences(meta: dict[str, Any]) -> list[str]:
    """The Clusters page's lines about a saved clustering: which features, what they cost,
    the conditioning and why K (empty for clusterings saved before these were recorded)."""
    out = []
    cost = meta.get("feature_cost") or {}
    if cost.get("what"):
        out.append(f"Cluster features: {cost['what']} ({cost.get('rows', 0):,} rows computed).")
    if cost.get("ms_per_row") is not None:
        out.append(f"They took {cost['ms_per_row']:.2f} ms per row on this machine "
                   "(bench/bench_fidelity.py measures each kind against a reward gradient).")
    cond = meta.get("condition")
    if cond and cond != "none":
        out.append(f"Conditioned before k-means: {cond} (the transform is stored with these "
                   "clusters, so reopening gives the same labels).")
    if meta.get("k_reason"):
        out.append(meta["k_reason"] + ".")
    if meta.get("n_unscorable"):
        out.append(f"{meta['n_unscorable']:,} rows that cannot be scored are in no cluster.")
    return out
