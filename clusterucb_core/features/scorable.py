"""Which pool rows can be scored at all, and how much truncation cost the rows and the target.

A row whose labels are all masked after truncation has no gradient (docs/METHOD.md section 1): it
is never scored, never drawn by the bandit, and said where the user looks -- the CLI summary,
the feature-store manifest and the Features / UCB pages all read the same `FormatReport`.
It is computed from the tokenizer alone (no model), once per pool and formatting setting, and
kept in the workspace, so a page can ask for it without loading a model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clusterucb_core.config import ModelSpec, fingerprint
from clusterucb_core.data.formatting import encode_chats, encode_prompt_completion
from clusterucb_core.runtime import atomic

REPORT_DIR = "formatting"


@dataclass
class FormatReport:
    """What encoding did to a pool (or a target): cut rows, tokens lost, rows left unscorable."""

    n_rows: int
    max_length: int
    truncation: str
    n_truncated: int = 0
    tokens_lost: int = 0
    unscorable: list[int] = field(default_factory=list)  # row positions without any label

    @property
    def n_unscorable(self) -> int:
        return len(self.unscorable)

    @property
    def mean_tokens_lost(self) -> float:
        return self.tokens_lost / self.n_truncated if self.n_truncated else 0.0

    def mask(self) -> np.ndarray:
        out = np.zeros(self.n_rows, dtype=bool)
        out[np.asarray(self.unscorable, dtype=np.int64)] = True
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(n_unscorable=self.n_unscorable,
                 mean_tokens_lost=round(self.mean_tokens_lost, 2))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FormatReport:
        return cls(n_rows=int(d["n_rows"]), max_length=int(d["max_length"]),
                   truncation=str(d["truncation"]), n_truncated=int(d["n_truncated"]),
                   tokens_lost=int(d["tokens_lost"]), unscorable=list(d["unscorable"]))

    def sentence(self) -> str:
        """One line for a summary or a page: how many rows cannot be scored, why, what to do."""
        cut = (f"{self.n_truncated:,} of {self.n_rows:,} rows are longer than max_length="
               f"{self.max_length} and were cut ({self.truncation}; "
               f"{self.mean_tokens_lost:.0f} tokens lost on average)")
        if not self.n_truncated:
            cut = f"no row is longer than max_length={self.max_length}"
        if not self.n_unscorable:
            return f"All {self.n_rows:,} rows can be scored: {cut}."
        share = self.n_unscorable / max(self.n_rows, 1)
        fix = ("use truncation = \"keep_answer\" or raise max_length"
               if self.truncation == "right" else
               "raise max_length, or shorten or drop these rows")
        return (f"{self.n_unscorable:,} rows ({share:.1%}) cannot be scored: no answer token "
                f"is left within max_length={self.max_length} (or the row has no answer), so "
                f"they have no gradient and the bandit never draws them; {fix}. {cut}.")


def format_report(messages: Sequence[Sequence[dict]], tokenizer, model_spec: ModelSpec,
                  chunk: int = 1024) -> FormatReport:
    """Encode every chat as the features will (in chunks) and report what truncation did."""

    rep = FormatReport(n_rows=len(messages), max_length=int(model_spec.max_length),
                       truncation=model_spec.truncation)
    for lo in range(0, len(messages), chunk):
        _, r = encode_chats([list(m) for m in messages[lo:lo + chunk]], tokenizer,
                            model_spec.max_length, model_spec.chat_template,
                            model_spec.truncation)
        rep.n_truncated += r.n_truncated
        rep.tokens_lost += r.tokens_lost
        rep.unscorable.extend(lo + int(i) for i in r.no_labels)
    return rep


def target_report(examples: Sequence[Any], tokenizer, max_length: int) -> FormatReport:
    """The same for target examples (prompt + completion; always cut from the left)."""

    rep = FormatReport(n_rows=len(examples), max_length=int(max_length),
                       truncation="keep_answer")
    for i, ex in enumerate(examples):
        enc = encode_prompt_completion(ex.prompt, ex.completion, tokenizer, max_length)
        if enc.truncated:
            full = tokenizer(ex.prompt + ex.completion, add_special_tokens=True)["input_ids"]
            rep.n_truncated += 1
            rep.tokens_lost += len(full) - len(enc.input_ids)
        if enc.n_labels == 0:
            rep.unscorable.append(i)
    return rep


def target_sentence(rep: FormatReport) -> str:
    if not rep.n_truncated:
        return f"No target example is longer than max_length={rep.max_length}."
    return (f"{rep.n_truncated:,} of {rep.n_rows:,} target examples are longer than "
            f"max_length={rep.max_length}: each lost its oldest prompt tokens "
            f"({rep.mean_tokens_lost:.0f} on average) so its answer survives"
            + (f"; {rep.n_unscorable} have no answer token left and are left out"
               if rep.n_unscorable else "") + ".")


def report_key(pool_fingerprint: str, model_spec: ModelSpec) -> str:
    """Key of a pool's report: the pool and every setting that changes how rows are cut."""
    return fingerprint(pool_fingerprint, model_spec.name_or_path, model_spec.max_length,
                       model_spec.chat_template, model_spec.truncation)


def save_report(root: str | Path, key: str, rep: FormatReport) -> Path:
    path = Path(root) / REPORT_DIR / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, rep.to_dict())
    return path


def load_report(root: str | Path, key: str | None = None) -> FormatReport | None:
    """A workspace's saved pool report (`key`, or the newest one); None when there is none."""
    folder = Path(root) / REPORT_DIR
    if key is not None:
        path = folder / f"{key}.json"
        paths = [path] if path.exists() else []
    else:
        paths = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)[-1:] \
            if folder.exists() else []
    if not paths:
        return None
    return FormatReport.from_dict(json.loads(paths[0].read_text()))


def workspace_sentence(root: str | Path) -> str | None:
    """The Features / UCB pages' sentence: how many pool rows cannot be scored and why
    (None until a run or the app has encoded the pool)."""
    rep = load_report(root)
    return None if rep is None else rep.sentence()


def target_manifest_sentence(manifest: dict[str, Any], max_length: int) -> str | None:
    """The Target page's sentence from a target-features manifest (None when it predates the
    tokens-lost count)."""
    if "tokens_lost" not in manifest:
        return None
    return target_sentence(FormatReport(
        n_rows=int(manifest["n_examples"]), max_length=int(max_length),
        truncation="keep_answer", n_truncated=int(manifest["n_truncated"]),
        tokens_lost=int(manifest["tokens_lost"]),
        unscorable=list(range(int(manifest.get("n_without_labels", 0))))))
