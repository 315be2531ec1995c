"""Rows packed end to end into one sequence, for per-sample gradients without padding.

A lazy round scores a few rows of mixed length; padded to the longest they waste most of a
batch (on the demo pool 8 drawn rows carry 1.7x their tokens, the exhaustive pass's
length-sorted batches 1.1x). Packed, the rows share one sequence of exactly their tokens:

- attention is block-diagonal and causal (a float mask [1, 1, T, T], 0 where a token may
  look, the dtype's minimum elsewhere), and each row's position ids restart at 0, so every
  row sees what it sees alone;
- the label of each row's first token is dropped: in a row alone it is never a target (the
  causal shift), packed it would be predicted from the previous row;
- `segment_ids` [T] says which row each token belongs to: the loss is a sum of per-row means
  and a LoRA matrix's per-row gradient is the sum over that row's tokens (gradients.py).

So every row's gradient equals its batch-size-1 gradient up to float rounding
(tests/unit/test_packing.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clusterucb_core.data.formatting import IGNORE_INDEX


def collate_packed(encs: Sequence[Any], dtype: Any = None) -> dict[str, Any]:
    """One packed sequence of the encoded rows: input_ids, labels, position_ids [1, T],
    attention_mask [1, 1, T, T] (additive float, `dtype`), segment_ids [T] and the row
    lengths."""
    import torch

    if not encs:
        raise ValueError("collate_packed needs at least one encoded row")
    dtype = dtype or torch.float32
    ids, labels, pos, seg = [], [], [], []
    for i, e in enumerate(encs):
        n = len(e.input_ids)
        ids.extend(int(t) for t in e.input_ids)
        row = [int(t) for t in e.labels]
        if n:
            row[0] = IGNORE_INDEX
        labels.extend(row)
        pos.extend(range(n))
        seg.extend([i] * n)
    segment_ids = torch.tensor(seg, dtype=torch.long)
    same = segment_ids[:, None] == segment_ids[None, :]
    causal = torch.ones(len(seg), len(seg), dtype=torch.bool).tril_()
    mask = torch.zeros(len(seg), len(seg), dtype=dtype)
    mask.masked_fill_(~(same & causal), torch.finfo(dtype).min)
    return {"input_ids": torch.tensor([ids], dtype=torch.long),
            "labels": torch.tensor([labels], dtype=torch.long),
            "position_ids": torch.tensor([pos], dtype=torch.long),
            "attention_mask": mask[None, None],
            "segment_ids": segment_ids,
            "lengths": torch.tensor([len(e.input_ids) for e in encs], dtype=torch.long)}


def unpack(x: Any, segment_ids: Any, lengths: Any) -> Any:
    """[1, T, d] packed activations -> [n, max length, d], zero beyond each row's end."""
    import torch

    n, width = len(lengths), int(lengths.max())
    offsets = torch.cumsum(lengths, 0) - lengths
    within = torch.arange(x.shape[1], device=x.device) - offsets.to(x.device)[segment_ids]
    out = torch.zeros(n, width, x.shape[2], dtype=x.dtype, device=x.device)
    out[segment_ids, within] = x[0]
    return out

