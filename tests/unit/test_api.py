"""The public Python API: scikit-learn style estimators over the engine, and the README's
"Python API" example, run as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from clusterucb_core import ClusterUCB, SphericalKMeans
from clusterucb_core.clustering.kmeans import spherical_kmeans
from clusterucb_core.selection.oracle import TableOracle
from clusterucb_core.selection.run import SelectionRun

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_api_example_runs(capsys):
    text = README.read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 8 <= len(code.strip().splitlines()) <= 12
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"^30 rows selected from 120 scored$", out, re.M)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(300, 8)) + np.repeat(rng.normal(size=(5, 8)) * 3, 60, axis=0)
    return X, X @ rng.normal(size=8)


def test_spherical_kmeans_is_the_engines_kmeans():
    X, _ = _data()
    km = SphericalKMeans(n_clusters=5, random_state=3, n_init=2).fit(X)
    ref = spherical_kmeans(X, 5, seed=3, n_init=2)
    assert np.array_equal(km.labels_, ref.labels)
    assert km.cluster_centers_.shape == (5, 8)
    assert np.allclose(np.linalg.norm(km.cluster_centers_, axis=1), 1, atol=1e-5)
    assert np.array_equal(km.predict(X), km.labels_)
    assert km.get_params()["n_clusters"] == 5 and "random_state=3" in repr(km)


def test_cluster_ucb_matches_a_selection_run_and_scores_lazily():
    X, rewards = _data()
    labels = SphericalKMeans(n_clusters=5, random_state=0).fit(X).labels_
    sel = ClusterUCB(budget=0.3, top_p=0.05, random_state=7).fit(labels, rewards)
    run = SelectionRun(labels, TableOracle(rewards), sel._spec())
    run.run_to_end()
    assert sel.selected_.tolist() == run.selected().tolist()
    assert np.isfinite(sel.scores_).sum() == run.budget_total == 90
    assert list(sel.history_["round"]) == list(range(len(run.records)))
    asked: list[int] = []

    def score(rows):
        asked.extend(rows.tolist())
        return rewards[rows]

    lazy = ClusterUCB(budget=0.3, top_p=0.05, random_state=7).fit(labels, score)
    assert lazy.selected_.tolist() == sel.selected_.tolist()
    assert len(asked) == len(set(asked)) == 90  # only the drawn rows, each once


@pytest.mark.parametrize("est,message", [
    (ClusterUCB(budget=2), "budget = 2: must be a finite number > 0 and <= 1"),
    (ClusterUCB(policy="greedy"), "policy = 'greedy': must be one of ucb_beta"),
    (ClusterUCB(random_state=-1), "random_state = -1: must be an integer >= 0"),
    (ClusterUCB(top_p=0.5), "top_p = 0.5: cannot exceed the budget"),
    (SphericalKMeans(n_clusters="six"), "n_clusters = 'six'"),
    (SphericalKMeans(n_clusters=0), "n_clusters = 0: must be an integer >= 1"),
    (SphericalKMeans(tol=-1.0), "tol = -1.0: must be a finite number >= 0"),
    (SphericalKMeans(device="gpu"), "device = 'gpu': must be auto, cpu, cuda"),
])
def test_parameters_are_checked_in_fit_with_value_and_rule(est, message):
    X, rewards = _data()
    with pytest.raises(ValueError, match=re.escape(message)):
        if isinstance(est, ClusterUCB):
            est.fit(np.arange(300) % 5, rewards)
        else:
            est.fit(X)


def test_rewards_must_fit_the_labels():
    with pytest.raises(ValueError, match=r"rewards has shape \(3,\) but labels has \(4,\)"):
        ClusterUCB().fit(np.arange(4) % 2, np.zeros(3))
