"""The cost planner's inputs, measured: the pool's and the target's token counts, the model's
shape, and a calibration of a few seconds on this device; then the plan (`cost.plan_stages`).

The calibration loads the model once (timed: a model load), builds the projector, and times
the engine's own calls on real pool rows of a short, a long and a middling length: per-row
LoRA gradients (`engine.featurize`, the reward features' settings, a stand-in Adam state of
the right shape), forward-only hidden states (the cluster features' settings), and warm-up
steps (forward + backward + AdamW), and k-means on a synthetic sample of the run's K and
dimension. Each call is timed three times (the median kept: a run meets the machine's average
load), after one untimed first call per operation; `cost.fit_op` fits the per-batch, per-FLOP
and per-row rates from them. Modules are imported before the model load is timed (a run
imports them once; its loads do not pay for it).

Token counts and calibrations are kept in W/plan/ (keyed by what they depend on), so the app's
panel and `clusterucb plan` recompute nothing they already know; the plan itself is saved as
W/plan/plan.json, which the run summary and the UCB page compare with the measured stages.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from clusterucb_core.clustering.kmeans import cluster_features
from clusterucb_core.config import RunConfig, fingerprint, to_dict
from clusterucb_core.data.formatting import encode_chats, encode_prompt_completion
from clusterucb_core.data.load import load_pool
from clusterucb_core.data.pool import chats
from clusterucb_core.data.targets import load_target
from clusterucb_core.features import cost, memplan
from clusterucb_core.features import engine as E
from clusterucb_core.features import gradients as G
from clusterucb_core.features import model as M
from clusterucb_core.features.model import (
    load_tokenizer,
    model_source,
    resolve_device,
    weights_fingerprint,
)
from clusterucb_core.features.projection import make_projector
from clusterucb_core.features.warmup import _accumulate, select_rows
from clusterucb_core.runtime import atomic
from clusterucb_core.runtime.timings import read_timings
from clusterucb_core.workspace import Workspace

PLAN_DIR = "plan"
PLAN_FILE = "plan.json"
TOKEN_SAMPLE = 20_000  # pools larger than this are planned from a seeded sample's lengths


def plan_dir(workspace: str | Path) -> Path:
    return Path(workspace) / PLAN_DIR


# ------------------------------------------------------------------------------ token counts
def _tokens_of(encs) -> cost.Tokens:
    return cost.Tokens(np.array([len(e.input_ids) for e in encs], dtype=np.int64),
                       np.array([e.n_labels for e in encs], dtype=np.int64))


def pool_tokens(pool, cfg: RunConfig, tok, workspace: str | Path | None = None,
                sample: int = TOKEN_SAMPLE) -> tuple[cost.Tokens, str]:
    """(per-row token and label counts as the features encode them, a note). A pool larger
    than `sample` rows is tokenised on a seeded sample whose counts are drawn N times."""

    n = len(pool)
    rows = np.arange(n) if n <= sample else np.sort(
        np.random.default_rng(0).choice(n, size=sample, replace=False))
    m = cfg.model
    key = fingerprint(pool.fingerprint, m.name_or_path, m.max_length, m.chat_template,
                      m.truncation, int(len(rows)))
    path = None if workspace is None else plan_dir(workspace) / f"tokens-{key}.npz"
    if path is not None and path.exists():
        with np.load(path) as z:
            t = cost.Tokens(z["lengths"], z["labelled"])
    else:
        parts = []
        for lo in range(0, len(rows), 1024):
            encs, _ = encode_chats(chats(pool, rows[lo:lo + 1024]), tok, m.max_length,
                                   m.chat_template, m.truncation)
            parts.append(_tokens_of(encs))
        t = cost.Tokens(np.concatenate([p.lengths for p in parts]),
                        np.concatenate([p.labelled for p in parts]))
        if path is not None:
            with atomic.atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, lengths=t.lengths, labelled=t.labelled)
    if len(rows) == n:
        return t, f"token counts of all {n:,} rows"
    draw = np.random.default_rng(1).integers(0, len(t), size=n)
    return t.subset(draw), f"token counts of a {len(rows):,}-row sample of {n:,}"


def target_tokens(target, cfg: RunConfig, tok) -> cost.Tokens:

    encs = [encode_prompt_completion(ex.prompt, ex.completion, tok, cfg.model.max_length)
            for ex in target.examples]
    t = _tokens_of(encs)
    return t.subset(np.flatnonzero(t.labelled > 0))


# ------------------------------------------------------------------------------ calibration
def calibration_key(cfg: RunConfig, device: str) -> str:
    """What a calibration depends on: the device, the model, LoRA, the batch settings and
    what sizes the k-means (its settings, K through the cold start)."""

    return fingerprint(device, weights_fingerprint(cfg.model.name_or_path),
                       replace(cfg.model, name_or_path=""), cfg.lora, cfg.reward_features,
                       cfg.cluster_features, cfg.warmup.batch_size, cfg.clusters,
                       cfg.selection.cold_start)


def _pick(tokens: cost.Tokens, q: float, k: int) -> np.ndarray:
    """`k` scorable rows whose length is nearest the q-quantile of the pool's."""
    ok = np.flatnonzero(tokens.labelled > 0)
    if len(ok) == 0:
        raise ValueError("no pool row has a trainable token: nothing to calibrate on")
    order = ok[np.argsort(tokens.lengths[ok], kind="stable")]
    mid = int(round(q * (len(order) - 1)))
    lo = max(0, min(mid - k // 2, len(order) - k))
    return order[lo:lo + k]


def _timed(fn, repeats: int, warm: bool) -> float:
    """The median seconds of `repeats` calls (a run meets the machine's average load, not
    its best moment), after an untimed first call when `warm`."""
    if warm:  # the first call of an operation pays for kernels, allocator, caches
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def time_kmeans(cfg: RunConfig, n_rows: int, k: int, dim: int, sample: int = 2000) -> float:
    """Seconds per row of the run's k-means, timed on `sample` synthetic rows around K
    centres (the features do not exist before the run; an estimate)."""

    n = min(sample, n_rows)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((k, dim)).astype(np.float32)
    X = centres[rng.integers(0, k, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    c = cfg.clusters
    t0 = time.perf_counter()
    cluster_features(X, min(k, n), seed=c.seed, max_iter=c.max_iter, tol=c.tol,
                     n_init=c.n_init)
    return (time.perf_counter() - t0) / n


def calibrate(cfg: RunConfig, pool, tokens: cost.Tokens, repeats: int = 3,
              progress=None) -> cost.Calibration:
    """Time the engine's calls on this device (see the module docstring)."""
    import peft  # noqa: F401 - imported before the clock: a run's loads find them imported
    import torch
    import transformers  # noqa: F401


    say = progress or (lambda msg: None)
    t_start = time.perf_counter()
    t0 = time.perf_counter()
    model, tok, device, _ = M.prepare_model(cfg.model, cfg.lora, None, seed=0)
    rspec = cfg.reward_features
    blocks = G.lora_blocks(model)
    dim_in = sum(b.numel for b in blocks)
    proj = make_projector(rspec.projection, dim_in, rspec.dim, seed=rspec.seed, device=device)
    proj.project(torch.zeros(1, dim_in, device=device))  # builds a count sketch's hash
    load_s = time.perf_counter() - t0
    say(f"model loaded in {load_s:.1f} s")
    shape = memplan.shape_of(model, cfg.lora.rank)
    pad = tok.pad_token_id

    def encs_of(rows: np.ndarray):
        out, _ = encode_chats(chats(pool, rows), tok, cfg.model.max_length,
                              cfg.model.chat_template, cfg.model.truncation)
        return out

    def sample_plan(batch: int) -> list[np.ndarray]:
        b = max(1, batch)
        return [_pick(tokens, 0.9, min(2, b)), _pick(tokens, 0.1, b), _pick(tokens, 0.9, b),
                _pick(tokens, 0.5, 2 * b)]

    def work_of(encs, batch: int, flops_of) -> tuple[int, float, int]:
        lens = sorted((len(e.input_ids), e.n_labels) for e in encs)
        batches, flops = 0, 0.0
        for lo in range(0, len(lens), batch):
            part = lens[lo:lo + batch]
            batches += 1
            flops += flops_of(len(part), part[-1][0], float(sum(x[1] for x in part)))
        return batches, flops, len(encs)

    # per-row gradient features, as the reward engine computes them
    adam = None
    if rspec.mode == "adam":
        adam = {b.name: (torch.zeros(b.shape, device=device),
                         torch.full(b.shape, 1e-6, device=device)) for b in blocks}
    budget = E.initial_budget(model, rspec, cfg.model.max_length, proj)
    grad_samples = []
    for i, rows in enumerate(sample_plan(rspec.batch_size)):
        encs = encs_of(rows)
        secs = _timed(lambda e=encs: E.featurize(model, pad, e, rspec, rspec.dim,
                                                 projector=proj, adam_state=adam,
                                                 budget=budget), repeats, i == 0)
        b, f, r = work_of(encs, rspec.batch_size,
                          lambda n, L, y: cost.gradient_flops(shape, n, L, y))
        grad_samples.append(cost.Sample(b, f, r, secs))
    say("gradient batches timed")
    # forward-only cluster features (adapters off: the engine uses the base model)
    cspec = cfg.cluster_features
    fwd_samples = []
    with model.disable_adapter():
        for i, rows in enumerate(sample_plan(cspec.batch_size)):
            encs = encs_of(rows)
            if cspec.max_length:
                encs, _ = encode_chats(chats(pool, rows), tok, min(cspec.max_length,
                                       cfg.model.max_length), cfg.model.chat_template,
                                       cfg.model.truncation)
            if cspec.kind == "hidden":
                def fn(e=encs):
                    return E.featurize(model, pad, e, cspec, shape.hidden)

                def flops_of(n, L, y):
                    return cost.forward_flops(shape, n, L, y, layers=cspec.layers, head=False)
            else:
                def fn(e=encs):
                    return E.featurize(model, pad, e, replace(cspec, mode="sgd"), cspec.dim,
                                       projector=proj)

                def flops_of(n, L, y):
                    return cost.gradient_flops(shape, n, L, y)
            secs = _timed(fn, repeats, i == 0)
            b, f, r = work_of(encs, cspec.batch_size, flops_of)
            fwd_samples.append(cost.Sample(b, f, r, secs))
    say("forward-only batches timed")
    # warm-up steps: forward + backward into LoRA, clipping, AdamW
    wspec = cfg.warmup
    params = [p for _, p in M.lora_parameters(model)]
    saved = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=wspec.learning_rate)
    train_samples = []
    model.train()
    try:
        for i, rows in enumerate(sample_plan(wspec.batch_size)[:3]):
            encs = encs_of(rows)

            def step(e=encs):
                _accumulate(model, e, len(e), pad, device)
                if wspec.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, wspec.max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            secs = _timed(step, repeats, i == 0)
            lens = [len(e.input_ids) for e in encs]
            train_samples.append(cost.Sample(1, cost.gradient_flops(
                shape, len(encs), max(lens), float(sum(e.n_labels for e in encs))),
                len(encs), secs))
    finally:
        model.eval()
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    say("warm-up steps timed")
    model = proj = adam = opt = None  # the calibration's model, freed before a run loads
    M.free_memory()
    run = run_shape(cfg, len(tokens), shape)
    km = time_kmeans(cfg, len(tokens), cost.arms(run), run.cluster_dim)
    return cost.Calibration(kmeans_row_s=km,
        device=str(device), model_load_s=load_s, gradient=cost.fit_op(grad_samples),
        forward=cost.fit_op(fwd_samples), train=cost.fit_op(train_samples, per_row=False),
        seconds=time.perf_counter() - t_start,
        note=f"{len(grad_samples) + len(fwd_samples) + len(train_samples)} calls on real "
             f"pool rows, median of {repeats}")


# ------------------------------------------------------------------------------ the plan
def run_shape(cfg: RunConfig, n_rows: int, shape, device_bytes: int = 0) -> cost.RunShape:
    """The run's cost-relevant settings; on a GPU (`device_bytes`) batches are also limited
    by the memory plan the engine starts from."""

    c, s, w = cfg.clusters, cfg.selection, cfg.warmup
    k = 0 if c.auto_k else int(c.k)
    if c.auto_k and c.k_rule.startswith("size"):
        from clusterucb_core.clustering.krule import size_k

        k = size_k(n_rows, s.cold_start, int(c.k_rule[4:] or 4))
    cf, rf = cfg.cluster_features, cfg.reward_features

    def batching(spec) -> cost.Batching | None:
        if not device_bytes:
            return None
        p = memplan.plan(shape, device_bytes, cfg.model.max_length, kind=spec.kind)
        return cost.Batching(spec.batch_size, p.usable_bytes, p.token_bytes, p.row_fixed_bytes)

    return cost.RunShape(
        reward_batching=batching(rf), cluster_batching=batching(cf),
        n_rows=n_rows, budget=s.budget, cold_start=s.cold_start, draw_batch=s.draw_batch,
        k=k, warmup=cfg.use_warmup, warmup_fraction=w.fraction, warmup_epochs=w.epochs,
        warmup_max_steps=w.max_steps, warmup_batch=w.batch_size, cluster_kind=cf.kind,
        cluster_layers=cf.layers, cluster_max_length=cf.max_length, cluster_batch=cf.batch_size,
        cluster_dim=shape.hidden if cf.kind == "hidden" else cf.dim,
        reward_batch=cfg.reward_features.batch_size, kmeans_init=c.n_init,
        kmeans_iter=min(30, c.max_iter))


def load_calibration(workspace: str | Path, key: str) -> cost.Calibration | None:
    path = plan_dir(workspace) / f"calibration-{key}.json"
    try:
        return cost.Calibration.from_dict(json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def make_plan(cfg: RunConfig, recalibrate: bool = False, lazy_row_s: float | None = None,
              log=None, calibrate_missing: bool = True) -> dict[str, Any] | None:
    """The plan of `cfg` on this device (calibrating when no calibration is kept for these
    settings, or when asked), saved as W/plan/plan.json; returns its dict. With
    `calibrate_missing=False` and no calibration kept, None (nothing is timed)."""

    say = log or (lambda msg: None)
    ws = Workspace.open(cfg.workspace)
    device = str(resolve_device(cfg.model.device))
    key = calibration_key(cfg, device)
    cal = None if recalibrate else load_calibration(ws.root, key)
    if cal is None and not calibrate_missing:
        return None
    pool = load_pool(cfg.pool, format=cfg.pool_format, shape=cfg.pool_shape,
                     cache_dir=ws.pool_cache(), id_field=cfg.pool_id_field or None,
                     source_field=cfg.pool_source_field or None)
    tok = load_tokenizer(cfg.model)
    tokens, how = pool_tokens(pool, cfg, tok, ws.root)
    target = target_tokens(load_target(cfg.target), cfg, tok)
    say(f"plan: {how}; {len(target):,} target examples")
    calibrated = cal is None
    if cal is None:
        say(f"plan: calibrating on {device} (a few timed batches)")
        cal = calibrate(cfg, pool, tokens, progress=lambda m: say(f"  calibration: {m}"))
        atomic.write_json(plan_dir(ws.root) / f"calibration-{key}.json", cal.to_dict())
    shape = _shape(cfg)
    warm = select_rows(len(pool), cfg.warmup.fraction, cfg.warmup.seed) if cfg.use_warmup \
        else None
    device_bytes = 0
    if device.startswith("cuda"):
        import torch

        device_bytes = int(torch.cuda.mem_get_info(torch.device(device))[1])
    plan = cost.plan_stages(shape, cal, tokens, target,
                            run_shape(cfg, len(pool), shape, device_bytes),
                            warmup_rows=warm, lazy_row_s=lazy_row_s)
    out = plan.to_dict()
    out.update(config_key=plan_config_key(cfg), calibration=cal.to_dict(),
               calibrated_now=calibrated, tokens_note=how, made_at=time.time(),
               model_shape=to_dict(shape) | {"params": shape.params})
    save_plan(ws.root, out)
    return out


def _shape(cfg: RunConfig):
    """The model's shape from its config.json (no weights loaded)."""
    from transformers import AutoConfig


    source, _ = model_source(cfg.model.name_or_path)
    mc = AutoConfig.from_pretrained(source, trust_remote_code=cfg.model.trust_remote_code)
    hidden = int(getattr(mc, "hidden_size", 0) or getattr(mc, "n_embd", 0))
    heads = int(getattr(mc, "num_attention_heads", 0) or getattr(mc, "n_head", 1))
    return memplan.ModelShape(
        hidden=hidden, layers=int(getattr(mc, "num_hidden_layers", 0) or mc.n_layer),
        intermediate=int(getattr(mc, "intermediate_size", 0) or 4 * hidden), heads=heads,
        kv_heads=int(getattr(mc, "num_key_value_heads", 0) or heads), vocab=int(mc.vocab_size),
        lora_rank=cfg.lora.rank, lora_targets=tuple(cfg.lora.target_modules))


def plan_config_key(cfg: RunConfig) -> str:
    """The settings a plan was made for (a changed setting makes the saved plan stale)."""
    return fingerprint(cfg.pool, cfg.target, cfg.model, cfg.lora, cfg.use_warmup, cfg.warmup,
                       cfg.cluster_features, cfg.reward_features, cfg.clusters, cfg.selection)


def save_plan(workspace: str | Path, plan: dict[str, Any]) -> Path:
    path = plan_dir(workspace) / PLAN_FILE
    atomic.write_json(path, plan)
    return path


def load_plan(workspace: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((plan_dir(workspace) / PLAN_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def plan_summary(workspace: str | Path, cfg: RunConfig) -> dict[str, Any]:
    """Predicted against measured per stage, for a run's summary (W/plan/plan.json against
    W/timings.json); says so when there is no plan for these settings."""

    plan = load_plan(workspace)
    if plan is None:
        return {"note": "no plan was made before this run (`clusterucb plan --config C`)"}
    out: dict[str, Any] = {"predicted_speedup": plan.get("predicted_speedup"),
                           "bound": plan.get("bound"), "bound_formula": plan.get("bound_formula")}
    if plan.get("config_key") != plan_config_key(cfg):
        out["note"] = "the saved plan was made for other settings"
    rows = cost.compare(plan, read_timings(workspace))
    out["stages"] = rows
    if rows:
        out["planner_error"] = max(r["error"] for r in rows)
    return out


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as a text table: a row per stage, then the two paths and the speed-up."""
    hours = "GPU-h" if plan["device"].startswith("cuda") else "CPU-h"
    lines = [f"{'stage':<27} {'seconds':>10} {hours:>9}  what",
             "-" * 78]
    for st in cost.ordered_stages(plan):
        lines.append(f"{st['title']:<27} {st['seconds']:>10.1f} {st['seconds'] / 3600:>9.4f}  "
                     f"{st['note']}")
    lines += ["-" * 78,
              f"{'ClusterUCB path':<27} {plan['ucb_path_seconds']:>10.1f}  (2 model loads, "
              "cluster features, k-means, target and bandit gradients; warm-up shared)",
              f"{'exhaustive LESS path':<27} {plan['exhaustive_path_seconds']:>10.1f}  "
              "(1 model load, target gradients, every row's gradient)",
              f"predicted speed-up {plan['predicted_speedup']:.2f}x (an estimate from the "
              f"calibration); bound {plan['bound']:.2f}x = {plan['bound_formula']}, c = "
              "cluster features / exhaustive gradients, b = budget"]
    cal = plan.get("calibration") or {}
    if cal:
        lines.append(f"calibration on {cal['device']}: {cal['seconds']:.1f} s, "
                     f"{cal['note']}" + ("" if plan.get("calibrated_now") else
                                          " (kept from an earlier plan)"))
    return "\n".join(lines)


def format_comparison(summary: dict[str, Any]) -> str:
    """Predicted against measured, a row per stage that ran."""
    rows = summary.get("stages") or []
    if not rows:
        return summary.get("note", "no stage was measured")
    lines = [f"{'stage':<27} {'predicted s':>11} {'actual s':>10} {'error':>7}"]
    lines += [f"{r['title']:<27} {r['predicted_s']:>11.1f} {r['actual_s']:>10.1f} "
              f"{r['error']:>7.1%}" for r in rows]
    lines.append(f"planner_error={summary['planner_error']:.3f} (largest |predicted - "
                 "actual| / actual)")
    return "\n".join(lines)
