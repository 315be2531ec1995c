"""`clusterucb warmup`: a short LoRA run on a random fraction of the pool, one checkpoint per
epoch (adapter + Adam state + average learning rate) in W/checkpoints/<name>/ckpt-<epoch>."""

from __future__ import annotations

import argparse

from clusterucb_core.cli.features import (
    ProgressLine,
    add_model_arguments,
    lora_spec_from,
    model_spec_from,
    open_pool,
)
from clusterucb_core.cli.stage import merged, open_workspace, recorded_config

_WARMUP_FLAGS = {"fraction": "fraction", "epochs": "epochs", "max_steps": "max_steps",
                 "lr": "learning_rate", "batch_size": "batch_size",
                 "warmup_ratio": "warmup_ratio", "weight_decay": "weight_decay", "seed": "seed",
                 "micro_batch_size": "micro_batch_size",
                 "gradient_checkpointing": "gradient_checkpointing",
                 "max_grad_norm": "max_grad_norm"}

HELP = "train LoRA briefly on a random fraction of the pool (checkpoints with Adam state)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clusterucb_core.config import WarmupSpec

    d = WarmupSpec()  # the defaults when the workspace records no warm-up settings
    parser.add_argument("--workspace", "-w", required=True,
                        help="workspace folder (a flag left out takes its recorded setting)")
    parser.add_argument("--pool", help="pool file (default: the workspace's pool)")
    parser.add_argument("--name", default="warmup",
                        help="checkpoint set name: W/checkpoints/NAME (default: warmup)")
    parser.add_argument("--fraction", type=float, default=None,
                        help=f"fraction of the pool to train on (default {d.fraction})")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"epochs, one checkpoint each (default {d.epochs})")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop after this many optimiser steps (0 = use --epochs)")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"peak learning rate (default {d.learning_rate})")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"rows per optimiser step (default {d.batch_size})")
    parser.add_argument("--warmup-ratio", type=float, default=None,
                        help=f"share of steps with a rising learning rate (default "
                             f"{d.warmup_ratio})")
    parser.add_argument("--micro-batch-size", type=int, default=None,
                        help="rows per forward, gradients accumulated over the batch (0 = "
                             "planned from GPU memory; the whole batch on a CPU)")
    parser.add_argument("--gradient-checkpointing", action="store_true", default=None,
                        help="recompute activations in the backward (less memory, ~30%% slower)")
    parser.add_argument("--max-grad-norm", type=float, default=None,
                        help=f"clip each step's gradient norm (default {d.max_grad_norm}, as "
                             "LESS; 0 = off)")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help=f"AdamW weight decay (default {d.weight_decay})")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the row sample, LoRA init and shuffling")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import os

    from clusterucb_core.config import WarmupSpec
    from clusterucb_core.features.warmup import warmup

    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:  # under torchrun: one trainer, never N identical ones racing on one folder
        print(f"[rank {rank}] warm-up trains on rank 0 only; nothing to do here", flush=True)
        return 0
    ws = open_workspace(args.workspace, create=True)
    pool = open_pool(args, ws)
    cfg = recorded_config(ws)
    spec = merged(cfg.warmup if cfg is not None else WarmupSpec(), args, _WARMUP_FLAGS)
    model_spec = model_spec_from(args, cfg and cfg.model)
    lora = lora_spec_from(args, cfg and cfg.lora)
    out = ws.checkpoints(args.name)
    print(f"warm-up: {len(pool)} pool rows, fraction {spec.fraction}, "
          f"model {model_spec.name_or_path}, LoRA r={lora.rank} alpha={lora.alpha}", flush=True)
    saved = warmup(pool, model_spec, lora, spec, out, progress=ProgressLine("steps"))
    for p in saved:
        print(f"checkpoint {p}")
    return 0
