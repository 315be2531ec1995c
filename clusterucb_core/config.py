"""Typed settings for every stage, and their TOML form.

Every stage takes one of these dataclasses so the app, the CLI and `clusterucb run --config`
all describe a run the same way, and a manifest can record it exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

DEMO_DIR = Path(__file__).resolve().parent.parent / "sample_data"
DEMO_MODEL = DEMO_DIR / "demo_model"
DEMO_POOL = DEMO_DIR / "demo_pool.jsonl"


@dataclass(frozen=True)
class LoraSpec:
    """LoRA adapters whose A/B matrices we take gradients of (LESS: r=128, alpha=512)."""

    rank: int = 8
    alpha: int = 32
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class ModelSpec:
    """Which causal LM to load and where to run it."""

    name_or_path: str = str(DEMO_MODEL)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"  # auto (bf16 on CUDA, fp32 elsewhere) | float32 | bfloat16 | float16
    trust_remote_code: bool = False
    chat_template: str = "tulu"  # tulu | model
    max_length: int = 512


@dataclass(frozen=True)
class WarmupSpec:
    """The short LoRA run that gives a checkpoint and its Adam state (LESS: 5%, 4 epochs)."""

    fraction: float = 0.05
    epochs: int = 4
    max_steps: int = 0  # > 0: stop after this many optimiser steps (Dynamic ClusterUCB: 20)
    learning_rate: float = 2e-5
    batch_size: int = 8
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class FeatureSpec:
    """How one row becomes a feature vector."""

    kind: str = "gradient"  # gradient | hidden (forward-only mean-pooled hidden states)
    mode: str = "adam"  # sgd | adam (only for kind=gradient)
    # countsketch preserves cosines as well as LESS's Rademacher matrix at ~80x the speed on a
    # CPU (bench/bench_projection.py); "rademacher" reproduces LESS's features exactly.
    projection: str = "countsketch"  # countsketch | rademacher | srht
    dim: int = 8192
    seed: int = 0
    batch_size: int = 16
    store_dtype: str = "float16"  # float16 | float32
    engine: str = "local"  # local (one process or torchrun ranks) | ray (actors, ray_engine.py)


@dataclass(frozen=True)
class ClusterSpec:
    k: int = 20  # 0 = pick automatically from a K scan
    seed: int = 0
    max_iter: int = 100
    tol: float = 1e-4
    minibatch: bool = False
    batch_size: int = 4096


@dataclass(frozen=True)
class SelectionSpec:
    """ClusterUCB settings; fractions are of the pool size N (METHOD.md section 4)."""

    policy: str = "ucb_beta"  # ucb_beta | ucb1 | thresh_hard | thresh_normal | random | thompson
    beta: float = 1.0
    cold_start: float = 0.05
    budget: float = 0.2
    top_p: float = 0.05
    draw_batch: int = 8
    seed: int = 42
    quantile: float = 0.25  # thresh_* policies: tau is the top-q quantile of drawn scores


def to_dict(spec: Any) -> dict[str, Any]:
    """A spec as plain JSON/TOML-ready data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(spec)))


def reject_unknown(cls: type, data: dict[str, Any], what: str | None = None) -> None:
    """Refuse keys that are not fields of the dataclass `cls`: a typo in a settings file must
    be an error, not a silently ignored line."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{what or cls.__name__}: unknown setting(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(names))}")


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a spec from a dict, refusing unknown keys so typos are caught, not ignored."""
    reject_unknown(cls, data)
    kwargs = {}
    for key, value in data.items():
        if isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def fingerprint(*parts: Any) -> str:
    """Short stable hash of JSON-able parts (specs, paths, other fingerprints)."""
    blob = json.dumps([to_dict(p) if dataclasses.is_dataclass(p) else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_toml(path: str | Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def save_toml(data: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(tomli_w.dumps(data))
