"""Does the selection help? Fine-tune LoRA on a subset and measure the target loss.

The claim the method exists for (LESS, ClusterUCB): training on the rows whose gradients
align with the target's lowers the target loss more than training on random rows. We test it
directly: the same LoRA run (same steps, seed, settings) on each subset, then the mean token
loss of the completions of held-out target examples.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from clusterucb_core.config import LoraSpec, ModelSpec, WarmupSpec
from clusterucb_core.data.formatting import collate, encode_prompt_completion
from clusterucb_core.features.gradients import row_losses
from clusterucb_core.features.model import prepare_model
from clusterucb_core.features.warmup import warmup


def target_loss(model: Any, tokenizer: Any, target_set: Any, max_length: int,
                batch_size: int = 16) -> dict[str, float]:
    """Mean per-example completion loss over the target set, overall and per subtask."""
    import torch


    encs = [encode_prompt_completion(ex.prompt, ex.completion, tokenizer, max_length)
            for ex in target_set.examples]
    keep = [i for i, e in enumerate(encs) if e.n_labels > 0]
    if not keep:
        raise ValueError("no target example has a completion token within max_length")
    device = next(model.parameters()).device
    losses = np.full(len(encs), np.nan)
    model.eval()
    with torch.no_grad():
        for lo in range(0, len(keep), batch_size):
            idx = keep[lo:lo + batch_size]
            batch = collate([encs[i] for i in idx], tokenizer.pad_token_id)
            per_row, _ = row_losses(model, {k: v.to(device) for k, v in batch.items()})
            losses[idx] = per_row.float().cpu().numpy()
    subtasks = np.array([ex.subtask for ex in target_set.examples])
    out = {"loss": float(np.nanmean(losses))}
    for s in target_set.subtasks:
        out[f"loss[{s}]"] = float(np.nanmean(losses[subtasks == s]))
    return out


def finetune_and_evaluate(pool: Any, rows: np.ndarray, eval_target: Any, model_spec: ModelSpec,
                          lora: LoraSpec, train: WarmupSpec, out_dir: str | Path | None = None,
                          progress: Any = None) -> dict[str, Any]:
    """Train LoRA on `rows` of `pool` (fresh adapters, `train` settings), then the held-out
    target loss. Pass `train.max_steps` so every subset gets the same number of steps."""

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(out_dir) if out_dir is not None else Path(tmp)
        ckpt = warmup(pool, model_spec, lora, train, out, progress=progress, rows=rows)[-1]
        model, tok, _, _ = prepare_model(model_spec, lora, ckpt)
        result = target_loss(model, tok, eval_target, model_spec.max_length)
    result["n_rows"] = int(len(rows))
    return result


def baseline_loss(eval_target: Any, model_spec: ModelSpec, lora: LoraSpec) -> dict[str, float]:
    """The target loss before any fine-tuning (fresh LoRA: B = 0, so the base model's)."""

    model, tok, _, _ = prepare_model(model_spec, lora)
    return target_loss(model, tok, eval_target, model_spec.max_length)


def compare_subsets(pool: Any, subsets: dict[str, np.ndarray], eval_target: Any,
                    model_spec: ModelSpec, lora: LoraSpec, train: WarmupSpec,
                    log: Any = print) -> list[dict[str, Any]]:
    """The same fine-tune on each named subset; one result row per subset (plus 'base')."""
    sizes = {len(r) for r in subsets.values()}
    steps = train.max_steps or max(1, train.epochs * math.ceil(max(sizes) / train.batch_size))
    same = replace(train, max_steps=steps)
    rows = [{"subset": "base (no fine-tune)", "n_rows": 0,
             **baseline_loss(eval_target, model_spec, lora)}]
    for name, subset in subsets.items():
        log(f"fine-tuning on {name} ({len(subset)} rows, {steps} steps)")
        rows.append({"subset": name, **finetune_and_evaluate(pool, subset, eval_target,
                                                             model_spec, lora, same)})
    return rows
