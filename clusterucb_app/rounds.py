"""Selection runs as the UCB Rounds page uses them: create, reopen, step, keep in sync.

A run's whole state is its log in `W/runs/<run_id>/log.jsonl` (written by
`selection.SelectionRun`). This module only keeps the live object in the browser session and
reopens it from the log when another tab (or the CLI) moved it on, so two tabs never append
conflicting rounds. The header's `meta` records which clustering and which reward source the
run uses, so a refresh or a restart reopens it exactly.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from clusterucb_core.config import SelectionSpec
from clusterucb_core.selection import policies, runs
from clusterucb_core.selection import run as selection
from clusterucb_core.selection.runlog import RunMeta
from clusterucb_core.workspace import Workspace

from . import marks, state

REWARD_EXHAUSTIVE = "exhaustive"
REWARD_LAZY = "lazy"
REWARD_LABELS = {REWARD_EXHAUSTIVE: "Exhaustive scores table (instant; for teaching)",
                 REWARD_LAZY: "Lazy gradients (computes only the drawn rows)"}
_SESSION = "_ucb_runs"


def run_ids(ws: Workspace) -> list[str]:
    """Runs with a log, newest first."""
    return runs.run_ids(ws)


def header(ws: Workspace, run_id: str) -> dict[str, Any]:
    return runs.run_log(ws, run_id).header()


def reward_sources(ws: Workspace, n_rows: int) -> list[str]:
    out = []
    if state.exhaustive_scores(ws, n_rows) is not None:
        out.append(REWARD_EXHAUSTIVE)
    if lazy_available(ws):
        out.append(REWARD_LAZY)
    return out


def lazy_available(ws: Workspace) -> bool:
    try:
        from clusterucb_app import engine
    except ImportError:
        return False
    return engine.lazy_oracle_available(ws)


def make_oracle(ws: Workspace, source: str, n_rows: int) -> Any:
    from clusterucb_core.selection.oracle import TableOracle

    if source == REWARD_EXHAUSTIVE:
        scores = state.exhaustive_scores(ws, n_rows)
        if scores is None:
            raise FileNotFoundError("this run scores rows from the exhaustive scores table, "
                                    "which is gone; run exhaustive scoring on the Model & "
                                    "Features page, or start a run with lazy gradients")
        return TableOracle(scores, name="exhaustive")
    if source == REWARD_LAZY:
        from clusterucb_app import engine

        return engine.lazy_oracle(ws)
    raise ValueError(f"unknown reward source {source!r}")


def new_run_id() -> str:
    return "run-" + datetime.now().strftime("%Y%m%d-%H%M%S-%f")[:-3]


def create(ws: Workspace, spec: SelectionSpec, clustering: str, source: str) -> str:
    """Start a new run (nothing drawn yet) and make it the workspace's current run. The run
    it replaces is deleted when nothing was drawn in it, so Reset never piles up empty runs."""
    clusters = state.load_clusters(ws, clustering)
    labels = np.asarray(clusters.labels)
    oracle = make_oracle(ws, source, len(labels))
    previous = current_id(ws)
    run_id = new_run_id()
    run = runs.new_run(ws, run_id, spec, RunMeta(clustering=clustering, reward=source,
                                                 workspace=ws.name), oracle)
    _remember(ws, run_id, run)
    ws.update_meta(current_run=run_id, ucb_reward=source)
    if previous is not None and previous != run_id and is_empty(ws, previous):
        shutil.rmtree(ws.runs(previous), ignore_errors=True)
    return run_id


def is_empty(ws: Workspace, run_id: str) -> bool:
    """True when the run's log holds only its header: no round was played."""
    _, rounds_, _ = runs.run_log(ws, run_id).read()
    return not rounds_


def describe(ws: Workspace, run_id: str) -> str:
    """A run named by its settings: 'ucb_beta β=1 · budget 0.2 · top-p 0.05 · batch 8 ·
    seed 42 · lazy · 11-28 17:40' (the time the run was started)."""
    try:
        h = header(ws, run_id)
    except (OSError, ValueError):
        return run_id
    return label(h.get("spec") or {}, (h.get("meta") or {}).get("reward"), run_id)


def label(spec: dict[str, Any], reward: str | None, run_id: str) -> str:
    parts = [f"{spec.get('policy', '?')}"
             + (f" β={spec.get('beta'):g}" if spec.get("policy") == "ucb_beta" else ""),
             f"budget {spec.get('budget', 0):g}", f"top-p {spec.get('top_p', 0):g}",
             f"batch {spec.get('draw_batch', '?')}", f"seed {spec.get('seed', '?')}"]
    if reward:
        parts.append(reward)
    try:
        when = datetime.strptime(run_id[4:19], "%Y%m%d-%H%M%S")
        parts.append(when.strftime("%m-%d %H:%M:%S"))
    except ValueError:
        parts.append(run_id)
    return " · ".join(parts)


def current_id(ws: Workspace) -> str | None:
    ids = run_ids(ws)
    cur = ws.meta().get("current_run")
    if cur in ids:
        return cur
    return ids[0] if ids else None


def _log_size(run: selection.SelectionRun) -> int:
    return run.log_path.stat().st_size if run.log_path and run.log_path.exists() else 0


def _remember(ws: Workspace, run_id: str, run: selection.SelectionRun) -> None:
    st.session_state.setdefault(_SESSION, {})[(str(ws.root), run_id)] = (run, _log_size(run))


def get(ws: Workspace, run_id: str) -> selection.SelectionRun:
    """The live run, reopened from its log when it is not in this session or has moved on."""
    cache = st.session_state.setdefault(_SESSION, {})
    key = (str(ws.root), run_id)
    if key in cache:
        run, size = cache[key]
        if _log_size(run) == size:
            return run
    clustering, source = run_inputs(ws, run_id)
    if clustering not in state.cluster_names(ws):
        raise FileNotFoundError(f"run {run_id} used clustering {clustering!r}, which is gone")
    clusters = state.load_clusters(ws, clustering)
    labels = np.asarray(clusters.labels)
    try:
        oracle = make_oracle(ws, source, len(labels))
    except Exception:  # noqa: BLE001 - read-only: the run shows, but cannot draw
        oracle = None
    run = runs.open_run(ws, run_id, oracle, labels=labels)
    _remember(ws, run_id, run)
    return run


def run_inputs(ws: Workspace, run_id: str) -> tuple[str | None, str]:
    """(clustering name, reward source) a run was made with."""
    meta = runs.read_meta(ws, run_id)
    return meta.clustering or state.current_clusters_name(ws), meta.reward


def step(ws: Workspace, run_id: str, n: int = 1) -> list[selection.RoundRecord]:
    run = get(ws, run_id)
    out = []
    for _ in range(int(n)):
        if run.done:
            break
        out.append(run.step())
    _remember(ws, run_id, run)
    return out


def preview(run: selection.SelectionRun) -> dict[str, Any] | None:
    """What the next round will do and why (the same decision `step()` will take)."""
    if run.done:
        return None
    if run.next_round == 0:
        counts = run.cold_start_counts(run._banned_mask())
        return {"arm": None, "values": None,
                "sentence": f"Next: the cold start draws {int(counts.sum())} rows: "
                            f"max(floor(|C_k|·{run.spec.cold_start:g}), 1) from each of "
                            f"{int((counts > 0).sum())} clusters."}
    decision = run.policy.decide(run.stats(), policies.policy_rng(run.spec.seed, run.next_round))
    m = int(min(run.spec.draw_batch, run.budget_total - run.budget_used,
                run.remaining[decision.arm]))
    return {"arm": int(decision.arm), "values": decision.values,
            "sentence": f"Next: {decision.sentence} It will draw {m} rows."}


def arm_names(run: selection.SelectionRun, names: dict[int, str]) -> list[str]:
    """A name per arm: its cluster's, and for an arm made by a split (split_hot) which arm
    it came from."""
    out = []
    for a in range(run.K):
        c = int(run.arm_cluster[a])
        name = names.get(c, str(c))
        out.append(name if a < run.K0 else f"{name} (split of arm {int(run.arm_parent[a])})")
    return out


def history(run: selection.SelectionRun) -> dict[str, Any]:
    """Per-round arrays for the history charts (arms made by a later split: NaN before)."""
    recs = run.records
    rounds = [r.round for r in recs]
    values = np.full((len(recs), run.K), np.nan)
    for i, r in enumerate(recs):
        values[i, :len(r.value)] = r.value
    per_round = [float(np.nansum(r.rewards)) if len(r.rewards) else 0.0 for r in recs]
    return {"rounds": rounds, "values": values, "cum_reward": list(np.cumsum(per_round)),
            "budget_used": [r.budget_used for r in recs]}


def arm_table(run: selection.SelectionRun, names: dict[int, str], values: Any,
              next_arm: int | None, ledger_state: Any) -> pd.DataFrame:
    """One row per arm: its state (next / open / exhausted / split / banned), pulls, mean
    (and the predicted mean of its next draws, when the run predicts), std, the policy's
    value and the curation marks of its cluster's rows."""
    stats = run.stats()
    k = run.K
    by_cluster = marks.cluster_status(run.K0, run.labels, ledger_state)
    split = set(int(p) for p in run.arm_parent if p >= 0)
    state_ = ["banned" if stats.banned[a] else "split" if a in split
              else "exhausted" if stats.exhausted[a]
              else "next" if a == next_arm else "open" for a in range(k)]
    value = np.asarray(values if values is not None else np.full(k, np.nan), dtype=np.float64)
    # under draw_order "predicted", ucb_beta's mean is the model's for the next draws
    predicted = {} if stats.expected is None else {"predicted next": stats.expected}
    return pd.DataFrame({
        "arm": np.arange(k), "label": arm_names(run, names),
        "state": state_, "size": run.sizes, "pulls": stats.drawn, "n scored": stats.n,
        "mean": stats.mean, **predicted, "std": stats.std,
        "value": np.where(np.isfinite(value), value, np.nan),
        "remaining": stats.remaining, "exhausted": stats.exhausted, "banned": stats.banned,
        "curation": [by_cluster[c] for c in run.arm_cluster]})


def drawn_table(run: selection.SelectionRun, rows: Any, pool: Any, ledger_state: Any,
                best: dict[int, str] | None = None) -> pd.DataFrame:
    """The rows of a round: cluster, score, curation status, with `best` (row -> subtask) the
    subtask each serves best, and with the pool their text."""
    from . import subtask_view, ui

    rows = [int(r) for r in rows]
    extra = {"cluster": run.labels[rows], "score": run.scores[rows],
             "status": marks.row_status(rows, run.labels, ledger_state)}
    if best is not None:
        extra[subtask_view.COLUMN] = subtask_view.best_column(rows, run.scores, best)
    if pool is None:
        return pd.DataFrame({"row": rows, **extra})
    df = ui.preview_frame(pool.frame(rows), None, extra)
    front = ["row", "id", "score", *([subtask_view.COLUMN] if best is not None else []),
             "status"]  # before the long texts, where a narrow page still shows them
    return df[front + [c for c in df.columns if c not in front]]
