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

HELP = "train LoRA briefly on a random fraction of the pool (checkpoints with Adam state)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clusterucb_core.config import WarmupSpec

    d = WarmupSpec()
    parser.add_argument("--workspace", "-w", required=True, help="workspace folder")
    parser.add_argument("--pool", help="pool file (default: the workspace's pool)")
    parser.add_argument("--name", default="warmup",
                        help="checkpoint set name: W/checkpoints/NAME (default: warmup)")
    parser.add_argument("--fraction", type=float, default=d.fraction,
                        help=f"fraction of the pool to train on (default {d.fraction})")
    parser.add_argument("--epochs", type=int, default=d.epochs,
                        help=f"epochs, one checkpoint each (default {d.epochs})")
    parser.add_argument("--max-steps", type=int, default=d.max_steps,
                        help="stop after this many optimiser steps (0 = use --epochs)")
    parser.add_argument("--lr", type=float, default=d.learning_rate,
                        help=f"peak learning rate (default {d.learning_rate})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size,
                        help=f"rows per optimiser step (default {d.batch_size})")
    parser.add_argument("--warmup-ratio", type=float, default=d.warmup_ratio,
                        help=f"share of steps with a rising learning rate (default "
                             f"{d.warmup_ratio})")
    parser.add_argument("--micro-batch-size", type=int, default=d.micro_batch_size,
                        help="rows per forward, gradients accumulated over the batch (0 = "
                             "planned from GPU memory; the whole batch on a CPU)")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="recompute activations in the backward (less memory, ~30%% slower)")
    parser.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm,
                        help=f"clip each step's gradient norm (default {d.max_grad_norm}, as "
                             "LESS; 0 = off)")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay,
                        help=f"AdamW weight decay (default {d.weight_decay})")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help="seed of the row sample, LoRA init and shuffling")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import os

    from clusterucb_core.config import WarmupSpec
    from clusterucb_core.features.warmup import warmup
    from clusterucb_core.workspace import Workspace

    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:  # under torchrun: one trainer, never N identical ones racing on one folder
        print(f"[rank {rank}] warm-up trains on rank 0 only; nothing to do here", flush=True)
        return 0
    ws = Workspace.open(args.workspace)
    pool = open_pool(args, ws)
    spec = WarmupSpec(fraction=args.fraction, epochs=args.epochs, max_steps=args.max_steps,
                      learning_rate=args.lr, batch_size=args.batch_size,
                      warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay,
                      seed=args.seed, micro_batch_size=args.micro_batch_size,
                      gradient_checkpointing=bool(args.gradient_checkpointing),
                      max_grad_norm=args.max_grad_norm)
    model_spec = model_spec_from(args)
    lora = lora_spec_from(args)
    out = ws.checkpoints(args.name)
    print(f"warm-up: {len(pool)} pool rows, fraction {spec.fraction}, "
          f"model {model_spec.name_or_path}, LoRA r={lora.rank} alpha={lora.alpha}", flush=True)
    saved = warmup(pool, model_spec, lora, spec, out, progress=ProgressLine("steps"))
    for p in saved:
        print(f"checkpoint {p}")
    return 0
