"""One config: every setting is checked when built, with one line naming the key and the rule,
and `clusterucb run --config` refuses a bad file before any work (issue 15, bugs 2 and 3)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import typing
from dataclasses import replace
from pathlib import Path

import pytest
import tomli_w

from clusterucb_core import config as C
from clusterucb_core.cli import main
from clusterucb_core.data.pool import FORMATS, SHAPES

ROOT = Path(__file__).resolve().parents[2]


def _wrong_values(cls: type, f: dataclasses.Field) -> list[object]:
    """Values that break field `f`: the wrong type, and just outside its range."""
    hint = typing.get_type_hints(cls)[f.name]
    origin = typing.get_origin(hint)
    if hint is bool:
        out: list[object] = ["yes", 1]
    elif hint is int:
        out = ["seven", 1.5, True]
    elif hint is float:
        out = ["x", [1.0]]
    elif hint is str:
        out = [5, ["a"]]
    elif origin is typing.Literal:
        out = ["nope", 3]
    elif origin is tuple:
        out = [5, [1.5]]
    elif typing.get_origin(hint) in (typing.Union, __import__("types").UnionType):
        out = ["twelve", -1, 2.5]
    else:
        return []
    md = f.metadata
    if md.get("lo") is not None:
        out.append(md["lo"] if md.get("lo_open") else md["lo"] - 1)
    if md.get("hi") is not None:
        out.append(md["hi"] if md.get("hi_open") else md["hi"] + 1)
    return out


def _cases() -> list[tuple[str, dict]]:
    cases: list[tuple[str, dict]] = []
    for section, cls in C.SECTIONS.items():
        for f in dataclasses.fields(cls):
            for bad in _wrong_values(cls, f):
                cases.append((f"[{section}] {f.name}", {section: {f.name: bad}}))
        cases.append((f"[{section}]", {section: {"bogus_key": 1}}))
        cases.append((f"[{section}]", {section: 5}))
    for f in dataclasses.fields(C.RunConfig):
        if f.name in C.SECTIONS or f.name in ("use_warmup", "export_dir"):
            continue
        for bad in _wrong_values(C.RunConfig, f):
            cases.append((f.name, {f.name: bad}))
    cases += [("[warmup] enabled", {"warmup": {"enabled": "yes"}}),
              ("[export] out", {"export": {"out": 3}}), ("[export]", {"export": {"to": "x"}}),
              ("bogus", {"bogus": 1}), ("run_id", {"run_id": "../escape"}),
              ("dynamic_rounds", {"dynamic_rounds": 0}),
              ("[selection] top_p", {"selection": {"budget": 0.1, "top_p": 0.2}}),
              ("[model] device", {"model": {"device": "gpu"}})]
    return cases


CASES = _cases()


def test_the_fuzz_covers_every_field():
    keys = {k for k, _ in CASES}
    for section, cls in C.SECTIONS.items():
        assert {f"[{section}] {f.name}" for f in dataclasses.fields(cls)} <= keys
    assert len(CASES) > 150


@pytest.mark.parametrize("key,bad", CASES, ids=[f"{k}={json.dumps(v)[:40]}" for k, v in CASES])
def test_run_refuses_a_bad_setting_in_one_line_and_writes_nothing(tmp_path, capsys, key, bad):
    ws = tmp_path / "ws"
    data = {"workspace": str(ws), "pool": str(C.DEMO_POOL), "target": str(C.DEMO_TARGET)}
    for k, v in bad.items():
        data[k] = {**data[k], **v} if isinstance(data.get(k), dict) else v
    path = tmp_path / "run.toml"
    path.write_text(tomli_w.dumps(data))
    assert main(["run", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ")
    assert key.split()[-1].strip("[]") in err
    assert not ws.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["run.toml"]


def test_a_real_process_exits_2_with_one_line(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(f'workspace = "{tmp_path / "ws"}"\n[clusters]\nk = "twelve"\n')
    proc = subprocess.run([sys.executable, "-m", "clusterucb_core.cli", "run", "--config",
                           str(path)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr == ("error: [clusters] k = 'twelve': must be an integer >= 1, or "
                           '"auto"\n')
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize("key,value,rule", [
    ("pool", "missing.jsonl", "no such file"), ("target", "missing.jsonl", "no such file"),
    ("model", {"name_or_path": "/no/such/model"}, "does not look like a Hugging Face model id"),
    ("model", {"name_or_path": "."}, "has no config.json"),
])
def test_run_checks_paths_and_the_model_before_any_work(tmp_path, capsys, key, value, rule):
    data = {"workspace": str(tmp_path / "ws"), key: value}
    path = tmp_path / "run.toml"
    path.write_text(tomli_w.dumps(data))
    assert main(["run", "--config", str(path)]) == 2
    assert rule in capsys.readouterr().err and not (tmp_path / "ws").exists()


def test_the_same_message_from_a_form_a_flag_and_toml(tmp_path, capsys):
    from clusterucb_core.cli.cluster import parse_k

    with pytest.raises(C.ConfigError) as form:
        C.ClusterSpec(k="twelve")
    with pytest.raises(ValueError) as flag:
        parse_k("twelve")
    with pytest.raises(ValueError) as toml:
        C.config_from_dict({"clusters": {"k": "twelve"}})
    assert str(form.value) in str(flag.value) and str(form.value) in str(toml.value)


def test_literals_match_what_the_engine_accepts():
    from clusterucb_core.features.projection import PROJECTORS
    from clusterucb_core.selection.policies import POLICIES

    assert typing.get_args(C.POOL_FORMAT) == ("auto", *FORMATS)
    assert typing.get_args(C.POOL_SHAPE) == ("auto", *SHAPES)
    assert set(typing.get_args(typing.get_type_hints(C.FeatureSpec)["projection"])) == \
        set(PROJECTORS)
    assert POLICIES == typing.get_args(C.POLICY)


def test_config_round_trips():
    cfg = C.config_from_dict({"clusters": {"k": "auto"}, "lora": {"layers_to_transform": [1]}})
    assert cfg.clusters.auto_k and cfg.lora.layers_to_transform == (1,)
    assert C.config_from_dict(C.config_to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="unknown settings section 'cluster'"):
        C.section_name("cluster")


def test_the_warmup_switch_is_stored_in_the_one_config(tmp_path):
    from clusterucb_app import state
    from clusterucb_core.workspace import Workspace

    ws = Workspace.open(tmp_path / "w")
    assert state.use_warmup(ws) is True
    state.set_use_warmup(ws, False)  # how the features page stores its checkbox
    assert state.use_warmup(ws) is False and "use_warmup" not in ws.meta()
    assert C.config_from_dict(ws.meta()["config"]).use_warmup is False


def test_a_saved_random_draw_order_is_kept(tmp_path):
    """random is SelectionSpec's default but not RunConfig's (predicted): saving it must
    not drop it."""
    from clusterucb_app import state
    from clusterucb_core.workspace import Workspace

    ws = Workspace.open(tmp_path / "w")
    assert state.settings(ws, "selection").draw_order == "predicted"
    state.save_settings(ws, selection=C.SelectionSpec(draw_order="random"))
    assert state.settings(ws, "selection").draw_order == "random"


# ------------------------------------------------------------------ bugs 2 and 3 end to end

@pytest.fixture(scope="module")
def demo_pipe(demo_workspace_copy):
    from clusterucb_core.cli.demo import DEMO_CONFIG
    from clusterucb_core.pipeline import Pipeline

    cfg = replace(C.load_config(DEMO_CONFIG), workspace=str(demo_workspace_copy))
    return Pipeline(cfg, log=None)


def test_k_auto_in_a_run_config_picks_k(demo_pipe):
    """Bug 2: `[clusters] k = "auto"` (the CLI's `--k auto`) died with a TypeError in the
    pipeline; it now means the automatic K."""
    from clusterucb_core.pipeline import Pipeline

    base = C.config_to_dict(demo_pipe.cfg)
    cfg = C.config_from_dict({**base, "clusters": {"k": "auto", "k_rule": "silhouette"}})
    pipe = Pipeline(cfg, log=None)
    assert pipe.clusters_name.endswith("-kauto")
    cs = pipe.clusters
    assert cs.kscan is not None and cs.k == int(cs.kscan.loc[cs.kscan["chosen"], "k"].iloc[0])
    # the default rule sizes arms for the cold start and says so
    pipe = Pipeline(C.config_from_dict({**base, "clusters": {"k": "auto"}}), log=None)
    assert pipe.clusters_name.endswith("-ksize8")
    assert "cold-start" in pipe.clusters.meta["k_reason"]


def test_run_summary_is_plain_json(demo_pipe):
    """Bug 3: the summary printed a DataFrame's repr under metrics.rounds."""
    assert demo_pipe.known_exhaustive() is not None
    summary = demo_pipe.run_selection("summary-check")
    text = json.dumps(summary)  # no default=str: everything in it is JSON
    assert "DataFrame" not in text and "  round " not in text
    rounds = Path(summary["metrics"]["rounds_csv"])
    assert rounds.exists() and rounds.read_text().startswith("round")
