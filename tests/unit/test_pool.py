"""Pool loader: every format x chat shape, detection and overrides, validation report."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from clusterucb_core.data.load import load_pool
from clusterucb_core.data.pool import FORMATS, SHAPES, PoolError, Problem

REPO = Path(__file__).resolve().parents[2]
REAL = REPO.parent / "shared" / "data" / "real"
FLAN = REAL / "flan_cot_pool.jsonl"

CHATS = [
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Capital of France?"},
     {"role": "assistant", "content": "Paris, \"the city\", naïve ✓"}],
    [{"role": "user", "content": "line one\nline two, with comma\tand tab"},
     {"role": "assistant", "content": "ok\nsecond line"}, {"role": "user", "content": "more"},
     {"role": "assistant", "content": "done"}],
]


def _record(shape: str, i: int, chat: list[dict]) -> dict:
    """One chat in a given shape (alpaca / prompt_completion: single-turn chats only)."""
    rec: dict = {"id": f"r{i}", "dataset": "fam" + str(i % 2)}
    if shape == "messages":
        rec["messages"] = chat
    elif shape == "sharegpt":
        names = {"user": "human", "assistant": "gpt", "system": "system"}
        rec["conversations"] = [{"from": names[m["role"]], "value": m["content"]} for m in chat]
    elif shape == "alpaca":
        rec.update(instruction=chat[-2]["content"], input="", output=chat[-1]["content"])
    elif shape == "prompt_completion":
        rec.update(prompt=chat[-2]["content"], completion=chat[-1]["content"])
    return rec


def _expected(shape: str, chat: list[dict]) -> list[dict]:
    return chat if shape in ("messages", "sharegpt") else chat[-2:]


def _write(path: Path, fmt: str, recs: list[dict]) -> Path:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), "utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(recs, ensure_ascii=False, indent=2), "utf-8")
    elif fmt in ("csv", "tsv"):
        cols = list(dict.fromkeys(k for r in recs for k in r))
        buf = io.StringIO(newline="")
        w = csv.writer(buf, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
        w.writerow(cols)
        for r in recs:
            w.writerow([json.dumps(r[c], ensure_ascii=False) if isinstance(r.get(c), list)
                        else r.get(c, "") for c in cols])
        path.write_text(buf.getvalue(), "utf-8")
    elif fmt == "parquet":
        pd.DataFrame(recs).to_parquet(path)
    elif fmt == "datasets":
        import datasets

        datasets.Dataset.from_list(recs).save_to_disk(str(path))
    return path


_EXT = {"jsonl": ".jsonl", "json": ".json", "csv": ".csv", "tsv": ".tsv", "parquet": ".parquet",
        "datasets": ""}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_and_shape(tmp_path, fmt, shape):
    recs = [_record(shape, i, c) for i, c in enumerate(CHATS)]
    path = _write(tmp_path / f"pool{_EXT[fmt]}", fmt, recs)
    pool = load_pool(path)
    assert (pool.format, pool.shape) == (fmt, shape)
    assert pool.report.ok and pool.report.n_valid == 3 == pool.report.n_records
    t = pool.table
    assert list(t.columns[:6]) == ["row", "id", "source", "messages", "line_no", "raw"]
    assert t["row"].tolist() == [0, 1, 2]
    assert t["id"].tolist() == ["r0", "r1", "r2"]
    assert t["source"].tolist() == ["fam0", "fam1", "fam0"]
    assert t["messages"].tolist() == [_expected(shape, c) for c in CHATS]
    assert len(pool.fingerprint) == 64
    # forcing the detected format and shape gives the same table
    forced = load_pool(path, format=fmt, shape=shape)
    pd.testing.assert_frame_equal(forced.table, t)
    if fmt in ("parquet", "datasets"):
        assert t["line_no"].tolist() == [1, 2, 3]
        assert json.loads(t["raw"][1])["id"] == "r1"


def test_raw_lines_are_byte_exact_jsonl_crlf_and_line_numbers(tmp_path):
    lines = [json.dumps({"messages": c}, ensure_ascii=False) for c in CHATS]
    body = (lines[0] + "\r\n\r\n" + lines[1] + "\r\n   \r\n" + lines[2] + "\r\n").encode()
    path = tmp_path / "p.jsonl"
    path.write_bytes(body)
    pool = load_pool(path)
    assert pool.newline == "\r\n"
    assert pool.table["line_no"].tolist() == [1, 3, 5]
    assert pool.table["raw"].tolist() == lines
    assert b"".join(pool.original_line(i) for i in range(3)) == \
        (lines[0] + "\r\n" + lines[1] + "\r\n" + lines[2] + "\r\n").encode()
    # ids made from source (file stem) and the record's position (issue 13: not the line)
    assert pool.table["id"].tolist() == ["p_0", "p_1", "p_2"]
    assert pool.table["source"].tolist() == ["p"] * 3


def test_raw_csv_multiline_record_and_line_numbers(tmp_path):
    path = tmp_path / "a.csv"
    text = ('instruction,input,output\r\n'
            '"Say ""hi""",,"hello\r\nthere"\r\n'
            'Add,"1, 2",3\r\n')
    path.write_bytes(text.encode())
    pool = load_pool(path)
    assert pool.shape == "alpaca" and pool.newline == "\r\n"
    assert pool.table["line_no"].tolist() == [2, 4]
    assert pool.table["raw"].tolist() == ['"Say ""hi""",,"hello\r\nthere"', 'Add,"1, 2",3']
    assert pool.table["messages"][0] == [{"role": "user", "content": 'Say "hi"'},
                                         {"role": "assistant", "content": "hello\r\nthere"}]
    assert pool.table["messages"][1][0]["content"] == "Add\n\n1, 2"


def test_json_object_with_data_and_line_numbers(tmp_path):
    recs = [_record("messages", i, c) for i, c in enumerate(CHATS)]
    path = tmp_path / "d.json"
    text = json.dumps({"meta": {"x": [1, 2]}, "data": recs}, indent=1)
    path.write_text(text)
    pool = load_pool(path)
    assert pool.format == "json" and len(pool) == 3
    for raw, line in zip(pool.table["raw"], pool.table["line_no"]):
        assert json.loads(raw)["id"] in {"r0", "r1", "r2"}
        assert text.splitlines()[line - 1].strip() == "{"  # the element starts on that line
        assert text.count("\n", 0, text.index(raw)) + 1 == line


def test_json_extension_holding_jsonl_and_sniffing(tmp_path):
    body = "".join(json.dumps({"messages": c}) + "\n" for c in CHATS)
    (tmp_path / "x.json").write_text(body)
    pool = load_pool(tmp_path / "x.json")
    assert pool.format == "jsonl" and len(pool) == 3 and pool.notes
    (tmp_path / "noext").write_text(body)
    assert load_pool(tmp_path / "noext").format == "jsonl"
    (tmp_path / "noext2").write_text(json.dumps([{"messages": c} for c in CHATS]))
    assert load_pool(tmp_path / "noext2").format == "json"


def test_shape_override_and_mixed_fields(tmp_path):
    # a record with both 'messages' and 'prompt'/'completion': auto picks messages; override
    rec = {"messages": CHATS[0], "prompt": "P?", "completion": "C."}
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    assert load_pool(path).table["messages"][0] == CHATS[0]
    forced = load_pool(path, shape="prompt_completion")
    assert forced.shape == "prompt_completion"
    assert forced.table["messages"][0] == [{"role": "user", "content": "P?"},
                                          {"role": "assistant", "content": "C."}]
    # forcing a shape the rows do not have -> every row is a problem -> no usable rows
    with pytest.raises(PoolError, match="missing field 'conversations'") as exc:
        load_pool(path, shape="sharegpt")
    assert exc.value.report.problems[0].line == 1
    with pytest.raises(PoolError, match="unknown format"):
        load_pool(path, format="xml")
    with pytest.raises(PoolError, match="unknown shape"):
        load_pool(path, shape="chatml")
    with pytest.raises(FileNotFoundError):
        load_pool(tmp_path / "missing.jsonl")


def test_conversational_prompt_completion_and_alpaca_system(tmp_path):
    recs = [{"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
             "completion": [{"role": "assistant", "content": "A"}]},
            {"instruction": "I", "input": "X", "output": "O", "system": "Sys"}]
    (tmp_path / "a.jsonl").write_text(json.dumps(recs[0]) + "\n")
    assert load_pool(tmp_path / "a.jsonl").table["messages"][0] == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "U"},
        {"role": "assistant", "content": "A"}]
    (tmp_path / "b.jsonl").write_text(json.dumps(recs[1]) + "\n")
    assert load_pool(tmp_path / "b.jsonl").table["messages"][0] == [
        {"role": "system", "content": "Sys"}, {"role": "user", "content": "I\n\nX"},
        {"role": "assistant", "content": "O"}]


DAMAGED = [
    (json.dumps({"id": "ok1", "messages": CHATS[0]}), None),
    ('{"messages": [{"role": "user", "content": "hi"}', "bad JSON"),
    ('["not", "an", "object"]', "not a JSON object"),
    (json.dumps({"id": "x"}), "missing field 'messages'"),
    (json.dumps({"messages": "hello"}), "must be a list"),
    (json.dumps({"messages": []}), "is empty"),
    (json.dumps({"messages": [{"role": "user", "content": "q"}]}), "no assistant turn"),
    (json.dumps({"messages": [{"role": "user", "content": "q"},
                              {"role": "assistant", "content": "  "}]}), "empty assistant turn"),
    (json.dumps({"messages": [{"role": "tool", "content": "q"},
                              {"role": "assistant", "content": "a"}]}), "unknown role 'tool'"),
    (json.dumps({"messages": [{"role": "user", "content": 5},
                              {"role": "assistant", "content": "a"}]}), "must be a string"),
    (json.dumps({"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}),
     "has no 'content'"),
    (json.dumps({"messages": ["user: hi"]}), "must be an object"),
    ("", None),  # blank: skipped silently
    (json.dumps({"id": "ok1", "messages": CHATS[1]}), "duplicate id 'ok1' (first at line 1)"),
    (json.dumps({"id": 7, "dataset": 3, "messages": CHATS[2]}), "'dataset'/'source' must be"),
]


def test_damaged_file_reports_every_problem_with_its_line(tmp_path):
    body = "\n".join(line for line, _ in DAMAGED).encode() + b"\n"
    body += b'{"messages": [{"role": "user", "content": "caf\xe9"}, ' \
            b'{"role": "assistant", "content": "x"}]}\n'
    path = tmp_path / "bad.jsonl"
    path.write_bytes(body)
    pool = load_pool(path)
    by_line: dict[int, list[Problem]] = {}
    for p in pool.report.problems:
        by_line.setdefault(p.line, []).append(p)
    for i, (_, reason) in enumerate(DAMAGED, start=1):
        if reason is None:
            assert i not in by_line
        else:
            assert any(reason in p.reason for p in by_line[i]), (i, reason, by_line.get(i))
    assert "non-UTF-8" in by_line[len(DAMAGED) + 1][0].reason
    assert pool.report.n_records == len(DAMAGED)  # blank line not a record; bad UTF-8 line is
    assert pool.table["line_no"].tolist() == [1, 14, 15]
    assert pool.table["id"].tolist() == ["ok1", "ok1", "7"]
    assert by_line[14][0].severity == "warning" and by_line[15][0].severity == "warning"
    assert pool.table["source"].tolist() == ["bad", "bad", "bad"]
    assert len(pool.report.errors) == 12 and len(pool.report.warnings) == 2
    # strict mode refuses a file with problems, naming lines
    with pytest.raises(PoolError, match="line 2"):
        load_pool(path, strict=True)
    lines = pool.report.lines(limit=3)
    assert len(lines) == 4 and lines[-1].startswith("... and 11 more")


def test_json_list_damage(tmp_path):
    good = json.dumps({"messages": CHATS[0]})
    path = tmp_path / "b.json"
    path.write_text("[\n" + good + ",\n" + good + ",\n {\"messages\": [}\n]")
    pool = load_pool(path)
    assert len(pool) == 2
    assert [p.line for p in pool.report.errors] == [4]
    assert [str(p) for p in pool.report.warnings] == \
        ["line 3: warning: same conversation as line 2"]
    path.write_text("[\n" + good + ",\n" + good[:30])  # truncated file
    pool = load_pool(path)
    assert len(pool) == 1 and pool.report.problems[0].line == 3
    path.write_text("[\n" + good + "\n" + good + "]")  # missing comma
    pool = load_pool(path)
    assert len(pool) == 1 and pool.report.problems[0].line == 3
    path.write_text('{"rows": 3}')
    with pytest.raises(PoolError, match="no 'data' list"):
        load_pool(path)
    path.write_text("")
    with pytest.raises(PoolError, match="no usable rows"):
        load_pool(path)


def test_csv_damage(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("prompt,completion\nq1,a1\nq2\nq3,\n\nq4,a4,extra\nq5,a5\n")
    pool = load_pool(path)
    assert pool.table["line_no"].tolist() == [2, 7]
    probs = {p.line: p.reason for p in pool.report.problems}
    assert "expected 2 fields" in probs[3] and "empty assistant" in probs[4]
    assert "expected 2 fields" in probs[6]


def test_fingerprint_tracks_content(tmp_path):
    a = _write(tmp_path / "a.jsonl", "jsonl", [{"messages": c} for c in CHATS])
    b = _write(tmp_path / "b.jsonl", "jsonl", [{"messages": c} for c in CHATS])
    assert load_pool(a).fingerprint == load_pool(b).fingerprint
    b.write_bytes(b.read_bytes().replace(b"Paris", b"Lyon!"))
    assert load_pool(a).fingerprint != load_pool(b).fingerprint
    d1 = _write(tmp_path / "d1", "datasets", [{"messages": c} for c in CHATS])
    d2 = _write(tmp_path / "d2", "datasets", [{"messages": c} for c in CHATS])
    assert load_pool(d1).fingerprint == load_pool(d2).fingerprint


def test_subtask_column_kept(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"subtask": s, "messages": CHATS[0]}) + "\n"
                            for s in ["a", "b"]))
    assert load_pool(path).table["subtask"].tolist() == ["a", "b"]
    assert "subtask" not in load_pool(_write(tmp_path / "u.jsonl", "jsonl",
                                             [{"messages": CHATS[0]}])).table


def test_datasetdict_folder(tmp_path):
    import datasets

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list([{"messages": CHATS[0]}]),
                               "test": datasets.Dataset.from_list([{"messages": CHATS[1]}] * 2)})
    dd.save_to_disk(str(tmp_path / "dd"))
    pool = load_pool(tmp_path / "dd")
    assert len(pool) == 1 and pool.format == "datasets" and "train" in pool.notes[0]
    with pytest.raises(PoolError, match="folder"):
        load_pool(tmp_path / "dd", format="jsonl")


@pytest.mark.skipif(not FLAN.exists(), reason="../shared/data/real not present")
def test_real_flan_pool_loads_byte_exact():
    pool = load_pool(FLAN)
    assert (pool.format, pool.shape) == ("jsonl", "messages")
    assert len(pool) == 1800 and pool.report.ok
    assert pool.sources() == {f"cot_{s}": 300 for s in
                              ["aqua", "creak", "ecqa", "qasc", "sensemaking", "strategyqa"]}
    assert b"".join(pool.original_line(i) for i in range(len(pool))) == FLAN.read_bytes()
    assert all(m[-1]["role"] == "assistant" for m in pool.table["messages"])


def test_id_and_source_columns_can_be_named(tmp_path):
    """Issue 13, item 13: no way to choose the id or source column."""
    path = tmp_path / "named.jsonl"
    recs = [{"uid": f"u{i}", "origin": "flan" if i % 2 else "cot", "messages": CHATS[i % 3]}
            for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    pool = load_pool(path, id_field="uid", source_field="origin")
    assert pool.table["id"].tolist() == ["u0", "u1", "u2", "u3"]
    assert pool.table["source"].tolist() == ["cot", "flan", "cot", "flan"]
    default = load_pool(path)
    assert default.table["source"].tolist() == ["named"] * 4
    with pytest.raises(PoolError, match="no record has the id column 'nope'.*uid"):
        load_pool(path, id_field="nope")
