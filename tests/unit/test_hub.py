"""Pools and targets from the Hugging Face Hub (offline, from a prepared cache), gzip files and
folders of Parquet shards, all into the same validation report; the dataset card and the push
to the Hub (mocked: what would be uploaded)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clusterucb_core.config import SelectionSpec
from clusterucb_core.data import sources
from clusterucb_core.data.load import load_pool
from clusterucb_core.export import files as ex
from clusterucb_core.export import hub as hub_export
from clusterucb_core.selection.curation import Ledger
from clusterucb_core.selection.oracle import TableOracle
from clusterucb_core.selection.run import SelectionRun

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Hub copies and decompressed files go under tmp, not the user's ~/.cache."""
    monkeypatch.setenv("CLUSTERUCB_CACHE", str(tmp_path / "cache"))


def recs(n=12, subtask=False):
    out = []
    for i in range(n):
        r = {"id": f"r{i}", "messages": [{"role": "user", "content": f"question {i}"},
                                         {"role": "assistant", "content": f"answer {i}"}]}
        if subtask:
            r["subtask"] = "even" if i % 2 == 0 else "odd"
        out.append(r)
    return out


def jsonl_bytes(rows, bad_at=None) -> bytes:
    lines = [json.dumps(r).encode() for r in rows]
    if bad_at is not None:
        lines.insert(bad_at, b"{broken")
    return b"\n".join(lines) + b"\n"


# --------------------------------------------------------------------------- hub syntax
def test_hub_uri_syntax(tmp_path, monkeypatch):
    assert sources.parse_hub("hf://org/name") == sources.HubRef("org/name")
    ref = sources.parse_hub("hf://datasets/org/na.me-1?split=train&config=en&revision=v2")
    assert ref == sources.HubRef("org/na.me-1", "en", "train", "v2")
    assert sources.parse_hub(ref.uri) == ref
    assert sources.parse_hub("org/name") == sources.HubRef("org/name")  # no such local path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").write_text("x")
    assert sources.parse_hub("org/name") is None  # a local path wins
    assert sources.parse_hub("pool.jsonl") is None
    with pytest.raises(ValueError, match="unknown option"):
        sources.parse_hub("hf://org/name?spilt=train")
    with pytest.raises(ValueError, match="expected hf://ORG/NAME"):
        sources.parse_hub("hf://justone")


# --------------------------------------------------------------------------- gzip
@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_gzip_files_give_the_same_report_and_rows(tmp_path, fmt):
    rows = recs()
    if fmt == "jsonl":
        data = jsonl_bytes(rows, bad_at=4)
    elif fmt == "json":
        data = json.dumps(rows[:4] + ["not an object"] + rows[4:], indent=1).encode()
    else:
        df = pd.DataFrame({"id": [r["id"] for r in rows],
                           "instruction": [r["messages"][0]["content"] for r in rows],
                           "output": [r["messages"][1]["content"] for r in rows]})
        df.loc[4, "output"] = ""
        data = df.to_csv(index=False).encode()
    plain = tmp_path / f"pool.{fmt}"
    plain.write_bytes(data)
    packed = tmp_path / f"packed.{fmt}.gz"
    packed.write_bytes(gzip.compress(data))
    a, b = load_pool(plain), load_pool(packed)
    assert b.format == fmt
    assert [str(p) for p in b.report.problems] == [str(p) for p in a.report.problems]
    assert len(b.report.errors) == 1
    assert b.table["line_no"].tolist() == a.table["line_no"].tolist()
    assert b.fingerprint == a.fingerprint  # the content, not its compression
    assert any(n.startswith(f"decompressed from {packed.resolve()}") for n in b.notes)
    if fmt == "csv":  # the export writes the header of the decompressed file
        run = SelectionRun(np.zeros(len(b.table), dtype=np.int64),
                           TableOracle(np.arange(len(b.table), dtype=float)),
                           SelectionSpec(cold_start=0.5, budget=1.0, top_p=0.2))
        run.run_to_end()
        out = ex.export_selection(tmp_path / "exp", b, run.result(), with_dataset=False)
        assert (out / "selected.csv").read_text().splitlines()[0] == "id,instruction,output"


# --------------------------------------------------------------------------- parquet shards
def test_a_folder_of_parquet_shards_numbers_rows_across_shards(tmp_path):
    rows = recs(30)
    rows[17]["messages"] = [{"role": "user", "content": "no answer"}]  # shard 2, row 18
    folder = tmp_path / "shards"
    (folder / "b").mkdir(parents=True)
    pd.DataFrame(rows[:10]).to_parquet(folder / "a-0.parquet")
    pd.DataFrame(rows[10:20]).to_parquet(folder / "b" / "part-1.parquet")
    pd.DataFrame(rows[20:]).to_parquet(folder / "b" / "part-2.parquet")
    pool = load_pool(folder)
    assert pool.format == "parquet" and len(pool.table) == 29
    assert [p.line for p in pool.report.errors] == [18]
    assert any("3 Parquet shards" in n and "rows 11-20" in n for n in pool.notes)
    assert pool.table["id"].tolist() == [r["id"] for i, r in enumerate(rows) if i != 17]
    run = SelectionRun(np.zeros(29, dtype=np.int64), TableOracle(np.arange(29, dtype=float)),
                       SelectionSpec(cold_start=0.5, budget=1.0, top_p=0.2))
    run.run_to_end()
    out = ex.export_selection(tmp_path / "exp", pool, run.result(), with_dataset=False)
    got = pd.read_parquet(out / "selected.parquet")
    want = pool.table["id"].to_numpy()[np.sort(run.result().rows)].tolist()
    assert got["id"].tolist() == want


def test_save_to_disk_round_trip_of_a_local_folder(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(recs(8))
    ds.save_to_disk(str(tmp_path / "saved"))
    pool = load_pool(tmp_path / "saved")
    assert pool.format == "datasets"
    assert pool.table["messages"].tolist() == [r["messages"] for r in recs(8)]
    back = datasets.load_dataset("parquet", data_files=str(_to_parquet(tmp_path, ds)),
                                 split="train")
    assert back["id"] == ds["id"]


def _to_parquet(tmp_path, ds):
    p = tmp_path / "x.parquet"
    ds.to_parquet(str(p))
    return p


# --------------------------------------------------------------------------- hub (offline)
def prepare_hub_cache(cache: Path, repo: str, rows: list[dict], license: str | None) -> None:
    """What `load_dataset(repo)` leaves in HF_DATASETS_CACHE after an online load."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    src = cache.parent / "src.parquet"
    pd.DataFrame(rows).to_parquet(src)
    name = repo.split("/")[1]
    b = Parquet(cache_dir=str(cache / "_build"), dataset_name=name, config_name="default",
                data_files={"train": str(src)})
    b.download_and_prepare()
    built = Path(b.cache_dir)
    dest = cache / repo.replace("/", "___") / "default" / "0.0.0" / ("0" * 40)
    dest.mkdir(parents=True)
    for f in built.iterdir():
        if not f.name.endswith(".lock"):
            shutil.copy(f, dest / f.name)
    if license:
        info = json.loads((dest / "dataset_info.json").read_text())
        info["license"] = license
        (dest / "dataset_info.json").write_text(json.dumps(info))
    shutil.rmtree(cache / "_build")


def test_hub_ids_resolve_from_a_local_cache_offline(tmp_path):
    cache = tmp_path / "hf_datasets"
    cache.mkdir()
    prepare_hub_cache(cache, "org/pool", recs(10), "cc-by-4.0")
    prepare_hub_cache(cache, "org/target", recs(6, subtask=True), None)
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_HOME": str(tmp_path / "home"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "CLUSTERUCB_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT)}
    code = textwrap.dedent("""
        import json
        from clusterucb_core.data.load import load_pool
        from clusterucb_core.data.targets import load_target
        from clusterucb_core.data import sources
        a = load_pool("hf://org/pool?split=train")
        b = load_pool("org/pool")
        t = load_target("hf://org/target")
        print(json.dumps({"n": len(a.table), "ids": a.table["id"].tolist(),
                          "same": a.fingerprint == b.fingerprint, "fmt": a.format,
                          "notes": a.notes, "origin": sources.origin(a.path),
                          "license": sources.license_of(a.path),
                          "subtasks": sorted({e.subtask for e in t.examples})}))
        try:
            load_pool("hf://org/missing")
        except ValueError as exc:
            print("ERR", exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, cwd=tmp_path, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    res = json.loads(lines[-2])
    assert res["n"] == 10 and res["ids"] == [f"r{i}" for i in range(10)]
    assert res["same"] and res["fmt"] == "datasets"
    assert res["origin"] == {"hub": "hf://org/pool?split=train"}
    assert res["license"] == "cc-by-4.0"
    assert any("read from the Hub: hf://org/pool" in n for n in res["notes"])
    assert res["subtasks"] == ["even", "odd"]
    assert lines[-1].startswith("ERR hf://org/missing: cannot load")


# --------------------------------------------------------------------------- card and push
def export_of_licensed_pool(tmp_path) -> Path:
    import datasets

    ds = datasets.Dataset.from_list(recs(20))
    ds.info.license = "apache-2.0"
    ds.save_to_disk(str(tmp_path / "pool_ds"))
    pool = load_pool(tmp_path / "pool_ds")
    labels = np.arange(20) % 2
    lg = Ledger(tmp_path / "ledger.jsonl")
    run = SelectionRun(labels, TableOracle(np.linspace(0, 1, 20)),
                       SelectionSpec(cold_start=0.2, budget=1.0, top_p=0.25, seed=3), ledger=lg)
    run.run_to_end()
    lg.tag([int(run.selected()[0])], "gold")
    return ex.export_selection(tmp_path / "exp", pool, run.result(), run_id="ucb",
                               clustering="k2", ledger_state=lg.state(),
                               extra={"target": "targets/arithmetic.jsonl",
                                      "model": "demo_model"})


def test_dataset_card_from_the_manifest(tmp_path):
    import yaml

    out = export_of_licensed_pool(tmp_path)
    m = ex.load_manifest(out)
    card = hub_export.dataset_card(m, "me/picked")
    head = yaml.safe_load(card.split("---")[1])
    assert head["license"] == "apache-2.0"
    assert head["size_categories"] == ["n<1K"]
    assert head["configs"][0]["data_files"][0]["path"] == "data/train.parquet"
    assert "clusterucb" in head["tags"]
    body = card.split("---", 2)[2]
    assert "# me/picked" in body
    assert m["pool"]["fingerprint"] in body
    assert "`targets/arithmetic.jsonl`" in body and "`demo_model`" in body
    assert f"| n selected | {m['counts']['n_selected']:,} |" in body
    assert "| top_p | `0.25` |" in body and "| gold | 1 |" in body
    m["pool"]["license"] = None  # no licence: no licence line in the header
    assert "license:" not in hub_export.dataset_card(m).split("---")[1]


class FakeApi:
    def __init__(self, keep: Path):
        self.keep, self.calls = keep, []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))
        return f"https://huggingface.co/datasets/{repo_id}"

    def upload_folder(self, *, folder_path, repo_id, **kw):
        self.calls.append(("upload_folder", repo_id, kw))
        shutil.copytree(folder_path, self.keep)


def test_push_to_hub_uploads_card_data_and_manifest(tmp_path):
    import datasets

    out = export_of_licensed_pool(tmp_path)
    api = FakeApi(tmp_path / "uploaded")
    url = hub_export.push_to_hub(out, "me/picked", private=True, api=api)
    assert url == "https://huggingface.co/datasets/me/picked"
    assert api.calls[0] == ("create_repo", "me/picked",
                            {"repo_type": "dataset", "private": True, "exist_ok": True})
    assert api.calls[1][0] == "upload_folder" and api.calls[1][2]["repo_type"] == "dataset"
    up = tmp_path / "uploaded"
    assert sorted(p.relative_to(up).as_posix() for p in up.rglob("*") if p.is_file()) == [
        "README.md", "data/train.parquet", "manifest.json", "selection.parquet"]
    # the repository loads the way the Hub will load it, from its card's data_files
    ds = datasets.load_dataset(str(up), split="train")
    m = ex.load_manifest(out)
    assert sorted(ds["row"]) == sorted(m["selected"]["rows"])
    assert ["gold"] in ds["tags"]
    with pytest.raises(ValueError, match="ORG/NAME"):
        hub_export.push_to_hub(out, "noslash", api=api)
    (out / "selection.csv").write_text("tampered")
    with pytest.raises(ValueError, match="files changed"):
        hub_export.push_to_hub(out, "me/picked", api=api)
