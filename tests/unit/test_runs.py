"""One run record: `RunLog` (header, append, torn lines, the writer lock) and `open_run`, the
one way every entry point reopens a run (issue 15, bugs 1 and 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from clusterucb_core.config import SelectionSpec
from clusterucb_core.selection.oracle import TableOracle
from clusterucb_core.selection.run import SelectionRun
from clusterucb_core.selection.runlog import RunLocked, RunLog, RunMeta
from clusterucb_core.selection.runs import new_run, open_run, read_meta

ROOT = Path(__file__).resolve().parents[2]
N = 400
SPEC = SelectionSpec(policy="ucb_beta", cold_start=0.02, budget=1.0, top_p=0.1, draw_batch=3,
                     seed=5)


def _cli(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "clusterucb_core.cli", *argv], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _workspace(tmp_path: Path):
    from clusterucb_core.clustering.clusterset import save_clusters
    from clusterucb_core.clustering.kmeans import KMeansResult
    from clusterucb_core.workspace import Workspace

    ws = Workspace.open(tmp_path / "ws")
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"question {i}"},
        {"role": "assistant", "content": f"answer {i}"}]}) + "\n" for i in range(N)))
    ws.update_meta(pool={"path": str(pool), "format": "auto", "shape": "auto"})
    from clusterucb_core.features.store import FeatureStore

    labels = np.arange(N) % 8
    km = KMeansResult(labels=labels, centroids=np.eye(8, dtype=np.float32), inertia=0.0,
                      n_iter=1)
    # the features the clustering was made from: runs that draw by them read them
    rng = np.random.default_rng(1)
    store = FeatureStore.create_or_open(ws.features("hidden-test"), N, 8, {"test": 1},
                                        "float32")
    store.write(np.arange(N), (np.eye(8)[labels] + 0.3 * rng.normal(size=(N, 8)))
                .astype(np.float32))
    save_clusters(ws, "k8", km, features_fingerprint=store.fingerprint,
                  features_name="hidden-test")
    scores = np.random.default_rng(0).normal(labels * 0.1, 0.05)
    (ws.root / "scores").mkdir()
    np.save(ws.root / "scores" / "exhaustive.npy", scores)
    # a target and the identity Pipeline.exhaustive_scores writes beside its table: the app
    # uses the table only for this pool and target
    from clusterucb_core.data.targets import load_target

    target = tmp_path / "target.jsonl"
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    target.write_text(json.dumps({"subtask": "s", "messages": chat}) + "\n")
    (ws.root / "scores" / "exhaustive.json").write_text(json.dumps(
        {"identity": {"stores": [], "target": load_target(target).fingerprint,
                      "weights": None}, "n_rows": N}))
    ws.update_meta(target={"path": str(target), "kind": "auto", "trim": False})
    return ws, labels, scores


def _check_log(folder: Path) -> list[dict]:
    """Rounds 0..n in order, every row drawn at most once, and the log reopens."""
    _, rounds, _ = RunLog(folder).read()
    assert [r["round"] for r in rounds] == list(range(len(rounds)))
    rows = [x for r in rounds for x in r["rows"]]
    assert len(rows) == len(set(rows)), "a row was drawn twice"
    return rounds


def test_writers_racing_on_one_run_leave_a_valid_log(tmp_path):
    """Bug 6: four `clusterucb select` on one run at once interleaved rounds, drew rows twice
    and left a log nothing could reopen. Now each round is played under the run's lock after
    catching up with the others, so the log is the one a single writer would have written."""
    ws, labels, scores = _workspace(tmp_path)
    argv = [sys.executable, "-m", "clusterucb_core.cli", "select", "-w", str(ws.root),
            "--clusters", "k8", "--run-id", "c", "--budget", "1.0", "--top-p", "0.1",
            "--cold-start", "0.02", "--draw-batch", "3", "--seed", "5", "--rounds", "30"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    rounds = _check_log(ws.runs("c"))
    assert len(rounds) == 120  # four writers x 30 rounds, none lost, none doubled
    # the same log as one writer playing 120 rounds (the CLI's default draw order reads the
    # clustering's features: each writer refits its reward model as it catches up)
    from clusterucb_core.clustering.clusterset import cluster_rows, load_clusters

    spec = replace(SPEC, draw_order="predicted")
    assert open_run(ws, "c").spec == spec
    alone = SelectionRun(labels, TableOracle(scores), spec, tmp_path / "alone",
                         features=cluster_rows(ws, load_clusters(ws, "k8")))
    alone.run_to_end(max_rounds=120)
    _, want, _ = RunLog(tmp_path / "alone").read()
    strip = lambda rs: [{k: v for k, v in r.items() if k != "ts"} for r in rs]  # noqa: E731
    assert strip(rounds) == strip(want)
    assert open_run(ws, "c").next_round == 120


def test_a_second_writer_is_told_who_holds_the_run(tmp_path):
    ws, labels, scores = _workspace(tmp_path)
    run = new_run(ws, "r", SPEC, RunMeta(clustering="k8", reward="exhaustive"),
                  TableOracle(scores))
    run.step()
    other = open_run(ws, "r", TableOracle(scores))
    other.lock_timeout = 0.0
    with RunLog(ws.runs("r")).writer():
        with pytest.raises(RunLocked, match=rf"pid {os.getpid()} on .*\(.*\)"):
            other.step()
    assert other.step().round == 1  # the lock is free again


def test_a_reader_ignores_a_torn_line_and_only_a_writer_cuts_it(tmp_path):
    ws, labels, scores = _workspace(tmp_path)
    run = new_run(ws, "t", SPEC, RunMeta(clustering="k8", reward="exhaustive"),
                  TableOracle(scores))
    run.step()
    run.step()
    log = RunLog(ws.runs("t"))
    with open(log.path, "ab") as fh:
        fh.write(b'{"round": 2, "kind": "bandit", "ro')  # a writer mid-line (or a crash)
    size = log.size()
    reader = open_run(ws, "t")
    assert reader.next_round == 2 and log.size() == size  # read, not cut
    writer = open_run(ws, "t", TableOracle(scores))
    assert writer.step().round == 2
    assert len(_check_log(ws.runs("t"))) == 3


def test_legacy_meta_key_clusters_is_read_as_clustering():
    meta = RunMeta.from_dict({"clusters": "k20", "config": {"a": 1}, "note": "x"})
    assert meta.clustering == "k20" and meta.reward == "lazy" and meta.extra == {"note": "x"}
    assert RunMeta.from_dict(meta.to_dict()) == meta


# ------------------------------------------------------------------ every entry point


def _export_everywhere(ws, run_id: str, tmp_path: Path) -> None:
    """Reopen and export one run through every entry point that reads runs."""
    from clusterucb_core.export.files import verify_export
    from clusterucb_core.teach.race import compare_runs, load_run

    run = open_run(ws, run_id)
    assert run.meta.clustering
    out = tmp_path / f"export-{run_id}"
    _cli("export", "-w", str(ws.root), "--run", run_id, "--out", str(out), "--no-dataset")
    assert verify_export(out) == []
    assert load_run(ws, run_id).selected.tolist() == run.selected().tolist()
    assert compare_runs(ws, run_id, run_id).overlap["jaccard"] == 1.0


def test_cli_runs_reopen_and_export_everywhere(tmp_path):
    ws, labels, scores = _workspace(tmp_path)
    _cli("select", "-w", str(ws.root), "--run-id", "cli", "--budget", "0.3", "--top-p", "0.1")
    assert read_meta(ws, "cli").reward == "exhaustive"
    _export_everywhere(ws, "cli", tmp_path)


def test_pipeline_runs_export_through_the_cli(demo_workspace_copy, tmp_path):
    """Bug 1: `clusterucb demo` then `clusterucb export` failed with "run ucb does not record
    its clustering": Pipeline wrote the meta key `clusters`, export read `clustering`."""
    from clusterucb_core.cli.demo import DEMO_CONFIG
    from clusterucb_core.config import load_config
    from clusterucb_core.pipeline import Pipeline
    from clusterucb_core.workspace import Workspace

    pipe = Pipeline(replace(load_config(DEMO_CONFIG), workspace=str(demo_workspace_copy)), log=None)
    run = pipe.selection("from-pipeline")
    for _ in range(3):
        run.step()
    ws = Workspace.open(demo_workspace_copy, create=False)
    _export_everywhere(ws, "from-pipeline", tmp_path)
    from clusterucb_app import rounds

    assert rounds.get(ws, "from-pipeline").next_round == 3  # the app reopens it too
    # and a run made by the CLI reopens in Pipeline (its own settings, the lazy oracle)
    _cli("select", "-w", str(demo_workspace_copy), "--run-id", "from-cli", "--rounds", "2",
         "--budget", "0.3", "--top-p", "0.05")
    again = pipe.selection("from-cli")
    assert again.next_round == 2 and again.spec.budget == 0.3


def test_app_runs_reopen_and_export_everywhere(tmp_path):
    """The UCB Rounds page starts runs through `clusterucb_app.rounds.create` (new_run)."""
    from clusterucb_app import rounds

    ws, labels, scores = _workspace(tmp_path)
    run_id = rounds.create(ws, replace(SPEC, budget=0.3), "k8", rounds.REWARD_EXHAUSTIVE)
    assert len(rounds.step(ws, run_id, 4)) == 4
    assert read_meta(ws, run_id).reward == "exhaustive"
    _export_everywhere(ws, run_id, tmp_path)
    # and a CLI run continues in the app
    _cli("select", "-w", str(ws.root), "--run-id", "cli", "--rounds", "2", "--budget", "0.3",
         "--top-p", "0.1")
    assert rounds.step(ws, "cli", 1)[0].round == 2


def test_cli_draws_at_random_for_clusters_without_features(tmp_path):
    """Clusters made elsewhere (no feature store recorded) cannot order draws by features:
    the default falls back to the paper's random draws and says so; asking for predicted
    draws there is a one-line error."""
    from clusterucb_core.clustering.clusterset import save_clusters
    from clusterucb_core.clustering.kmeans import KMeansResult

    ws, labels, _ = _workspace(tmp_path)
    save_clusters(ws, "bare", KMeansResult(labels=labels, centroids=np.eye(8, dtype=np.float32),
                                           inertia=0.0, n_iter=1), features_fingerprint=None)
    out = _cli("select", "-w", str(ws.root), "--clusters", "bare", "--run-id", "r",
               "--rounds", "2")
    assert "draw at random" in out.stdout and open_run(ws, "r").spec.draw_order == "random"
    bad = _cli("select", "-w", str(ws.root), "--clusters", "bare", "--run-id", "p",
               "--draw-order", "predicted", "--rounds", "1", check=False)
    assert bad.returncode != 0 and "record their feature store" in bad.stderr


def test_cluster_rows_are_unit_rows_filled_chunk_by_chunk_and_used_uncopied(tmp_path,
                                                                           monkeypatch):
    """A run reads its clustering's features as unit rows (zeros where a row has none), filled
    chunk by chunk into one array that SelectionRun then uses without a copy."""
    from clusterucb_core.clustering.clusterset import cluster_rows, load_clusters, save_clusters
    from clusterucb_core.clustering.kmeans import KMeansResult
    from clusterucb_core.features import rowsource
    from clusterucb_core.features.store import FeatureStore
    from clusterucb_core.selection.run import unit_rows

    ws, labels, scores = _workspace(tmp_path)
    raw = 2.0 + np.random.default_rng(3).normal(size=(N, 8)).astype(np.float32)
    raw[5] = np.nan  # a row without features
    store = FeatureStore.create_or_open(ws.features("gap"), N, 8, {"gap": 1}, "float32")
    store.write(np.arange(N), raw)
    save_clusters(ws, "gap", KMeansResult(labels=labels, centroids=np.eye(8, dtype=np.float32),
                                          inertia=0.0, n_iter=1),
                  features_fingerprint=store.fingerprint, features_name="gap")
    monkeypatch.setattr(rowsource, "chunk_rows_for", lambda dim: 64)  # 7 chunks
    F = cluster_rows(ws, load_clusters(ws, "gap"))
    ok = np.arange(N) != 5
    np.testing.assert_allclose(F[ok], raw[ok] / np.linalg.norm(raw[ok], axis=1, keepdims=True),
                               atol=1e-6)
    assert (F[5] == 0).all()
    run = SelectionRun(labels, TableOracle(scores), replace(SPEC, draw_order="predicted"),
                       features=F)
    assert run.features is F and unit_rows(F) is F
    X = np.array([[3.0, 4.0], [np.nan, 1.0], [0.0, 0.0]], dtype=np.float32)
    U = unit_rows(X)
    assert U is not X and np.isnan(X[1, 0])  # the caller's array is left as it was
    np.testing.assert_allclose(U, [[0.6, 0.8], [0.0, 1.0], [0.0, 0.0]])
