"""The bundled demo: pool, targets and model (sample_data/, made by scripts/)."""

from __future__ import annotations

import collections
import importlib.util
import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data"
POOL = SAMPLE / "demo_pool.jsonl"
PLANTED = SAMPLE / "demo_pool_planted.json"
TARGETS = SAMPLE / "targets"
MODEL = SAMPLE / "demo_model"
ROLES = {"system", "user", "assistant"}


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def pool() -> list[dict]:
    return _read_jsonl(POOL)


@pytest.fixture(scope="module")
def targets() -> dict[str, list[dict]]:
    return {p.stem: _read_jsonl(p) for p in sorted(TARGETS.glob("*.jsonl"))}


def _key(row: dict) -> str:
    return json.dumps([row["dataset"], row["messages"]], sort_keys=True, ensure_ascii=False)


# ----------------------------------------------------------------------------- pool
def test_pool_size_families_and_shape(pool):
    assert len(pool) >= 3000
    fams = collections.Counter(r["dataset"] for r in pool)
    assert len(fams) >= 8
    assert min(fams.values()) >= 150, fams  # every family big enough to form clusters
    ids = [r["id"] for r in pool]
    assert len(set(ids)) == len(ids)
    for r in pool:
        assert set(r) == {"dataset", "id", "messages"}
        roles = [m["role"] for m in r["messages"]]
        assert set(roles) <= ROLES
        assert roles[-1] == "assistant" and "user" in roles
        assert all(isinstance(m["content"], str) for m in r["messages"])
    assert sum(r["messages"][0]["role"] == "system" for r in pool) >= 50
    assert sum(sum(m["role"] == "assistant" for m in r["messages"]) > 1 for r in pool) >= 20


def test_pool_has_variety_inside_each_family(pool):
    by = collections.defaultdict(list)
    for r in pool:
        user = next(m["content"] for m in r["messages"] if m["role"] == "user")
        by[r["dataset"]].append(user)
    for fam, prompts in by.items():
        assert len(set(prompts)) >= 0.6 * len(prompts), fam
        lengths = sorted(len(p) for p in prompts)
        assert lengths[-1] >= 2 * lengths[0], fam  # short and long prompts in every family


def test_pool_under_size_limit():
    assert POOL.stat().st_size < 4 * 1024 * 1024


def test_planted_low_quality_rows(pool):
    planted = json.loads(PLANTED.read_text(encoding="utf-8"))
    by_id = {r["id"]: r for r in pool}
    assert len(planted["empty_answer"]) >= 5
    for rid in planted["empty_answer"]:
        assert by_id[rid]["messages"][-1]["content"] == ""
    # the only empty answers are the planted ones
    assert {r["id"] for r in pool if r["messages"][-1]["content"] == ""} == set(
        planted["empty_answer"]
    )

    assert len(planted["wrong_answer"]) >= 10
    for w in planted["wrong_answer"]:
        content = by_id[w["id"]]["messages"][-1]["content"]
        assert w["given"] != w["correct"]
        assert w["given"] in content

    assert len(planted["duplicate"]) >= 5
    for d in planted["duplicate"]:
        assert d["id"] != d["copy_of"]
        assert _key(by_id[d["id"]]) == _key(by_id[d["copy_of"]])
    # the only exact duplicate chats are the planted ones
    counts = collections.Counter(_key(r) for r in pool)
    assert sum(c - 1 for c in counts.values()) == len(planted["duplicate"])


def test_planted_wrong_arithmetic_is_really_wrong(pool):
    planted = json.loads(PLANTED.read_text(encoding="utf-8"))
    by_id = {r["id"]: r for r in pool}
    checked = 0
    for w in planted["wrong_answer"]:
        row = by_id[w["id"]]
        user = row["messages"][-2]["content"]
        if (
            row["dataset"] == "arithmetic_add"
            and user.startswith("What is ")
            and user.count("+") == 1
        ):
            a, b = (int(x) for x in user[len("What is "):].rstrip("?").split("+"))
            assert w["correct"] == str(a + b) and w["given"] != str(a + b)
            checked += 1
        elif row["dataset"] in ("arithmetic_add", "arithmetic_mul"):
            assert w["correct"] != w["given"]
            checked += 1
    assert checked >= 5


# ----------------------------------------------------------------------------- targets
def test_targets_equal_subtasks(targets):
    assert len(targets) >= 3
    for name, rows in targets.items():
        counts = collections.Counter(r["subtask"] for r in rows)
        assert len(counts) >= 2, name
        assert len(set(counts.values())) == 1, (name, counts)
        for r in rows:
            assert set(r) == {"dataset", "id", "subtask", "messages"}
            assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
            assert r["messages"][1]["content"].strip()
        assert len({r["id"] for r in rows}) == len(rows)


def test_targets_match_and_partly_match_the_pool(pool, targets):
    families = {r["dataset"] for r in pool}
    coverage = {}
    for name, rows in targets.items():
        subs = collections.defaultdict(set)
        for r in rows:
            subs[r["subtask"]].add(r["dataset"])
        coverage[name] = {s: ds <= families for s, ds in subs.items()}
    fully = [n for n, c in coverage.items() if all(c.values())]
    partly = [n for n, c in coverage.items() if any(c.values()) and not all(c.values())]
    assert "arithmetic" in fully
    assert "reasoning_mix" in partly


def test_targets_are_not_copies_of_pool_rows(pool, targets):
    pool_prompts = {m["content"] for r in pool for m in r["messages"] if m["role"] == "user"}
    for name, rows in targets.items():
        for r in rows:
            assert r["messages"][0]["content"] not in pool_prompts, (name, r["id"])


# ----------------------------------------------------------------------------- reproducibility
def test_data_script_regenerates_the_same_bytes(tmp_path):
    mod = _load_script("make_demo_data")
    summary = mod.generate(tmp_path)
    assert (tmp_path / "demo_pool.jsonl").read_bytes() == POOL.read_bytes()
    assert (tmp_path / "demo_pool_planted.json").read_bytes() == PLANTED.read_bytes()
    made = sorted(str(p.relative_to(tmp_path / "targets"))
                  for p in (tmp_path / "targets").rglob("*.jsonl"))
    assert made == sorted(str(p.relative_to(TARGETS)) for p in TARGETS.rglob("*.jsonl"))
    assert any(name.startswith("heldout/") for name in made)
    for name in made:
        assert (tmp_path / "targets" / name).read_bytes() == (TARGETS / name).read_bytes()
    assert summary["rows"] == sum(1 for _ in open(POOL, encoding="utf-8"))


def test_heldout_targets_are_new_examples_of_the_same_subtasks(targets):
    from clusterucb_core.data.targets import load_target

    for name, rows in targets.items():
        heldout = load_target(TARGETS / "heldout" / f"{name}.jsonl")
        assert set(heldout.subtasks) == {r["subtask"] for r in rows}
        assert len(set(heldout.counts().values())) == 1  # equal examples per subtask
        seen = {m["content"] for r in rows for m in r["messages"] if m["role"] == "user"}
        assert not seen & {ex.prompt for ex in heldout.examples}
        assert not any(ex.prompt.split("<|user|>\n")[-1].split("\n<|assistant|>")[0] in seen
                       for ex in heldout.examples)


def test_data_script_seed_changes_the_pool():
    mod = _load_script("make_demo_data")
    a, _ = mod.make_pool(seed=1)
    b, _ = mod.make_pool(seed=2)
    assert [r["messages"] for r in a] != [r["messages"] for r in b]


# ----------------------------------------------------------------------------- model
@pytest.fixture(scope="module")
def demo_model():
    import os

    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(MODEL)
        tok = AutoTokenizer.from_pretrained(MODEL)
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old
    model.eval()
    return model, tok


def test_demo_model_files_and_size():
    names = {p.name for p in MODEL.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json", "training_report.json"} <= names
    total = sum(p.stat().st_size for p in MODEL.iterdir() if p.is_file())
    assert total <= 40 * 1024 * 1024
    report = json.loads((MODEL / "training_report.json").read_text(encoding="utf-8"))
    assert (
        report["heldout_loss"]["trained"]["all_tokens"]
        < report["heldout_loss"]["untrained"]["all_tokens"]
    )
    assert (
        report["heldout_loss"]["trained"]["assistant_tokens"]
        < report["heldout_loss"]["untrained"]["assistant_tokens"]
    )


def test_demo_model_is_llama_with_lora_target_names(demo_model):
    model, tok = demo_model
    assert model.config.model_type == "llama"
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert {"q_proj", "k_proj", "v_proj", "o_proj"} <= names
    assert tok.eos_token == "</s>" and tok.bos_token == "<s>"
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert model.config.vocab_size == len(tok)


def test_demo_model_finite_loss_on_a_pool_row(demo_model, pool):
    import torch

    model, tok = demo_model
    mod = _load_script("train_demo_model")
    row = next(r for r in pool if r["dataset"] == "arithmetic_add" and r["messages"][-1]["content"])
    text, _ = mod.render_tulu(row["messages"], tok.eos_token)
    ids = tok(text, return_tensors="pt")["input_ids"]
    assert ids[0, 0].item() == tok.bos_token_id
    assert (ids[0] == tok.eos_token_id).sum().item() == 1  # "</s>" in the text is one token
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    assert math.isfinite(loss)
    assert loss < math.log(len(tok))  # better than a uniform guess: it learned something
