"""Loading a causal LM, wrapping it with LoRA, and warm-up checkpoints (docs/METHOD.md section 2).

Model sources: the bundled demo (`sample_data/demo_model`, also reachable as "demo"), any local
folder in Hugging Face layout, or a hub id (downloaded by `transformers`; only real users go
online, the tests use local folders). Device `auto` = CUDA (the rank's `LOCAL_RANK` GPU under
`torchrun`), else MPS, else CPU; dtype `auto` = bfloat16 on a CUDA GPU that supports it,
float32 elsewhere (bf16 matmuls are extremely slow on CPUs without native support); float16
is refused (no loss scaler). LoRA matrices stay float32 whatever the base dtype (peft's
adapter autocast). `trust_remote_code` is passed
through only when the spec asks for it.

Padding. LESS adds a `<pad>` special token and resizes the embeddings when the tokenizer has no
pad token. We do not: we set pad = unk (else eos) and leave the model untouched. Batches are
padded on the *right* with attention mask 0 and label -100, so under causal attention no real
position ever sees a pad and no loss term reads one: the pad id's value cannot change any loss
or gradient. Resizing, in contrast, adds a row to the output layer that enters every softmax
(LESS's transformers initialised it randomly and unseeded), so it shifts every loss a little,
changes the weight fingerprint and breaks reproducibility, for no benefit.

Checkpoint folder (one per warm-up epoch, `W/checkpoints/<name>/ckpt-<epoch>/`)::

    adapter_config.json, adapter_model.safetensors   peft `save_pretrained`
    adam_state.safetensors   "exp_avg.<param>", "exp_avg_sq.<param>" for every LoRA parameter
                             (float32; <param> = the peft name without the adapter name)
    meta.json                epoch, step, avg_lr (mean learning rate over the epoch's steps),
                             fingerprint (sha256 of the two safetensors files), base model,
                             lora spec, warm-up spec, pool fingerprint, losses

A LESS / Hugging Face Trainer checkpoint (adapter + `optimizer.pt`) is read too: the Adam
state is loaded with `torch.load(weights_only=True)` and matched to the LoRA parameters in
order, checking every shape.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from clusterucb_core.config import DEMO_MODEL, LoraSpec, ModelSpec
from clusterucb_core.runtime import atomic

ADAM_FILE = "adam_state.safetensors"
META_FILE = "meta.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# weight files hashed in full below this total size; above it, name + size + head + tail
_FULL_HASH_LIMIT = 512 * 1024 * 1024
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


# --------------------------------------------------------------------------------- device
def local_cuda_index() -> int:
    """This process's GPU: LOCAL_RANK % the visible GPUs, refusing more processes than GPUs.

    Two processes on one GPU would each hold the whole model (and NCCL refuses them), so a
    machine running more local processes than it shows GPUs is an error, unless a launcher
    pinned each process to its own single GPU with CUDA_VISIBLE_DEVICES."""
    n = torch.cuda.device_count()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    pinned = n == 1 and len(os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")) == 1 \
        and os.environ.get("CUDA_VISIBLE_DEVICES", "") != ""
    if local_world > n and not pinned:
        raise ValueError(f"{local_world} processes on this machine but {n} GPU(s) visible: "
                         f"start one process per GPU (torchrun --nproc_per_node {n})")
    return local_rank % max(n, 1)


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` -> CUDA (LOCAL_RANK's GPU under torchrun), else MPS, else CPU."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_cuda_index())
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available here")
    if name == "cuda":
        return torch.device("cuda", local_cuda_index())
    return torch.device(name)


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def _bf16_ok(device: torch.device) -> bool:
    return device.type != "cuda" or bool(torch.cuda.is_bf16_supported())


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` -> bfloat16 on a CUDA GPU that supports it, float32 elsewhere.

    float16 is refused: per-row LoRA gradients and the warm-up's steps overflow it without a
    loss scaler, and the features would silently hold inf/NaN."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and _bf16_ok(device) else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose auto, float32, bfloat16 or float16")
    dtype = _DTYPES[name]
    if dtype == torch.float16:
        raise ValueError("dtype float16 is refused: LoRA gradients overflow it without loss "
                         "scaling; use bfloat16 (on GPUs that support it) or float32")
    if dtype == torch.bfloat16 and not _bf16_ok(device):
        raise ValueError(f"dtype bfloat16 asked for, but {device} does not support it "
                         "(torch.cuda.is_bf16_supported() is False); use float32")
    return dtype


# --------------------------------------------------------------------------------- loading
def model_source(name_or_path: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, is_local). "demo" means the bundled demo model."""
    name = str(name_or_path).strip()
    if name in ("", "demo"):
        name = str(DEMO_MODEL)
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve()), True
    if path.exists():
        raise ValueError(f"{path} is a file; give the model's folder (with config.json)")
    if Path(name) == DEMO_MODEL or name.startswith(("/", ".", "~")) or name.count("/") > 1:
        hint = (" (the bundled demo model is made by `python scripts/train_demo_model.py`)"
                if Path(name) == DEMO_MODEL else "")
        raise FileNotFoundError(f"no model folder at {name}{hint}")
    return name, False  # a hub id such as "meta-llama/Llama-2-7b-hf"


def set_pad_token(tokenizer) -> None:
    """pad := unk, else eos, when the tokenizer has none (see the module doc for why)."""
    if tokenizer.pad_token is not None:
        return
    if getattr(tokenizer, "unk_token", None) is not None:
        tokenizer.pad_token = tokenizer.unk_token
    elif tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    else:
        raise ValueError("the tokenizer has no pad, unk or eos token to pad with")


def load_tokenizer(spec: ModelSpec):
    from transformers import AutoTokenizer

    source, local = model_source(spec.name_or_path)
    tok = AutoTokenizer.from_pretrained(source, trust_remote_code=bool(spec.trust_remote_code))
    set_pad_token(tok)
    return tok


def load_model(spec: ModelSpec) -> tuple[Any, Any, torch.device, torch.dtype]:
    """(model, tokenizer, device, dtype): the base model in eval mode, every weight frozen."""
    from transformers import AutoModelForCausalLM

    source, local = model_source(spec.name_or_path)
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    tokenizer = load_tokenizer(spec)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress lines say what is happening
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, trust_remote_code=bool(spec.trust_remote_code))
    except OSError as exc:
        where = "folder" if local else "hub id"
        raise FileNotFoundError(
            f"could not load a causal LM from {where} {source!r}: {exc}"
        ) from exc
    model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, device, dtype


def _file_digest(path: Path, full: bool) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(f"{path.name}:{size}".encode())
    with open(path, "rb") as fh:
        if full:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        else:  # head and tail: cheap for multi-GB shards, still catches any re-save
            h.update(fh.read(1 << 22))
            fh.seek(max(size - (1 << 22), 0))
            h.update(fh.read(1 << 22))
    return h.hexdigest()


def weights_fingerprint(name_or_path: str) -> str:
    """Content hash of a model's weights, config and tokenizer: full below 512 MiB, else
    size+head+tail.

    For a hub id not on disk: the id itself (transformers resolves it to a cached revision)."""
    source, local = model_source(name_or_path)
    if not local:
        return hashlib.sha256(f"hub:{source}".encode()).hexdigest()[:16]
    root = Path(source)
    # The tokenizer decides the token ids, so it is part of what made the features.
    files = sorted(p for p in root.iterdir()
                   if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name == "config.json"
                                       or p.name.startswith("tokenizer")))
    total = sum(p.stat().st_size for p in files)
    h = hashlib.sha256()
    for p in files:
        h.update(_file_digest(p, full=total <= _FULL_HASH_LIMIT).encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------- LoRA
@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """peft calls a transformers method that transformers 5 deprecates; not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


_LINEAR_NAMES = ("Linear", "Conv1D")


def _linear_leaf_names(model) -> dict[str, list[str]]:
    """leaf module name -> qualified names, for every Linear/Conv1D (except the LM head)."""
    out: dict[str, list[str]] = {}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for qual, mod in model.named_modules():
        if type(mod).__name__ in _LINEAR_NAMES and mod is not head:
            out.setdefault(qual.rsplit(".", 1)[-1], []).append(qual)
    return out


def resolve_target_modules(model, lora: LoraSpec) -> list[str]:
    """The LoRA target modules for this model, as peft matches them (a leaf name such as
    `q_proj`, or a dotted name or suffix such as `layers.3.self_attn.q_proj`).

    Only the default names may be replaced: with none of them in this model (a non-Llama
    naming) the linear layers inside its attention blocks are used (e.g. GPT-2's c_attn,
    c_proj). Names the user chose must all exist; otherwise the call is refused, naming the
    modules that do (a silent fallback would compute gradients of other layers)."""
    leaves = _linear_leaf_names(model)
    quals = [q for qs in leaves.values() for q in qs]

    def present(name: str) -> bool:
        return any(q == name or q.endswith("." + name) for q in quals)

    wanted = [m for m in lora.target_modules if present(m)]
    default = lora.target_modules == LoraSpec().target_modules
    if not default:
        missing = [m for m in lora.target_modules if not present(m)]
        if missing:
            raise ValueError(f"LoRA target module(s) {', '.join(missing)} not in this model; its "
                             f"linear layers are {', '.join(sorted(leaves))} (e.g. {quals[0]})"
                             if quals else "this model has no linear layers for LoRA")
        return wanted
    if wanted:
        return wanted
    attn = sorted({leaf for leaf, qs in leaves.items()
                   if any(("attn" in q.lower() or "attention" in q.lower()) for q in qs)})
    if attn:
        return attn
    raise ValueError(f"none of the LoRA target modules {list(lora.target_modules)} exists in "
                     f"this model; its linear layers are {sorted(leaves)}")


def _layers(model, lora: LoraSpec) -> list[int] | None:
    """peft's `layers_to_transform`, checked against the model's number of layers."""
    if not lora.layers_to_transform:
        return None
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    bad = [i for i in lora.layers_to_transform if n is not None and i >= n]
    if bad:
        raise ValueError(f"[lora] layers_to_transform = {list(lora.layers_to_transform)}: this "
                         f"model has layers 0..{n - 1}")
    return list(lora.layers_to_transform)


def add_lora(model, lora: LoraSpec, seed: int = 0):
    """Wrap `model` with fresh LoRA adapters (seeded init; B = 0 as peft does). Only the LoRA
    A/B matrices require grad."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=int(lora.rank), lora_alpha=int(lora.alpha),
                        lora_dropout=float(lora.dropout),
                        target_modules=resolve_target_modules(model, lora),
                        layers_to_transform=_layers(model, lora), bias="none",
                        task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]), _quiet():
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
    peft_model.eval()
    return peft_model


def lora_parameters(model) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of the trainable LoRA matrices, in `named_parameters` order (the order
    LESS flattens gradients in)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _adapter_name(model) -> str:
    return getattr(model, "active_adapter", "default") or "default"


def state_key(name: str, adapter: str = "default") -> str:
    """A LoRA parameter's name without the adapter name (as peft saves adapters)."""
    return name.replace(f".{adapter}.", ".")


def load_adapter(model, checkpoint_dir: str | Path):
    """Base model + a saved adapter (ours or a LESS/peft one), LoRA params requiring grad."""
    from peft import PeftModel

    ckpt = Path(checkpoint_dir)
    if not (ckpt / "adapter_config.json").exists():
        raise FileNotFoundError(f"no LoRA adapter in {ckpt} (adapter_config.json missing)")
    with _quiet():
        peft_model = PeftModel.from_pretrained(model, str(ckpt), is_trainable=True)
    peft_model.eval()
    return peft_model


class SharedBase:
    """One base model per process, with each checkpoint loaded as a named peft adapter.

    Engines at several checkpoints (a reward per warm-up epoch) share the base weights (13.5 GB
    for a 7B model in bf16) instead of loading a copy each; an engine activates its adapter
    with `activate(name)` (peft's set_adapter: only that adapter's LoRA matrices require grad,
    so `lora_blocks` sees exactly its parameters)."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.model = None
        self.tok = self.device = self.dtype = None
        self._names: dict[str, str] = {}
        # what engines on this model share besides the weights: one projector per map (a
        # 0.67 GB hash at 7B) and one learnt batch budget per feature kind
        self.projectors: dict[tuple, Any] = {}
        self.budgets: dict[str, Any] = {}

    def adapter(self, checkpoint_dir: str | Path) -> str:
        """The adapter name of a checkpoint, loading it on first use."""
        from peft import PeftModel

        key = str(Path(checkpoint_dir).resolve())
        if key in self._names:
            return self._names[key]
        if not (Path(key) / "adapter_config.json").exists():
            raise FileNotFoundError(f"no LoRA adapter in {key} (adapter_config.json missing)")
        name = f"ckpt{len(self._names)}"
        with _quiet():
            if self.model is None:
                base, self.tok, self.device, self.dtype = load_model(self.spec)
                self.model = PeftModel.from_pretrained(base, key, adapter_name=name,
                                                       is_trainable=True)
            else:
                self.model.load_adapter(key, adapter_name=name, is_trainable=True)
        self.model.to(self.device)
        self.model.eval()
        self._names[key] = name
        return name

    def activate(self, name: str) -> None:
        if self.model.active_adapter != name:
            self.model.set_adapter(name)

    def close(self) -> None:
        self.model = None
        self._names.clear()
        self.projectors.clear()
        self.budgets.clear()
        free_memory()


def free_memory() -> None:
    """Return freed tensors' memory to the device (after dropping the last references)."""

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def prepare_model(spec: ModelSpec, lora: LoraSpec, checkpoint_dir: str | Path | None = None,
                  seed: int = 0):
    """load_model + (checkpoint adapter or fresh seeded LoRA), in eval mode.

    Returns (model, tokenizer, device, dtype)."""
    model, tok, device, dtype = load_model(spec)
    if checkpoint_dir is not None:
        model = load_adapter(model, checkpoint_dir)
    else:
        model = add_lora(model, lora, seed=seed)
    model.to(device)
    model.eval()
    return model, tok, device, dtype


# --------------------------------------------------------------------------------- checkpoints
def save_checkpoint(model, optimizer, out_dir: str | Path, meta: dict[str, Any]) -> Path:
    """Write adapter + Adam state + meta.json into `out_dir` atomically (a folder swap)."""
    from safetensors.torch import save_file


    out_dir = Path(out_dir)
    adapter = _adapter_name(model)
    tensors: dict[str, torch.Tensor] = {}
    for name, p in lora_parameters(model):
        st = optimizer.state.get(p, {})
        key = state_key(name, adapter)
        m = st.get("exp_avg")
        v = st.get("exp_avg_sq")
        tensors[f"exp_avg.{key}"] = (m if m is not None else torch.zeros_like(p)).detach() \
            .float().cpu().contiguous()
        tensors[f"exp_avg_sq.{key}"] = (v if v is not None else torch.zeros_like(p)).detach() \
            .float().cpu().contiguous()
    with atomic.atomic_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp))
        save_file(tensors, str(tmp / ADAM_FILE))
        full = dict(meta)
        full["fingerprint"] = _checkpoint_digest(tmp)
        (tmp / META_FILE).write_text(json.dumps(full, indent=2, sort_keys=True, default=str) + "\n")
    return out_dir


def _checkpoint_digest(ckpt: Path) -> str:
    h = hashlib.sha256()
    for name in (ADAPTER_WEIGHTS, "adapter_model.bin", ADAM_FILE, "optimizer.pt",
                 "adapter_config.json"):
        p = ckpt / name
        if p.exists():
            h.update(_file_digest(p, full=True).encode())
    return h.hexdigest()[:16]


def checkpoint_meta(checkpoint_dir: str | Path) -> dict[str, Any]:
    """meta.json of a checkpoint (a foreign checkpoint gets a computed fingerprint, avg_lr 1)."""
    ckpt = Path(checkpoint_dir)
    p = ckpt / META_FILE
    if p.exists():
        return json.loads(p.read_text())
    meta: dict[str, Any] = {"fingerprint": _checkpoint_digest(ckpt), "avg_lr": None}
    ts = ckpt / "trainer_state.json"
    if ts.exists():  # a HF Trainer checkpoint: LESS weights checkpoints by average lr
        with_lr = [e["learning_rate"] for e in json.loads(ts.read_text()).get("log_history", [])
                   if "learning_rate" in e]
        if with_lr:
            meta["avg_lr"] = sum(with_lr) / len(with_lr)
    return meta


def checkpoint_fingerprint(checkpoint_dir: str | Path | None) -> str | None:
    return None if checkpoint_dir is None else str(checkpoint_meta(checkpoint_dir)["fingerprint"])


def load_adam_state(
    model, checkpoint_dir: str | Path
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{param name: (m, v)} for every LoRA parameter of `model`, float32 on its device.

    Raises FileNotFoundError when the checkpoint has no Adam state (use mode 'sgd')."""
    ckpt = Path(checkpoint_dir)
    params = lora_parameters(model)
    adapter = _adapter_name(model)
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if (ckpt / ADAM_FILE).exists():
        from safetensors.torch import load_file

        tensors = load_file(str(ckpt / ADAM_FILE))
        for name, p in params:
            key = state_key(name, adapter)
            try:
                m, v = tensors[f"exp_avg.{key}"], tensors[f"exp_avg_sq.{key}"]
            except KeyError:
                raise ValueError(f"{ckpt / ADAM_FILE} has no Adam state for {key}; was it made "
                                 "with another LoRA configuration?") from None
            if m.shape != p.shape or v.shape != p.shape:
                raise ValueError(f"Adam state for {key} has shape {tuple(m.shape)}, the model's "
                                 f"parameter {tuple(p.shape)}")
            out[name] = (m.to(p.device, torch.float32), v.to(p.device, torch.float32))
        return out
    opt = ckpt / "optimizer.pt"
    if opt.exists():  # HF Trainer / LESS: state indexed by parameter order
        state = torch.load(str(opt), map_location="cpu", weights_only=True)["state"]
        keys = sorted(state)
        if len(keys) != len(params):
            raise ValueError(f"{opt} holds Adam state for {len(keys)} tensors, the model has "
                             f"{len(params)} LoRA parameters")
        for k, (name, p) in zip(keys, params):
            m, v = state[k]["exp_avg"], state[k]["exp_avg_sq"]
            if m.shape != p.shape:
                raise ValueError(f"{opt}: state {k} has shape {tuple(m.shape)}, parameter "
                                 f"{name} {tuple(p.shape)}")
            out[name] = (m.to(p.device, torch.float32), v.to(p.device, torch.float32))
        return out
    raise FileNotFoundError(f"no Adam state in {ckpt} ({ADAM_FILE} or optimizer.pt); "
                            "use mode 'sgd'")


def find_checkpoints(root: str | Path) -> list[Path]:
    """ckpt-<n> folders under `root`, by n (a folder that is itself a checkpoint: itself)."""
    root = Path(root)
    if (root / "adapter_config.json").exists():
        return [root]
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and not p.name.startswith(".") and (p / "adapter_config.json").exists():
            tail = p.name.rsplit("-", 1)[-1]
            found.append((int(tail) if tail.isdigit() else 10 ** 9, p.name, p))
    return [p for _, _, p in sorted(found)]
