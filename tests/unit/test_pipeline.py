"""The end-to-end pipeline on a tiny model and pool: lazy rewards, resume, exports, config."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from clusterucb_core.cli import main
from clusterucb_core.config import (
    ClusterSpec,
    FeatureSpec,
    LoraSpec,
    ModelSpec,
    RunConfig,
    SelectionSpec,
    WarmupSpec,
    config_from_dict,
    config_to_dict,
    load_config,
    save_toml,
)
from clusterucb_core.pipeline import Pipeline


@pytest.fixture(scope="module")
def target_file(tmp_path_factory, make_chats) -> Path:
    path = tmp_path_factory.mktemp("target") / "target.jsonl"
    with open(path, "w") as fh:
        for i, msgs in enumerate(make_chats(8, seed=7)):
            fh.write(json.dumps({"subtask": "ab"[i % 2], "messages": msgs}) + "\n")
    return path


def tiny_config(tmp_path: Path, pool: Path, target: Path, model: Path, **kw) -> RunConfig:
    return RunConfig(
        workspace=str(tmp_path / "ws"), pool=str(pool), target=str(target), run_id="r1",
        model=ModelSpec(name_or_path=str(model), max_length=64, device="cpu"),
        lora=LoraSpec(rank=2, alpha=4),
        warmup=WarmupSpec(fraction=0.25, epochs=2, learning_rate=1e-3, batch_size=4),
        cluster_features=FeatureSpec(kind="hidden", batch_size=8),
        reward_features=FeatureSpec(kind="gradient", mode="adam", dim=64, batch_size=8),
        clusters=ClusterSpec(k=3),
        selection=SelectionSpec(cold_start=0.1, budget=0.5, top_p=0.1, draw_batch=4),
        make_map=False, **kw)


def test_run_computes_only_drawn_rows_and_exports_original_lines(
        tmp_path, tiny_pool_file, target_file, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_pool_file, target_file, tiny_model_dir)
    pipe = Pipeline(cfg, log=None)
    summary = pipe.run_all()

    n = len(pipe.pool.table)
    assert summary["budget_used"] == summary["budget_total"] == n // 2
    assert summary["selected"] == int(n * 0.1)
    # Lazy: the reward store holds exactly the rows the bandit drew, nothing more.
    store = pipe.reward_engines[0].store()
    run = pipe.selection()
    drawn = np.flatnonzero(run.round_drawn >= 0)
    assert set(np.flatnonzero(store.done)) == set(drawn)
    assert summary["work"]["reward_gradient_rows"] == len(drawn)

    # The export gives back the user's own lines, byte for byte.
    out = Path(summary["export"])
    lines = tiny_pool_file.read_bytes().splitlines()
    chosen = [lines[int(pipe.pool.table["line_no"].iat[r]) - 1] for r in sorted(run.selected())]
    assert (out / "selected.jsonl").read_bytes().splitlines() == chosen


def test_rerun_reuses_every_stage(tmp_path, tiny_pool_file, target_file, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_pool_file, target_file, tiny_model_dir)
    first = Pipeline(cfg, log=None).run_all()
    again = Pipeline(cfg, log=None)
    second = again.run_all()
    assert second["work"]["reward_gradient_rows"] == 0  # the run reopened from its log
    assert second["selected"] == first["selected"]
    assert len(again.checkpoints) == 2


def test_exhaustive_scores_give_recall(tmp_path, tiny_pool_file, target_file, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_pool_file, target_file, tiny_model_dir, exhaustive=True)
    pipe = Pipeline(cfg, log=None)
    summary = pipe.run_all()
    scores = np.load(pipe.scores_path)
    assert scores.shape == (len(pipe.pool.table),)
    assert 0.0 <= summary["metrics"]["recall"] <= 1.0
    # The bandit's scores are the exhaustive ones on the rows it drew.
    run = pipe.selection()
    drawn = run.round_drawn >= 0
    np.testing.assert_allclose(run.scores[drawn], scores[drawn], rtol=1e-6, equal_nan=True)


def test_workspace_remembers_settings_for_cli_select(tmp_path, tiny_pool_file, target_file,
                                                     tiny_model_dir, capsys):
    cfg = tiny_config(tmp_path, tiny_pool_file, target_file, tiny_model_dir)
    pipe = Pipeline(cfg, log=None)
    _ = pipe.clusters
    reopened = Pipeline.from_workspace(cfg.workspace, log=None)
    assert reopened.cfg == cfg
    code = main(["select", "--workspace", cfg.workspace, "--clusters", pipe.clusters_name,
                 "--lazy", "--run-id", "cli", "--budget", "0.3", "--cold-start", "0.1",
                 "--top-p", "0.05", "--draw-batch", "4"])
    assert code == 0
    assert (Path(cfg.workspace) / "runs" / "cli" / "log.jsonl").exists()


def test_config_round_trips_through_toml(tmp_path):
    cfg = replace(RunConfig(), workspace=str(tmp_path / "w"), pool=str(tmp_path / "p.jsonl"),
                  use_warmup=False, selection=SelectionSpec(policy="thompson", budget=0.3))
    save_toml(config_to_dict(cfg), tmp_path / "run.toml")
    assert load_config(tmp_path / "run.toml") == cfg


def test_config_refuses_unknown_settings():
    with pytest.raises(ValueError, match="budjet"):
        config_from_dict({"selection": {"budjet": 0.2}})
    with pytest.raises(ValueError, match="workspce"):
        config_from_dict({"workspce": "w"})


def test_bundled_demo_config_loads():
    cfg = load_config(Path(__file__).resolve().parents[2] / "sample_data" / "demo_run.toml")
    assert Path(cfg.pool).exists() and Path(cfg.target).exists()
    assert cfg.selection.budget == 0.2 and cfg.reward_features.mode == "adam"


def test_dynamic_rounds_train_on_each_selection_and_reselect(
        tmp_path, tiny_pool_file, target_file, tiny_model_dir):
    cfg = tiny_config(tmp_path, tiny_pool_file, target_file, tiny_model_dir, dynamic_rounds=2)
    pipe = Pipeline(cfg, log=None)
    summary = pipe.run_all()
    first, second = summary["dynamic_rounds"]
    # The second selection used the checkpoint trained on the first selection's rows.
    assert first["checkpoint"] != second["checkpoint"]
    trained = json.loads((Path(second["checkpoint"]).parent / "warmup.json").read_text())
    assert trained["rows"] == sorted(pipe.selection("r1-dyn0").selected().tolist())
    assert trained["init_checkpoint"] == first["checkpoint"]
    n = len(pipe.pool.table)
    work = summary["work"]
    assert work["reward_gradient_rows"] == first["budget_used"] + second["budget_used"]
    assert work["exhaustive_alternative_gradient_rows"] == 2 * n
    assert (Path(cfg.workspace) / "dynamic" / "r1.json").exists()


def test_evaluate_compares_subsets_with_the_same_training(
        tmp_path, tiny_pool_file, target_file, tiny_model_dir, capsys):
    cfg = tiny_config(tmp_path, tiny_pool_file, target_file, tiny_model_dir, exhaustive=True)
    Pipeline(cfg, log=None).run_all()
    out = tmp_path / "eval.csv"
    assert main(["evaluate", "--workspace", cfg.workspace, "--steps", "3",
                 "--out", str(out)]) == 0
    import pandas as pd

    table = pd.read_csv(out)
    assert list(table["subset"]) == ["base (no fine-tune)", "ClusterUCB (r1)", "random",
                                     "exhaustive LESS top-p"]
    assert np.isfinite(table["loss"]).all()
    # Training moved the loss away from the untouched base model.
    assert (table["loss"][1:] != table["loss"][0]).all()


def test_pool_format_and_shape_overrides_reach_the_loader(tmp_path, tiny_pool_file):
    odd = tmp_path / "pool.data"  # an extension that says nothing
    odd.write_bytes(tiny_pool_file.read_bytes())
    cfg = replace(RunConfig(), workspace=str(tmp_path / "ws"), pool=str(odd),
                  pool_format="jsonl", pool_shape="messages")
    pool = Pipeline(cfg, log=None).pool
    assert (pool.format, pool.shape) == ("jsonl", "messages")
    assert len(pool.table) > 30


def test_warmup_is_reproducible(tmp_path, tiny_pool_file, tiny_model_dir):
    """Same seed, same checkpoint bytes (LoRA dropout included)."""
    from clusterucb_core.data.load import load_pool
    from clusterucb_core.features.warmup import warmup

    pool = load_pool(tiny_pool_file)
    spec = WarmupSpec(fraction=0.5, epochs=1, learning_rate=1e-2, batch_size=4)
    model = ModelSpec(name_or_path=str(tiny_model_dir), max_length=64, device="cpu")
    lora = LoraSpec(rank=2, alpha=4, dropout=0.5)
    made = [warmup(pool, model, lora, spec, tmp_path / f"w{i}", progress=lambda *a, **k: None)[-1]
            for i in range(2)]
    a, b = ((ck / "adapter_model.safetensors").read_bytes() for ck in made)
    assert a == b


def test_unscorable_rows_are_counted_said_and_never_drawn(tmp_path, tiny_pool_file, target_file,
                                                          tiny_model_dir):
    """Under LESS's right cut row 5 (a long question) keeps no answer token: the summary, the
    reward store's manifest and the workspace say so, and the bandit never draws it, even
    with a budget of every row; keep_answer gives it back its gradient."""
    from clusterucb_core.features.scorable import load_report

    cfg = tiny_config(tmp_path, tiny_pool_file, target_file, tiny_model_dir)
    right = replace(cfg, model=replace(cfg.model, truncation="right"),
                    selection=replace(cfg.selection, budget=1.0))
    pipe = Pipeline(right, log=None)
    summary = pipe.run_all()
    n = len(pipe.pool.table)
    assert summary["unscorable_rows"] == 1 and "1 rows (2.5%) cannot be scored" in \
        summary["formatting"]
    assert summary["budget_used"] == n - 1
    run = pipe.selection()
    assert run.round_drawn[5] < 0 and (np.delete(run.round_drawn, 5) >= 0).all()
    note = pipe.reward_engines[0].store().manifest["formatting"]
    assert note["n_unscorable"] == 1 and note["truncation"] == "right"
    assert load_report(pipe.ws.root).unscorable == [5]
    assert "target" in summary["target_truncation"]
    keep = Pipeline(replace(cfg, workspace=str(tmp_path / "keep")), log=None)
    assert keep.format_report.n_unscorable == 0 and keep.format_report.n_truncated >= 1


def test_best_subtask_exported_and_balanced_selection(tmp_path, tiny_pool_file, target_file,
                                                      tiny_model_dir):
    """Each exported scored row names the subtask it serves best (the column of its score);
    balance = "subtasks" refills the top-p round-robin, so both subtasks are served."""
    import pandas as pd

    cfg = tiny_config(tmp_path, tiny_pool_file, target_file, tiny_model_dir)
    pipe = Pipeline(cfg, log=None)
    summary = pipe.run_all()
    table = pd.read_csv(Path(summary["export"]) / "selection.csv")
    scored = table[table["score"].notna()]
    assert set(scored["best_subtask"]) <= {"a", "b"} and scored["best_subtask"].notna().all()
    per = pipe.subtask_scores(scored["row"].to_numpy())
    np.testing.assert_allclose(per.max(axis=1), scored["score"], rtol=1e-4, atol=1e-5)
    assert sum(summary["subtask_coverage"].values()) == summary["selected"]
    bal = replace(cfg, run_id="bal", selection=replace(cfg.selection, balance="subtasks",
                                                       top_p=0.2))
    pipe = Pipeline(bal, log=None)
    pipe.run_selection("bal")
    res = pipe.result(pipe.selection("bal"))
    scored = np.flatnonzero(np.isfinite(res.scores))
    per = pipe.subtask_scores(scored)
    for c in range(per.shape[1]):  # each subtask's own best row is in the selection
        assert scored[np.nanargmax(per[:, c])] in res.rows
    # the app overrides the rule per view; the result's spec records the rule used
    run = pipe.selection("bal")
    as_max = pipe.result(run, balance="max")
    assert as_max.spec.balance == "max" and res.spec.balance == "subtasks"
    np.testing.assert_array_equal(as_max.rows, run.result().rows)
    with pytest.raises(ValueError, match="balance 'mean' is not one of max, subtasks"):
        pipe.result(run, balance="mean")
    # remembered per row: asking again (any order, repeats) gives the same columns
    again = pipe.subtask_scores(np.r_[scored[::-1], scored[:1]])
    np.testing.assert_array_equal(again[:-1], per[::-1])
    np.testing.assert_array_equal(again[-1], per[0])
    # readable from files alone for the scored rows; said why not for the others
    fresh = Pipeline(bal, log=None)
    assert fresh.subtasks_ready(scored) is None
    unscored = np.flatnonzero(~np.isfinite(res.scores))
    assert "have no stored reward features" in fresh.subtasks_ready(unscored)
    assert "reward_engines" not in fresh.__dict__  # no model was loaded to know it
    with pytest.raises(ValueError, match="balance = 'mean': must be one of max, subtasks"):
        replace(cfg.selection, balance="mean")
