"""Settings checked against the model and the pool, before any work or file is written.

A config that parses can still be wrong for this model or this pool: a LoRA target module the
model lacks, more feature layers than it has blocks, more clusters than rows. Each would fail
only after warm-up and features had written their files, so `clusterucb run` checks them
first: the model from its config alone (a skeleton on the meta device, no weights read), the
pool by parsing it in memory (nothing cached yet).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from clusterucb_core.config import ConfigError, ModelSpec, RunConfig
from clusterucb_core.data.load import load_pool
from clusterucb_core.features.model import _layers, model_source, resolve_target_modules


def model_skeleton(spec: ModelSpec) -> Any:
    """The model's modules with no weights (meta device): names and shapes only."""
    source, _ = model_source(spec.name_or_path)
    trust = bool(spec.trust_remote_code)
    conf = AutoConfig.from_pretrained(source, trust_remote_code=trust)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(conf, trust_remote_code=trust)


def check_model(cfg: RunConfig, model: Any) -> None:
    """LoRA targets and layers, and the feature layer counts, against this model."""
    try:
        resolve_target_modules(model, cfg.lora)
    except ValueError as exc:
        raise ConfigError("[lora] target_modules", list(cfg.lora.target_modules),
                          str(exc)) from None
    try:
        _layers(model, cfg.lora)
    except ValueError as exc:
        raise ConfigError("[lora] layers_to_transform", list(cfg.lora.layers_to_transform),
                          str(exc).split(": ", 1)[-1]) from None
    n = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    for section in ("cluster_features", "reward_features"):
        spec = getattr(cfg, section)
        for key in ("layers", "top_blocks"):
            value = getattr(spec, key)
            if n and value > n:
                raise ConfigError(f"[{section}] {key}", value,
                                  f"this model has {n} decoder blocks (0 = all of them)")


def check_pool_size(cfg: RunConfig, n_rows: int) -> None:
    """K, the budget and the selection size against the pool's number of usable rows."""
    clusters, sel = cfg.clusters, cfg.selection
    if not clusters.auto_k and int(clusters.k) > n_rows:
        raise ConfigError("[clusters] k", clusters.k,
                          f"more clusters than the pool's {n_rows} usable rows")
    for key in ("budget", "top_p"):
        value = getattr(sel, key)
        if math.floor(n_rows * value) < 1:
            raise ConfigError(f"[selection] {key}", value,
                              f"selects no row of the pool's {n_rows} (floor(N x {key}) = 0)")


def preflight(cfg: RunConfig) -> None:
    """Every check that needs the model's config or the pool's size; ConfigError if one fails."""
    check_model(cfg, model_skeleton(cfg.model))
    pool = load_pool(cfg.pool, cfg.pool_format, cfg.pool_shape,
                     id_field=cfg.pool_id_field or None,
                     source_field=cfg.pool_source_field or None)
    check_pool_size(cfg, len(pool))
