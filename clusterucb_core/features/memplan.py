"""How much fits on a GPU: tokens per batch for per-row LoRA gradients, and what a row costs.

The feature engine starts each CUDA run with a token budget planned here from the free device
memory and the model's shape, then learns from out-of-memory errors (features.TokenBudget);
`bench/bench_gpu_plan.py` prints the same plan for a model and a device size without a GPU.

Activation bytes per token and layer of a Llama-style decoder with LoRA on the attention
projections, counted from what autograd keeps for the backward (sdpa attention, so no T x T
scores; frozen linears keep nothing): the two RMSNorms' float32 inputs (8 h bytes), a float32
copy of each LoRA'd projection's input (4 h each), the rotated q and k, v and the attention
output (2 h + 2 kv in the compute dtype), the MLP's gate, up and activation (3 I). About 6.3 MB
a token for Llama-2-7B in bf16 (LoRA on q/k/v/o), plus one layer in flight in the backward and
the output layer's float32 logits and their gradients (10 V bytes a labelled token).
test_memory.py measures the saved bytes on a small model; the budget still shrinks on the first
OOM, and bench_gpu_plan on a GPU prints the measured peak next to the plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
RESERVE_FRACTION = 0.10  # of the free memory, kept back for the allocator and transients


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on: a Llama-style config and the LoRA settings."""

    hidden: int = 4096
    layers: int = 32
    intermediate: int = 11008
    heads: int = 32
    kv_heads: int = 32
    vocab: int = 32000
    lora_rank: int = 128
    lora_targets: tuple[str, ...] = DEFAULT_TARGETS
    dtype_bytes: int = 2

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def target_dims(self) -> list[tuple[int, int]]:
        """(in, out) features of each LoRA'd linear in one layer."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        dims = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
        return [dims[t] for t in self.lora_targets if t in dims]

    @property
    def params(self) -> int:
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
        return self.layers * per_layer + 2 * self.vocab * h + h

    @property
    def lora_coords(self) -> int:
        """Coordinates of one row's flattened LoRA gradient (A: r x in, B: out x r)."""
        r = self.lora_rank
        return self.layers * sum(r * a + b * r for a, b in self.target_dims())


def shape_of(model: Any, lora_rank: int | None = None) -> ModelShape:
    """The ModelShape of a loaded (peft-wrapped or plain) Hugging Face causal LM."""
    import torch

    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = lm.config
    hidden = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0))
    heads = int(getattr(cfg, "num_attention_heads", 0) or getattr(cfg, "n_head", 1))
    dtype = next(lm.parameters()).dtype
    lora = [p for p in model.parameters() if p.requires_grad]
    rank = lora_rank if lora_rank is not None else (min(lora[0].shape) if lora else 0)
    return ModelShape(
        hidden=hidden, layers=int(getattr(cfg, "num_hidden_layers", 0) or cfg.n_layer),
        intermediate=int(getattr(cfg, "intermediate_size", 0) or 4 * hidden), heads=heads,
        kv_heads=int(getattr(cfg, "num_key_value_heads", 0) or heads),
        vocab=int(cfg.vocab_size), lora_rank=int(rank),
        dtype_bytes=torch.tensor([], dtype=dtype).element_size())


def saved_bytes_per_token(s: ModelShape) -> tuple[int, int]:
    """(bytes per token and layer, bytes per labelled token of the output layer) that autograd
    keeps for the backward of the per-row gradient pass (test_memory measures them)."""
    h, kv, i, b = s.hidden, s.kv_dim, s.intermediate, s.dtype_bytes
    per_layer = (2 * 4 * h  # two RMSNorms keep their float32 input
                 + 4 * h * len(s.target_dims())  # each LoRA'd linear: a float32 input copy
                 + 4 * s.lora_rank * len(s.target_dims())  # ... and B's input (A's output)
                 + b * (2 * h + 2 * kv)  # attention: rotated q and k, v, the output
                 + b * 3 * i)  # MLP: gate, up, activation(gate) (frozen linears keep nothing)
    return per_layer, 4 * s.vocab  # float32 logits of labelled positions


def activation_bytes_per_token(s: ModelShape, checkpointing: bool = False) -> int:
    """Peak bytes per token of the forward+backward (all positions labelled: the worst case):
    what is saved, plus one layer's worth in flight during the backward and the output
    layer's gradients (bf16 and float32 logits' gradients beside the saved logits)."""
    per_layer, logits = saved_bytes_per_token(s)
    head = logits + logits // 4 * (4 + s.dtype_bytes)
    if checkpointing:  # layer inputs only, plus one layer recomputed at a time
        return s.layers * s.dtype_bytes * s.hidden + 2 * per_layer + head
    return (s.layers + 1) * per_layer + head


def forward_bytes_per_token(s: ModelShape) -> int:
    """Bytes a no-grad forward needs per token (one layer's transients at a time)."""
    return 4 * (4 * s.hidden + 3 * s.intermediate) + 4 * s.hidden


@dataclass(frozen=True)
class Plan:
    """A batch of n rows padded to L tokens costs n * row_fixed_bytes + n * L * token_bytes;
    batches are sized so that this stays within usable_bytes."""

    device_bytes: int
    weights_bytes: int
    projection_bytes: int
    usable_bytes: int
    token_bytes: int
    row_fixed_bytes: int
    max_length: int

    @property
    def row_bytes(self) -> int:
        """A max_length row's cost."""
        return self.row_fixed_bytes + self.max_length * self.token_bytes

    @property
    def rows_at_max_length(self) -> int:
        return self.usable_bytes // self.row_bytes

    @property
    def tokens_per_batch(self) -> int:
        """Padded tokens per batch at max_length (a lone shorter row when none fits)."""
        rows = self.rows_at_max_length
        if rows:
            return rows * self.max_length
        return max(0, self.usable_bytes - self.row_fixed_bytes) // self.token_bytes


def plan(s: ModelShape, device_bytes: int, max_length: int = 2048,
         projection_bytes: int | None = None, free_bytes: int | None = None,
         kind: str = "gradient", checkpointing: bool = False) -> Plan:
    """What a batch may cost on a device: `free_bytes` (default: the device less the weights
    and the projection's state) less RESERVE_FRACTION."""
    weights = s.params * s.dtype_bytes
    if projection_bytes is None:  # count sketch: int32 index + int8 sign per coordinate
        projection_bytes = 5 * s.lora_coords if kind == "gradient" else 0
    if free_bytes is None:
        free_bytes = device_bytes - weights - projection_bytes
    if kind == "gradient":
        act = activation_bytes_per_token(s, checkpointing)
        # per row: its float32 gradient in the buffer, plus one module's per-row temporaries
        # (the bmm's output and the Adam transform's)
        fixed = 4 * s.lora_coords + 3 * 4 * max(
            [s.lora_rank * (a + b) for a, b in s.target_dims()] or [0])
    elif kind == "train":  # LoRA training: activations only (its gradient is tiny)
        act, fixed = activation_bytes_per_token(s, checkpointing), 0
    else:
        act, fixed = forward_bytes_per_token(s), 0
    return Plan(device_bytes=int(device_bytes), weights_bytes=int(weights),
                projection_bytes=int(projection_bytes),
                usable_bytes=max(0, int(free_bytes * (1 - RESERVE_FRACTION))),
                token_bytes=int(act), row_fixed_bytes=int(fixed), max_length=int(max_length))


def expected_overhead(s: ModelShape, rows: int, tokens: int, bandwidth: float,
                      flops: float) -> float:
    """Per-row features' time over a plain forward+backward's, from counted work: the
    backward of frozen weights costs the same either way (activation gradients only), and the
    per-row LoRA products equal the batch's weight-gradient products, so the extra is memory
    traffic: each row's gradient written, read by the projection's gather, and (Adam) m, v
    read; ~6 passes over 4 bytes a coordinate."""
    fwd_bwd = 4 * s.params * tokens / flops
    extra = rows * 6 * 4 * s.lora_coords / bandwidth
    return (fwd_bwd + extra) / fwd_bwd if fwd_bwd else math.inf


DEVICES = {  # bytes, bandwidth (B/s) and dense bf16 rate (FLOP/s) by datasheet, derated 50%
    "H100-80GB": (80 * 10 ** 9, 3.35e12, 0.5 * 989e12),
    "H200-141GB": (141 * 10 ** 9, 4.8e12, 0.5 * 989e12),
    "A100-80GB": (80 * 10 ** 9, 2.0e12, 0.5 * 312e12),
}
