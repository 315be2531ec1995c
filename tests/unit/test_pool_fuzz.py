"""Property-based: malformed pools never crash the loader, problems carry the right line
numbers, and valid rows survive byte-exact."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterucb_core.data.load import load_pool
from clusterucb_core.data.pool import PoolError

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
_content = _text.filter(lambda s: s.strip() != "")
_chat = st.builds(
    lambda sys, turns: ([{"role": "system", "content": sys}] if sys else [])
    + [m for u, a in turns for m in ({"role": "user", "content": u},
                                      {"role": "assistant", "content": a})],
    st.one_of(st.none(), _content),
    st.lists(st.tuples(_content, _content), min_size=1, max_size=3))
_valid_line = st.builds(lambda i, c: json.dumps({"id": f"v{i}", "messages": c},
                                                ensure_ascii=False),
                        st.integers(0, 10**9), _chat)

_json_any = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _text),
    lambda kids: st.one_of(st.lists(kids, max_size=3),
                           st.dictionaries(st.sampled_from(["role", "content", "from", "value",
                                                            "messages", "id", "x"]), kids,
                                           max_size=3)),
    max_leaves=8)


def _mutate_types(line: str, data) -> str:
    """Replace one field somewhere in a valid record by an arbitrary JSON value."""
    obj = json.loads(line)
    target = data.draw(st.sampled_from(["top", "messages", "turn", "role", "content", "drop"]))
    value = data.draw(_json_any)
    msgs = obj["messages"]
    k = data.draw(st.integers(0, len(msgs) - 1))
    if target == "top":
        obj = value
    elif target == "messages":
        obj["messages"] = value
    elif target == "turn":
        msgs[k] = value
    elif target == "drop":
        del msgs[k][data.draw(st.sampled_from(["role", "content"]))]
    else:
        msgs[k][target] = value
    return json.dumps(obj, ensure_ascii=False)


_bad_line = st.one_of(
    st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b).map(
        lambda b: ("bytes", b)),
    st.tuples(_valid_line, st.floats(0.05, 0.95)).map(
        lambda t: ("truncated", t[0][: max(1, int(len(t[0]) * t[1]))].encode())),
)


@SETTINGS
@given(data=st.data())
def test_jsonl_mixed_damage(tmp_path_factory, data):
    kinds = data.draw(st.lists(st.sampled_from(["valid", "bad", "types", "blank"]),
                               min_size=1, max_size=12))
    lines: list[bytes] = []
    expect_valid: dict[int, str] = {}
    expect_problem: set[int] = set()
    maybe: set[int] = set()
    for i, kind in enumerate(kinds, start=1):
        if kind == "valid":
            line = data.draw(_valid_line)
            lines.append(line.encode())
            expect_valid[i] = line
        elif kind == "blank":
            lines.append(data.draw(st.sampled_from([b"", b"  ", b"\t", b"\r"])))
        elif kind == "types":
            lines.append(_mutate_types(data.draw(_valid_line), data).encode())
            maybe.add(i)  # a mutation may leave the record valid
        else:
            _, raw = data.draw(_bad_line)
            lines.append(raw)
            maybe.add(i)  # random bytes may be blank or (rarely) valid JSON
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                expect_problem.add(i)
                continue
            if text.strip():
                try:
                    json.loads(text)
                except json.JSONDecodeError:
                    expect_problem.add(i)
    crlf = data.draw(st.booleans())
    sep = b"\r\n" if crlf else b"\n"
    path = tmp_path_factory.mktemp("fuzz") / "p.jsonl"
    path.write_bytes(sep.join(lines) + data.draw(st.sampled_from([sep, b""])))
    try:
        pool = load_pool(path)
    except PoolError as exc:
        assert not expect_valid
        report = exc.report
        assert report is not None
        valid_lines: set[int] = set()
    else:
        report = pool.report
        valid_lines = set(pool.table["line_no"].tolist())
        for line_no, raw in zip(pool.table["line_no"], pool.table["raw"]):
            if line_no in expect_valid:
                assert raw == expect_valid[line_no]
            else:
                assert line_no in maybe
                assert raw.encode("utf-8", "surrogateescape").rstrip(b"\r") == \
                    lines[line_no - 1].rstrip(b"\r")
        assert list(pool.table["row"]) == list(range(len(pool)))
    assert set(expect_valid) <= valid_lines
    error_lines = {p.line for p in report.problems if p.severity == "error"}
    assert expect_problem <= error_lines
    assert error_lines.isdisjoint(valid_lines)
    assert all(1 <= p.line <= len(lines) for p in report.problems)


@SETTINGS
@given(blob=st.binary(max_size=300), ext=st.sampled_from([".jsonl", ".json", ".csv", ".tsv",
                                                         ".txt"]))
def test_random_bytes_never_crash(tmp_path_factory, blob, ext):
    path = tmp_path_factory.mktemp("rnd") / f"x{ext}"
    path.write_bytes(blob)
    n_lines = blob.count(b"\n") + 1
    try:
        pool = load_pool(path)
    except PoolError as exc:
        if exc.report is not None:
            assert all(1 <= p.line <= n_lines for p in exc.report.problems)
        return
    assert all(1 <= p.line <= n_lines for p in pool.report.problems)
    assert len(pool) == pool.report.n_valid >= 1


@SETTINGS
@given(data=st.data())
def test_json_list_truncated_anywhere(tmp_path_factory, data):
    recs = data.draw(st.lists(_chat, min_size=1, max_size=5))
    text = json.dumps([{"messages": c} for c in recs], ensure_ascii=False, indent=1)
    cut = data.draw(st.integers(0, len(text)))
    path = tmp_path_factory.mktemp("js") / "p.json"
    path.write_text(text[:cut], "utf-8")
    try:
        pool = load_pool(path, format="json")
    except PoolError:
        return
    # the rows that survive are a prefix of the records, unchanged
    got = pool.table["messages"].tolist()
    assert got == recs[: len(got)]
    pos = 0
    for raw, line in zip(pool.table["raw"], pool.table["line_no"]):
        pos = text.index(raw, pos)  # records may repeat: search after the previous one
        assert text.count("\n", 0, pos) + 1 == line
        pos += len(raw)
    if cut < len(text.rstrip()):
        assert pool.report.problems  # a truncated file never passes as clean


@SETTINGS
@given(rows=st.lists(st.tuples(_text, _text), min_size=1, max_size=8),
       extra=st.lists(st.binary(max_size=20).filter(lambda b: b"\n" not in b and b"\r" not in b),
                      max_size=3))
def test_csv_fuzz(tmp_path_factory, rows, extra):
    import csv
    import io

    header = "prompt,completion\n"
    records = []
    for r in rows:
        buf = io.StringIO(newline="")
        # \r\n terminator: the writer then quotes cells holding a lone \r (unambiguous CSV)
        csv.writer(buf, lineterminator="\r\n").writerow(r)
        records.append(buf.getvalue())
    body = (header + "".join(records)).encode() + b"".join(e + b"\n" for e in extra)
    path = tmp_path_factory.mktemp("csv") / "p.csv"
    path.write_bytes(body)
    good = [(i, r) for i, r in enumerate(rows) if r[1].strip()]
    try:
        pool = load_pool(path)
    except PoolError:
        assert not good
        return
    got = list(zip(pool.table["messages"], pool.table["line_no"], pool.table["raw"]))
    assert len(got) >= len(good)
    line = 2
    starts = []
    for rec in records:
        starts.append(line)
        line += rec.count("\n")
    for (i, (p, c)), (msgs, line_no, raw) in zip(good, got):
        assert (msgs[0]["content"], msgs[1]["content"]) == (p, c)
        assert line_no == starts[i]
        assert raw == records[i][:-2]
    bad = {starts[i] for i, r in enumerate(rows) if not r[1].strip()}
    assert bad <= {p.line for p in pool.report.errors}


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_deeply_nested_json_is_a_problem_not_a_crash(tmp_path, fmt):
    deep = "[" * 100_000 + "]" * 100_000
    good = json.dumps({"messages": [{"role": "user", "content": "q"},
                                    {"role": "assistant", "content": "a"}]})
    path = tmp_path / f"d.{fmt}"
    path.write_text(
        good + "\n" + deep + "\n" if fmt == "jsonl" else "[" + good + ",\n" + deep + "]"
    )
    pool = load_pool(path, format=fmt)
    assert len(pool) == 1 and pool.report.problems[0].line == 2


@pytest.mark.parametrize("text", ['{"data": ' + "[" * 100_000 + "]" * 100_000 + "}",
                                  "{" + '"a":{' * 100_000 + "}" * 100_001])
def test_deeply_nested_json_object_sniffed_as_json_is_a_problem(tmp_path, capsys, text):
    """Bug 7: a .json pool whose top-level object nests too deeply crashed the format sniffer
    with RecursionError (a traceback from `clusterucb validate`); now it is reported like the
    JSONL path reports it."""
    from clusterucb_core.cli import main

    path = tmp_path / "deep.json"
    path.write_text(text)
    with pytest.raises(PoolError, match="nested too deeply"):
        load_pool(path)
    assert main(["validate", str(path)]) == 1
    assert "nested too deeply" in capsys.readouterr().out
