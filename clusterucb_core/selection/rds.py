"""RDS+ (arXiv 2503.01807): rank the pool by the cosine of pooled hidden states to the target.

    rds(z) = max over subtasks s of  mean_{z' in s} cos(h(z), h(z'))

the LESS rule (influence.py) with forward-only hidden states in place of gradients. It needs
no gradient, so it is the cheap method a user would pick instead of LESS, and the baseline a
ClusterUCB run is compared with at the same budget:

* pure RDS+: the top-p rows by `rds` (no gradient at all);
* RDS+ at a budget b: score the top-b rows by `rds` with the reward and keep the top-p of
  them by reward (`screen`), the same gradient spend as a ClusterUCB run of budget b.

Hidden states: the workspace's cluster-feature store when it holds hidden states (forward
only, every row already computed for the clusters), else the final layer mean-pooled over
every token (the paper's recipe), computed into a store of its own. The target's examples
are embedded the same way as the pool's rows: same model (the base, as the cluster features),
same layers, pooling and length, the prompt rendered as LESS renders it (data/targets.py) and
the completion as the answer, so `answer` pooling reads the completion's tokens as it reads a
pool row's reply. No conditioning: the paper's raw cosine (centring on the pool's mean was
measured no better, README "Selection fidelity").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clusterucb_core.config import FeatureSpec
from clusterucb_core.data.formatting import encode_prompt_completion
from clusterucb_core.features.engine import FeatureEngine, _EmptyPool, store_name
from clusterucb_core.features.influence import subtask_scores
from clusterucb_core.runtime import atomic
from clusterucb_core.selection.subtasks import best_subtask

SCORES_NAME = "rds"  # W/scores/rds.npy: one RDS+ score per pool row (a reward table too)
BEST_NAME = "rds_subtask"  # W/scores/rds_subtask.npy: each row's nearest subtask (code)


def rds_subtask_scores(pool_features: np.ndarray, target_features: np.ndarray,
                       subtasks: np.ndarray, n_subtasks: int | None = None) -> np.ndarray:
    """[N, S] float32: each pool row's mean cosine to each subtask's target rows (NaN rows for
    pool rows without a direction, NaN columns for subtasks without a usable target row)."""
    return subtask_scores(np.asarray(pool_features), np.asarray(target_features),
                          np.asarray(subtasks), n_subtasks=n_subtasks)


def rds_scores(pool_features: np.ndarray, target_features: np.ndarray,
               subtasks: np.ndarray) -> np.ndarray:
    """[N] float32: RDS+ score of each pool row, the max over subtasks of its mean cosine to
    the subtask's target rows (NaN for a row without a direction)."""
    per = rds_subtask_scores(pool_features, target_features, subtasks)
    present = np.isfinite(per).any(axis=0)
    if not present.any():
        raise ValueError("no target subtask has a usable hidden state")
    return per[:, present].max(axis=1).astype(np.float32)


def top_rows(scores: np.ndarray, n: int) -> np.ndarray:
    """The `n` rows with the largest finite scores, best first (ties to the lower row)."""
    s = np.asarray(scores, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(s))
    order = ok[np.lexsort((ok, -s[ok]))]
    return order[:max(0, int(n))]


def screen(rds: np.ndarray, rewards: Any, n_budget: int, n_top: int) -> np.ndarray:
    """RDS+ at a budget: score the top `n_budget` rows by `rds` with `rewards` (an [N] array or
    a callable rows -> scores) and keep the top `n_top` of them by reward, best first."""
    if n_top > n_budget:
        raise ValueError(f"n_top={n_top} cannot exceed the budget of {n_budget} rows")
    rows = top_rows(rds, n_budget)
    got = np.asarray(rewards(rows) if callable(rewards) else np.asarray(rewards)[rows],
                     dtype=np.float64)
    return rows[top_rows(got, n_top)]


# ------------------------------------------------------------------------- the workspace
def pool_spec(cluster_spec: FeatureSpec) -> tuple[FeatureSpec, str]:
    """The hidden states RDS+ reads for the pool, and why: the cluster features when they are
    hidden states, else the final layer mean-pooled (the paper's)."""
    if cluster_spec.kind == "hidden":
        return cluster_spec, "the cluster features (hidden states, already computed)"
    spec = FeatureSpec(kind="hidden", pooling="mean", batch_size=cluster_spec.batch_size,
                       store_dtype=cluster_spec.store_dtype)
    return spec, ("the final layer's hidden states, mean-pooled (the cluster features are "
                  "gradients, not hidden states)")


def target_hidden_states(target_set: Any, model_spec: Any, lora_spec: Any, spec: FeatureSpec,
                         engine: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Hidden states of the target's examples computed as the pool's rows are by `spec`:
    (features [M, d] float32, subtask codes [M]); examples without a state left out."""

    eng = engine or FeatureEngine(_EmptyPool(), model_spec, lora_spec, None, spec,
                                  store_path=Path("/nonexistent"))
    max_length = int(model_spec.max_length)
    if spec.max_length:
        max_length = min(max_length, int(spec.max_length))
    examples = list(target_set.examples)
    code = {s: i for i, s in enumerate(target_set.subtasks)}
    encs = [encode_prompt_completion(ex.prompt, ex.completion, eng.tok, max_length)
            for ex in examples]
    feats, valid = eng.featurize(encs)
    ids = np.array([code[ex.subtask] for ex in examples], dtype=np.int64)
    return feats[valid].astype(np.float32), ids[valid]


@dataclass(frozen=True)
class RDSResult:
    """RDS+ over a workspace's pool: a score and a nearest subtask (-1: none) per row."""

    scores: np.ndarray
    best_subtask: np.ndarray
    subtasks: list[str]
    features: str  # which hidden states, in words
    store: str  # the feature store's folder name
    target: str = ""  # the target's fingerprint

    def selection(self, n_top: int) -> np.ndarray:
        """Pure RDS+: the top `n_top` rows, best first."""
        return top_rows(self.scores, n_top)


def _paths(ws: Any) -> tuple[Path, Path, Path]:
    scores = ws.scores(SCORES_NAME)
    return scores, ws.scores(BEST_NAME), scores.with_suffix(".json")


def load_rds(ws: Any) -> RDSResult | None:
    """The RDS+ scores saved in the workspace (None when there are none)."""
    s, b, m = _paths(ws)
    if not (s.exists() and b.exists() and m.exists()):
        return None
    meta = json.loads(m.read_text())
    return RDSResult(np.load(s), np.load(b), list(meta["subtasks"]), meta["features"],
                     meta["store"], str((meta.get("identity") or {}).get("target", "")))


def workspace_rds(pipe: Any, progress: Any = None) -> RDSResult:
    """RDS+ scores of every row of a pipeline's pool (`Pipeline.from_workspace(root)`), kept in
    W/scores/rds.npy (+ rds_subtask.npy, rds.json) and reused while the hidden states and the
    target are the same. Computes the pool's hidden states only when the cluster features are
    not hidden states; never a gradient."""

    spec, why = pool_spec(pipe.cfg.cluster_features)
    # the cluster features' own store when they fit (complete already: compute is a no-op)
    engine = FeatureEngine(pipe.pool, pipe.cfg.model, pipe.cfg.lora, None, spec,
                           pipe.ws.features(store_name(spec, None)))
    pipe.log(f"RDS+: {why} -> {engine.store_path.name}")
    store = engine.compute(progress=progress)
    ident = json.loads(json.dumps({"features": engine.fingerprint,
                                   "target": pipe.target.fingerprint}, default=str))
    known = load_rds(pipe.ws)
    s_path, b_path, m_path = _paths(pipe.ws)
    if known is not None and json.loads(m_path.read_text()).get("identity") == ident:
        return known
    T, ids = target_hidden_states(pipe.target, pipe.cfg.model, pipe.cfg.lora, spec, engine)
    names = list(pipe.target.subtasks)
    scores = np.full(store.n_rows, np.nan, dtype=np.float32)
    best = np.full(store.n_rows, -1, dtype=np.int32)
    for rows, feats in store.iter_chunks():  # streamed: a big pool's store stays on disk
        per = rds_subtask_scores(feats, T, ids, n_subtasks=len(names))
        if not np.isfinite(per).any(axis=0).any():
            raise ValueError("no target subtask has a usable hidden state")
        best[rows] = best_subtask(per)
        ok = best[rows] >= 0
        scores[rows[ok]] = per[ok, best[rows][ok]]
    for path, arr in ((s_path, scores), (b_path, best)):
        with atomic.atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr)
    atomic.write_json(m_path, {"identity": ident, "subtasks": names, "features": why,
                               "store": store.path.name, "n_rows": len(scores),
                               "n_target": int(len(T))})
    return RDSResult(scores, best, names, why, store.path.name, str(pipe.target.fingerprint))
