"""Rounds that play the top-m arms at once (`SelectionSpec.arms_per_round`).

One arm's `draw_batch` rows leave a device batch mostly empty; a round that plays the m arms
of largest index (each with its own `draw_batch` rows) hands the gradient pass m times as many
rows, which it sorts by length and batches under its token budget like the exhaustive pass.
The arms are chosen one after the other by the policy's own rule, each pick taken out of the
eligible set before the next, with the round's one generator: for an index policy (ucb_beta,
ucb1, thresh_*) that is its top-m by value, arms without history still first, and the whole
choice stays a function of the run so far and (seed, round), so a log replays exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def arms_for_budget(rows_per_batch: int, draw_batch: int) -> int:
    """The m whose rounds fill one gradient batch of `rows_per_batch` rows (the token
    budget's rows at the pool's typical length): ceil(rows / draw_batch), at least 1."""
    if draw_batch < 1:
        raise ValueError(f"draw_batch must be >= 1, got {draw_batch}")
    return max(1, math.ceil(int(rows_per_batch) / int(draw_batch)))


def rows_at_length(limit_tokens: int, lengths: Sequence[int]) -> int:
    """Rows of the pool's median length that fit a batch of `limit_tokens` padded tokens."""
    if not len(lengths):
        return 1
    med = sorted(int(n) for n in lengths)[len(lengths) // 2]
    return max(1, int(limit_tokens) // max(med, 1))
