"""What a run will cost before it starts: seconds per stage from token counts, the model's
shape and a few seconds of calibration on the device.

Pure arithmetic (no torch, no model): `features/planner.py` gathers the inputs (tokenises the
pool, times the calibration batches) and calls `plan_stages`.

The model of one engine call (`featurize` over a group of rows, or one warm-up step) is

    seconds = per_batch_s * batches + per_flop_s * flops + per_row_s * rows

where `flops` is counted from the model's shape for the batch as the engine pads it (rows x
the longest row's tokens, attention quadratic in that length, the output layer on labelled
tokens only), `per_row_s` is what does not grow with tokens (a row's LoRA gradient written,
Adam-transformed and projected), and the three rates are fitted on the device from a handful
of timed batches (`fit_op`). The stages then differ only in how their rows are batched:

- exhaustive LESS, cluster features, target gradients: chunks of 8 batches by row id, sorted
  by length inside the chunk (what `FeatureEngine.plan` and `featurize` do);
- the bandit: the cold start as one sorted pass over its rows, then a call per round of
  `draw_batch` rows of one cluster, padded to the longest (the expected maximum of
  `draw_batch` lengths drawn from the pool); `lazy_row_s` replaces that with a measured
  per-row cost when the lazy path batches rows differently;
- the warm-up: steps of `batch_size` random rows, each padded to its longest.

The whole-path speed-up compares exhaustive LESS (model load, target gradients, every row's
gradient) with ClusterUCB (two model loads, cluster features, k-means, target gradients, the
bandit's gradients) from the same warm-up, which neither path counts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from clusterucb_core.features.memplan import ModelShape

CHUNK_BATCHES = 8  # features/engine.py: a chunk is this many batches
STAGES = ("model_load", "warmup", "cluster_features", "kmeans", "target_gradients",
          "bandit_gradients", "exhaustive_gradients")
STAGE_TITLES = {"model_load": "model loads", "warmup": "warm-up",
                "cluster_features": "cluster features", "kmeans": "k-means",
                "target_gradients": "target gradients",
                "bandit_gradients": "bandit gradients", "exhaustive_gradients":
                "exhaustive LESS gradients"}
# the stages of each path (the warm-up is shared and counted in neither)
UCB_PATH = ("cluster_features", "kmeans", "target_gradients", "bandit_gradients")
EXHAUSTIVE_PATH = ("target_gradients", "exhaustive_gradients")
UCB_MODEL_LOADS, EXHAUSTIVE_MODEL_LOADS = 2, 1  # base model for cluster features + rewards


# ------------------------------------------------------------------------------ FLOP counts
def _layer_linear_flops(s: ModelShape) -> float:
    """Multiply-adds x 2 of one decoder layer's linears for one token (LoRA included)."""
    h, kv, i = s.hidden, s.kv_dim, s.intermediate
    lora = sum(s.lora_rank * (a + b) for a, b in s.target_dims())
    return 2.0 * (2 * h * h + 2 * h * kv + 3 * h * i + lora)


def forward_flops(s: ModelShape, rows: int, length: int, labelled: float = 0.0,
                  layers: int = 0, head: bool = True) -> float:
    """FLOPs of a forward over `rows` rows padded to `length` tokens: `layers` decoder blocks
    (0 = all), attention over the padded length, the output layer on labelled tokens."""
    n = s.layers if not layers else min(layers, s.layers)
    tokens = rows * length
    attn = 4.0 * length * s.hidden  # QK^T and AV, per token and layer
    out = n * tokens * (_layer_linear_flops(s) + attn)
    return out + (2.0 * s.hidden * s.vocab * labelled if head else 0.0)


def gradient_flops(s: ModelShape, rows: int, length: int, labelled: float) -> float:
    """FLOPs of a forward + backward into the LoRA matrices (frozen weights: the backward
    computes activation gradients, about the forward's linears and twice its attention)."""
    fwd = forward_flops(s, rows, length, labelled)
    attn = s.layers * rows * length * 4.0 * length * s.hidden
    return 2.0 * fwd + attn


# ------------------------------------------------------------------------------ calibration
@dataclass(frozen=True)
class OpCost:
    """Seconds of one operation on one device: per batch, per counted FLOP, per row."""

    per_batch_s: float
    per_flop_s: float
    per_row_s: float = 0.0

    def seconds(self, batches: float, flops: float, rows: float) -> float:
        return self.per_batch_s * batches + self.per_flop_s * flops + self.per_row_s * rows


@dataclass(frozen=True)
class Sample:
    """One timed calibration call: its batches, counted FLOPs, rows and seconds."""

    batches: int
    flops: float
    rows: int
    seconds: float


def fit_op(samples: list[Sample], per_row: bool = True) -> OpCost:
    """Non-negative least squares of seconds on (batches, flops, rows), each column scaled
    to unit norm first; a rate the samples cannot tell apart comes out 0."""
    from scipy.optimize import nnls

    if not samples:
        raise ValueError("calibration needs at least one timed sample")
    cols = [[x.batches for x in samples], [x.flops for x in samples]]
    if per_row:
        cols.append([x.rows for x in samples])
    A = np.array(cols, dtype=np.float64).T
    y = np.array([x.seconds for x in samples], dtype=np.float64)
    scale = np.linalg.norm(A, axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls(A / scale, y)
    coef = coef / scale
    return OpCost(per_batch_s=float(coef[0]), per_flop_s=float(coef[1]),
                  per_row_s=float(coef[2]) if per_row else 0.0)


@dataclass(frozen=True)
class Calibration:
    """What the device measured: model load, and the three operations' rates."""

    device: str
    model_load_s: float
    gradient: OpCost  # per-row LoRA gradient features (featurize, kind gradient)
    forward: OpCost  # forward-only hidden-state features (featurize, kind hidden)
    train: OpCost  # one warm-up step (forward + backward + AdamW)
    seconds: float = 0.0  # what the calibration itself took
    note: str = ""
    kmeans_row_s: float = 0.0  # k-means seconds per row at the run's K and dimension

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        return cls(device=str(d["device"]), model_load_s=float(d["model_load_s"]),
                   gradient=OpCost(**d["gradient"]), forward=OpCost(**d["forward"]),
                   train=OpCost(**d["train"]), seconds=float(d.get("seconds", 0.0)),
                   note=str(d.get("note", "")),
                   kmeans_row_s=float(d.get("kmeans_row_s", 0.0)))


# ------------------------------------------------------------------------------ batching
@dataclass(frozen=True)
class Tokens:
    """Per row: tokens after truncation and labelled (trained-on) tokens."""

    lengths: np.ndarray
    labelled: np.ndarray

    def __post_init__(self) -> None:
        if len(self.lengths) != len(self.labelled):
            raise ValueError(f"{len(self.lengths)} lengths but {len(self.labelled)} label "
                             "counts")

    def __len__(self) -> int:
        return len(self.lengths)

    def capped(self, max_length: int) -> Tokens:
        """The same rows cut to `max_length` tokens (labels kept, as keep_answer cuts)."""
        if not max_length:
            return self
        return Tokens(np.minimum(self.lengths, max_length),
                      np.minimum(self.labelled, max_length))

    def subset(self, rows: np.ndarray) -> Tokens:
        return Tokens(self.lengths[rows], self.labelled[rows])


@dataclass(frozen=True)
class Work:
    """What a stage computes: batches, rows, counted FLOPs, and engine calls."""

    batches: float = 0.0
    rows: float = 0.0
    flops: float = 0.0
    tokens: float = 0.0  # padded tokens

    def __add__(self, other: Work) -> Work:
        return Work(self.batches + other.batches, self.rows + other.rows,
                    self.flops + other.flops, self.tokens + other.tokens)

    def scaled(self, k: float) -> Work:
        return Work(self.batches * k, self.rows * k, self.flops * k, self.tokens * k)


@dataclass(frozen=True)
class Batching:
    """How the engine cuts length-sorted rows into batches (features/engine.TokenBudget): at
    most `max_rows`, and on a GPU at most what `limit_bytes` holds, n rows padded to L
    costing n * row_bytes + n * L * token_bytes."""

    max_rows: int
    limit_bytes: int = 0  # 0: no memory limit (the CPU)
    token_bytes: int = 0
    row_bytes: int = 0

    def rows_at(self, length: float) -> int:
        """Rows of `length` tokens in one batch (at least one)."""
        if not self.limit_bytes:
            return max(1, self.max_rows)
        fit = self.limit_bytes // max(1, int(self.row_bytes + length * self.token_bytes))
        return int(max(1, min(self.max_rows, fit)))


def sorted_pass(tokens: Tokens, batching: Batching | int, flops_of,
                chunk_rows: int | None = None) -> Work:
    """Every row once, in chunks of `chunk_rows` consecutive rows (default: 8 batches of
    max_rows), sorted by length inside a chunk and cut into batches padded to their longest
    (the engine's plan). `flops_of(rows, length, labelled)` counts one batch."""
    if isinstance(batching, int):
        batching = Batching(batching)
    chunk_rows = int(chunk_rows or CHUNK_BATCHES * max(1, batching.max_rows))
    work = Work()
    n = len(tokens)
    for lo in range(0, n, chunk_rows):
        order = np.argsort(tokens.lengths[lo:lo + chunk_rows], kind="stable")
        lens = tokens.lengths[lo:lo + chunk_rows][order]
        labs = tokens.labelled[lo:lo + chunk_rows][order]
        b = 0
        while b < len(lens):  # TokenBudget.rows: grow while the next (longer) row fits
            r = 1
            while (r < batching.max_rows and b + r < len(lens)
                   and batching.rows_at(lens[b + r]) >= r + 1):
                r += 1
            longest = int(lens[b + r - 1])
            work += Work(1, r, flops_of(r, longest, float(labs[b:b + r].sum())), r * longest)
            b += r
    return work


def expected_max(lengths: np.ndarray, k: int) -> float:
    """E[longest of k rows drawn uniformly from `lengths`] (with replacement: the padded
    length of a batch of k random rows)."""
    lens = np.sort(np.asarray(lengths, dtype=np.float64))
    if len(lens) == 0:
        return 0.0
    cdf = np.arange(1, len(lens) + 1) / len(lens)
    p_max = cdf ** k - np.concatenate([[0.0], cdf[:-1]]) ** k
    return float((lens * p_max).sum())


def random_batches(tokens: Tokens, n_groups: float, group_rows: int, flops_of,
                   batching: Batching | None = None) -> Work:
    """`n_groups` calls of `group_rows` random rows each (a warm-up step, a bandit round), cut
    into batches by `batching` (default: one batch a call), each padded to its longest."""
    if n_groups <= 0 or len(tokens) == 0 or group_rows <= 0:
        return Work()
    longest = expected_max(tokens.lengths, group_rows)
    per = group_rows if batching is None else min(group_rows, batching.rows_at(longest))
    work = Work()
    left = group_rows
    while left > 0:
        r = min(per, left)
        L = longest if r == group_rows else expected_max(tokens.lengths, r)
        work += Work(1, r, flops_of(r, L, float(tokens.labelled.mean()) * r), r * L)
        left -= r
    return work.scaled(n_groups)


# ------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class RunShape:
    """The settings of a run that its cost depends on (read from a RunConfig)."""

    n_rows: int
    budget: float = 0.2
    cold_start: float = 0.05
    draw_batch: int = 8
    k: int = 0  # arms (0: K = N x cold start / 8, the size8 rule)
    warmup: bool = True
    warmup_fraction: float = 0.05
    warmup_epochs: int = 4
    warmup_max_steps: int = 0
    warmup_batch: int = 8
    cluster_kind: str = "hidden"
    cluster_layers: int = 0
    cluster_max_length: int = 0
    cluster_batch: int = 32
    cluster_dim: int = 0  # the cluster features' dimension (the hidden size when 0)
    reward_batch: int = 16
    reward_batching: Batching | None = None  # on a GPU: the memory plan's limit
    cluster_batching: Batching | None = None
    kmeans_init: int = 3
    kmeans_iter: int = 30  # a typical count to the tolerance (max_iter bounds it)


@dataclass
class Stage:
    name: str
    seconds: float
    rows: float = 0.0
    tokens: float = 0.0
    note: str = ""

    @property
    def title(self) -> str:
        return STAGE_TITLES.get(self.name, self.name)


@dataclass
class Plan:
    """Predicted seconds per stage and the whole-path comparison."""

    stages: dict[str, Stage]
    device: str
    bound_note: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)

    def seconds(self, names) -> float:
        return float(sum(self.stages[n].seconds for n in names if n in self.stages))

    @property
    def ucb_seconds(self) -> float:
        loads = self.stages["model_load"].seconds / max(self.stages["model_load"].rows, 1)
        return self.seconds(UCB_PATH) + UCB_MODEL_LOADS * loads

    @property
    def exhaustive_seconds(self) -> float:
        loads = self.stages["model_load"].seconds / max(self.stages["model_load"].rows, 1)
        return self.seconds(EXHAUSTIVE_PATH) + EXHAUSTIVE_MODEL_LOADS * loads

    @property
    def speedup(self) -> float:
        return self.exhaustive_seconds / self.ucb_seconds if self.ucb_seconds else math.inf

    @property
    def feature_cost_ratio(self) -> float:
        """Cluster features' seconds over the exhaustive gradient pass's (c in the bound)."""
        exh = self.stages["exhaustive_gradients"].seconds
        return self.stages["cluster_features"].seconds / exh if exh else math.inf

    def bound(self, budget: float) -> float:
        """1 / (c + b): the speed-up if nothing but the cluster features and the bandit's
        gradients at the exhaustive pass's per-row cost were spent."""
        return 1.0 / (self.feature_cost_ratio + budget)

    def to_dict(self) -> dict[str, Any]:
        hours = "gpu_hours" if self.device.startswith("cuda") else "cpu_hours"
        stages = {n: {"title": s.title, "seconds": round(s.seconds, 3),
                      hours: round(s.seconds / 3600, 6), "rows": round(s.rows, 1),
                      "tokens": round(s.tokens), "note": s.note}
                  for n, s in self.stages.items()}
        budget = float(self.inputs.get("budget", 0.2))
        return {"device": self.device, "stages": stages,
                "ucb_path_seconds": round(self.ucb_seconds, 3),
                "exhaustive_path_seconds": round(self.exhaustive_seconds, 3),
                "predicted_speedup": round(self.speedup, 3),
                "feature_cost_ratio": round(self.feature_cost_ratio, 4),
                "bound": round(self.bound(budget), 3),
                "bound_formula": f"1 / (c + b) = 1 / ({self.feature_cost_ratio:.3f} + "
                                 f"{budget:g})",
                "inputs": self.inputs}


def arms(run: RunShape) -> int:
    if run.k:
        return int(run.k)
    if run.cold_start <= 0:
        return int(np.clip(round(math.sqrt(run.n_rows / 2)), 2, 200))
    return int(np.clip(round(run.n_rows * run.cold_start / 8), 2, min(200, run.n_rows)))


def plan_stages(shape: ModelShape, cal: Calibration, pool: Tokens, target: Tokens,
                run: RunShape, warmup_rows: np.ndarray | None = None,
                lazy_row_s: float | None = None, seed: int = 0) -> Plan:
    """Predicted seconds of every stage of `run` on the calibrated device.

    `warmup_rows`: the rows the warm-up trains on (default: a random fraction); `lazy_row_s`:
    a measured per-row cost of the bandit's rounds (replaces the padding model)."""
    n = len(pool)
    grad = lambda r, L, y: gradient_flops(shape, r, L, y)  # noqa: E731
    g = cal.gradient

    def cost(op: OpCost, w: Work) -> float:
        return op.seconds(w.batches, w.flops, w.rows)

    stages: dict[str, Stage] = {}
    # warm-up: steps of random rows
    if run.warmup:
        rows = warmup_rows if warmup_rows is not None else np.random.default_rng(seed).choice(
            n, size=max(1, round(n * run.warmup_fraction)), replace=False)
        wt = pool.subset(np.asarray(rows, dtype=np.int64))
        wt = wt.subset(np.flatnonzero(wt.labelled > 0))
        per_epoch = math.ceil(len(wt) / run.warmup_batch)
        steps = run.warmup_max_steps or run.warmup_epochs * per_epoch
        full, last = divmod(len(wt), run.warmup_batch)
        epochs = steps / max(per_epoch, 1)
        w = random_batches(wt, full * epochs, run.warmup_batch, grad)
        if last:
            w += random_batches(wt, epochs, last, grad)
        stages["warmup"] = Stage("warmup", cost(cal.train, w), w.rows, w.tokens,
                                 f"{steps} steps of {run.warmup_batch} rows")
    # cluster features: a sorted pass over every row
    ct = pool.capped(run.cluster_max_length)
    cb = run.cluster_batching or Batching(run.cluster_batch)
    rb = run.reward_batching or Batching(run.reward_batch)
    if run.cluster_kind == "hidden":
        w = sorted_pass(ct, cb, lambda r, L, y: forward_flops(
            shape, r, L, y, layers=run.cluster_layers, head=False))
        op, what = cal.forward, (f"forward-only, {run.cluster_layers or shape.layers} of "
                                 f"{shape.layers} blocks")
    else:
        w = sorted_pass(ct, cb, grad)
        op, what = g, "LoRA gradients"
    stages["cluster_features"] = Stage("cluster_features", cost(op, w), w.rows, w.tokens,
                                       f"{n:,} rows, {what}")
    # k-means: timed on a sample when calibrated, else K x N x d multiply-adds per iteration
    # and restart at the forward's rate
    k, dim = arms(run), run.cluster_dim or shape.hidden
    if cal.kmeans_row_s:
        km, how = cal.kmeans_row_s * n, "timed on a synthetic sample, scaled to N"
    else:
        km = cal.forward.per_flop_s * 2.0 * n * k * dim * run.kmeans_iter * run.kmeans_init
        how = f"{run.kmeans_init} restarts x ~{run.kmeans_iter} iterations"
    stages["kmeans"] = Stage("kmeans", km, n, 0, f"K={k}, d={dim}: {how} (an estimate)")
    # target gradients: a sorted pass over the target examples
    w = sorted_pass(target, rb, grad)
    stages["target_gradients"] = Stage("target_gradients", cost(g, w), w.rows, w.tokens,
                                       f"{len(target):,} target examples")
    # the bandit: the cold start sorted, then one padded call per round
    budget = math.floor(n * run.budget)
    n_cold = min(budget, int(round(n * run.cold_start)) + k // 2 if run.cold_start else 0)
    rng = np.random.default_rng(seed)
    cold = pool.subset(np.sort(rng.choice(n, size=n_cold, replace=False))) if n_cold else None
    w = sorted_pass(cold, rb, grad) if cold is not None else Work()
    rounds = math.ceil(max(budget - n_cold, 0) / run.draw_batch)
    w += random_batches(pool, rounds, run.draw_batch, grad, rb)
    if lazy_row_s is not None:
        secs, how = budget * lazy_row_s, f"{lazy_row_s * 1e3:.2f} ms a row (measured)"
    else:
        secs = cost(g, w)
        how = f"{secs / max(budget, 1) * 1e3:.2f} ms a row"
    stages["bandit_gradients"] = Stage("bandit_gradients", secs, budget, w.tokens,
                                       f"{budget:,} rows: cold start {n_cold:,} + {rounds:,} "
                                       f"rounds of {run.draw_batch}; {how}")
    # exhaustive LESS: a sorted pass over every row
    w = sorted_pass(pool, rb, grad)
    stages["exhaustive_gradients"] = Stage(
        "exhaustive_gradients", cost(g, w), w.rows, w.tokens,
        f"{n:,} rows, {cost(g, w) / max(n, 1) * 1e3:.2f} ms a row")
    loads = (1 if run.warmup else 0) + UCB_MODEL_LOADS + EXHAUSTIVE_MODEL_LOADS
    stages["model_load"] = Stage("model_load", cal.model_load_s * loads, loads, 0,
                                 f"{cal.model_load_s:.1f} s each: warm-up, cluster features, "
                                 "rewards; exhaustive LESS's own" if run.warmup else
                                 f"{cal.model_load_s:.1f} s each")
    ordered = {s: stages[s] for s in STAGES if s in stages}
    inputs = {"n_rows": n, "budget": run.budget, "n_target": len(target),
              "mean_tokens": round(float(pool.lengths.mean()), 1) if n else 0,
              "max_tokens": int(pool.lengths.max()) if n else 0, "arms": k}
    return Plan(ordered, cal.device, inputs=inputs)


def ordered_stages(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """A plan dict's stages in path order (a saved plan's keys come back sorted)."""
    stages = plan.get("stages", {})
    return [stages[n] for n in STAGES if n in stages]


# ------------------------------------------------------------------------------ judging
def planner_error(predicted: dict[str, float], actual: dict[str, float]) -> float:
    """The largest |predicted - actual| / actual over the stages both have (actual > 0)."""
    errs = [abs(float(predicted[s]) - float(a)) / float(a) for s, a in actual.items()
            if s in predicted and a and float(a) > 0]
    if not errs:
        raise ValueError("no stage has both a prediction and a measured time")
    return max(errs)


def stage_errors(predicted: dict[str, float], actual: dict[str, float]) -> dict[str, float]:
    """|predicted - actual| / actual per stage both have (actual > 0)."""
    return {s: abs(float(predicted[s]) - float(a)) / float(a) for s, a in actual.items()
            if s in predicted and a and float(a) > 0}


def compare(plan: dict[str, Any], timings: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Predicted against measured for each stage that computed something: the prediction is
    scaled to the rows actually computed (a resumed stage did part of its rows), and a
    warm-up's includes its model load (warm-up() loads its own model)."""
    stages = plan.get("stages", {})
    loads = stages.get("model_load", {})
    per_load = loads.get("seconds", 0.0) / loads["rows"] if loads.get("rows") else 0.0
    out = []
    for name in STAGES:
        t, p = timings.get(name), stages.get(name)
        if t is None or p is None or not t.get("rows") or not t.get("seconds"):
            continue
        pred = float(p["seconds"])
        if p.get("rows"):
            pred *= float(t["rows"]) / float(p["rows"])
        if name == "warmup":
            pred += per_load
        actual = float(t["seconds"])
        out.append({"stage": name, "title": STAGE_TITLES.get(name, name),
                    "predicted_s": round(pred, 3), "actual_s": round(actual, 3),
                    "rows": t["rows"], "error": round(abs(pred - actual) / actual, 4)})
    return out
