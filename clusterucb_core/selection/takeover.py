"""Say when one subtask takes the selection.

Under the max rule (LESS) a row's score is its best cosine over the target's subtasks, so one
easy subtask can take most of the top-p: a BBH target of 27 subtasks once gave 110 of 111
rows to `snarks`. When a target has several subtasks and one of them is served best by more
than half of a max-rule selection, the UCB and Export pages and the run summary say so, beside
what the balanced rule (`balance = "subtasks"`, subtasks.balanced_top) would pick instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

SHARE = 0.5  # more than this share of the selection to one subtask is a takeover


def counts_of(rows: Sequence[int], best: Mapping[int, str], names: Sequence[str]
              ) -> dict[str, int]:
    """Per subtask (in the target's order), how many of `rows` serve it best."""
    out = dict.fromkeys(names, 0)
    for r in rows:
        s = best.get(int(r))
        if s in out:
            out[s] += 1
    return out


@dataclass(frozen=True)
class Takeover:
    """One subtask serves more than half of a max-rule selection."""

    subtask: str
    rows: int
    selected: int
    n_subtasks: int
    balanced: dict[str, int] | None  # what round-robin over subtasks would pick, per subtask

    @property
    def share(self) -> float:
        return self.rows / self.selected

    def sentence(self) -> str:
        out = (f"One subtask takes the selection: {self.rows:,} of the {self.selected:,} "
               f"selected rows ({self.share:.0%}) serve {self.subtask!r} best, of the "
               f"target's {self.n_subtasks} subtasks (the max rule keeps the top rows by "
               "their best subtask's cosine).")
        if self.balanced is not None:
            served = sum(1 for v in self.balanced.values() if v > 0)
            out += (f" Round-robin over subtasks would give {self.subtask!r} "
                    f"{self.balanced.get(self.subtask, 0):,} and serve {served} subtasks.")
        return out

    def to_dict(self) -> dict:
        return {"subtask": self.subtask, "rows": self.rows, "selected": self.selected,
                "share": round(self.share, 4), "balanced": self.balanced,
                "sentence": self.sentence()}


def takeover(counts: Mapping[str, int], rule: str,
             balanced: Mapping[str, int] | None = None) -> Takeover | None:
    """The takeover in a selection's per-subtask counts, or None: under the max rule, with
    two or more subtasks, one of them served best by more than SHARE of the selected rows."""
    if rule != "max" or len(counts) < 2:
        return None
    selected = int(sum(counts.values()))
    if selected == 0:
        return None
    names = list(counts)
    top = names[int(np.argmax([counts[s] for s in names]))]
    if counts[top] <= SHARE * selected:
        return None
    return Takeover(top, int(counts[top]), selected, len(names),
                    None if balanced is None else {s: int(balanced.get(s, 0)) for s in names})
