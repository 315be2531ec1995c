"""Pins against the top-p slots, and the two recalls a run has (no streamlit).

The bandit's recall (its own top-p of the rows it scored, no hand edits) says how well the
bandit spent its budget; the curated selection's recall (pins, rejections and bans applied)
says how much of the exhaustive top-p the export holds. Pins take slots, so many pins can
push the second to 0 while the first is 100%: the pages show both, side by side, and warn
when the pins alone fill more than the slots.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clusterucb_core.selection.oracle import mass_share, recall
from clusterucb_core.selection.run import LedgerView


def over_slots(n_pinned: int, n_top: int) -> str | None:
    """The warning when the pins exceed the top-p slots (None when they fit)."""
    if n_pinned <= n_top:
        return None
    return (f"{n_pinned:,} pinned rows for {n_top:,} top-p slots: the selection keeps every "
            f"pin and nothing else, so it holds {n_pinned:,} rows and none of the bandit's "
            f"best rows. Unpin {n_pinned - n_top:,} row(s), or start a run with a larger "
            "top-p, to let them in.")


def selected_sentence(n_selected: int, n_top: int, n_pinned: int) -> str:
    """How many rows are selected and why, by the rule (pins take slots)."""
    if n_pinned > n_top:
        return (f"{n_selected:,} rows are selected: your {n_pinned:,} pins, more than the "
                f"{n_top:,} top-p slots")
    if n_pinned:
        return (f"{n_selected:,} rows are selected: your {n_pinned:,} pin(s), then the "
                f"{n_selected - n_pinned:,} best-scored rows (top-p {n_top:,})")
    return f"The top {n_selected:,} are selected"


def recalls(run: Any, exhaustive: np.ndarray) -> dict[str, float]:
    """Recall and score mass of the exhaustive top-p for the bandit's own top-p ("bandit")
    and for the selection with the hand edits applied ("curated")."""
    own = run.selected(LedgerView())
    curated = run.selected()
    return {"bandit_recall": recall(own, exhaustive, run.n_top),
            "bandit_mass": mass_share(own, exhaustive, run.n_top),
            "curated_recall": recall(curated, exhaustive, run.n_top),
            "curated_mass": mass_share(curated, exhaustive, run.n_top),
            "n_curated": len(curated)}

