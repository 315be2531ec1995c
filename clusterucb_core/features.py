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
end bit-identical. Scattered rows asked for lazily are packed into shared batches (equal to
the all-at-once features up to float rounding).

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

import json
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import atomic
from .config import FeatureSpec, LoraSpec, ModelSpec, fingerprint, to_dict
from .progress import Progress, report
from .rowsource import normalize_rows
from .warmup import pool_identity

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
        return {"rank": cfg.get("r"), "alpha": cfg.get("lora_alpha"),
                "target_modules": sorted(targets) if isinstance(targets, list) else targets}
    d = to_dict(lora_spec)
    d.pop("dropout", None)  # off when taking gradients
    d["target_modules"] = sorted(d["target_modules"])
    return d


def model_label(name_or_path: str) -> str:
    """A model's name for manifests: the hub id, or a local folder's name (the weight
    fingerprint is the identity, so a moved folder still matches)."""
    from .model import model_source

    source, local = model_source(name_or_path)
    return Path(source).name if local else source


class FeatureEngine:
    """A loaded model + projector that computes feature rows of one pool into one store.

    Keep one alive to compute rows lazily (`compute(rows)` again and again) without reloading
    the model. `compute_features(...)` is the one-shot form."""

    def __init__(self, pool: Any, model_spec: ModelSpec, lora_spec: LoraSpec,
                 checkpoint_dir: str | Path | None, feature_spec: FeatureSpec,
                 store_path: str | Path):
        from . import gradients as G
        from . import model as M
        from .projection import make_projector

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
        if self.checkpoint_dir is not None or gradient:
            self.model, self.tok, self.device, self.dtype = M.prepare_model(
                model_spec, lora_spec, self.checkpoint_dir, seed=feature_spec.seed)
        else:
            self.model, self.tok, self.device, self.dtype = M.load_model(model_spec)
        self.adam_state = None
        self.projector = None
        if gradient:
            if feature_spec.mode == "adam":
                self.adam_state = M.load_adam_state(self.model, self.checkpoint_dir)
            self.blocks = G.lora_blocks(self.model)
            self.dim_in = sum(b.numel for b in self.blocks)
            self.projector = make_projector(feature_spec.projection, self.dim_in,
                                            feature_spec.dim, seed=feature_spec.seed,
                                            device=self.device)
            self.dim = int(feature_spec.dim)
        else:
            self.dim = G.hidden_size(self.model)
        self.model_fp = M.weights_fingerprint(model_spec.name_or_path)
        self.identity = self._identity()
        self._store = None

    # ---- identity ---------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        from . import model as M

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
        }
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
        from .store import FeatureStore

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
        from .shards import done_anywhere, shard_names

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
        from .formatting import encode_chats
        from .pool import chats

        msgs = chats(self.table, rows)
        encs, _ = encode_chats(msgs, self.tok, self.model_spec.max_length,
                               self.model_spec.chat_template)
        return encs

    def featurize(self, encs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Features [n, dim] float32 and valid mask [n] of encoded rows, in their order."""
        return featurize(self.model, self.tok.pad_token_id, encs, self.spec, self.dim,
                         projector=self.projector, adam_state=self.adam_state)

    def compute(self, rows: np.ndarray | None = None, progress: Progress | None = None,
                rank: int | None = None, world: int | None = None, shard: str | None = None):
        """Compute the missing rows among `rows` (default: all) into the store; returns it.

        Under torch.distributed (or with rank/world given) this process computes its share of
        the chunks; the others write theirs into the same store concurrently. With `shard`
        the rows go to that shard store instead (merged later by `shards.merge_shards`)."""
        from .shards import open_shard

        if rank is None or world is None:
            rank, world = dist_info()
        out = self.store() if shard is None else open_shard(self.store(), shard)
        chunks = self.plan(rows, rank, world)
        total = int(sum(len(c) for c in chunks))
        done = 0
        t0 = time.perf_counter()
        report(progress, 0, total, f"rows 0/{total}", rate=0.0, eta_s=None)
        for chunk in chunks:  # groups of rows (see plan)
            feats, valid = self.featurize(self.encode(chunk))
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

    def as_sgd(self) -> "FeatureEngine":
        """This engine (same model, projector) computing plain SGD gradients (for targets)."""
        import copy
        from dataclasses import replace

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


GRAD_BUFFER_BYTES = 512 * 1024 * 1024  # per-sample gradients held before one projection call


def featurize(model, pad_id: int, encs: Sequence[Any], spec: FeatureSpec, dim: int,
              projector: Any = None, adam_state: dict | None = None,
              buffer_bytes: int = GRAD_BUFFER_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Features [n, dim] float32 and valid mask [n] of encoded rows, in their order.

    Rows are sorted by length and batched (less padding). Kind 'gradient': each batch's
    per-sample LoRA gradients (spec.mode) are written block by block into a row buffer of up
    to `buffer_bytes` (at least one batch), which is projected in one call when full -- a
    projector's per-call cost (making or unpacking its random matrix) is paid per buffer, not
    per batch -- then normalised. Kind 'hidden': mean-pooled hidden states. A CUDA
    out-of-memory error halves the batch and retries."""
    import torch

    from . import gradients as G
    from .formatting import collate

    n = len(encs)
    order = sorted(range(n), key=lambda i: (len(encs[i].input_ids), i))
    out = np.zeros((n, dim), dtype=np.float32)
    valid = np.zeros(n, dtype=bool)
    bs = max(1, int(spec.batch_size))
    gradient = spec.kind == "gradient"
    if gradient:
        blocks = G.lora_blocks(model)
        P = sum(b.numel for b in blocks)
        device = next(model.parameters()).device
        cap = min(n, max(bs, int(buffer_bytes) // (4 * P)))
        buf = torch.empty(cap, P, dtype=torch.float32, device=device)
    pending: list[int] = []  # rows (positions in encs) in the buffer, in buffer order
    pending_ok: list[bool] = []

    def flush() -> None:
        if not pending:
            return
        x = buf[: len(pending)]
        feats = x if projector is None else projector.project(x)
        feats = normalize_rows(feats)[0]
        ok = torch.tensor(pending_ok, device=feats.device)
        feats[~ok] = 0.0
        out[pending] = feats.cpu().numpy()
        valid[pending] = pending_ok
        pending.clear()
        pending_ok.clear()

    pos = 0
    while pos < n:
        idx = order[pos:pos + bs]
        batch = collate([encs[i] for i in idx], pad_id)
        try:
            if gradient:
                if len(pending) + len(idx) > cap:
                    flush()
                lo = len(pending)

                def sink(k: int, g: Any, lo: int = lo) -> None:
                    b = blocks[k]
                    buf[lo:lo + g.shape[0], b.offset:b.offset + b.numel] = g

                _, ok = G.run_per_sample(model, batch, sink, mode=spec.mode,
                                         adam_state=adam_state, blocks=blocks)
                pending.extend(idx)
                pending_ok.extend(bool(v) for v in ok.cpu())
            else:
                feats = G.hidden_features(model, batch)
                out[idx] = feats.float().cpu().numpy()
                valid[idx] = (batch["attention_mask"].sum(dim=1) > 0).numpy()
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if bs == 1:
                raise ValueError(
                    f"out of GPU memory on one row of {len(encs[idx[0]].input_ids)} tokens; "
                    "lower --max-length (rows already computed are kept)") from None
            bs = max(1, bs // 2)
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
    if s.kind == "hidden":
        return f"hidden-{ck}"
    return f"gradient-{s.mode}-{ck}-{s.projection}-d{s.dim}"


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
    from dataclasses import replace

    from .formatting import encode_prompt_completion

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
    if out is not None:
        with atomic.atomic_dir(out) as tmp:
            np.save(tmp / TARGET_FEATURES, feats)
            np.save(tmp / TARGET_SUBTASKS, ids)
            (tmp / TARGET_MANIFEST).write_text(json.dumps({
                "identity": ident, "fingerprint": fingerprint(ident), "n_examples": len(examples),
                "n_without_labels": int((~valid).sum()),
                "n_truncated": int(sum(e.truncated for e in encs)),
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
    import re

    base = re.sub(r"[^A-Za-z0-9._-]+", "-", str(getattr(target_set, "name", "target"))).strip("-.")
    ck = Path(checkpoint_dir).name if checkpoint_dir is not None else "base"
    return f"{base or 'target'}-{ck}"
