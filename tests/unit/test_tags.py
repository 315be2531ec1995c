"""Tags on rows and names for clusters: kept in the ledger on disk, carried into every export
file and the manifest."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clusterucb_core.config import SelectionSpec
from clusterucb_core.data.load import load_pool
from clusterucb_core.export import files as ex
from clusterucb_core.selection.curation import Ledger
from clusterucb_core.selection.oracle import TableOracle
from clusterucb_core.selection.run import SelectionRun

N = 30


def test_tags_and_names_fold_and_survive_a_new_process_reading_the_file(tmp_path):
    path = tmp_path / "ledger.jsonl"
    lg = Ledger(path, clustering="k4")
    lg.tag([1, 2, 3], "  needs   review ")
    lg.tag(2, "math")
    lg.untag([3], "needs review")
    lg.name_cluster(0, "arithmetic")
    lg.name_cluster(1, "ignored later")
    lg.name_cluster(1, "")  # back to the generated label
    Ledger(path, clustering="k9").name_cluster(0, "other clustering")
    lg.pin([5])
    # a restart: nothing but the file on disk
    st = Ledger(path, clustering="k4").state()
    assert st.tags == {1: ("needs review",), 2: ("math", "needs review")}
    assert st.names == {0: "arithmetic"}
    assert st.tag_counts() == {"needs review": 2, "math": 1}
    assert st.rows_tagged("math") == [2]
    assert st.pinned == {5}
    assert Ledger(path, clustering="k9").state().names == {0: "other clustering"}
    assert st.to_dict()["tags"] == {"1": ["needs review"], "2": ["math", "needs review"]}
    with pytest.raises(ValueError, match="tag needs some text"):
        lg.tag([1], "   ")
    with pytest.raises(ValueError, match="at most 64"):
        lg.tag([1], "x" * 65)


def _pool(tmp_path, fmt):
    recs = [{"id": f"r{i}", "messages": [{"role": "user", "content": f"q{i}"},
                                          {"role": "assistant", "content": f"a{i}"}]}
            for i in range(N)]
    if fmt == "jsonl":
        p = tmp_path / "pool.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    else:
        p = tmp_path / "pool.parquet"
        pd.DataFrame({"id": [r["id"] for r in recs],
                      "messages": [r["messages"] for r in recs]}).to_parquet(p)
    return load_pool(p)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_tags_appear_in_every_export_file(tmp_path, fmt):
    pool = _pool(tmp_path, fmt)
    labels = np.arange(N) % 3
    scores = np.linspace(0, 1, N)
    lg = Ledger(tmp_path / "ledger.jsonl", clustering="k3")
    spec = SelectionSpec(cold_start=0.1, budget=1.0, top_p=0.2, seed=0)
    run = SelectionRun(labels, TableOracle(scores), spec, ledger=lg)
    run.run_to_end()
    top = int(run.selected()[0])
    lg.tag([top], "gold")
    lg.tag([top, 0], "check")  # row 0: low score, not selected, still listed with its tags
    lg.name_cluster(int(labels[top]), "my cluster")
    out = ex.export_selection(tmp_path / "exp", pool, run.result(), clustering="k3",
                              cluster_names={0: "zero"}, ledger_state=lg.state())
    df = pd.read_parquet(out / "selection.parquet")
    tags = dict(zip(df["row"], df["tags"]))
    assert tags[top] == "check, gold" and tags[0] == "check"
    assert df.loc[df["row"] == top, "cluster_label"].item() == "my cluster"
    assert "check, gold" in (out / "selection.csv").read_text()
    side = [json.loads(x) for x in (out / "tags.jsonl").read_text().splitlines()]
    assert side == [{"row": 0, "id": "r0", "tags": ["check"]},
                    {"row": top, "id": f"r{top}", "tags": ["check", "gold"]}]
    import datasets

    ds = datasets.load_from_disk(str(out / "dataset"))
    by_row = dict(zip(ds["row"], ds["tags"]))
    assert by_row[top] == ["check", "gold"]
    m = ex.load_manifest(out)
    assert m["tags"]["rows"][str(top)] == ["check", "gold"]
    assert m["tags"]["counts"] == {"check": 2, "gold": 1}
    assert m["cluster_names"][str(int(labels[top]))] == "my cluster"
    i = m["selected"]["rows"].index(top)
    assert m["selected"]["tags"][i] == ["check", "gold"]
    assert ex.verify_export(out) == []
    topfile = (out / ex.top_p_name(0.2)).read_text().splitlines()
    if fmt == "jsonl":  # the user's own lines stay byte for byte; tags ride in tags.jsonl
        assert all("tags" not in json.loads(x) for x in topfile)
    else:
        assert json.loads(topfile[0])["tags"] == ["check", "gold"]
