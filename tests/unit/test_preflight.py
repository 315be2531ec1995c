"""A typo in any setting of a run config exits 2 with one line, before anything is written.

Every field of every section gets a value that breaks its rule (a wrong type, a choice that
does not exist), and the settings that can only be checked against the model or the pool get
the typos a new user makes: `k_rule = "siluette"`, `target_modules = ["q_prj"]`,
`layers = 99`, `k = 5000` on a 200-row pool.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

import pytest

from clusterucb_core import config as C
from clusterucb_core.cli import main
from clusterucb_core.preflight import check_pool_size, preflight

N_ROWS = 200

# free-text fields any string satisfies: a folder to create, a column that may be absent
_FREE = {"workspace", "export_dir"}
# field -> a typo its type allows but the model, the pool or its own rule refuses
SEMANTIC = {
    ("clusters", "k_rule"): ["siluette", "size0", "sizeX"],
    ("lora", "target_modules"): [["q_prj"]],
    ("lora", "layers_to_transform"): [[99]],
    ("cluster_features", "layers"): [99],
    ("reward_features", "top_blocks"): [99],
    ("clusters", "k"): [5000],
    ("model", "name_or_path"): ["no/such/model/folder"],
    ("model", "device"): ["gpu"],
    (None, "pool"): ["missing.jsonl"],
    (None, "target"): ["missing_target.jsonl"],
    (None, "run_id"): ["a/b"],
    (None, "pool_id_field"): ["no_such_column"],
    (None, "pool_source_field"): [" source"],
}


def _bad_for(hint) -> object:
    """A value of the wrong kind for a field of this type."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "typo"
    if hint is bool:
        return "yes"
    if hint in (int, float) or origin in (typing.Union, __import__("types").UnionType):
        return "x"
    if origin is tuple:
        return 5
    if hint is str:
        return 5
    raise AssertionError(f"no bad value for {hint}")


def _cases():
    hints = typing.get_type_hints(C.RunConfig)
    for f in dataclasses.fields(C.RunConfig):
        if f.name in C.SECTIONS:
            sub = typing.get_type_hints(C.SECTIONS[f.name])
            for g in dataclasses.fields(C.SECTIONS[f.name]):
                yield f.name, g.name, _bad_for(sub[g.name])
                for typo in SEMANTIC.get((f.name, g.name), []):
                    yield f.name, g.name, typo
        elif f.name == "use_warmup":
            yield "warmup", "enabled", "yes"
        elif f.name not in _FREE:
            yield None, f.name, _bad_for(hints[f.name])
            for typo in SEMANTIC.get((None, f.name), []):
                yield None, f.name, typo


CASES = list(_cases())


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A valid config (the demo model, a 200-row slice of the demo pool) as TOML data."""
    root = tmp_path_factory.mktemp("preflight")
    pool = root / "pool.jsonl"
    pool.write_bytes(b"".join(C.DEMO_POOL.read_bytes().splitlines(keepends=True)[:N_ROWS]))
    data = C.load_toml(C.DEMO_DIR / "demo_run.toml")
    data.update(pool=str(pool), target=str(C.DEMO_TARGET))
    data["model"]["name_or_path"] = str(C.DEMO_MODEL)
    return root, data


def test_every_field_gets_a_case():
    fields = {(s, g.name) for s, cls in C.SECTIONS.items() for g in dataclasses.fields(cls)}
    assert fields <= {(s, k) for s, k, _ in CASES}


@pytest.mark.parametrize(("section", "key", "value"), CASES,
                         ids=[f"{s or 'top'}.{k}={v!r}" for s, k, v in CASES])
def test_a_typo_exits_2_with_one_line_before_any_file(base, tmp_path, capsys, section, key,
                                                      value):
    root, data = base
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    if section is None:
        data[key] = value
    else:
        data.setdefault(section, {})[key] = value
    toml = tmp_path / "run.toml"
    C.save_toml(data, toml)
    ws = tmp_path / "ws"
    code = main(["run", "--config", str(toml), "--workspace", str(ws)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert not ws.exists()


def test_the_valid_base_passes_preflight(base):
    root, data = base
    preflight(C.config_from_dict(data, root))


def test_pool_size_rules_name_the_pool():
    cfg = C.RunConfig(clusters=C.ClusterSpec(k=50))
    with pytest.raises(C.ConfigError, match=r"\[clusters\] k = 50: more clusters than the "
                                            r"pool's 40 usable rows"):
        check_pool_size(cfg, 40)
    with pytest.raises(C.ConfigError, match=r"\[selection\] top_p = 0.05: selects no row"):
        check_pool_size(C.RunConfig(), 10)
    check_pool_size(C.RunConfig(), 40)
