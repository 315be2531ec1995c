"""Exports: original records byte for byte, LESS files, datasets folder, manifest, atomicity."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clusterucb_core.config import SelectionSpec
from clusterucb_core.data.load import load_pool
from clusterucb_core.export import files as ex
from clusterucb_core.selection.curation import Ledger
from clusterucb_core.selection.oracle import TableOracle
from clusterucb_core.selection.run import SelectionRun

N = 40


def _msgs(i: int) -> list[dict]:
    return [{"role": "user", "content": f"question {i} — naïve “quotes”, 😀"},
            {"role": "assistant", "content": f"answer {i}\nline two"}]


def jsonl_records() -> list[bytes]:
    """Record lines as a user might write them: odd spacing, key order, escapes."""
    out = []
    for i in range(N):
        if i % 3 == 0:  # spacing and escaping json.dumps would not reproduce
            line = '{ "id" : "r' + str(i) + '",  "messages": ' + json.dumps(_msgs(i)) + ' }'
        else:
            line = json.dumps({"messages": _msgs(i), "id": f"r{i}", "dataset": "src"},
                              ensure_ascii=False)
        out.append(line.encode())
    return out


def write_jsonl(path: Path, newline: bytes = b"\n") -> list[bytes]:
    recs = jsonl_records()
    lines = recs[:5] + [b"{not json"] + [b""] + recs[5:]  # a bad line and a blank one
    path.write_bytes(newline.join(lines) + newline)
    return lines


def make_run(n_rows: int, seed: int = 0, ledger=None, log_dir=None, k: int = 4):
    rng = np.random.default_rng(seed)
    labels = np.arange(n_rows) % k
    scores = labels * 0.1 + 0.05 * rng.standard_normal(n_rows)
    scores[3] = np.nan  # a flagged row
    spec = SelectionSpec(cold_start=0.1, budget=0.5, top_p=0.2, draw_batch=3, seed=seed)
    run = SelectionRun(labels, TableOracle(scores), spec, log_dir=log_dir, ledger=ledger)
    return run, labels, scores


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_jsonl_export_is_byte_identical_and_complete(tmp_path, newline):
    src = tmp_path / "pool.jsonl"
    lines = write_jsonl(src, newline)
    pool = load_pool(src)
    assert len(pool.table) == N
    led = Ledger(tmp_path / "ledger.jsonl")
    run, labels, scores = make_run(N, ledger=led, log_dir=tmp_path / "run")
    run.step()
    run.step()
    led.ban(1)  # mid-run: the manifest must still reproduce the selection
    run.run_to_end()
    drawn = np.flatnonzero(run.round_drawn >= 0)
    led.reject([int(run.selected()[0])])
    led.pin([int(np.flatnonzero(run.round_drawn < 0)[0])])
    res = run.result()
    out = ex.export_selection(tmp_path / "exp", pool, res, run_id="r1", clustering="k4",
                              cluster_names={0: "zero"}, oracle_info=run.oracle.describe(),
                              ledger_state=led.state(), log_path=run.log_path,
                              exhaustive=scores)
    # selected.jsonl: the user's lines, byte for byte, in pool order
    pool_order = np.sort(res.rows)
    line_no = pool.table["line_no"].to_numpy()
    expect = b"".join(lines[line_no[r] - 1] + newline for r in pool_order)
    assert (out / "selected.jsonl").read_bytes() == expect
    # LESS: sorted.csv indexes the file's lines; top_p file holds the original lines, best first
    sorted_lines = (out / "sorted.csv").read_text().splitlines()
    assert sorted_lines[0] == "file name, index, score"
    parsed = [x.split(", ") for x in sorted_lines[1:]]
    assert len(parsed) == np.isfinite(scores[drawn]).sum()
    assert all(p[0] == "pool" for p in parsed)
    vals = [float(p[2]) for p in parsed]
    assert vals == sorted(vals, reverse=True)
    by_line = {line_no[r] - 1: r for r in range(N)}
    for _, idx, sc in parsed:
        assert float(sc) == round(float(scores[by_line[int(idx)]]), 6)
    top = (out / "top_p0.2.jsonl").read_bytes()
    assert top == b"".join(lines[line_no[r] - 1] + newline for r in res.rows)
    # tables
    df = pd.read_parquet(out / "selection.parquet")
    assert set(df.columns) >= {"id", "source", "cluster", "cluster_label", "score",
                               "round_drawn", "pinned", "rejected", "selected", "rank"}
    assert df["selected"].sum() == len(res.rows) == run.n_top
    assert list(df["row"][: len(res.rows)]) == list(res.rows)
    assert df.loc[df["rejected"], "selected"].eq(False).all() and df["rejected"].sum() == 1
    assert df.loc[df["pinned"], "selected"].all() and df["pinned"].sum() == 1
    assert df.loc[df["pinned"], "round_drawn"].isna().all()  # pinned without being drawn
    assert (df["cluster_label"][df["cluster"] == 0] == "zero").all()
    csv_df = pd.read_csv(out / "selection.csv")
    assert list(csv_df["id"]) == list(df["id"])
    # datasets folder
    import datasets

    ds = datasets.load_from_disk(str(out / "dataset"))
    assert ds["row"] == sorted(res.rows.tolist())
    assert ds[0]["messages"] == pool.table["messages"].iat[int(pool_order[0])]
    # manifest: integrity and reproduction
    man = ex.load_manifest(out)
    assert ex.verify_export(out) == []
    assert man["selected"]["rows"] == res.rows.tolist()
    assert man["selected"]["ids"] == pool.table["id"].to_numpy()[res.rows].tolist()
    assert man["spec"]["seed"] == 0 and man["versions"]["numpy"] == np.__version__
    assert man["pool"]["fingerprint"] == pool.fingerprint
    assert len(man["ledger"]["ban_changes"]) == 2
    assert 0 <= man["metrics"]["recall_of_exhaustive_top_p"] <= 1
    again = ex.reproduce_selection(man, labels, TableOracle(scores))
    assert again.tolist() == man["selected"]["rows"]
    # the bundled log replays to the same run
    replay = SelectionRun.open(out / "run", labels)
    assert replay.budget_used == run.budget_used
    # tampering is detected
    with open(out / "sorted.csv", "a") as fh:
        fh.write("x")
    assert ex.verify_export(out) == ["sorted.csv"]
    with pytest.raises(ValueError, match="labels"):
        ex.reproduce_selection(man, np.roll(labels, 1), TableOracle(scores))


def _delimited(tmp_path: Path, delim: str, bom: bool) -> tuple[Path, bytes, list[bytes]]:
    head = f"id{delim}prompt{delim}completion\r\n".encode()
    recs = []
    for i in range(N):
        prompt = f"say {i}"
        if i % 5 == 0 and delim == ",":
            prompt = f'"multi\r\nline, {i} ""quoted"""'  # a field spanning two lines
        recs.append(f"x{i}{delim}{prompt}{delim}ok {i} ✓".encode())
    header = (b"\xef\xbb\xbf" if bom else b"") + head
    path = tmp_path / f"pool.{'csv' if delim == ',' else 'tsv'}"
    path.write_bytes(header + b"\r\n".join(recs) + b"\r\n")
    return path, header, recs


@pytest.mark.parametrize("delim,bom", [(",", True), ("\t", False)])
def test_csv_tsv_export_keeps_header_and_records(tmp_path, delim, bom):
    path, header, recs = _delimited(tmp_path, delim, bom)
    pool = load_pool(path)
    assert len(pool.table) == N
    run, _, _ = make_run(N)
    run.run_to_end()
    res = run.result()
    out = ex.export_selection(tmp_path / "exp", pool, res, with_dataset=False)
    name = "selected.csv" if delim == "," else "selected.tsv"
    ids = pool.table["id"].to_numpy()
    expect = header + b"".join(recs[int(ids[r][1:])] + b"\r\n" for r in np.sort(res.rows))
    assert (out / name).read_bytes() == expect
    # non-JSONL pools: the LESS file holds LESS's {"dataset", "id", "messages"} records
    top = [json.loads(x) for x in (out / "top_p0.2.jsonl").read_text().splitlines()]
    assert [t["id"] for t in top] == ids[res.rows].tolist()
    assert top[0]["messages"][-1]["role"] == "assistant"
    assert not (out / "dataset").exists() and ex.verify_export(out) == []


def test_json_parquet_and_datasets_exports(tmp_path):
    import datasets
    import pyarrow.parquet as pq

    objs = [{"id": f"r{i}", "messages": _msgs(i), "extra": i * 1.5} for i in range(N)]
    (tmp_path / "pool.json").write_text(json.dumps(objs, indent=1, ensure_ascii=False))
    pd.DataFrame(objs).to_parquet(tmp_path / "pool.parquet")
    datasets.Dataset.from_list(objs).save_to_disk(str(tmp_path / "pool_ds"))
    run, _, _ = make_run(N)
    run.run_to_end()
    res = run.result()
    want = sorted(res.rows.tolist())
    pool = load_pool(tmp_path / "pool.json")
    out = ex.export_selection(tmp_path / "e_json", pool, res, with_dataset=False)
    assert json.loads((out / "selected.json").read_text()) == [objs[r] for r in want]
    for src in ("pool.parquet", "pool_ds"):
        pool = load_pool(tmp_path / src)
        out = ex.export_selection(tmp_path / f"e_{src}", pool, res, with_dataset=False)
        got = pq.read_table(out / "selected.parquet").to_pylist()
        assert [g["id"] for g in got] == [objs[r]["id"] for r in want]
        assert [g["extra"] for g in got] == [objs[r]["extra"] for r in want]


def test_pool_and_run_must_match(tmp_path):
    src = tmp_path / "pool.jsonl"
    write_jsonl(src)
    run, _, _ = make_run(N + 1)
    run.run_to_end()
    with pytest.raises(ValueError, match="pool"):
        ex.export_selection(tmp_path / "exp", load_pool(src), run.result())


def test_export_is_atomic_when_it_fails_midway(tmp_path, monkeypatch):
    src = tmp_path / "pool.jsonl"
    write_jsonl(src)
    pool = load_pool(src)
    run, _, _ = make_run(N)
    run.run_to_end()
    res = run.result()
    out = ex.export_selection(tmp_path / "exports" / "r1", pool, res, with_dataset=False)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ex, "write_less_files", boom)
    with pytest.raises(OSError, match="disk full"):
        ex.export_selection(tmp_path / "exports" / "r1", pool, res, with_dataset=False)
    with pytest.raises(OSError):
        ex.export_selection(tmp_path / "exports" / "r2", pool, res, with_dataset=False)
    # the old export is untouched, the failed new one left nothing behind
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == ["r1"]


def test_export_killed_midway_leaves_no_folder_that_looks_whole(tmp_path):
    src = tmp_path / "pool.jsonl"
    write_jsonl(src)
    code = textwrap.dedent(f"""
        import os, numpy as np
        from clusterucb_core.export import files as ex
        from clusterucb_core.selection.run import SelectionRun
        from clusterucb_core.config import SelectionSpec
        from clusterucb_core.selection.oracle import TableOracle
        from clusterucb_core.data.load import load_pool
        pool = load_pool({str(src)!r})
        run = SelectionRun(np.arange({N}) % 4, TableOracle(np.linspace(0, 1, {N})),
                           SelectionSpec(cold_start=0.1, budget=0.5, top_p=0.2))
        run.run_to_end()
        real = ex.selection_table
        def die(*a, **k):
            real(*a, **k)
            os._exit(9)  # the process dies mid-export: no cleanup runs
        ex.selection_table = die
        ex.export_selection({str(tmp_path / "exports" / "r1")!r}, pool, run.result(),
                            with_dataset=False)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 9, proc.stderr
    names = [p.name for p in (tmp_path / "exports").iterdir()]
    assert "r1" not in names
    assert names and all(n.startswith(".") and n.endswith(".part") for n in names)
    part = (tmp_path / "exports" / names[0])
    assert (part / "selected.jsonl").exists() and not (part / "manifest.json").exists()


# ------------------------------------------------------------------ the CLI


def _cli(argv: list[str]) -> int:
    """Run one of our subcommands through argparse (without importing the others)."""
    import argparse
    import importlib

    mod = importlib.import_module(f"clusterucb_core.cli.{argv[0]}")
    parser = argparse.ArgumentParser()
    mod.add_arguments(parser)
    return mod.run(parser.parse_args(argv[1:]))


def _workspace(tmp_path: Path):
    from clusterucb_core.clustering.clusterset import save_clusters
    from clusterucb_core.clustering.kmeans import KMeansResult
    from clusterucb_core.workspace import Workspace

    ws = Workspace.open(tmp_path / "ws")
    src = tmp_path / "pool.jsonl"
    lines = write_jsonl(src)
    ws.update_meta(pool={"path": str(src), "format": "auto", "shape": "auto"})
    labels = np.arange(N) % 4
    labels[7] = -1  # a row without features
    km = KMeansResult(labels=labels, centroids=np.eye(4, dtype=np.float32), inertia=0.0,
                      n_iter=1)
    save_clusters(ws, "k4", km, features_fingerprint="f")
    scores = labels * 0.1 + np.linspace(0, 0.05, N)
    (ws.root / "scores").mkdir()
    np.save(ws.root / "scores" / "exhaustive.npy", scores)
    return ws, lines, labels, scores


def test_cli_select_resume_and_export(tmp_path, capsys):
    from clusterucb_core.export.files import load_manifest, reproduce_selection, verify_export

    ws, lines, labels, scores = _workspace(tmp_path)
    argv = ["select", "-w", str(ws.root), "--clusters", "k4", "--budget", "0.5",
            "--top-p", "0.1", "--cold-start", "0.1", "--draw-batch", "2", "--seed", "3",
            "--run-id", "r1"]
    assert _cli(argv + ["--rounds", "3"]) == 0
    assert "paused" in capsys.readouterr().out
    with pytest.raises(ValueError, match="other settings"):
        _cli(argv[:-2] + ["--run-id", "r1", "--seed", "4"])
    assert _cli(["select", "-w", str(ws.root), "--run-id", "r1", "-v"]) == 0
    out = capsys.readouterr().out
    assert "continuing run r1 at round 3" in out and "finished" in out and "recall" in out
    assert ws.meta()["current_run"] == "r1"
    # the same settings in one go give the same run
    assert _cli(argv[:-2] + ["--run-id", "r2"]) == 0
    a = (ws.runs("r1") / "log.jsonl").read_text().splitlines()[1:]
    b = (ws.runs("r2") / "log.jsonl").read_text().splitlines()[1:]
    strip = [{k: v for k, v in json.loads(x).items() if k != "ts"} for x in a]
    assert strip == [{k: v for k, v in json.loads(x).items() if k != "ts"} for x in b]

    assert _cli(["export", "-w", str(ws.root)]) == 0  # the current run: r2
    exp = ws.exports("r2")
    man = load_manifest(exp)
    assert verify_export(exp) == [] and man["clusters"]["name"] == "k4"
    assert man["oracle"]["kind"] == "table" and man["extra"]["reward"] == "exhaustive"
    assert man["metrics"]["recall_of_exhaustive_top_p"] == 1.0
    rows = man["selected"]["rows"]
    assert 7 not in rows and len(rows) == 4
    oracle = __import__("clusterucb_core.selection.oracle", fromlist=["TableOracle"])
    assert reproduce_selection(man, labels, oracle.TableOracle(scores)).tolist() == rows
    line_no = load_pool(tmp_path / "pool.jsonl").table["line_no"].to_numpy()
    assert (exp / "selected.jsonl").read_bytes() == b"".join(
        lines[line_no[r] - 1] + b"\n" for r in sorted(rows))


def test_cli_select_errors(tmp_path):
    ws, _, _, _ = _workspace(tmp_path)
    with pytest.raises(ValueError, match="top_p"):
        _cli(["select", "-w", str(ws.root), "--budget", "0.1", "--top-p", "0.2"])
    with pytest.raises(FileNotFoundError):
        _cli(["select", "-w", str(ws.root), "--scores", "nope"])
    np.save(tmp_path / "short.npy", np.zeros(3))
    with pytest.raises(ValueError, match="3 scores"):
        _cli(["select", "-w", str(ws.root), "--scores", str(tmp_path / "short.npy")])
    with pytest.raises(ValueError, match="lazy"):
        _cli(["select", "-w", str(ws.root), "--lazy"])
    with pytest.raises(FileNotFoundError, match="no run"):
        _cli(["export", "-w", str(ws.root), "--run", "ghost"])


def test_sorted_csv_indexes_records_of_a_multiline_csv(tmp_path):
    """Issue 13, bug 7: sorted.csv held physical line numbers (up to 2,922 for 400 records
    with multi-line fields), and made ids were line-based."""
    import csv

    src = tmp_path / "alpaca.csv"
    with open(src, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["instruction", "input", "output"])
        for i in range(N):
            w.writerow([f"Task {i}\nwith a second line", "" if i % 2 else f"in\n{i}",
                        f"Answer {i}\nline two\nline three"])
    pool = load_pool(src)
    assert list(pool.table["id"]) == [f"alpaca_{i}" for i in range(N)]
    run, labels, scores = make_run(N)
    run.run_to_end()
    out = ex.export_selection(tmp_path / "exp", pool, run.result(), run_id="r1",
                              clustering="k4")
    rows = [x.split(", ") for x in (out / "sorted.csv").read_text().splitlines()[1:]]
    with open(src, newline="") as fh:
        records = list(csv.DictReader(fh))
    for _, idx, score in rows:
        i = int(idx)
        assert 0 <= i < N
        assert records[i]["instruction"] in pool.table["messages"].iat[i][0]["content"]
        assert float(score) == round(float(scores[i]), 6)
