"""Pool rows -> feature store: tokenise, batch, per-sample gradients, project, normalise, write.

`compute_features` fills a `FeatureStore` (store.py) with one L2-normalised vector per pool row:

- kind "gradient": the row's LoRA gradient (mode "sgd", or "adam" = LESS's preconditioned
  gradient with the checkpoint's m, v), projected to `dim` with the seeded projector
  (projection.py; same matrix for training rows and target examples), then normalised;
- kind "hidden": forward-only mean-pooled last hidden states (dimension = the model's hidden
  size; `dim` is ignored) -- the cheap features for clustering.

Only rows the store does not have yet are computed (`store.missing(rows)`): a killed run
resumes, and a lazy caller (the bandit) can ask for a few rows at a time. Rows are processed in
fixed chunks -- chunk c holds the missing rows r with r // chunk_rows == c, chunk_rows = 8 x
batch size -- sorted by token length inside the chunk (less padding) and written with one
`store.write` per chunk. Because a full chunk's batches depend only on its rows, a run killed
and resumed, or split over `torchrun` ranks (rank k takes the chunks with c % world == k),
computes every row in exactly the same batch as an uninterrupted single process: the stores
end bit-identical. Scattered rows asked for lazily are grouped into shared batches, each one
packed sequence without padding (packing.py; equal to the all-at-once features up to float
rounding).

Rows without any trained label (e.g. the answer lies beyond max_length) have no gradient: they
are written as flagged (NaN features, done byte 2 in the store), so influence is NaN for them
and clustering leaves them out -- never a score of 0.

The store's manifest records what made the rows (its identity keys): pool fingerprint, model
name and weight fingerprint, checkpoint fingerprint, feature spec (kind, mode, projection and
its spec, dim, seed), LoRA spec, max_length, template and compute dtype. The batch size is not
part of it (it changes rounding only). Opening a store made from other inputs is refused.

Target examples (`target_features`) always use SGD gradients (LESS), at the same checkpoint,
with the same projector; they are cached in W/targets/<name>/ keyed by the same identity.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from clusterucb_core.config import (
    FeatureSpec,
    LoraSpec,
    ModelSpec,
    effective_max_length,
    feature_options,
    fingerprint,
    format_identity,
    to_dict,
)
from clusterucb_core.data.formatting import collate, encode_chats, encode_prompt_completion
from clusterucb_core.data.pool import chats
from clusterucb_core.features import gradients as G
from clusterucb_core.features import memplan
from clusterucb_core.features import model as M
from clusterucb_core.features.model import free_memory, model_source
from clusterucb_core.features.packing import collate_packed
from clusterucb_core.features.projection import make_projector
from clusterucb_core.features.rowsource import normalize_rows
from clusterucb_core.features.scorable import target_report
from clusterucb_core.features.shards import done_anywhere, open_shard, shard_names
from clusterucb_core.features.store import FeatureStore
from clusterucb_core.features.warmup import pool_identity
from clusterucb_core.runtime import atomic
from clusterucb_core.runtime.progress import Progress, report

CHUNK_BATCHES = 8  # chunk = this many batches (the unit of sorting, writing and sharding)
KINDS = ("gradient", "hidden")


def dist_info() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed group, else (0, 1)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _lora_identity(model, lora_spec: LoraSpec, checkpoint_dir: str | Path | None) -> dict:
    """The LoRA configuration actually in the model (a checkpoint's own, when loaded)."""
    if checkpoint_dir is not None:
        cfg = json.loads((Path(checkpoint_dir) / "adapter_config.json").read_text())
        targets = cfg.get("target_modules") or []
        out = {"rank": cfg.get("r"), "alpha": cfg.get("lora_alpha"),
               "target_modules": sorted(targets) if isinstance(targets, list) else targets}
        layers = cfg.get("layers_to_transform")
        if layers:  # per-layer LoRA (left out otherwise, as to_dict leaves out its default)
            out["layers_to_transform"] = [layers] if isinstance(layers, int) else list(layers)
        return out
    d = to_dict(lora_spec)
    d.pop("dropout", None)  # off when taking gradients
    d["target_modules"] = sorted(d["target_modules"])
    return d


def model_label(name_or_path: str) -> str:
    """A model's name for manifests: the hub id, or a local folder's name (the weight
    fingerprint is the identity, so a moved folder still matches)."""

    source, local = model_source(name_or_path)
    return Path(source).name if local else source


class FeatureEngine:
    """A loaded model + projector that computes feature rows of one pool into one store.

    Keep one alive to compute rows lazily (`compute(rows)` again and again) without reloading
    the model. `compute_features(...)` is the one-shot form."""

    def __init__(self, pool: Any, model_spec: ModelSpec, lora_spec: LoraSpec,
                 checkpoint_dir: str | Path | None, feature_spec: FeatureSpec,
                 store_path: str | Path, base: Any = None):

        if feature_spec.kind not in KINDS:
            raise ValueError(f"unknown feature kind {feature_spec.kind!r}; choose one of {KINDS}")
        self.table, self.pool_fp = pool_identity(pool)
        self.model_spec, self.lora_spec, self.spec = model_spec, lora_spec, feature_spec
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.store_path = Path(store_path)
        gradient = feature_spec.kind == "gradient"
        if gradient and feature_spec.mode == "adam" and self.checkpoint_dir is None:
            raise ValueError("mode 'adam' needs a warm-up checkpoint (its Adam state); run "
                             "`clusterucb warmup` first or use mode 'sgd'")
        if gradient and feature_spec.mode not in G.MODES:
            raise ValueError(f"unknown gradient mode {feature_spec.mode!r}; choose one of "
                             f"{G.MODES}")
        self._shared, self._adapter = None, None
        if base is not None and self.checkpoint_dir is not None and gradient:
            self._shared, self._adapter = base, base.adapter(self.checkpoint_dir)
            base.activate(self._adapter)
            self.model, self.tok, self.device, self.dtype = (base.model, base.tok, base.device,
                                                             base.dtype)
        elif self.checkpoint_dir is not None or gradient:
            self.model, self.tok, self.device, self.dtype = M.prepare_model(
                model_spec, lora_spec, self.checkpoint_dir, seed=feature_spec.seed)
            if gradient and feature_spec.top_blocks:
                G.freeze_below_top(self.model, feature_spec.top_blocks)
        else:
            self.model, self.tok, self.device, self.dtype = M.load_model(model_spec)
        self.adam_state = None
        self.projector = None
        if gradient:
            if feature_spec.mode == "adam":
                self.adam_state = M.load_adam_state(self.model, self.checkpoint_dir)
            self.blocks = G.lora_blocks(self.model)
            self.dim_in = sum(b.numel for b in self.blocks)
            key = (feature_spec.projection, self.dim_in, int(feature_spec.dim),
                   int(feature_spec.seed), str(self.device))
            shared = self._shared.projectors if self._shared is not None else {}
            if key not in shared:
                shared[key] = make_projector(feature_spec.projection, self.dim_in,
                                             feature_spec.dim, seed=feature_spec.seed,
                                             device=self.device)
            self.projector = shared[key]
            self.dim = int(feature_spec.dim)
        else:
            self.dim = G.hidden_size(self.model)
        self.model_fp = M.weights_fingerprint(model_spec.name_or_path)
        self.identity = self._identity()
        self._store = None
        budgets = self._shared.budgets if self._shared is not None else {}
        if feature_spec.kind not in budgets:
            budgets[feature_spec.kind] = initial_budget(self.model, feature_spec,
                                                        model_spec.max_length, self.projector)
        self.budget = budgets[feature_spec.kind]

    def activate(self) -> None:
        """Make this engine's adapter the active one of a shared base model."""
        if self._shared is not None:
            self._shared.activate(self._adapter)

    # ---- identity ---------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:

        s = self.spec
        feature: dict[str, Any] = {"kind": s.kind}
        ident: dict[str, Any] = {
            "pool": self.pool_fp,
            "model": model_label(self.model_spec.name_or_path),
            "model_fingerprint": self.model_fp,
            "checkpoint": M.checkpoint_fingerprint(self.checkpoint_dir),
            "max_length": int(self.model_spec.max_length),
            "template": self.model_spec.chat_template,
            "compute_dtype": str(self.dtype).replace("torch.", ""),
            **format_identity(self.model_spec),
        }
        feature.update(feature_options(s))
        if s.kind == "gradient":
            feature.update(mode=s.mode, dim=int(s.dim), seed=int(s.seed),
                           projection=self.projector.spec)
            ident["lora"] = _lora_identity(self.model, self.lora_spec, self.checkpoint_dir)
        ident["feature"] = feature
        return ident

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.identity)

    def store(self):

        if self._store is None:
            self._store = FeatureStore.create_or_open(self.store_path, len(self.table), self.dim,
                                                      self.identity, dtype=self.spec.store_dtype)
        return self._store

    # ---- computing --------------------------------------------------------------------------
    @property
    def chunk_rows(self) -> int:
        return CHUNK_BATCHES * max(1, int(self.spec.batch_size))

    def plan(self, rows: np.ndarray | None = None, rank: int = 0, world: int = 1
             ) -> list[np.ndarray]:
        """The groups of rows this rank computes, one featurize call and one store write each.

        Missing rows are split into chunks by chunk id c = row // chunk_rows, and this rank
        keeps the chunks with c % world == rank (a split that depends on chunk ids only, never
        on what other ranks have already written). A full chunk is a group of its own, so a
        full run, its resumption and its torchrun split batch every row identically. Partial
        chunks (a lazy caller's scattered rows) are packed together up to chunk_rows rows, so
        a few drawn rows are still computed in one batch, not one batch each. Rows finished in
        a shard store (shards.py) count as done."""

        todo = self.store().missing(rows)
        if len(todo) and shard_names(self.store_path):
            todo = todo[~done_anywhere(self.store())[todo]]
        if len(todo) == 0:
            return []
        todo = np.unique(todo)
        ids = todo // self.chunk_rows
        mine = (ids % world) == rank
        todo, ids = todo[mine], ids[mine]
        if len(todo) == 0:
            return []
        chunks = np.split(todo, np.flatnonzero(np.diff(ids)) + 1)
        groups: list[np.ndarray] = []
        packed: list[np.ndarray] = []
        n_packed = 0
        for chunk in chunks:
            if len(chunk) == self.chunk_rows:
                groups.append(chunk)
                continue
            if packed and n_packed + len(chunk) > self.chunk_rows:
                groups.append(np.concatenate(packed))
                packed, n_packed = [], 0
            packed.append(chunk)
            n_packed += len(chunk)
        if packed:
            groups.append(np.concatenate(packed))
        return groups

    def encode(self, rows: np.ndarray):

        msgs = chats(self.table, rows)
        max_length = effective_max_length(self.spec, self.model_spec.max_length)
        encs, _ = encode_chats(msgs, self.tok, max_length,
                               self.model_spec.chat_template, self.model_spec.truncation)
        return encs

    def featurize(self, encs: Sequence[Any], pack: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Features [n, dim] float32 and valid mask [n] of encoded rows, in their order."""
        self.activate()
        return featurize(self.model, self.tok.pad_token_id, encs, self.spec, self.dim,
                         projector=self.projector, adam_state=self.adam_state,
                         budget=self.budget, pack=pack)

    def is_full_chunk(self, rows: np.ndarray) -> bool:
        """A group of `plan` that is one whole chunk (batched as every run batches it)."""
        return (len(rows) == self.chunk_rows
                and int(rows[0]) // self.chunk_rows == int(rows[-1]) // self.chunk_rows)

    def compute(self, rows: np.ndarray | None = None, progress: Progress | None = None,
                rank: int | None = None, world: int | None = None, shard: str | None = None):
        """Compute the missing rows among `rows` (default: all) into the store; returns it.

        Under torch.distributed (or with rank/world given) this process computes its share of
        the chunks; the others write theirs into the same store concurrently. With `shard`
        the rows go to that shard store instead (merged later by `shards.merge_shards`)."""

        if rank is None or world is None:
            rank, world = dist_info()
        out = self.store() if shard is None else open_shard(self.store(), shard)
        chunks = self.plan(rows, rank, world)
        total = int(sum(len(c) for c in chunks))
        done = 0
        t0 = time.perf_counter()
        report(progress, 0, total, f"rows 0/{total}" if total else
               f"all {out.n_rows:,} rows already computed", rate=0.0, eta_s=None)
        for chunk in chunks:  # groups of rows (see plan)
            # scattered rows (a lazy round's) are packed without padding; a whole chunk keeps
            # its length-sorted padded batches, so stores stay bit-identical across resumes
            pack = self.spec.kind == "gradient" and not self.is_full_chunk(chunk)
            feats, valid = self.featurize(self.encode(chunk), pack=pack)
            out.write(chunk, feats, flagged=~valid)
            done += len(chunk)
            elapsed = max(time.perf_counter() - t0, 1e-9)
            rate = done / elapsed
            report(progress, done, total, f"rows {done}/{total}", rate=rate,
                    eta_s=(total - done) / rate if rate > 0 else None,
                    flagged=int((~valid).sum()))
        if out is not self._store:
            out.close()
        return self._store

    def as_sgd(self) -> FeatureEngine:
        """This engine (same model, projector) computing plain SGD gradients (for targets)."""

        twin = copy.copy(self)
        twin.spec = replace(self.spec, mode="sgd")
        twin.adam_state = None
        twin._store = None
        twin.identity = twin._identity()
        return twin

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def release(self) -> None:
        """Close the store and drop the model, projector and Adam state (before loading
        another model in this process, e.g. a warm-up)."""
        self.close()
        self.model = self.adam_state = self.projector = self._shared = None
        self.blocks = []


GRAD_BUFFER_BYTES = 512 * 1024 * 1024  # per-sample gradients held before one projection call


class TokenBudget:
    """How many rows go into one batch: at most `max_rows`, and (when `limit_bytes` is set) at
    most what the memory plan allows -- n rows padded to L tokens cost n * row_bytes +
    n * L * token_bytes (memplan.Plan). An out-of-memory error halves the limit from the
    failed batch's cost; the engine keeps one budget for all its chunks, so a limit learnt
    once is not forgotten at the next chunk."""

    def __init__(self, max_rows: int, limit_bytes: int | None = None, token_bytes: int = 1,
                 row_bytes: int = 0):
        self.max_rows = max(1, int(max_rows))
        self.limit_bytes = limit_bytes
        self.token_bytes, self.row_bytes = int(token_bytes), int(row_bytes)
        self.ooms = 0

    def cost(self, rows: int, tokens: int) -> int:
        return rows * self.row_bytes + rows * tokens * self.token_bytes

    def rows(self, lengths: Sequence[int], pos: int) -> int:
        """Rows from `pos` (lengths ascending) in the next batch; at least one."""
        n = min(self.max_rows, len(lengths) - pos)
        if self.limit_bytes is None:
            return n
        k = 1
        while k < n and self.cost(k + 1, lengths[pos + k]) <= self.limit_bytes:
            k += 1
        return k

    def packed(self, lengths: Sequence[int], pos: int) -> int:
        """Rows from `pos` in the next packed sequence (packing.py): at most `max_rows`, and
        under the memory plan n rows of T tokens in all cost n * row_bytes + T * token_bytes;
        at least one."""
        n = min(self.max_rows, len(lengths) - pos)
        k, total = 1, int(lengths[pos])
        while k < n and (self.limit_bytes is None or (k + 1) * self.row_bytes + (
                total + int(lengths[pos + k])) * self.token_bytes <= self.limit_bytes):
            total += int(lengths[pos + k])
            k += 1
        return k

    def shrink(self, rows: int, tokens: int) -> None:
        """A batch of `rows` x `tokens` ran out of memory: allow at most half its cost."""
        self.ooms += 1
        self.limit_bytes = max(1, self.cost(rows, tokens) // 2)


def initial_budget(model, spec: FeatureSpec, max_length: int, projector: Any = None
                   ) -> TokenBudget:
    """Rows only on the CPU; on CUDA also the memory plan of the free device memory."""
    import torch


    device = next(model.parameters()).device
    budget = TokenBudget(spec.batch_size)
    if device.type != "cuda":
        return budget
    free, total = torch.cuda.mem_get_info(device)
    proj = projector.memory_plan()["state_bytes"] if projector is not None else 0
    if projector is not None and getattr(projector, "_index", None) is not None:
        proj = 0  # already allocated: inside `free`
    plan = memplan.plan(memplan.shape_of(model), total, max_length, free_bytes=free - proj,
                        kind=spec.kind)
    budget.limit_bytes = plan.usable_bytes
    budget.token_bytes, budget.row_bytes = plan.token_bytes, plan.row_fixed_bytes
    return budget


def featurize(model, pad_id: int, encs: Sequence[Any], spec: FeatureSpec, dim: int,
              projector: Any = None, adam_state: dict | None = None,
              buffer_bytes: int = GRAD_BUFFER_BYTES, budget: TokenBudget | None = None,
              pack: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Features [n, dim] float32 and valid mask [n] of encoded rows, in their order.

    Rows are sorted by length and batched by the token `budget` (less padding; the default
    budget is `spec.batch_size` rows). Kind 'gradient': each batch's per-sample LoRA
    gradients (spec.mode) are written block by block into a row buffer holding the current
    batch, or more rows while they fit `buffer_bytes`, which is projected in one call when
    full -- a projector's per-call cost is paid per buffer, not per batch -- then normalised.
    Kind 'hidden': mean-pooled hidden states. `pack` (kind 'gradient'): each batch is one
    sequence of its rows end to end, no padding (packing.py), the same rows per batch.

    A CUDA out-of-memory error anywhere (the batch, the buffer, the projection) is handled
    after the `except` block is left, so the traceback's frames no longer hold the failed
    batch's tensors when the cache is emptied: a batch halves the budget and is retried; a
    projection retries with half the rows; one row that does not fit is a clear error."""
    import torch


    n = len(encs)
    order = sorted(range(n), key=lambda i: (len(encs[i].input_ids), i))
    lengths = [len(encs[i].input_ids) for i in order]
    out = np.zeros((n, dim), dtype=np.float32)
    valid = np.zeros(n, dtype=bool)
    budget = budget if budget is not None else TokenBudget(spec.batch_size)
    gradient = spec.kind == "gradient"
    buf: torch.Tensor | None = None
    if gradient:
        blocks = G.lora_blocks(model)
        P = sum(b.numel for b in blocks)
        device = next(model.parameters()).device
        spare_rows = min(n, int(buffer_bytes) // (4 * P))  # rows the buffer may hold beyond
    pending: list[int] = []  # rows (positions in encs) in the buffer, in buffer order
    pending_ok: list[bool] = []
    flush_rows = [n]  # rows per projection call; halves on an out-of-memory error

    def flush() -> None:
        done = 0
        while done < len(pending):
            k = min(flush_rows[0], len(pending) - done)
            failed = False
            try:
                x = buf[done:done + k]
                feats = x if projector is None else projector.project(x)
                feats = normalize_rows(feats)[0]
                ok = torch.tensor(pending_ok[done:done + k], device=feats.device)
                feats[~ok] = 0.0
                rows = pending[done:done + k]
                out[rows] = feats.cpu().numpy()
                valid[rows] = pending_ok[done:done + k]
                del x, feats, ok
            except torch.cuda.OutOfMemoryError:
                failed = True
            if failed:
                free_memory()
                if k == 1:
                    raise ValueError("out of GPU memory projecting one row's gradient; use "
                                     "projection 'countsketch' or a smaller --dim") from None
                flush_rows[0] = max(1, k // 2)
                continue
            done += k
        pending.clear()
        pending_ok.clear()

    pos = 0
    pack = pack and gradient
    while pos < n:
        take = budget.packed(lengths, pos) if pack else budget.rows(lengths, pos)
        idx = order[pos:pos + take]
        failed = False
        try:
            rows_in = [encs[i] for i in idx]
            batch = (collate_packed(rows_in, next(model.parameters()).dtype) if pack
                     else collate(rows_in, pad_id))
            if gradient:
                if buf is not None and len(pending) + len(idx) > buf.shape[0]:
                    flush()
                if buf is None or buf.shape[0] < len(idx) or (
                        buf.shape[0] > max(len(idx), spare_rows) and not pending):
                    buf = None  # sized to this batch (or the spare rows), never the old one
                    buf = torch.empty(max(len(idx), spare_rows), P, dtype=torch.float32,
                                      device=device)
                lo = len(pending)

                def sink(k: int, g: Any, lo: int = lo, buf: torch.Tensor = buf) -> None:
                    b = blocks[k]
                    buf[lo:lo + g.shape[0], b.offset:b.offset + b.numel] = g

                _, ok = G.run_per_sample(model, batch, sink, mode=spec.mode,
                                         adam_state=adam_state, blocks=blocks)
                pending.extend(idx)
                pending_ok.extend(bool(v) for v in ok.cpu())
            else:
                feats = G.hidden_features(model, batch, pooling=spec.pooling,
                                          layers=spec.layers)
                out[idx] = feats.float().cpu().numpy()
                valid[idx] = (batch["attention_mask"].sum(dim=1) > 0).numpy()
        except torch.cuda.OutOfMemoryError:
            failed = True
        if failed:  # outside `except`: the failed batch's tensors are unreachable now
            batch = sink = feats = None
            if buf is not None and not pending:
                buf = None
            free_memory()
            if len(idx) == 1:
                raise ValueError(
                    f"out of GPU memory on one row of {lengths[pos]} tokens; lower "
                    "--max-length (rows already computed are kept)") from None
            budget.shrink(len(idx), (sum(lengths[pos:pos + len(idx)]) // len(idx)) if pack
                          else lengths[pos + len(idx) - 1])
            continue
        pos += len(idx)
    if gradient:
        flush()
    return out, valid


def compute_features(pool: Any, model_spec: ModelSpec, lora_spec: LoraSpec,
                     checkpoint_dir: str | Path | None, feature_spec: FeatureSpec,
                     store_path: str | Path, rows: np.ndarray | None = None,
                     progress: Progress | None = None):
    """Fill the store at `store_path` with features of `pool` (a pool.Pool or its table) --
    only the rows it lacks among `rows` (default all). Returns the FeatureStore."""
    engine = FeatureEngine(pool, model_spec, lora_spec, checkpoint_dir, feature_spec, store_path)
    return engine.compute(rows, progress)


def store_name(feature_spec: FeatureSpec, checkpoint_dir: str | Path | None) -> str:
    """A readable default store name, e.g. 'gradient-adam-ckpt-4-rademacher-d8192'."""
    s = feature_spec
    ck = Path(checkpoint_dir).name if checkpoint_dir is not None else "base"
    opts = "".join(f"-{k.replace('_', '')}{v}" for k, v in feature_options(s).items())
    if s.kind == "hidden":
        return f"hidden-{ck}{opts}"
    return f"gradient-{s.mode}-{ck}-{s.projection}-d{s.dim}{opts}"


# --------------------------------------------------------------------------------- targets
TARGET_FEATURES = "features.npy"
TARGET_SUBTASKS = "subtask_ids.npy"
TARGET_MANIFEST = "manifest.json"


def target_features(target_set: Any, model_spec: ModelSpec, lora_spec: LoraSpec,
                    checkpoint_dir: str | Path | None, feature_spec: FeatureSpec,
                    out_dir: str | Path | None = None, progress: Progress | None = None,
                    engine: FeatureEngine | None = None) -> tuple[np.ndarray, np.ndarray]:
    """SGD gradient features of a target set's examples: (features [M, d] float32,
    subtask ids [M] int64, codes into `target_set.subtasks`).

    Always mode 'sgd' (LESS), same checkpoint and projector as the training features. Examples
    without any label (empty completion) are left out and counted in the manifest. With
    `out_dir` (e.g. ws.targets(name)) the result is cached there and reused while the inputs
    are the same. An `engine` already loaded for the pool (kind 'gradient') is reused."""


    spec = replace(feature_spec, kind="gradient", mode="sgd")
    if engine is not None and engine.spec.kind == "gradient":
        eng = engine.as_sgd()
    else:
        eng = FeatureEngine(_EmptyPool(), model_spec, lora_spec, checkpoint_dir, spec,
                            store_path=Path("/nonexistent"))
    subtasks = list(target_set.subtasks)
    code = {s: i for i, s in enumerate(subtasks)}
    ident = dict(eng.identity)
    ident.pop("pool", None)
    ident["target"] = str(target_set.fingerprint)
    ident["subtasks"] = subtasks
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and (out / TARGET_MANIFEST).exists():
        cached = json.loads((out / TARGET_MANIFEST).read_text())
        if cached.get("identity") == json.loads(json.dumps(ident, default=str)):
            return (np.load(out / TARGET_FEATURES).astype(np.float32),
                    np.load(out / TARGET_SUBTASKS).astype(np.int64))
    examples = list(target_set.examples)
    encs = [encode_prompt_completion(ex.prompt, ex.completion, eng.tok,
                                     model_spec.max_length) for ex in examples]
    feats = np.zeros((len(encs), eng.dim), dtype=np.float32)
    valid = np.zeros(len(encs), dtype=bool)
    step = max(1, CHUNK_BATCHES * spec.batch_size)
    # Finished chunks are kept beside the cache while it is being made, so a cancelled or
    # killed job resumes the target gradients instead of starting them over.
    partial = None if out is None else out.with_name(out.name + ".partial")
    key = f"{fingerprint(ident)}-{step}"
    if partial is not None:
        if (partial / "key.txt").exists() and (partial / "key.txt").read_text() != key:
            shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True, exist_ok=True)
        atomic.write_text(partial / "key.txt", key)
    for lo in range(0, len(encs), step):
        chunk = None if partial is None else partial / f"{lo}.npz"
        if chunk is not None and chunk.exists():
            with np.load(chunk) as z:
                f, v = z["f"], z["v"]
        else:
            f, v = eng.featurize(encs[lo:lo + step])
            if chunk is not None:
                with atomic.atomic_path(chunk) as tmp, open(tmp, "wb") as fh:
                    np.savez(fh, f=f, v=v)
        feats[lo:lo + step], valid[lo:lo + step] = f, v
        report(progress, min(lo + step, len(encs)), len(encs),
               f"target examples {min(lo + step, len(encs))}/{len(encs)}")
    ids = np.array([code[ex.subtask] for ex in examples], dtype=np.int64)
    feats, ids = feats[valid], ids[valid]

    cut = target_report(examples, eng.tok, model_spec.max_length)
    if out is not None:
        with atomic.atomic_dir(out) as tmp:
            np.save(tmp / TARGET_FEATURES, feats)
            np.save(tmp / TARGET_SUBTASKS, ids)
            (tmp / TARGET_MANIFEST).write_text(json.dumps({
                "identity": ident, "fingerprint": fingerprint(ident), "n_examples": len(examples),
                "n_without_labels": int((~valid).sum()),
                "n_truncated": int(sum(e.truncated for e in encs)),
                "tokens_lost": cut.tokens_lost,
                "mean_tokens_lost": round(cut.mean_tokens_lost, 2),
                "counts": {s: int((ids == i).sum()) for i, s in enumerate(subtasks)},
                "checkpoint_dir": None if checkpoint_dir is None else str(checkpoint_dir),
            }, indent=2, sort_keys=True, default=str) + "\n")
        shutil.rmtree(partial, ignore_errors=True)
    return feats, ids


class _EmptyPool:
    """Stands in for a pool when an engine only featurises target examples."""

    fingerprint = "none"

    @property
    def table(self):
        import pandas as pd

        return pd.DataFrame({"messages": []})


def target_name(target_set: Any, checkpoint_dir: str | Path | None) -> str:
    """Default cache folder name under W/targets/, e.g. 'mmlu-ckpt-4'."""

    base = re.sub(r"[^A-Za-z0-9._-]+", "-", str(getattr(target_set, "name", "target"))).strip("-.")
    ck = Path(checkpoint_dir).name if checkpoint_dir is not None else "base"
    return f"{base or 'target'}-{ck}"
