"""A small synthetic workspace for the app tests: no model, everything precomputed.

120 chats from 4 sources, 16-d features with planted structure, a saved clustering (K=4) with
summary and K scan, a 2-D map, exhaustive scores, and a target file with two subtasks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "app.py"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SOURCES = ["math", "poems", "code", "trivia"]
WORDS = {
    "math": ["add", "sum", "number", "total", "plus"],
    "poems": ["moon", "river", "verse", "rhyme", "night"],
    "code": ["python", "function", "loop", "variable", "list"],
    "trivia": ["capital", "country", "river", "mountain", "city"],
}
N_PER = 30


def _pool_lines() -> list[str]:
    rng = np.random.default_rng(0)
    lines = []
    for src in SOURCES:
        for j in range(N_PER):
            w = rng.choice(WORDS[src], size=3)
            lines.append(json.dumps({
                "dataset": src, "id": f"{src}_{j}",
                "messages": [{"role": "user", "content": f"Tell me about {w[0]} and {w[1]} #{j}"},
                             {"role": "assistant", "content": f"The {w[2]} is <b>{j}</b>."}]}))
    return lines


def build_workspace(root: Path, name: str = "fixture") -> Path:
    from clusterucb_core.clustering.clusterset import save_clusters
    from clusterucb_core.clustering.kmeans import spherical_kmeans
    from clusterucb_core.clustering.summaries import summarize_clusters
    from clusterucb_core.data.load import load_pool
    from clusterucb_core.workspace import Workspace

    ws = Workspace.open(root / name)
    pool_path = ws.root / "pool.jsonl"
    pool_path.write_text("\n".join(_pool_lines()) + "\n")
    target_path = ws.root / "target.jsonl"
    tl = []
    for sub in ("math", "code"):
        for j in range(3):
            tl.append(json.dumps({"subtask": sub, "id": f"t_{sub}_{j}", "messages": [
                {"role": "user", "content": f"{sub} question {j}"},
                {"role": "assistant", "content": f"{sub} answer {j}"}]}))
    target_path.write_text("\n".join(tl) + "\n")

    pool = load_pool(pool_path)
    n = len(pool.table)
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(4, 16))
    src_idx = np.repeat(np.arange(4), N_PER)
    X = centers[src_idx] + 0.3 * rng.normal(size=(n, 16))
    res = spherical_kmeans(X.astype(np.float32), 4, seed=0)
    summary = summarize_clusters(pool.table, res.labels, X.astype(np.float32), res.centroids)
    import pandas as pd

    kscan = pd.DataFrame({"k": [2, 3, 4, 5], "inertia": [40.0, 30.0, 12.0, 11.0],
                          "silhouette": [0.3, 0.4, 0.7, 0.6]})
    kscan["chosen"] = kscan["k"] == 4
    from clusterucb_core.features.store import FeatureStore

    # the store the clusters were made from: runs read it to order their draws
    store = FeatureStore.create_or_open(ws.features("synthetic"), n, 16, {"synthetic": 1},
                                        "float32")
    store.write(np.arange(n), X.astype(np.float32))
    save_clusters(ws, "k4", res, features_fingerprint=store.fingerprint, summary=summary,
                  kscan=kscan, features_name="synthetic")
    ws.maps().mkdir(parents=True, exist_ok=True)
    xy = np.stack([np.cos(src_idx) * 5, np.sin(src_idx) * 5], 1) + rng.normal(size=(n, 2))
    np.savez(ws.maps() / "synthetic.npz", xy=xy.astype(np.float32))
    scores = np.where(src_idx == 0, 0.3, 0.05) + 0.05 * rng.normal(size=n)
    (ws.root / "scores").mkdir(exist_ok=True)
    np.save(ws.root / "scores" / "exhaustive.npy", scores)
    # the identity Pipeline.exhaustive_scores writes beside its table (no feature store here)
    from clusterucb_core.data.targets import load_target

    (ws.root / "scores" / "exhaustive.json").write_text(json.dumps(
        {"identity": {"stores": [], "target": load_target(target_path).fingerprint,
                      "weights": None}, "n_rows": n}))
    ws.update_meta(pool={"path": str(pool_path), "format": "auto", "shape": "auto"},
                   target={"path": str(target_path), "kind": "auto", "trim": False},
                   clusters="k4")
    return ws.root


@pytest.fixture()
def app_env(tmp_path, monkeypatch):
    """Workspaces root in tmp with the fixture workspace; returns a factory of AppTests."""
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "workspaces"
    build_workspace(root)
    monkeypatch.setenv("CLUSTERUCB_WORKSPACES", str(root))

    def make(page: str | None = None, ws: str = "fixture") -> AppTest:
        at = AppTest.from_file(str(ENTRY), default_timeout=60)
        at.session_state["ws_name"] = ws
        if page:
            at.switch_page(page)
        return at

    make.root = root
    return make


def ok(at) -> None:
    """The AppTest run raised nothing (the messages of what it raised, if it did)."""
    assert not at.exception, [e.message for e in at.exception]


def metric(at, label: str):
    """The value of the metric labelled `label` on the page."""
    for m in at.metric:
        if m.label == label:
            return m.value
    raise AssertionError(f"no metric {label!r}: {[m.label for m in at.metric]}")


def frame(at, column: str):
    """The first table on the page with a `column` column (a pandas DataFrame)."""
    tables = [d.value for d in at.dataframe if column in d.value.columns]
    assert tables, f"no table with a {column!r} column"
    return tables[0]


def select_rows(at, prefix: str, positions, column: str = "tags") -> None:
    """Select table rows `positions` of the table keyed `prefix_<rows hash>` (the Curate
    table: its key follows the rows it lists), as a click on their row markers would."""
    from clusterucb_app.export_view import table_key

    key = table_key(prefix, frame(at, column))
    at.session_state[key] = {"selection": {"rows": list(positions), "columns": []}}
