"""Rows that cannot be scored are said on the Features and UCB pages; the Clusters page says
why K was picked."""

from __future__ import annotations

import json

from clusterucb_core.features.scorable import FormatReport, save_report


def test_unscorable_rows_are_said_on_features_and_rounds_pages(app_env):
    ws_root = app_env.root / "fixture"
    rep = FormatReport(n_rows=120, max_length=64, truncation="right", n_truncated=30,
                       tokens_lost=600, unscorable=list(range(12)))
    save_report(ws_root, "k", rep)
    for page in ("pages/3_features.py", "pages/5_rounds.py"):
        at = app_env(page)
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        said = [w.value for w in at.warning]
        assert any("12 rows (10.0%) cannot be scored" in w and "keep_answer" in w
                   for w in said), (page, said)


def test_clusters_page_says_why_k(app_env):
    meta_path = next((app_env.root / "fixture" / "clusters").glob("*/meta.json"))
    meta = json.loads(meta_path.read_text())
    meta["k_reason"] = "K=4 so that each cluster gets about 4 cold-start draws"
    meta["condition"] = "center"
    meta_path.write_text(json.dumps(meta))
    at = app_env("pages/4_clusters.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    captions = " ".join(c.value for c in at.caption)
    assert "each cluster gets about 4 cold-start draws" in captions
    assert "Conditioned before k-means: center" in captions
