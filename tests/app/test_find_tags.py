"""Search, tags and cluster names on the Clusters page (AppTest, no browser): results match a
brute-force search, tags land in the ledger on disk and are shown after a restart."""

from __future__ import annotations

from clusterucb_core.data.load import load_pool
from clusterucb_core.selection.curation import Ledger
from clusterucb_core.workspace import Workspace
from tests.app.conftest import select_rows


def _ok(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_search_tag_and_rename_on_the_clusters_page(app_env):
    at = app_env("pages/4_clusters.py")
    at.run()
    _ok(at)
    at.text_input(key="cl_found_q").input("python")
    at.button(key="cl_found_go").click().run()
    _ok(at)
    ws = Workspace.open(app_env.root / "fixture", create=False)
    pool = load_pool(ws.root / "pool.jsonl")
    want = [i for i, (rid, src, m) in enumerate(zip(pool.table["id"], pool.table["source"],
                                                    pool.table["messages"]))
            if "python" in f"{rid}\n{src}\n" + "\n".join(t["content"] for t in m).lower()]
    assert want and at.session_state["cl_found"]["rows"] == want
    # regex: ids ending in _1 or _2
    at.toggle(key="cl_found_re").set_value(True)
    at.text_input(key="cl_found_q").input(r"^\w+_[12]$")
    at.button(key="cl_found_go").click().run()
    _ok(at)
    got = at.session_state["cl_found"]["rows"]
    assert got == [i for i, rid in enumerate(pool.table["id"])
                   if rid.endswith(("_1", "_2"))]
    # act on the found rows: tag them
    assert any(o.startswith("found rows") for o in at.radio(key="cl_act_on").options)
    at.radio(key="cl_act_on").set_value(next(o for o in at.radio(key="cl_act_on").options
                                             if o.startswith("found rows"))).run()
    at.text_input(key="cl_tags_tag").input("second pass").run()
    at.button(key="cl_tags_add").click().run()
    _ok(at)
    # rename a cluster
    at.selectbox(key="cl_rename_pick").set_value(1)
    at.text_input(key="cl_rename_name").input("my favourite")
    at.button(key="cl_rename_go").click().run()
    _ok(at)
    # a restart: a new session reads only the disk
    st = Ledger(ws.ledger_path, clustering="k4").state()
    assert st.rows_tagged("second pass") == got
    assert st.names == {1: "my favourite"}
    again = app_env("pages/4_clusters.py")
    again.run()
    _ok(again)
    table = next(df.value for df in again.dataframe if "label" in df.value.columns)
    assert table.loc[table["cluster"] == 1, "label"].item() == "my favourite"
    assert "1: my favourite" in again.selectbox(key="cl_view").options


def test_bad_regex_is_a_message_not_a_crash(app_env):
    at = app_env("pages/4_clusters.py")
    at.run()
    at.toggle(key="cl_found_re").set_value(True)
    at.text_input(key="cl_found_q").input("(unclosed")
    at.button(key="cl_found_go").click().run()
    assert not at.exception
    assert any("regular expression" in e.value for e in at.error)


START = "FormSubmitter:ucb_settings-Start a new run"


def test_curate_page_finds_undrawn_rows_tags_them_and_exports_the_tags(app_env):
    import json

    import pandas as pd

    rounds = app_env("pages/5_rounds.py")
    rounds.run()
    rounds.button(key=START).click().run()
    rounds.button(key="ucb_step1").click().run()  # the cold start only: most rows undrawn
    _ok(rounds)
    at = app_env("pages/6_export.py")
    at.run()
    _ok(at)
    at.text_input(key="ex_found_q").input("poems_1")  # poems_1, poems_10..poems_19
    at.button(key="ex_found_go").click().run()
    _ok(at)
    ws = Workspace.open(app_env.root / "fixture", create=False)
    pool = load_pool(ws.root / "pool.jsonl")
    want = [i for i, rid in enumerate(pool.table["id"]) if "poems_1" in rid]
    table = next(df.value for df in at.dataframe if "tags" in df.value.columns)
    assert sorted(table["row"]) == want  # drawn or not
    assert (~table["selected"]).any()
    # tag the first two listed rows through the table selection
    select_rows(at, "ex_table", [0, 1])
    at.run()
    at.text_input(key="ex_tags_tag").input("rhymes").run()
    at.button(key="ex_tags_add").click().run()
    _ok(at)
    tagged = Ledger(ws.ledger_path, clustering="k4").state().rows_tagged("rhymes")
    assert tagged == sorted(table["row"].iloc[:2].tolist())
    table = next(df.value for df in at.dataframe if "tags" in df.value.columns)
    assert set(table.loc[table["tags"] == "rhymes", "row"]) == set(tagged)
    at.button(key="ex_save").click().run()
    _ok(at)
    (run_id,) = ws.list("exports")
    out = ws.exports(run_id)
    side = [json.loads(x) for x in (out / "tags.jsonl").read_text().splitlines()]
    assert [d["row"] for d in side] == tagged
    df = pd.read_parquet(out / "selection.parquet")
    assert set(df.loc[df["tags"] == "rhymes", "row"]) == set(tagged)
    m = json.loads((out / "manifest.json").read_text())
    assert m["extra"]["target"] and m["tags"]["counts"] == {"rhymes": 2}
