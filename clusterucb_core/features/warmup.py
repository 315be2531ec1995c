"""Warm-up: a short LoRA training run whose checkpoints give gradient features (docs/METHOD.md s.2).

LESS trains LoRA on a random 5% of the pool for 4 epochs and keeps one checkpoint per epoch;
the Dynamic ClusterUCB variant trains a fixed number of steps. Here: a seeded random fraction
of the pool (rows with no trainable label are left out), AdamW, a linear schedule with a
warm-up ratio, and after every epoch (and at `max_steps`) a checkpoint `ckpt-<epoch>` with the
adapter, the Adam state (m, v) and the epoch's average learning rate (LESS weights checkpoints
by it). The loss of a batch is the mean of its rows' mean token losses (what LESS's
batch-size-1 + gradient-accumulation training optimises), accumulated over micro-batches that
fit the device (halved on an out-of-memory error), optionally with gradient checkpointing; the
step's gradient norm is clipped at `max_grad_norm` (LESS: 1.0). Under torchrun only rank 0
trains. Dropout is on while training (LESS:
LoRA dropout 0.1) and off when gradients are taken later.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from clusterucb_core.config import LoraSpec, ModelSpec, WarmupSpec, to_dict
from clusterucb_core.data.formatting import collate, encode_chats
from clusterucb_core.data.pool import Pool, chats
from clusterucb_core.features import gradients as G
from clusterucb_core.features import memplan
from clusterucb_core.features import model as M
from clusterucb_core.runtime import atomic
from clusterucb_core.runtime.progress import Progress, report


def select_rows(n_rows: int, fraction: float, seed: int) -> np.ndarray:
    """The seeded random rows a warm-up trains on (sorted); at least one row."""
    if not 0 < fraction <= 1:
        raise ValueError(f"warm-up fraction must be in (0, 1], got {fraction}")
    if n_rows <= 0:
        raise ValueError("the pool is empty")
    k = max(1, int(round(n_rows * fraction)))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_rows, size=k, replace=False)).astype(np.int64)


def pool_identity(pool: Any) -> tuple[Any, str]:
    """(table, fingerprint) of a bare table with a `messages` column, or (the Pool itself,
    its fingerprint): a Pool is read through its accessors (`pool.chats`), never as a whole
    DataFrame."""


    if isinstance(pool, Pool):
        return pool, pool.fingerprint
    table = getattr(pool, "table", pool)
    fp = getattr(pool, "fingerprint", None)
    if fp is None:
        h = hashlib.sha256()
        for msgs in table["messages"]:
            h.update(json.dumps(list(msgs), sort_keys=True, default=str).encode())
            h.update(b"\n")
        fp = h.hexdigest()
    return table, str(fp)


def warmup(pool: Any, model_spec: ModelSpec, lora_spec: LoraSpec, spec: WarmupSpec,
           out_dir: str | Path, progress: Progress | None = None, *,
           rows: np.ndarray | None = None,
           init_checkpoint: str | Path | None = None) -> list[Path]:
    """Train LoRA on a seeded fraction of `pool`; write ckpt-<epoch> folders into `out_dir`.

    `rows` trains on those rows instead of a seeded fraction, and `init_checkpoint` continues
    from a saved adapter and its Adam state instead of fresh LoRA (Dynamic ClusterUCB trains
    one more epoch on each selection; the fine-tune comparison trains on chosen subsets).
    `progress(step, total_steps, message, loss=..., epoch=..., lr=...)` after every step.
    Earlier ckpt-* folders in `out_dir` are removed first (they belong to another run).
    Returns the checkpoint folders in epoch order."""
    import torch
    from transformers import get_linear_schedule_with_warmup


    _refuse_other_ranks()
    if spec.epochs < 1 and spec.max_steps <= 0:
        raise ValueError("warm-up needs epochs >= 1 or max_steps > 0")
    if spec.batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if spec.micro_batch_size < 0 or spec.max_grad_norm < 0:
        raise ValueError("micro_batch_size and max_grad_norm must be >= 0")
    out_dir = Path(out_dir)
    table, pool_fp = pool_identity(pool)
    if rows is None:
        rows = select_rows(len(table), spec.fraction, spec.seed)
    else:
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        if len(rows) == 0 or rows[0] < 0 or rows[-1] >= len(table):
            raise ValueError(f"training rows must be a non-empty subset of the pool's "
                             f"{len(table)} rows")

    if init_checkpoint is None:
        model, tok, device, dtype = M.load_model(model_spec)
    else:
        model, tok, device, dtype = M.prepare_model(model_spec, lora_spec, init_checkpoint)
    msgs = chats(table, rows)
    encs, rep = encode_chats(msgs, tok, model_spec.max_length, model_spec.chat_template,
                             model_spec.truncation)
    keep = [i for i, e in enumerate(encs) if e.n_labels > 0]
    if not keep:
        raise ValueError(f"none of the {len(rows)} warm-up rows has a trainable token within "
                         f"max_length={model_spec.max_length}")
    encs = [encs[i] for i in keep]
    used_rows = rows[keep]
    if init_checkpoint is None:
        model = M.add_lora(model, lora_spec, seed=spec.seed)
    params = [p for _, p in M.lora_parameters(model)]
    opt = torch.optim.AdamW(params, lr=spec.learning_rate, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=spec.weight_decay)
    if init_checkpoint is not None:
        _restore_adam(opt, model, init_checkpoint)
    steps_per_epoch = math.ceil(len(encs) / spec.batch_size)
    if spec.max_steps > 0:
        total = int(spec.max_steps)
        epochs = math.ceil(total / steps_per_epoch)
    else:
        epochs = int(spec.epochs)
        total = epochs * steps_per_epoch
    sched = get_linear_schedule_with_warmup(opt, math.ceil(spec.warmup_ratio * total), total)

    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("ckpt-*"):
        shutil.rmtree(old, ignore_errors=True)
    atomic.write_json(out_dir / "warmup.json", {
        "rows": used_rows.tolist(), "n_selected": int(len(rows)),
        "n_without_labels": int(len(rows) - len(keep)), "n_truncated": rep.n_truncated,
        "pool_fingerprint": pool_fp, "model": model_spec.name_or_path,
        "model_fingerprint": M.weights_fingerprint(model_spec.name_or_path),
        "lora": to_dict(lora_spec), "warmup": to_dict(spec), "max_length": model_spec.max_length,
        "template": model_spec.chat_template, "truncation": model_spec.truncation,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total, "status": "running",
        "init_checkpoint": None if init_checkpoint is None else str(init_checkpoint)})

    micro = spec.micro_batch_size or _planned_micro_batch(model, spec, model_spec.max_length)
    if spec.gradient_checkpointing:
        _checkpointing_on(model)
    gen = torch.Generator().manual_seed(spec.seed)
    torch.manual_seed(spec.seed)  # LoRA dropout draws from the global generator
    model.train()
    step = 0
    saved: list[Path] = []
    losses: list[float] = []
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(encs), generator=gen).tolist()
        lrs: list[float] = []
        for lo in range(0, len(order), spec.batch_size):
            if step >= total:
                break
            rows_here = [encs[i] for i in order[lo:lo + spec.batch_size]]
            lr = float(sched.get_last_lr()[0])
            while True:
                failed = False
                try:
                    loss_value = _accumulate(model, rows_here, micro, tok.pad_token_id, device)
                except torch.cuda.OutOfMemoryError:
                    failed = True
                if not failed:
                    break
                # outside `except`: the failed micro-batch's tensors are unreachable now
                opt.zero_grad(set_to_none=True)
                M.free_memory()
                if micro == 1:
                    longest = max(len(e.input_ids) for e in rows_here)
                    raise ValueError(f"out of GPU memory on one warm-up row (up to {longest} "
                                     "tokens); lower --max-length or turn on gradient "
                                     "checkpointing")
                micro = max(1, min(micro, len(rows_here)) // 2)
            if spec.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, spec.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            lrs.append(lr)
            losses.append(loss_value)
            rate = step / max(time.perf_counter() - t0, 1e-9)
            report(progress, step, total, f"epoch {epoch}/{epochs} step {step}/{total} "
                    f"loss {loss_value:.4f}", loss=loss_value, epoch=epoch, lr=lr, rate=rate,
                    eta_s=(total - step) / rate)
        if not lrs:
            break
        meta = {"epoch": epoch, "step": step, "avg_lr": float(np.mean(lrs)),
                "epoch_losses": losses[-len(lrs):], "base_model": model_spec.name_or_path,
                "base_fingerprint": M.weights_fingerprint(model_spec.name_or_path),
                "pool_fingerprint": pool_fp, "lora": to_dict(lora_spec), "warmup": to_dict(spec),
                "max_length": model_spec.max_length, "template": model_spec.chat_template,
                "n_rows": int(len(encs))}
        model.eval()
        saved.append(M.save_checkpoint(model, opt, out_dir / f"ckpt-{epoch}", meta))
        model.train()
    model.eval()
    info = json_load(out_dir / "warmup.json")
    info.update(status="done", checkpoints=[p.name for p in saved], losses=losses,
                seconds=round(time.perf_counter() - t0, 3))
    atomic.write_json(out_dir / "warmup.json", info)
    return saved


def _accumulate(model, rows: list, micro: int, pad_id: int, device) -> float:
    """Backward of the batch's loss (the mean of its rows' mean token losses) in micro-batches
    of `micro` rows: each adds sum(its rows' losses) / len(rows), so the accumulated gradient
    is the whole batch's. Returns the loss."""

    total = 0.0
    for lo in range(0, len(rows), micro):
        batch = collate(rows[lo:lo + micro], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        per_row, _ = G.row_losses(model, batch)
        loss = per_row.sum() / len(rows)
        loss.backward()
        total += float(loss.detach())
    return total


def _checkpointing_on(model) -> None:
    """Recompute each layer's activations in the backward (non-reentrant: the frozen
    embeddings need no input gradient); transformers 5 renamed the switch."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    if hasattr(lm, "activation_checkpointing_enable"):
        lm.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _planned_micro_batch(model, spec: WarmupSpec, max_length: int) -> int:
    """Rows per forward: the whole batch on the CPU; on CUDA what the free memory holds at
    max_length (memplan), at least one."""
    import torch


    device = next(model.parameters()).device
    if device.type != "cuda":
        return spec.batch_size
    free, total = torch.cuda.mem_get_info(device)
    p = memplan.plan(memplan.shape_of(model), total, max_length, free_bytes=free, kind="train",
                     checkpointing=spec.gradient_checkpointing)
    return max(1, min(spec.batch_size, p.rows_at_max_length))


def _refuse_other_ranks() -> None:
    """Under torchrun only rank 0 trains: N identical trainers would race on one folder."""

    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        raise ValueError(f"warm-up runs on rank 0 only (this is rank {rank}); start it without "
                         "torchrun, or let the other ranks skip it")


def _restore_adam(opt, model, checkpoint: str | Path) -> None:
    """Seed AdamW's m, v and step count from a checkpoint, so training continues it."""
    import torch


    state = M.load_adam_state(model, checkpoint)
    step = float(M.checkpoint_meta(checkpoint).get("step") or 0)
    for name, p in M.lora_parameters(model):
        m, v = state[name]
        opt.state[p] = {"step": torch.tensor(step), "exp_avg": m.clone().to(p.dtype),
                        "exp_avg_sq": v.clone().to(p.dtype)}


def json_load(path: Path) -> dict[str, Any]:

    return json.loads(Path(path).read_text())
