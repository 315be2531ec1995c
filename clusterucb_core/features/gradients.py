"""Per-sample LoRA gradients for a whole batch, SGD or Adam-preconditioned (docs/METHOD.md s.2).

Technique: per-layer capture (the "hooks" method), chosen by measurement (bench_gradients.py).
A LoRA pair computes `y = W x + s * B (A x)` with `A` and `B` plain `nn.Linear` layers. For a
linear layer `u = M z` the gradient of row i's loss is `sum_t dL_i/du[i,t] (x) z[i,t]`, one
batched matrix product over the time axis. So one forward records each LoRA linear's input
`z`, one backward of the objective

    sum_i mean_{t labelled in row i} CE(logits[i,t], label[i,t])      (sum of per-row means)

yields `dL/du` for every row at once (the rows do not interact: right padding, causal
attention), and `bmm(dL/du^T, z)` gives every row's gradient of A and B -- exactly its
batch-size-1 gradient, without a Python loop over rows. The backward is asked only for the
gradients of the LoRA activations (`autograd.grad(..., inputs=A outputs)`), so the usual
batch-summed weight gradients are never formed; B's per-row gradients are made inside a tensor
hook the moment its output gradient exists, so big models never hold all of them at once.
The flop count equals a plain forward+backward's; torch.func.vmap(grad) was slower on CPU and
needs a functional model; a loop at batch size 1 wastes the batched matmuls.

The loss only evaluates the output layer on labelled positions (the decoder runs on every
token, the vocabulary projection only where a label is), unless the model post-processes its
logits (soft-capping, logit scales): then the model's own full forward is used.

Rows without any unmasked label have no gradient: `valid` is False for them, their gradient is
all zero and their features must be stored as flagged (NaN), never scored as 0.

Adam mode (LESS): m' = b1 m + (1-b1) g, v' = b2 v + (1-b2) g^2, feature = m' / sqrt(v' + eps),
element-wise, with the checkpoint's m, v (no bias correction, eps inside the root).

Flattening order = `named_parameters()` order of the LoRA parameters, each row-major (what
LESS concatenates), so projections agree with a LESS-style full gradient.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from clusterucb_core.data.formatting import IGNORE_INDEX
from clusterucb_core.features.packing import unpack
from clusterucb_core.features.rowsource import normalize_rows

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8
MODES = ("sgd", "adam")
# config attributes that mean the model transforms its logits after the output layer
_LOGIT_POSTPROCESS = ("final_logit_softcapping", "logit_scale", "logits_scaling",
                      "output_multiplier_scale")


@dataclass(frozen=True)
class LoraBlock:
    """One LoRA matrix: its parameter name, module, shape and offset in the flat gradient."""

    name: str
    module: nn.Linear
    shape: tuple[int, int]
    offset: int

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]


def lora_blocks(model) -> list[LoraBlock]:
    """The trainable LoRA matrices in flattening order, each with the nn.Linear that owns it."""
    blocks: list[LoraBlock] = []
    offset = 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mod_name, _, leaf = name.rpartition(".")
        module = model.get_submodule(mod_name)
        if not (isinstance(module, nn.Linear) and leaf == "weight" and module.bias is None
                and p.dim() == 2):
            raise ValueError(f"trainable parameter {name} is not a bias-free LoRA linear "
                             "weight; per-sample gradients support plain LoRA (no DoRA, "
                             "no trainable biases or embeddings)")
        blocks.append(LoraBlock(name, module, tuple(p.shape), offset))
        offset += p.numel()
    if not blocks:
        raise ValueError("the model has no trainable LoRA parameters (wrap it with add_lora "
                         "or load a checkpoint first)")
    return blocks


def n_params(model) -> int:
    return sum(b.numel for b in lora_blocks(model))


def valid_rows(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rows with at least one label that is trained on after the shift (bool [B]; a packed
    batch's rows are its segments, packing.py)."""
    keep = batch["labels"][:, 1:] != IGNORE_INDEX
    seg = batch.get("segment_ids")
    if seg is None:
        return keep.any(dim=1)
    return torch.bincount(seg[1:][keep[0]], minlength=len(batch["lengths"])) > 0


def adam_transform(g: torch.Tensor, m: torch.Tensor, v: torch.Tensor,
                   beta1: float = BETA1, beta2: float = BETA2, eps: float = EPS) -> torch.Tensor:
    """LESS's Adam-preconditioned gradient: (b1 m + (1-b1) g) / sqrt(b2 v + (1-b2) g^2 + eps)."""
    m2 = beta1 * m + (1 - beta1) * g
    v2 = beta2 * v + (1 - beta2) * g.square()
    return m2 / torch.sqrt(v2 + eps)


# ------------------------------------------------------------------------------ the loss
def _unwrap(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _decoder_and_head(model):
    """(decoder returning last_hidden_state, output layer) or None for the full-forward path."""
    lm = _unwrap(model)
    cfg = getattr(lm, "config", None)
    if cfg is not None and any(getattr(cfg, k, None) is not None for k in _LOGIT_POSTPROCESS):
        return None
    decoder = getattr(lm, "base_model", lm)
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if decoder is lm or head is None:
        return None
    return decoder, head


def row_losses(model, batch: dict[str, torch.Tensor], fast: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-row mean token loss [B] float32, per-row label count [B]); 0 loss where no label.

    Causal-LM shift: the logits at position t predict the label at t+1 (HF convention). A
    packed batch (packing.py: one sequence, `segment_ids`) has one row per segment."""
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    pos = batch.get("position_ids")
    tgt = labels[:, 1:]
    keep = tgt != IGNORE_INDEX
    rows, cols = keep.nonzero(as_tuple=True)
    seg = batch.get("segment_ids")
    owner = rows if seg is None else seg[cols + 1]  # the row each target token belongs to
    n_rows = ids.shape[0] if seg is None else len(batch["lengths"])
    counts = torch.bincount(owner, minlength=n_rows)
    parts = _decoder_and_head(model) if fast else None
    if parts is not None:
        decoder, head = parts
        hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=pos,
                         use_cache=False).last_hidden_state
        logits = head(hidden[rows, cols])
    else:
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos,
                       use_cache=False).logits
        logits = logits[rows, cols]
    tok = nn.functional.cross_entropy(logits.float(), tgt[rows, cols], reduction="none")
    per_row = torch.zeros(n_rows, dtype=torch.float32, device=ids.device)
    per_row.index_add_(0, owner, tok)
    return per_row / counts.clamp(min=1).to(per_row.dtype), counts


# ------------------------------------------------------------------------------ core
Sink = Callable[[int, torch.Tensor], None]  # (block index, per-row block [B, numel]) -> None


def run_per_sample(model, batch: dict[str, torch.Tensor], sink: Sink, mode: str = "sgd",
                   adam_state: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
                   blocks: list[LoraBlock] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Compute every row's LoRA gradient (mode-transformed) block by block into `sink`.

    `sink(k, G)` receives block k of `lora_blocks(model)` as a float32 [B, numel_k] tensor, in
    no particular block order (B blocks arrive during the backward). Returns (per-row loss,
    valid mask). Rows without labels get all-zero blocks (and valid=False) in both modes. A
    packed batch (packing.collate_packed) gives one gradient per packed row: each row's share
    of the sequence is cut out (packing.unpack) before the time-axis product."""
    if mode not in MODES:
        raise ValueError(f"unknown gradient mode {mode!r}; choose one of {MODES}")
    if mode == "adam" and adam_state is None:
        raise ValueError("mode 'adam' needs the checkpoint's Adam state (m, v)")
    blocks = blocks if blocks is not None else lora_blocks(model)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    valid = valid_rows(batch)
    zero_rows = None if bool(valid.all()) else (~valid).nonzero(as_tuple=True)[0]
    seg = batch.get("segment_ids")

    def emit(k: int, grad_out: torch.Tensor, inp: torch.Tensor) -> None:
        if seg is not None:
            grad_out = unpack(grad_out, seg, batch["lengths"])
            inp = unpack(inp, seg, batch["lengths"])
        g = torch.bmm(grad_out.transpose(1, 2).float(), inp.float()).flatten(1)
        if mode == "adam":
            m, v = adam_state[blocks[k].name]
            g = adam_transform(g, m.reshape(1, -1), v.reshape(1, -1))
        if zero_rows is not None:
            g[zero_rows] = 0.0
        sink(k, g)

    inputs: dict[int, torch.Tensor] = {}
    a_outputs: dict[int, torch.Tensor] = {}
    is_a = [".lora_A." in b.name or b.name.endswith(".lora_A.weight") for b in blocks]
    handles = []

    def make_hook(k: int):
        def hook(module, args, output):
            if k in inputs:
                raise RuntimeError(f"{blocks[k].name} ran twice in one forward (gradient "
                                   "checkpointing or weight sharing is not supported)")
            inputs[k] = args[0].detach()
            if is_a[k]:
                a_outputs[k] = output
            elif output.requires_grad:
                output.register_hook(lambda g, k=k: emit(k, g, inputs.pop(k)))
        return hook

    try:
        for k, b in enumerate(blocks):
            handles.append(b.module.register_forward_hook(make_hook(k)))
        with torch.enable_grad():
            losses, _ = row_losses(model, batch)
            total = losses.sum()
            order = sorted(a_outputs)
            grads = torch.autograd.grad(total, [a_outputs[k] for k in order], allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    for k, g in zip(order, grads):
        inp = inputs.pop(k)
        if g is None:
            g = torch.zeros_like(a_outputs[k])
        emit(k, g, inp)
    for k in list(inputs):  # B layers that got no gradient (unused): zero gradient
        B = batch["input_ids"].shape[0]
        out_f = blocks[k].shape[0]
        emit(k, torch.zeros(B, inputs[k].shape[1], out_f, device=device), inputs.pop(k))
    return losses.detach(), valid


def per_sample_gradients(model, batch: dict[str, torch.Tensor], mode: str = "sgd",
                         adam_state: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
                         ) -> torch.Tensor:
    """Full flattened per-row LoRA gradients [B, P] (float32); rows without labels are zero.

    Materialises B x P floats: for big models use `per_sample_features` (projects block by
    block)."""
    blocks = lora_blocks(model)
    parts: list[torch.Tensor | None] = [None] * len(blocks)

    def sink(k: int, g: torch.Tensor) -> None:
        parts[k] = g

    run_per_sample(model, batch, sink, mode=mode, adam_state=adam_state, blocks=blocks)
    return torch.cat(parts, dim=1)  # type: ignore[arg-type]


def per_sample_features(model, batch: dict[str, torch.Tensor], projector: Any,
                        mode: str = "sgd",
                        adam_state: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
                        normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(projected, L2-normalised per-row features [B, d] float32, valid mask [B]).

    The projector sees the gradient block by block (`project_blocks`), in flattening order,
    so its output equals projecting the concatenated gradient. `projector=None`: no projection
    (the full gradient, normalised)."""
    blocks = lora_blocks(model)
    parts: list[torch.Tensor | None] = [None] * len(blocks)

    def sink(k: int, g: torch.Tensor) -> None:
        parts[k] = g

    _, valid = run_per_sample(model, batch, sink, mode=mode, adam_state=adam_state,
                              blocks=blocks)
    if projector is None:
        out = torch.cat(parts, dim=1)  # type: ignore[arg-type]
    elif hasattr(projector, "project_blocks"):
        out = projector.project_blocks(parts)
    else:
        out = projector.project(torch.cat(parts, dim=1))  # type: ignore[arg-type]
    out = out.float()
    if normalize:
        out = normalize_rows(out)[0]
    out[~valid.to(out.device)] = 0.0
    return out, valid


# ------------------------------------------------------------------------------ hidden states
POOLINGS = ("mean", "answer", "last")


def decoder_layers(model) -> nn.ModuleList:
    """The model's stack of decoder blocks (Llama/Mistral/Qwen `layers`, GPT-2 `h`, ...)."""
    lm = _unwrap(model)
    for root in (getattr(lm, "model", None), getattr(lm, "transformer", None), lm):
        if root is None:
            continue
        for name in ("layers", "h", "blocks", "block"):
            layers = getattr(root, name, None)
            if isinstance(layers, nn.ModuleList) and len(layers):
                return layers
    raise ValueError("cannot find the model's decoder blocks (no layers/h/blocks list); "
                     "use layers = 0 (the whole model)")


class _EarlyExit(Exception):
    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden


def pool_states(hidden: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor | None,
                pooling: str) -> torch.Tensor:
    """[B, T, H] states -> [B, H] float32: mean over real tokens, over answer tokens (rows
    without one fall back to all tokens), or the last real token."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    hidden = hidden.float()
    if pooling == "last":
        last = (mask.sum(dim=1) - 1).clamp(min=0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    w = mask.to(torch.float32)
    if pooling == "answer" and labels is not None:
        ans = (labels != IGNORE_INDEX).to(torch.float32) * w
        has = ans.sum(dim=1, keepdim=True) > 0
        w = torch.where(has, ans, w)
    w = w.unsqueeze(-1)
    return (hidden * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)


@torch.no_grad()
def hidden_states(model, batch: dict[str, torch.Tensor], layers: int = 0) -> torch.Tensor:
    """[B, T, H] states: the last hidden state (final norm applied) when `layers` is 0, else
    the output of decoder block `layers` (1-based) -- the blocks above it never run."""
    lm = _unwrap(model)
    decoder = getattr(lm, "base_model", lm)
    device = next(model.parameters()).device
    ids = batch["input_ids"].to(device)
    mask = batch["attention_mask"].to(device)
    if layers:
        stack = decoder_layers(model)
        if not 1 <= layers <= len(stack):
            raise ValueError(f"layers must be 0 (all) or 1..{len(stack)}, got {layers}")

        def stop(module, args, output):
            raise _EarlyExit(output[0] if isinstance(output, tuple) else output)

        handle = stack[layers - 1].register_forward_hook(stop)
        try:
            lm(input_ids=ids, attention_mask=mask, use_cache=False)
        except _EarlyExit as done:
            return done.hidden
        finally:
            handle.remove()
        raise RuntimeError(f"decoder block {layers} never ran")  # pragma: no cover
    if decoder is lm:
        out = lm(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
        return out.hidden_states[-1]
    return decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state


@torch.no_grad()
def hidden_features(model, batch: dict[str, torch.Tensor], normalize: bool = True,
                    pooling: str = "mean", layers: int = 0) -> torch.Tensor:
    """Forward-only embeddings (float32 [B, H], L2-normalised by default): the hidden states
    of `hidden_states(model, batch, layers)` pooled by `pool_states`. The cheap features for
    clustering; `layers` > 0 is an early exit whose cost falls with the blocks skipped."""
    hidden = hidden_states(model, batch, layers)
    device = hidden.device
    labels = batch.get("labels")
    pooled = pool_states(hidden, batch["attention_mask"].to(device),
                         None if labels is None else labels.to(device), pooling)
    return normalize_rows(pooled)[0] if normalize else pooled


def freeze_below_top(model, top_blocks: int) -> None:
    """Keep only the LoRA matrices of the top `top_blocks` decoder blocks trainable, so a
    per-sample backward stops there (a cheap gradient sketch)."""

    n = len(decoder_layers(model))
    if not 1 <= top_blocks <= n:
        raise ValueError(f"top_blocks must be 0 (all) or 1..{n}, got {top_blocks}")
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        m = re.search(r"\.(?:layers|h|blocks|block)\.(\d+)\.", name)
        if m is None or int(m.group(1)) < n - top_blocks:
            p.requires_grad_(False)


def hidden_size(model) -> int:
    cfg = _unwrap(model).config
    for key in ("hidden_size", "n_embd", "d_model"):
        if getattr(cfg, key, None):
            return int(getattr(cfg, key))
    raise ValueError("cannot tell the model's hidden size from its config")
