"""The runs of a workspace (`W/runs/<run_id>/`): start one, and reopen one.

`open_run(workspace, run_id)` is the one way the app, every CLI command, `Pipeline`, compare,
export and race reopen a run: it reads the log header's `RunMeta`, loads the clustering it
names and the curation ledger for that clustering, and replays the log. `new_run` is the one
way they start one, so every run records the same meta and every entry point can reopen every
other's runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from clusterucb_core.clustering.clusterset import cluster_rows, load_clusters
from clusterucb_core.config import SelectionSpec, from_dict
from clusterucb_core.selection.curation import Ledger
from clusterucb_core.selection.run import SelectionRun
from clusterucb_core.selection.runlog import LOG_NAME, RunLog, RunMeta
from clusterucb_core.workspace import Workspace, check_name

if TYPE_CHECKING:  # pragma: no cover
    from clusterucb_core.config import SelectionSpec
    from clusterucb_core.selection.oracle import Oracle

# an oracle, or a function that makes one from the run's meta and its number of rows
OracleSource = Union["Oracle", Callable[[RunMeta, int], Any], None]


def _workspace(workspace: Workspace | str | Path) -> Workspace:
    if isinstance(workspace, Workspace):
        return workspace
    return Workspace.open(workspace, create=False)


def run_ids(workspace: Workspace | str | Path) -> list[str]:
    """Runs with a log, newest first."""
    ws = _workspace(workspace)
    ids = [r for r in ws.list("runs") if (ws.runs(r) / LOG_NAME).exists()]
    return sorted(ids, key=lambda r: (ws.runs(r) / LOG_NAME).stat().st_mtime, reverse=True)


def run_log(workspace: Workspace | str | Path, run_id: str) -> RunLog:
    """The log of an existing run (FileNotFoundError naming the runs there are)."""
    ws = _workspace(workspace)
    log = RunLog(ws.runs(check_name(run_id, "run id")))
    if not log.exists():
        raise FileNotFoundError(f"no run {run_id!r} in {ws.root} "
                                f"(have: {', '.join(run_ids(ws)) or 'none'})")
    return log


def read_meta(workspace: Workspace | str | Path, run_id: str) -> RunMeta:
    return run_log(workspace, run_id).meta()


def _clusters(ws: Workspace, meta: RunMeta, run_id: str):

    if not meta.clustering:
        raise ValueError(f"run {run_id} does not record its clustering; pass labels")
    return load_clusters(ws, meta.clustering)


def _features(ws: Workspace, cs: Any, spec: SelectionSpec) -> np.ndarray | None:
    """The clustering's conditioned features when the run's settings draw by them."""
    if not spec.needs_features:
        return None

    return cluster_rows(ws, cs)


def _ledger(ws: Workspace, clustering: str | None) -> Any:

    return Ledger(ws.ledger_path, clustering=clustering)


def _oracle(oracle: OracleSource, meta: RunMeta, n_rows: int) -> Any:
    if callable(oracle) and not hasattr(oracle, "score"):
        return oracle(meta, n_rows)
    return oracle


def open_run(workspace: Workspace | str | Path, run_id: str, oracle: OracleSource = None, *,
             labels: np.ndarray | None = None, ledger: bool = True) -> SelectionRun:
    """Reopen a saved run. oracle: what scores further rounds (None: read-only; a function
    gets the run's meta and row count). labels: default the clustering the run records.
    ledger: False gives the plain top-p of the scored rows, without the workspace's
    pins, rejections and bans."""

    ws = _workspace(workspace)
    log = run_log(ws, run_id)
    header = log.header()
    meta = RunMeta.from_dict(header.get("meta"))
    spec = from_dict(SelectionSpec, header["spec"])
    cs = _clusters(ws, meta, run_id) if labels is None or spec.needs_features else None
    if labels is None:
        labels = cs.labels
    lg = _ledger(ws, meta.clustering) if ledger else None
    return SelectionRun.open(log.folder, np.asarray(labels), _oracle(oracle, meta, len(labels)),
                             lg, features=_features(ws, cs, spec))


def new_run(workspace: Workspace | str | Path, run_id: str, spec: SelectionSpec,
            meta: RunMeta, oracle: OracleSource) -> SelectionRun:
    """Start a run over the clustering `meta.clustering`. If another process started the same
    run id a moment before, that run is reopened instead when its settings are the same."""
    ws = _workspace(workspace)
    check_name(run_id, "run id")
    cs = _clusters(ws, meta, run_id)
    labels = np.asarray(cs.labels)
    # made once: a writer that loses the race reopens the winner's run with the same oracle
    # (a lazy one holds a model)
    made = _oracle(oracle, meta, len(labels))
    try:  # the log is created under the run's writer lock: one creator wins
        return SelectionRun(labels, made, spec, ws.runs(run_id),
                            _ledger(ws, meta.clustering), n_clusters=cs.k, meta=meta,
                            features=_features(ws, cs, spec))
    except FileExistsError:
        theirs = read_meta(ws, run_id)
        same = (theirs.reward, theirs.scores_path) == (meta.reward, meta.scores_path)
        run = open_run(ws, run_id, made if same else oracle)
    if run.spec != spec or run.meta.clustering != meta.clustering:
        raise FileExistsError(f"run {run_id!r} already exists with other settings; "
                              "choose another run id")
    return run
