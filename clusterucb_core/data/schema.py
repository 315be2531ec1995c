"""The pool table's schema and vocabulary, and the validation report's types.

Shared by the readers, the chat shapes, the table builder and the Pool, so none of them
has to import another for a constant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

FORMATS = ("jsonl", "json", "csv", "tsv", "parquet", "datasets")


SHAPES = ("messages", "alpaca", "sharegpt", "prompt_completion")


ROLES = ("system", "user", "assistant")


ROLE_ALIASES = {
    "system": "system",
    "user": "user", "human": "user", "prompter": "user",
    "assistant": "assistant", "gpt": "assistant", "bot": "assistant", "model": "assistant",
    "chatgpt": "assistant",
}


CANON_ROLES = frozenset(ROLES)


DETECT_FIRST = 200  # records used to detect the shape


SURROGATE = re.compile("[\udc80-\udcff]")


RECORD_FORMATS = ("parquet", "datasets")  # no byte offsets: records are found by index


BATCH_ROWS = 65536  # rows per Arrow record batch while parsing


SCHEMA = pa.schema([("row", pa.int64()), ("id", pa.string()), ("source", pa.string()),
                    ("messages", pa.large_string()), ("line_no", pa.int64()),
                    ("offset", pa.int64()), ("length", pa.int64()), ("subtask", pa.string())])


EXT_FORMAT = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv",
               ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}


# --------------------------------------------------------------------------- public types
@dataclass
class Problem:
    line: int  # 1-based
    reason: str
    severity: str = "error"  # error (record excluded) | warning (record kept)

    def __str__(self) -> str:
        return f"line {self.line}: {self.severity}: {self.reason}"


@dataclass
class ValidationReport:
    problems: list[Problem]
    n_records: int
    n_valid: int

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity != "error"]

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self, limit: int | None = 50) -> list[str]:
        """Human-readable problem lines, the first `limit` and a count of the rest."""
        shown = self.problems if limit is None else self.problems[:limit]
        out = [str(p) for p in shown]
        if limit is not None and len(self.problems) > limit:
            out.append(f"... and {len(self.problems) - limit} more problems")
        return out


class PoolError(ValueError):
    def __init__(self, message: str, report: ValidationReport | None = None):
        super().__init__(message)
        self.report = report
