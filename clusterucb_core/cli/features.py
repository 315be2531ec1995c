"""`clusterucb features`: gradient (or hidden-state) features of every pool row into a feature
store in W/features/<name>/, resumable; optionally the target set's SGD features too.

Also runs under `torchrun --nproc_per_node N -m clusterucb_core.cli features ...` (gloo on CPU,
NCCL on GPU) and on a Ray cluster (`--engine ray`): each rank or worker computes its share of
the rows into its own shard store, and the shards are merged into the store at the end
(`--merge` finishes an interrupted merge; shards.py)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

# projection.PROJECTORS and model dtypes, spelled here so `--help` does not import torch
# (a test checks they agree)
PROJECTIONS = ("rademacher", "countsketch", "srht")
DTYPES = ("auto", "float32", "bfloat16", "float16")

HELP = "compute per-row gradient features (LESS) into a resumable feature store"


# ----------------------------------------------------------------------- shared with warmup
def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Model and LoRA flags; one left out takes the workspace's recorded setting (stage.py),
    else the default named in its help."""
    from clusterucb_core.config import LoraSpec, ModelSpec

    m, lo = ModelSpec(), LoraSpec()
    g = parser.add_argument_group("model (default: the workspace's recorded settings, else "
                                  "those below)")
    g.add_argument("--model", default=None,
                   help="model folder or hub id (default: the bundled demo model)")
    g.add_argument("--max-length", type=int, default=None,
                   help=f"tokens per row, longer rows are cut (default {m.max_length})")
    g.add_argument("--template", default=None, choices=("tulu", "model"),
                   help="chat rendering: Tulu (LESS) or the model's own chat template")
    g.add_argument("--truncation", default=None, choices=("keep_answer", "right"),
                   help="a row over --max-length loses its oldest prompt tokens (keep_answer, "
                        "default) or its end (right: LESS, which can drop the whole answer)")
    g.add_argument("--device", default=None, help=f"auto | cpu | cuda | cuda:N | mps "
                                                  f"(default {m.device})")
    g.add_argument("--dtype", default=None, choices=DTYPES,
                   help="auto (bf16 on CUDA, fp32 elsewhere) | float32 | bfloat16 | float16")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="allow the model folder's own Python code to run (only if you trust it)")
    g.add_argument("--lora-rank", type=int, default=None,
                   help=f"LoRA rank (default {lo.rank}; LESS uses 128)")
    g.add_argument("--lora-alpha", type=int, default=None,
                   help=f"LoRA alpha (default {lo.alpha}; LESS uses 512)")
    g.add_argument("--lora-dropout", type=float, default=None,
                   help=f"LoRA dropout (default {lo.dropout})")
    g.add_argument("--lora-targets", default=None,
                   help="comma-separated module names to adapt: leaf names (q_proj) or dotted "
                        "names (layers.3.self_attn.q_proj) (default "
                        f"{','.join(lo.target_modules)})")
    g.add_argument("--lora-layers", default=None,
                   help="comma-separated decoder layer indices that get adapters (default: all)")


_MODEL_FLAGS = {"model": "name_or_path", "device": "device", "dtype": "dtype",
                "template": "chat_template", "max_length": "max_length",
                "truncation": "truncation"}
_LORA_FLAGS = {"lora_rank": "rank", "lora_alpha": "alpha", "lora_dropout": "dropout"}


def model_spec_from(args: argparse.Namespace, base: Any = None):
    """The model flags over `base` (the workspace's ModelSpec; default the built-in one)."""
    from dataclasses import replace

    from clusterucb_core.cli.stage import merged
    from clusterucb_core.config import ModelSpec

    spec = merged(base or ModelSpec(), args, _MODEL_FLAGS)
    return replace(spec, trust_remote_code=True) if args.trust_remote_code else spec


def lora_spec_from(args: argparse.Namespace, base: Any = None):
    """The LoRA flags over `base` (the workspace's LoraSpec; default the built-in one)."""
    from dataclasses import replace

    from clusterucb_core.cli.stage import merged
    from clusterucb_core.config import LoraSpec

    spec = merged(base or LoraSpec(), args, _LORA_FLAGS)
    given: dict[str, Any] = {}
    if args.lora_targets is not None:
        given["target_modules"] = tuple(t.strip() for t in args.lora_targets.split(",")
                                        if t.strip())
    if args.lora_layers is not None:
        layers: list[Any] = [t.strip() for t in args.lora_layers.split(",") if t.strip()]
        try:
            layers = [int(t) for t in layers]
        except ValueError:
            pass  # LoraSpec names the setting and the rule
        given["layers_to_transform"] = layers
    return replace(spec, **given) if given else spec


def open_pool(args: argparse.Namespace, ws: Any):
    """--pool (then recorded as the workspace's pool, for the later stages), else the pool
    recorded in the workspace; through the workspace's pool cache."""
    from clusterucb_core.data.load import load_pool
    from clusterucb_core.data.pool_record import record_pool

    cache = ws.pool_cache()
    if args.pool:
        pool = load_pool(args.pool, cache_dir=cache)
        record_pool(ws, pool)
        return pool
    ref = ws.meta().get("pool")
    if isinstance(ref, dict) and ref.get("path"):
        return load_pool(ref["path"], format=ref.get("format", "auto"),
                         shape=ref.get("shape", "auto"), cache_dir=cache,
                         id_field=ref.get("id_field") or None,
                         source_field=ref.get("source_field") or None)
    if isinstance(ref, str) and ref:
        return load_pool(ref, cache_dir=cache)
    raise FileNotFoundError("no pool: give --pool FILE or choose one for the workspace")


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressLine:
    """Progress callback printing `<message> | <rate> <unit>/s | ETA m:ss` at most every
    `every` seconds (and at the end), to stderr. The message carries `done/total` last, which
    is what a background job reads."""

    def __init__(self, unit: str = "rows", every: float = 1.0, prefix: str = "",
                 stream: Any = None):
        self.unit, self.every, self.prefix = unit, every, prefix
        self.stream = stream
        self._last = 0.0
        self._t0 = time.perf_counter()

    def __call__(self, done: int, total: int, message: str = "", **extra: Any) -> None:
        now = time.perf_counter()
        if done < total and done > 0 and now - self._last < self.every:
            return
        self._last = now
        rate = extra.get("rate")
        if rate is None:
            rate = done / max(now - self._t0, 1e-9)
        eta = extra.get("eta_s")
        if eta is None and rate:
            eta = (total - done) / rate
        stream = self.stream or sys.stderr
        print(f"{self.prefix}{message or f'{done}/{total}'} | {rate:.2f} {self.unit}/s | "
              f"ETA {_fmt_eta(eta if done < total else 0)}", file=stream, flush=True)


# ----------------------------------------------------------------------- the command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from clusterucb_core.config import FeatureSpec

    f = FeatureSpec()
    parser.add_argument("--workspace", "-w", required=True, help="workspace folder")
    parser.add_argument("--pool", help="pool file (default: the workspace's pool)")
    parser.add_argument("--name", help="store name: W/features/NAME (default: from the settings,"
                                       " e.g. gradient-adam-ckpt-4-rademacher-d8192)")
    parser.add_argument("--kind", default=f.kind, choices=("gradient", "hidden"),
                        help="gradient (LESS features) or hidden (forward-only, for clustering)")
    parser.add_argument("--mode", choices=("sgd", "adam"), default=None,
                        help="adam (with the checkpoint's Adam state; default when there is a "
                             "checkpoint) or sgd (plain gradient)")
    parser.add_argument("--checkpoint", default=None,
                        help="'last' (the last checkpoint of the warm-up `run` trained for "
                             "the workspace's settings, else of the newest warm-up; the default "
                             "for gradients), 'none' (fresh LoRA / the base model; the default for "
                             "hidden states), ckpt-N, SET/ckpt-N under W/checkpoints, or a folder")
    # left out: the workspace's recorded reward (gradient) or cluster (hidden) features
    parser.add_argument("--dim", type=int, default=None,
                        help=f"projected dimension (default: the workspace's, else {f.dim})")
    parser.add_argument("--projection", default=None, choices=PROJECTIONS,
                        help="rademacher (LESS), countsketch or srht (default: the "
                             f"workspace's, else {f.projection})")
    parser.add_argument("--seed", type=int, default=None, help="projection seed")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"most rows per batch (default {f.batch_size}); on a GPU batches "
                             "are also sized to its free memory, and shrink on out-of-memory")
    parser.add_argument("--store-dtype", default=None, choices=("float16", "float32"),
                        help=f"precision of the features on disk (default {f.store_dtype})")
    parser.add_argument("--rows", default=None,
                        help="only these rows, e.g. '0:100' or '3,7,42' (default: all)")
    parser.add_argument("--target", default=None,
                        help="also compute the SGD features of this target set (file or LESS "
                             "folder) into W/targets/")
    parser.add_argument("--engine", default=f.engine, choices=("local", "ray"),
                        help="local (this process, or torchrun ranks) or ray (actors on a Ray "
                             "cluster: RAY_ADDRESS, else a local one)")
    parser.add_argument("--workers", type=int, default=None,
                        help="--engine ray: number of actors (default: one per GPU, else 2)")
    parser.add_argument("--merge", action="store_true",
                        help="only merge the store's shards (after an interrupted run) and exit")
    add_model_arguments(parser)


def resolve_checkpoint(ws: Any, value: str | None, warmed: list[Path] = ()) -> Path | None:
    """--checkpoint as a folder; 'last' is the last of `warmed` (the workspace's warm-up,
    stage.warmup_checkpoints)."""
    from clusterucb_core.features.model import find_checkpoints

    value = (value or "last").strip()
    if value.lower() == "none":
        return None
    if value.lower() == "last":
        return warmed[-1] if warmed else None
    p = Path(value).expanduser()
    candidates = [p, ws.checkpoints() / value, ws.checkpoints("warmup") / value]
    for c in candidates:
        if (c / "adapter_config.json").exists():
            return c.resolve()
        if c.is_dir():
            found = find_checkpoints(c)
            if found:
                return found[-1].resolve()
    raise FileNotFoundError(
        f"no checkpoint {value!r} (looked in {', '.join(map(str, candidates))})"
    )


def parse_rows(text: str | None, n: int):
    import numpy as np

    if not text:
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if ":" in part:
            a, _, b = part.partition(":")
            out.extend(range(int(a or 0), min(int(b) if b else n, n)))
        elif part:
            out.append(int(part))
    rows = np.array(sorted(set(out)), dtype=np.int64)
    if len(rows) and (rows[0] < 0 or rows[-1] >= n):
        raise ValueError(f"--rows must lie in 0..{n - 1}")
    return rows


_FEATURE_FLAGS = {"projection": "projection", "dim": "dim", "seed": "seed",
                  "batch_size": "batch_size", "store_dtype": "store_dtype"}

DIST_TIMEOUT = timedelta(hours=6)  # collectives: ranks may start (load a model) far apart


def _init_distributed() -> tuple[int, int, bool]:
    """Join the torchrun group: NCCL on this process's GPU (LOCAL_RANK % GPUs, refusing more
    processes than GPUs), gloo on CPUs; a long collective timeout either way."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            from clusterucb_core.features.model import local_cuda_index

            local = torch.device("cuda", local_cuda_index())
            torch.cuda.set_device(local)
            dist.init_process_group(backend="nccl", device_id=local, timeout=DIST_TIMEOUT)
        else:
            dist.init_process_group(backend="gloo", timeout=DIST_TIMEOUT)
    return dist.get_rank(), dist.get_world_size(), True


def wait_for_ranks(tag: str) -> None:
    """Every rank says it is done; rank 0 waits until all have (the others go on).

    Not a collective: ranks that finish their shares hours apart do not hit any timeout, and
    nobody spins on a GPU while waiting. A rank that crashes ends the whole torchrun job."""
    import torch.distributed as dist

    store = dist.distributed_c10d._get_default_store()
    rank, world = dist.get_rank(), dist.get_world_size()
    store.set(f"clusterucb/{tag}/{rank}", "1")
    if rank == 0:
        keys = [f"clusterucb/{tag}/{r}" for r in range(world)]
        while not store.check(keys):
            time.sleep(1.0)


def _merge_only(args: argparse.Namespace) -> int:
    """`--merge`: check and merge the shards of W/features/NAME, computing nothing."""
    from clusterucb_core.features.shards import merge_shards, shard_names
    from clusterucb_core.features.store import FeatureStore
    from clusterucb_core.workspace import Workspace

    if not args.name:
        raise ValueError("--merge needs --name: the store whose shards to merge")
    ws = Workspace.open(args.workspace, create=False)
    with FeatureStore.open(ws.features(args.name), writable=True) as store:
        n_shards = len(shard_names(store.path))
        copied = merge_shards(store, parse_rows(args.rows, store.n_rows))
        print(f"store {store.path}: merged {copied} rows from {n_shards} shards; "
              f"{store.n_done}/{store.n_rows} rows done", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from clusterucb_core.cli import stage
    from clusterucb_core.features.engine import (
        FeatureEngine,
        store_name,
        target_features,
        target_name,
    )
    from clusterucb_core.workspace import Workspace

    if args.merge:
        return _merge_only(args)
    rank, world, distributed = _init_distributed()
    try:
        if distributed:  # rank 0 creates the workspace folder, the others open it after
            import torch.distributed as dist

            if rank == 0:
                Workspace.open(args.workspace)
            dist.barrier()
        ws = stage.open_workspace(args.workspace, create=True)
        pool = open_pool(args, ws)
        cfg = stage.recorded_config(ws)
        model = model_spec_from(args, cfg and cfg.model)
        lora = lora_spec_from(args, cfg and cfg.lora)
        choice = args.checkpoint or ("last" if args.kind == "gradient" else "none")
        warmed = stage.warmup_checkpoints(ws, cfg, pool, model, lora) \
            if choice.strip().lower() == "last" else []
        ckpt = resolve_checkpoint(ws, choice, warmed)
        spec = stage.merged(stage.feature_base(cfg, args.kind), args, _FEATURE_FLAGS)
        mode = args.mode or (spec.mode if ckpt is not None else "sgd")
        spec = replace(spec, kind=args.kind, mode=mode)
        name = args.name or store_name(spec, ckpt)
        prefix = f"[rank {rank}/{world}] " if distributed else ""
        engine = FeatureEngine(pool, model, lora, ckpt, spec, ws.features(name))
        if rank == 0:
            print(f"features: {len(pool)} rows, kind {spec.kind}"
                  + (f", mode {spec.mode}, {spec.projection} d={engine.dim} of "
                     f"{engine.dim_in} LoRA gradient coordinates" if spec.kind == "gradient"
                     else f", d={engine.dim}")
                  + f", max_length {model.max_length}, checkpoint "
                  f"{ckpt or 'none (fresh LoRA)'}, device {engine.device}, "
                  f"store {ws.features(name)}", flush=True)
        rows = parse_rows(args.rows, len(pool))
        if args.engine == "ray":
            from clusterucb_core.features.ray_engine import compute_with_ray

            compute_with_ray(engine, rows, workers=args.workers, progress=ProgressLine("rows"))
        else:
            engine.compute(rows, progress=ProgressLine("rows", prefix=prefix), rank=rank,
                           world=world, shard=f"rank-{rank}" if distributed else None)
        store = engine.store()
        if distributed:
            wait_for_ranks("features")
        if rank == 0:
            from clusterucb_core.features.shards import merge_shards, shard_names

            if shard_names(store.path):
                n_shards = len(shard_names(store.path))
                print(f"merged {merge_shards(store, rows)} rows from {n_shards} shards",
                      flush=True)
            flagged = int(store.flagged.sum())
            print(f"store {store.path}: {store.n_done}/{store.n_rows} rows done, "
                  f"{flagged} flagged (no trained token within max_length: no feature, "
                  f"never scored)", flush=True)
            if args.target:
                from clusterucb_core.data.targets import load_target

                target = load_target(args.target)
                ws.update_meta(target={"path": str(args.target), "name": target.name,
                                       "fingerprint": target.fingerprint})
                out = ws.targets(target_name(target, ckpt))
                feats, ids = target_features(target, engine.model_spec, engine.lora_spec, ckpt,
                                             spec, out_dir=out, engine=engine,
                                             progress=ProgressLine("examples"))
                print(f"target {target.name}: {len(feats)} examples in {len(target.subtasks)} "
                      f"subtasks -> {out}", flush=True)
        return 0
    finally:
        if distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
