"""Search, tags and cluster names on the Clusters page (AppTest, no browser): results match a
brute-force search, tags land in the ledger on disk and are shown after a restart."""

from __future__ import annotations

from clusterucb_core.curation import Ledger
from clusterucb_core.pool import load_pool
from clusterucb_core.workspace import Workspace


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
