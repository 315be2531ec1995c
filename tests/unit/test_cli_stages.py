"""The CLI stage by stage (issue 23, items 10-14): `features`, `cluster`, `select` and `export`
as separate commands through the real entry point, on a new workspace and on a copy of the
shipped demo workspace; each stage reads what the workspace recorded, the way `run` does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from clusterucb_core.cli import main
from clusterucb_core.config import SelectionSpec
from clusterucb_core.selection import runlog
from clusterucb_core.selection.oracle import TableOracle
from clusterucb_core.selection.runlog import RunLog, RunMeta
from clusterucb_core.selection.runs import new_run


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """One command, as a shell would run it: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def target_file(tmp_path_factory, make_chats) -> Path:
    path = tmp_path_factory.mktemp("target") / "target.jsonl"
    with open(path, "w") as fh:
        for i, msgs in enumerate(make_chats(6, seed=7)):
            fh.write(json.dumps({"subtask": "ab"[i % 2], "messages": msgs}) + "\n")
    return path


def test_a_new_workspace_built_stage_by_stage_exports(tmp_path, capsys, tiny_pool_file,
                                                      target_file, tiny_model_dir):
    """Item 10: `features --pool` records the pool, so `export` finds it; item 14: a run on
    the user's own score table says so."""
    ws = tmp_path / "ws"
    code, out, err = cli(capsys, "features", "-w", ws, "--pool", tiny_pool_file, "--model",
                         tiny_model_dir, "--max-length", 64, "--device", "cpu",
                         "--lora-rank", 2, "--lora-alpha", 4, "--dim", 64, "--batch-size", 8,
                         "--target", target_file)
    assert code == 0, err
    meta = json.loads((ws / "workspace.json").read_text())
    assert Path(meta["pool"]["path"]) == tiny_pool_file.resolve()
    assert meta["pool"]["n_rows"] == 40

    code, out, err = cli(capsys, "cluster", "-w", ws, "--k", 3)
    assert code == 0, err

    scores = np.random.default_rng(0).normal(size=40)
    table = tmp_path / "mine.npy"
    np.save(table, scores)
    code, out, err = cli(capsys, "select", "-w", ws, "--scores", table, "--run-id", "c",
                         "--budget", 0.5, "--cold-start", 0.1, "--top-p", 0.1,
                         "--draw-batch", 4)
    assert code == 0, err
    assert "against exhaustive" not in out
    assert "against the whole score table mine.npy" in out
    hint = next(line for line in err.splitlines() if line.startswith("export with:"))
    assert hint.split(": ", 1)[1].split()[1:] == ["export", "--workspace", str(ws.resolve()),
                                                  "--run", "c"]

    code, out, err = cli(capsys, "export", "-w", ws, "--run", "c")  # the command select gave
    assert code == 0, err
    rows = json.loads((ws / "exports" / "c" / "manifest.json").read_text())["selected"]["rows"]
    lines = tiny_pool_file.read_bytes().splitlines()
    exported = (ws / "exports" / "c" / "selected.jsonl").read_bytes().splitlines()
    assert exported == [lines[r] for r in sorted(rows)] and len(rows) == 4


@pytest.fixture()
def demo_copy(tmp_path):
    import shutil

    shipped = Path(__file__).resolve().parents[2] / "sample_data" / "demo_workspace"
    if not (shipped / "workspace.json").exists():
        pytest.skip("sample_data/demo_workspace is missing (python scripts/make_demo_workspace.py)")
    ws = tmp_path / "W"
    shutil.copytree(shipped, ws)
    return ws


def test_a_copy_of_the_demo_workspace_stage_by_stage(demo_copy, capsys, demo_model_dir):
    """Items 10 and 11: every stage of a copy of the shipped demo workspace reads the demo's
    settings and the warm-up `run` made; select then export works."""
    ws = demo_copy
    shipped_labels = np.load(next((ws / "clusters").glob("*/labels.npy")))

    # the reward gradients: the shipped store, at the warm-up's last checkpoint, 256 tokens
    code, out, err = cli(capsys, "features", "-w", ws, "--rows", "0:8")
    assert code == 0, err
    assert "max_length 256" in out
    assert "checkpoints/warmup-7d52d621/ckpt-2" in out, out
    store = ws.resolve() / "features" / "gradient-adam-ckpt-2-countsketch-d1024"
    assert f"store {store}: 3372/3372 rows done" in out  # reused, nothing recomputed
    # the cluster features: the shipped hidden states (first block, answer-pooled)
    code, out, err = cli(capsys, "features", "-w", ws, "--kind", "hidden", "--rows", "0:8")
    assert code == 0, err
    assert "hidden-base-poolinganswer-layers1" in out
    assert sorted(p.name for p in (ws / "features").iterdir()) == [
        "gradient-adam-ckpt-2-countsketch-d1024", "hidden-base-poolinganswer-layers1"]

    # two stores: `cluster` takes the recorded cluster features and settings, as `run` does
    code, out, err = cli(capsys, "cluster", "-w", ws)
    assert code == 0, err
    names = sorted(p.name for p in (ws / "clusters").iterdir())
    assert names == ["hidden-base-poolinganswer-layers1-center-ksize8"]
    assert "K: K=21 so that each cluster gets about 8 cold-start draws" in err
    np.testing.assert_array_equal(np.load(ws / "clusters" / names[0] / "labels.npy"),
                                  shipped_labels)

    code, out, err = cli(capsys, "select", "-w", ws, "--run-id", "c")
    assert code == 0, err
    assert "against exhaustive scores" in out
    code, out, err = cli(capsys, "export", "-w", ws, "--run", "c")
    assert code == 0, err
    exported = (ws / "exports" / "c" / "selected.jsonl").read_bytes().splitlines()
    assert len(exported) == int(3372 * 0.05)


def test_the_issue_commands_on_a_demo_copy_as_subprocesses(demo_copy):
    """Item 10 as reported: `cp -r sample_data/demo_workspace W; clusterucb select -w W
    --run-id c; clusterucb export -w W --run c`, each its own process."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root))

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "clusterucb_core.cli", *argv],
                              cwd=demo_copy.parent, env=env, capture_output=True, text=True)

    sel = run("select", "-w", "W", "--run-id", "c")
    assert sel.returncode == 0, sel.stderr
    hint = next(line for line in sel.stderr.splitlines() if line.startswith("export with:"))
    exp = run(*hint.split(": ", 1)[1].split()[1:])  # the command select printed
    assert exp.returncode == 0, exp.stderr
    assert f"exported run c (finished): {int(3372 * 0.05)} rows" in exp.stdout


# ----------------------------------------------------------------------------- small runs
N = 64
SPEC = SelectionSpec(policy="ucb_beta", cold_start=0.05, budget=0.5, top_p=0.1, draw_batch=4,
                     seed=1, draw_order="random")


def _small_workspace(tmp_path: Path):
    from clusterucb_core.clustering.clusterset import save_clusters
    from clusterucb_core.clustering.kmeans import KMeansResult
    from clusterucb_core.workspace import Workspace

    ws = Workspace.open(tmp_path / "ws")
    labels = np.arange(N) % 4
    save_clusters(ws, "k4", KMeansResult(labels=labels, centroids=np.eye(4, dtype=np.float32),
                                         inertia=0.0, n_iter=1), features_fingerprint="none")
    scores = np.random.default_rng(2).normal(size=N)
    table = tmp_path / "scores.npy"
    np.save(table, scores)
    return ws, table, scores


def test_a_writer_that_waits_too_long_gets_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    """Item 12: RunLocked from the CLI is one `error:` line, exit 2, not a traceback."""
    ws, table, _ = _small_workspace(tmp_path)
    code, out, err = cli(capsys, "select", "-w", ws.root, "--scores", table, "--run-id", "r",
                         "--rounds", 1)
    assert code == 0
    # no pool is recorded here: the export hint asks for one instead of giving a command
    # that fails
    assert f"export --workspace {ws.root} --run r --pool POOL (no pool is recorded" in err
    monkeypatch.setattr(runlog, "LOCK_WAIT_S", 0.0)  # the wait ran out
    with RunLog(ws.runs("r")).writer():  # another process is stepping the run
        code, out, err = cli(capsys, "select", "-w", ws.root, "--run-id", "r", "--rounds", 1)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: run r is being stepped by pid "
                                                   f"{os.getpid()}")


def test_a_writer_that_loses_the_create_race_builds_its_oracle_once(tmp_path):
    """Item 14: the loser reopens the winner's run with the oracle it already made (a lazy
    oracle loads the pipeline and its model)."""
    ws, table, scores = _small_workspace(tmp_path)
    meta = RunMeta(clustering="k4", reward="table", scores_path=str(table))
    new_run(ws, "r", SPEC, meta, TableOracle(scores))  # the winner
    made = []

    def oracle(run_meta, n_rows):
        made.append(n_rows)
        return TableOracle(scores)

    run = new_run(ws, "r", SPEC, meta, oracle)  # the loser: the log exists
    assert made == [N]
    assert run.step().round == 0


def test_run_names_the_rows_it_dropped(tmp_path, make_chats, target_file, tiny_model_dir):
    """Item 13: `run` prints the dropped count apart from the rows kept with warnings, with
    their first line numbers and where every problem is listed; the summary records them."""
    from clusterucb_core.config import (
        ClusterSpec,
        FeatureSpec,
        LoraSpec,
        ModelSpec,
        RunConfig,
    )
    from clusterucb_core.pipeline import Pipeline

    lines = [json.dumps({"id": f"r{i}", "messages": m}) for i, m in enumerate(make_chats(30))]
    lines[2] = '{"id": "broken", "messages": ['  # line 3: bad JSON, dropped
    lines[6] = json.dumps({"id": "r6", "text": "no chat"})  # line 7: no messages, dropped
    lines[9] = json.dumps({"id": "r1", "messages": make_chats(30)[9]})  # line 10: kept, warned
    pool = tmp_path / "damaged.jsonl"
    pool.write_text("\n".join(lines) + "\n")
    cfg = RunConfig(workspace=str(tmp_path / "ws"), pool=str(pool), target=str(target_file),
                    run_id="r", use_warmup=False, make_map=False,
                    model=ModelSpec(name_or_path=str(tiny_model_dir), max_length=64,
                                    device="cpu"),
                    lora=LoraSpec(rank=2, alpha=4),
                    cluster_features=FeatureSpec(kind="hidden", batch_size=8),
                    reward_features=FeatureSpec(kind="gradient", mode="sgd", dim=32,
                                                batch_size=8),
                    clusters=ClusterSpec(k=2),
                    selection=SelectionSpec(cold_start=0.1, budget=0.3, top_p=0.1,
                                            draw_batch=4, draw_order="random"))
    said: list[str] = []
    summary = Pipeline(cfg, log=said.append).run_all()
    report = tmp_path / "ws" / "pool_reports"
    line = next(m for m in said if m.startswith("pool: "))
    assert "28 rows" in line
    assert "2 row(s) dropped (line 3, 7), 1 kept with warnings; every problem: " \
        f"{next(report.iterdir())}" in line
    problems = summary["pool_problems"]
    assert problems == {"dropped_rows": 2, "dropped_lines_first": [3, 7],
                        "kept_with_warnings": 1, "report": str(next(report.iterdir()))}
    text = Path(problems["report"]).read_text()
    assert "line 3: error" in text and "line 7: error" in text and "line 10: warning" in text


def test_a_checkout_finds_its_demo_without_the_installed_data_package(monkeypatch):
    """Run from a checkout on PYTHONPATH (no editable install maps `clusterucb_demo`), the
    demo is the checkout's sample_data/ (the stage commands read its settings from there)."""
    import importlib.util

    import clusterucb_core.data.demo as demo_data

    monkeypatch.delenv(demo_data.ENV, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert demo_data.find_demo_dir() == Path(__file__).resolve().parents[2] / "sample_data"
