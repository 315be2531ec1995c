"""Target loaders: LESS layouts rendered with LESS's templates, pool files with `subtask`,
equal-count rule and explicit trim."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clusterucb_core.data.targets import (
    TYDIQA_TEMPLATES,
    TargetError,
    bundled_targets,
    load_target,
)

REPO = Path(__file__).resolve().parents[2]
REAL_EVAL = REPO.parent / "shared" / "data" / "real" / "eval"

BBH = {
    "boolean_expressions": (
        "Evaluate the result of a random Boolean expression.\n\n"
        "Q: not ( ( not not True ) ) is\nA: Let's think step by step.\nSo the answer is False.\n\n"
        "Q: True and False and not True and True is\nA: Let's think.\nSo the answer is False.\n\n"
        "Q: not not ( not ( False ) ) is\nA: Step.\nSo the answer is True."),
    "date_understanding": (
        "Infer the date from context.\n\nOptions are given.\n\n"
        "Q: Today is Christmas Eve of 1937. What is the date 10 days ago?\nA: 12/14/1937\n\n"
        "Q: Tomorrow is 11/12/2019. What is the date one year ago from today?\nA: 11/11/2018\n\n"
        "Q: Jane and John married on Jan 2, 1958. Today is their 5th anniversary.\nA: 01/02/1963"),
}


def test_bbh_three_shot_rendering(tmp_path):
    path = tmp_path / "bbh-three-shot.json"
    path.write_text(json.dumps(BBH))
    t = load_target(path)
    assert t.kind == "bbh" and t.name == "bbh"
    assert t.counts() == {"boolean_expressions": 3, "date_understanding": 3}
    ex = t.examples[4]  # date_understanding, second example asked, first and third as context
    assert ex.subtask == "date_understanding"
    assert ex.prompt == (
        "<|user|>\nInfer the date from context.\n\nOptions are given.\n\n"
        "Q: Today is Christmas Eve of 1937. What is the date 10 days ago?\nA: 12/14/1937\n\n"
        "Q: Jane and John married on Jan 2, 1958. Today is their 5th anniversary.\n"
        "A: 01/02/1963\n\n"
        "Q: Tomorrow is 11/12/2019. What is the date one year ago from today?"
        "\n<|assistant|>\nA:"
    )
    assert ex.completion == " 11/11/2018"
    assert t.examples[0].completion == " Let's think step by step.\nSo the answer is False."
    # folder forms
    assert load_target(tmp_path).kind == "bbh"
    assert load_target(tmp_path, kind="bbh").fingerprint == t.fingerprint
    bad = tmp_path / "bad" / "bbh-three-shot.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps({"t": "desc\n\nQ: x\nA: y"}))
    with pytest.raises(TargetError, match="blocks"):
        load_target(bad)


def _tydiqa_file(tmp_path: Path, langs=("english", "swahili")) -> Path:
    data = {lang: [{"id": f"{lang}-1", "lang": lang, "context": f"Context in {lang}.",
                    "question": f"Question in {lang}?",
                    "answers": [{"answer_start": 0, "text": f"Ans {lang}"},
                                {"answer_start": 3, "text": "other"}]}]
            for lang in langs}
    path = tmp_path / "tydiqa-one-shot.json"
    path.write_text(json.dumps(data, ensure_ascii=False))
    return path


def test_tydiqa_rendering(tmp_path):
    t = load_target(_tydiqa_file(tmp_path))
    assert t.kind == "tydiqa" and t.subtasks == ["english", "swahili"]
    en = t.examples[0]
    assert en.prompt == ("<|user|>\nAnswer the following question based on the information in "
                         "the given passage.Passage: Context in english.\nQuestion: Question in "
                         "english?\n<|assistant|>\nAnswer:")
    assert en.completion == " Ans english"
    sw = t.examples[1]
    assert sw.prompt.startswith("<|user|>\n" + TYDIQA_TEMPLATES["swahili"][0] + "Kifungu: ")
    assert sw.prompt.endswith("\nSwali: Question in swahili?\n<|assistant|>\nJibu:")
    (tmp_path / "x").mkdir()
    bad = _tydiqa_file(tmp_path / "x", langs=("klingon",))
    with pytest.raises(TargetError, match="klingon"):
        load_target(bad)


def test_mmlu_rendering_and_layouts(tmp_path):
    dev = tmp_path / "mmlu" / "dev"
    dev.mkdir(parents=True)
    (dev / "high_school_physics_dev.csv").write_text(
        'What is 1+1?,1,2,"3, maybe",4,B\n"Multi\nline?",a,b,c,d,D\n')
    (dev / "anatomy_dev.csv").write_text("Q1,a,b,c,d,A\nQ2,a,b,c,d,C\n")
    for where in (tmp_path / "mmlu", dev, tmp_path):
        t = load_target(where)
        assert t.kind == "mmlu" and t.counts() == {"anatomy": 2, "high_school_physics": 2}
    assert t.examples[0].subtask == "anatomy"  # subjects sorted
    ex = t.examples[2]
    assert ex.prompt == ("<|user|>\nThe following are multiple choice questions (with answers) "
                         "about  high school physics.\n\nWhat is 1+1?\nA. 1\nB. 2\nC. 3, maybe\n"
                         "D. 4\nAnswer:\n<|assistant|>\nThe answer is:")
    assert ex.completion == " B"
    assert "Multi\nline?\nA. a" in t.examples[3].prompt
    assert len(load_target(dev / "anatomy_dev.csv")) == 2


def test_pool_target_with_subtasks(tmp_path):
    recs = []
    for s, n in (("add", 3), ("mul", 2)):
        for i in range(n):
            recs.append({"subtask": s, "messages": [
                {"role": "system", "content": "Sys"},
                {"role": "user", "content": f"{s} {i}?"},
                {"role": "assistant", "content": f"first {i}"},
                {"role": "user", "content": "and?"},
                {"role": "assistant", "content": f"{s} answer {i}"}]})
    path = tmp_path / "mytarget.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(TargetError, match=r"unequal.*add=3, mul=2.*first 2"):
        load_target(path)
    t = load_target(path, trim=True)
    assert t.kind == "pool" and t.name == "mytarget"
    assert t.counts() == {"add": 2, "mul": 2} and t.trimmed == {"add": 1}
    assert [e.completion for e in t.examples] == ["add answer 0", "add answer 1",
                                                  "mul answer 0", "mul answer 1"]
    assert t.examples[0].prompt == ("<|system|>\nSys\n<|user|>\nadd 0?\n<|assistant|>\nfirst 0"
                                    "\n<|user|>\nand?\n<|assistant|>\n")
    assert t.subtask_ids().tolist() == [0, 0, 1, 1]
    # trimming changes the content, so the fingerprint
    path.write_text("".join(json.dumps(r) + "\n" for r in recs[:2] + recs[3:]))
    assert load_target(path).fingerprint == t.fingerprint
    assert load_target(path).trimmed == {}

    nosub = tmp_path / "nosub.jsonl"
    nosub.write_text(json.dumps({"messages": recs[0]["messages"]}) + "\n")
    with pytest.raises(TargetError, match="subtask"):
        load_target(nosub)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(recs[0]) + "\n{oops\n")
    with pytest.raises(TargetError, match="line 2"):
        load_target(broken)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_target(tmp_path / "none.json")
    with pytest.raises(TargetError, match="not a target folder"):
        load_target(tmp_path)
    with pytest.raises(TargetError, match="unknown target kind"):
        load_target(tmp_path, kind="gsm8k")


def test_encode_keeps_completion(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["hello world"] * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>")
    path = tmp_path / "bbh-three-shot.json"
    path.write_text(json.dumps(BBH))
    t = load_target(path)
    full, n_full = t.encode(fast, max_length=100_000)
    assert n_full == 0
    room = max(f.n_labels for f in full) + 8  # every completion fits, no prompt does
    encs, n_cut = t.encode(fast, max_length=room)
    assert n_cut == len(t) and all(len(e.input_ids) == room for e in encs)
    for e, f in zip(encs, full):
        assert e.n_labels == f.n_labels
        assert e.input_ids[-f.n_labels:] == f.input_ids[-f.n_labels:]
        assert e.labels[-f.n_labels:] == f.labels[-f.n_labels:]


def test_bundled_targets_load():
    found = bundled_targets()
    if not found:
        pytest.skip("sample_data/targets not built yet")
    for name, path in found.items():
        t = load_target(path)
        assert len(t.subtasks) >= 2 and len(set(t.counts().values())) == 1, name


@pytest.mark.skipif(not (REAL_EVAL / "mmlu" / "dev").is_dir(), reason="../shared/data/real absent")
def test_real_mmlu_matches_less_code_path():
    import pandas as pd

    t = load_target(REAL_EVAL / "mmlu")
    assert len(t) == 285 and len(t.subtasks) == 57 and set(t.counts().values()) == {5}
    # LESS get_mmlu_dataset, transcribed: pandas header=None, format_subject, tulu wrap
    dev = REAL_EVAL / "mmlu" / "dev"
    expected = []
    for subject in sorted(f.name[:-8] for f in dev.iterdir() if f.name.endswith("_dev.csv")):
        df = pd.read_csv(dev / f"{subject}_dev.csv", header=None)[:5]
        s = "".join(" " + w for w in subject.split("_"))
        for i in range(5):
            p = f"The following are multiple choice questions (with answers) about {s}.\n\n"
            p += str(df.iloc[i, 0])
            for j in range(df.shape[1] - 2):
                p += "\n{}. {}".format("ABCD"[j], df.iloc[i, j + 1])
            p += "\nAnswer:"
            expected.append(("<|user|>\n" + p + "\n<|assistant|>\nThe answer is:",
                             " " + df.iloc[i, df.shape[1] - 1]))
    # identical text, including a cell's CRLF (college_mathematics) that LESS keeps
    assert [(e.prompt, e.completion) for e in t.examples] == expected


@pytest.mark.skipif(not (REAL_EVAL / "tydiqa").is_dir(), reason="../shared/data/real absent")
def test_real_tydiqa():
    t = load_target(REAL_EVAL / "tydiqa")
    assert t.kind == "tydiqa" and len(t) == 9 and set(t.subtasks) == set(TYDIQA_TEMPLATES)
    raw = json.loads((REAL_EVAL / "tydiqa" / "tydiqa-one-shot.json").read_text())
    for e in t.examples:
        ex = raw[e.subtask][0]
        assert e.completion == " " + ex["answers"][0]["text"]
        assert ex["context"] in e.prompt and ex["question"] in e.prompt
        assert e.prompt.endswith("<|assistant|>\n" + TYDIQA_TEMPLATES[e.subtask][3])
    with pytest.raises(TargetError, match="several targets"):
        load_target(REAL_EVAL)
    assert load_target(REAL_EVAL, kind="mmlu").kind == "mmlu"
