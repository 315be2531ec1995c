"""`clusterucb validate`: report contents and exit codes on good and damaged pools."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clusterucb_core.cli import main

REPO = Path(__file__).resolve().parents[2]
FLAN = REPO.parent / "shared" / "data" / "real" / "flan_cot_pool.jsonl"


def _chat(i: int) -> dict:
    return {"dataset": "math" if i % 3 else "trivia", "id": f"r{i}", "messages": [
        {"role": "user", "content": f"What is {i} plus {i}?"},
        {"role": "assistant", "content": f"It is {2 * i}. " + "word " * (i % 7)}]}


@pytest.fixture()
def good(tmp_path) -> Path:
    path = tmp_path / "good.jsonl"
    path.write_text("".join(json.dumps(_chat(i)) + "\n" for i in range(30)))
    return path


def _run(capsys, *argv) -> tuple[int, str]:
    code = main(["validate", *map(str, argv)])
    return code, capsys.readouterr().out


def test_good_pool(capsys, good):
    code, out = _run(capsys, good)
    assert code == 0
    assert "format: jsonl   shape: messages" in out
    assert re.search(r"^  math +20$", out, re.M) and re.search(r"^  trivia +10$", out, re.M)
    assert "records: 30   valid: 30" in out and "problems: none" in out
    assert "verdict: usable (exit 0)" in out


def test_damaged_pool_lists_lines_and_strict_fails(capsys, tmp_path, good):
    lines = good.read_bytes().split(b"\n")
    lines[3] = lines[3][:25]  # truncated line 4
    lines[7] = b'{"messages": [{"role": "user", "content": "q"}]}'  # line 8: no answer
    lines[11] = b"\xff\xfe garbage"  # line 12
    lines[15] = lines[14]  # line 16 duplicates line 15's id
    bad = tmp_path / "damaged.jsonl"
    bad.write_bytes(b"\n".join(lines))
    code, out = _run(capsys, bad)
    assert code == 0  # still usable: valid rows load
    assert "errors: 3 (rows excluded)   warnings: 2 (rows kept)" in out
    assert "line 4: error: bad JSON" in out
    assert "line 8: error: no assistant turn" in out
    assert "line 12: error: non-UTF-8 bytes" in out
    assert "line 16: warning: duplicate id 'r14' (first at line 15)" in out
    assert "line 16: warning: same conversation as line 15" in out
    code, out = _run(capsys, bad, "--strict")
    assert code == 1 and "NOT usable" in out and "line 4: error" in out
    code, out = _run(capsys, bad, "--limit", "2")
    assert "... and 3 more problems" in out


def test_unusable_and_usage_errors(capsys, tmp_path):
    junk = tmp_path / "junk.jsonl"
    junk.write_bytes(b"not json\n{\"a\": 1}\n")
    code, out = _run(capsys, junk)
    assert code == 1 and "line 1: error: bad JSON" in out and "NOT usable" in out
    assert _run(capsys, tmp_path / "missing.jsonl")[0] == 2
    ok = tmp_path / "ok.jsonl"
    ok.write_text(json.dumps(_chat(1)) + "\n")
    code = main(["validate", str(ok), "--tokenizer", str(tmp_path / "nope")])
    assert code == 2 and "cannot load the tokenizer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["validate", str(junk), "--format", "xml"])


def test_override_and_token_summary(capsys, tmp_path, good):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["What is 1 plus 1? It is 2."] * 5, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>").save_pretrained(
        tmp_path / "tok"
    )
    code, out = _run(capsys, good, "--tokenizer", tmp_path / "tok", "--max-length", 24)
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("tokens ("))
    nums = [int(x) for x in line.split(":")[-1].split() if x.isdigit()]
    assert len(nums) == 4 and nums == sorted(nums)  # min <= median <= p95 <= max
    assert "rows longer than --max-length 24" in out
    # forcing the wrong shape makes every row a problem -> exit 1
    code, out = _run(capsys, good, "--shape", "alpaca")
    assert code == 1 and "missing field 'instruction'" in out


@pytest.mark.skipif(not FLAN.exists(), reason="../shared/data/real absent")
def test_real_flan_pool(capsys, tmp_path):
    code, out = _run(capsys, FLAN)
    assert code == 0 and "rows per source (6 sources, 1800 rows)" in out
    data = FLAN.read_bytes().split(b"\n")
    data[99] = data[99][: len(data[99]) // 2]
    data[499] = b"\xc3\x28" + data[499]
    damaged = tmp_path / "flan_damaged.jsonl"
    damaged.write_bytes(b"\n".join(data))
    code, out = _run(capsys, damaged)
    assert code == 0 and "valid: 1798" in out
    assert "line 100: error: bad JSON" in out and "line 500: error: non-UTF-8" in out
