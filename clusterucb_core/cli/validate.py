"""`clusterucb validate POOL`: parse a pool, report what was found and every problem with its
line number. Exit 0 when the pool is usable (at least one valid row, and no problem at all
under --strict), 1 otherwise."""

from __future__ import annotations

import argparse
import statistics
import sys

HELP = "check a pool file: format, rows per source, token lengths, problems with line numbers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clusterucb_core.data.pool import FORMATS, SHAPES

    parser.add_argument("pool", metavar="POOL",
                        help="pool file (.gz too), datasets or Parquet-shards folder, or a Hub "
                             "dataset hf://ORG/NAME?config=C&split=S")
    parser.add_argument("--format", default="auto", choices=("auto",) + FORMATS,
                        help="file format (default: detected)")
    parser.add_argument("--shape", default="auto", choices=("auto",) + SHAPES,
                        help="chat shape (default: detected)")
    parser.add_argument("--tokenizer", metavar="PATH",
                        help="tokenizer folder or hub id: adds a token length summary")
    parser.add_argument("--max-length", type=int, default=512,
                        help="token limit to check rows against (default 512)")
    parser.add_argument("--template", default="tulu", choices=("tulu", "model"),
                        help="chat rendering for token counts (default tulu)")
    parser.add_argument("--truncation", default="keep_answer", choices=("keep_answer", "right"),
                        help="how a row over --max-length is cut (default keep_answer)")
    parser.add_argument("--strict", action="store_true",
                        help="any problem (even a warning) makes the pool unusable")
    parser.add_argument("--limit", type=int, default=50,
                        help="problems to print (default 50; the rest are counted)")


def _print_report(report, limit: int, out) -> None:
    n_err, n_warn = len(report.errors), len(report.warnings)
    print(f"records: {report.n_records}   valid: {report.n_valid}   "
          f"errors: {n_err} (rows excluded)   warnings: {n_warn} (rows kept)", file=out)
    if not report.problems:
        print("problems: none", file=out)
        return
    print(f"problems ({len(report.problems)}, by line):", file=out)
    for line in report.lines(limit=max(limit, 0)):
        print(f"  {line}", file=out)


def _pct(sorted_vals: list[int], q: float) -> int:
    k = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def _token_summary(pool, args, out) -> None:
    from transformers import AutoTokenizer

    from clusterucb_core.data.formatting import encode_chats

    try:
        tok = AutoTokenizer.from_pretrained(args.tokenizer)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot load the tokenizer {args.tokenizer!r}: {first}") from exc
    lengths: list[int] = []
    n_trunc = n_nolab = n_straddle = 0
    chunk = 2048
    for start in range(0, len(pool), chunk):
        msgs = pool.messages(range(start, min(start + chunk, len(pool))))
        _, rep = encode_chats(msgs, tok, args.max_length, args.template, args.truncation)
        lengths += rep.lengths
        n_trunc += rep.n_truncated
        n_nolab += rep.n_no_labels
        n_straddle += len(rep.straddled)
    s = sorted(lengths)
    print(f"tokens ({args.template} format, tokenizer {args.tokenizer}): min {s[0]}  median "
          f"{int(statistics.median(s))}  p95 {_pct(s, 0.95)}  max {s[-1]}", file=out)
    print(f"  {n_trunc} rows longer than --max-length {args.max_length} (cut, "
          f"{args.truncation}); {n_nolab} keep no answer token (no gradient: never scored or "
          f"drawn" + ("; --truncation keep_answer keeps the answers" if n_nolab and
                     args.truncation == "right" else "") + ")", file=out)
    if n_straddle:
        print(f"  note: in {n_straddle} rows the tokenizer merges the '<|assistant|>' header "
              "with the answer's first characters; that token is masked (a tokenizer that "
              "splits on newlines avoids it)", file=out)


def run(args: argparse.Namespace) -> int:
    from clusterucb_core.data.load import load_pool
    from clusterucb_core.data.pool import PoolError

    out = sys.stdout
    print(f"pool: {args.pool}", file=out)
    try:
        pool = load_pool(args.pool, format=args.format, shape=args.shape, strict=args.strict)
    except PoolError as exc:
        if exc.report is None:
            raise  # a usage error (unknown format...): clean "error:" and exit 2
        print(f"unusable: {exc.args[0].split('. ')[0] if not args.strict else 'strict mode'}",
              file=out)
        _print_report(exc.report, args.limit, out)
        print("verdict: NOT usable (exit 1)", file=out)
        return 1
    newline = {"\n": "LF", "\r\n": "CRLF"}.get(pool.newline, repr(pool.newline))
    print(f"format: {pool.format}   shape: {pool.shape}   line endings: {newline}", file=out)
    print(f"fingerprint: sha256:{pool.fingerprint}", file=out)
    for note in pool.notes:
        print(f"note: {note}", file=out)
    sources = pool.sources()
    print(f"rows per source ({len(sources)} sources, {len(pool)} rows):", file=out)
    width = max(len(s) for s in sources)
    for name, n in sources.items():
        print(f"  {name:<{width}}  {n}", file=out)
    if pool.has_subtask:
        import pandas as pd

        subs = pd.Series(pool.column("subtask")).value_counts()
        print(f"subtasks: {len(subs)} ({', '.join(f'{k}={v}' for k, v in subs.items())})",
              file=out)
    if args.tokenizer:
        _token_summary(pool, args, out)
    _print_report(pool.report, args.limit, out)
    print("verdict: usable (exit 0)", file=out)
    return 0
