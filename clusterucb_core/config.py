"""Typed, validated settings for every stage, the whole-run `RunConfig`, and their TOML form.

Every stage takes one of these dataclasses so the app, the CLI and `clusterucb run --config`
all describe a run the same way, and a manifest can record it exactly. Each field says its
rule once (`Literal` choices in the annotation, ranges in `_f(...)`); a spec checks every
field when it is built and refuses a bad one with `ConfigError`, one line naming the key, the
value and what is allowed -- the same line whether the value came from a form, a flag or TOML.
`SECTIONS` is the one registry of the settings sections of a `RunConfig`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomli_w

from clusterucb_core.data.demo import find_demo_dir
from clusterucb_core.workspace import check_name

DEMO_DIR = find_demo_dir()  # the checkout's sample_data/, or the installed demo
DEMO_MODEL = DEMO_DIR / "demo_model"
DEMO_POOL = DEMO_DIR / "demo_pool.jsonl"
DEMO_TARGET = DEMO_DIR / "targets" / "arithmetic.jsonl"

DRAW_ORDER = Literal["predicted", "random", "similar"]
POLICY = Literal["ucb_beta", "ucb1", "thresh_hard", "thresh_normal", "random", "thompson"]
POOL_FORMAT = Literal["auto", "jsonl", "json", "csv", "tsv", "parquet", "datasets"]
POOL_SHAPE = Literal["auto", "messages", "alpaca", "sharegpt", "prompt_completion"]
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# how K is picked when k = "auto" (clustering/krule.py): the K scan's silhouette, about m
# cold-start draws per arm, or a fixed K
K_RULE = re.compile(r"^(silhouette|size[1-9]\d*|fixed[1-9]\d*)$")


def check_device(device: Any) -> str:
    """A device name torch understands here (auto picks CUDA, else MPS, else CPU)."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise ConfigError("device", device, "must be auto, cpu, cuda, cuda:N or mps")
    return device


class ConfigError(ValueError):
    """A setting that breaks its rule: `key = value: rule`."""

    def __init__(self, key: str, value: Any, rule: str):
        self.key, self.value, self.rule = key, value, rule
        super().__init__(f"{key} = {value!r}: {rule}")

    def within(self, section: str) -> ConfigError:
        """The same error with the section in front of the key (`[clusters] k = ...`)."""
        return ConfigError(f"[{section}] {self.key}" if section else self.key, self.value,
                           self.rule)


def _f(default: Any, lo: float | None = None, hi: float | None = None, *,
       lo_open: bool = False, hi_open: bool = False, rule: str | None = None,
       help: str = "", label: str = "", choices: dict[str, str] | None = None,
       added: bool = False) -> Any:
    """A field and everything said about it, once: its range (lo <= x <= hi, strict where
    *_open), the rule its error names, and for the CLI flags and the app's widgets built from
    it (`field_flags`, clusterucb_app/spec_form.py) a help text, a short label and one label
    per choice of a Literal. `added`: introduced after work was saved (see `to_dict`)."""
    md = {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "rule": rule,
          "help": help, "label": label, "choices": choices or {}}
    if added:
        md["added"] = True
    return field(default=default, metadata=md)


def field_info(cls: type, name: str) -> dict[str, Any]:
    """What a settings field declares: type, default, choices, range, help and label."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    hint = typing.get_type_hints(cls)[name]
    md = dict(f.metadata)
    options = typing.get_args(hint) if typing.get_origin(hint) is Literal else ()
    return {"name": name, "type": hint, "default": f.default, "options": options,
            "labels": md.get("choices") or {}, "help": md.get("help", ""),
            "label": md.get("label") or name.replace("_", " "), "range": _range_text(md),
            "lo": md.get("lo"), "hi": md.get("hi"), "lo_open": bool(md.get("lo_open")),
            "hi_open": bool(md.get("hi_open"))}


def _range_text(md: dict[str, Any]) -> str:
    lo, hi = md.get("lo"), md.get("hi")
    parts = []
    if lo is not None:
        parts.append(f"{'>' if md.get('lo_open') else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if md.get('hi_open') else '<='} {hi:g}")
    return " and ".join(parts)


def _in_range(v: float, md: dict[str, Any]) -> bool:
    lo, hi = md.get("lo"), md.get("hi")
    if lo is not None and (v <= lo if md.get("lo_open") else v < lo):
        return False
    return not (hi is not None and (v >= hi if md.get("hi_open") else v > hi))


def _check(name: str, value: Any, hint: Any, md: dict[str, Any]) -> Any:
    """`value` converted to the field's type (int -> float, list -> tuple), or ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        for option in args:
            try:
                return _check(name, value, option, md)
            except ConfigError:
                continue
        raise ConfigError(name, value, md.get("rule") or "not an allowed value")
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise ConfigError(name, value, "must be one of " + ", ".join(map(str, args)))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(name, value, "must be true or false")
    if hint in (int, float):
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if hint is float:
            ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
                  and math.isfinite(value))
        kind = "an integer" if hint is int else "a finite number"
        rng = _range_text(md)
        if not ok or not _in_range(value, md):
            raise ConfigError(name, value, md.get("rule") or f"must be {kind}"
                              + (f" {rng}" if rng else ""))
        return float(value) if hint is float else int(value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(name, value, md.get("rule") or "must be a string")
    if origin is tuple:
        item = args[0]
        if isinstance(value, (list, tuple)):
            try:
                return tuple(_check(name, v, item, {}) for v in value)
            except ConfigError:
                pass
        what = "strings" if item is str else "integers"
        raise ConfigError(name, value, md.get("rule") or f"must be a list of {what}")
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        raise ConfigError(name, value, f"must be a {hint.__name__}")
    return value


class Spec:
    """Base of every settings dataclass: checks and normalises each field on construction."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = _check(f.name, getattr(self, f.name), hints[f.name], dict(f.metadata))
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Rules that tie two fields together (subclasses)."""


@dataclass(frozen=True)
class LoraSpec(Spec):
    """LoRA adapters whose A/B matrices we take gradients of (LESS: r=128, alpha=512).

    target_modules: leaf module names (`q_proj`) or full dotted names
    (`model.layers.3.self_attn.q_proj`). layers_to_transform: only these decoder layers get
    adapters (peft's `layers_to_transform`); empty: every layer."""

    rank: int = _f(8, 1)
    alpha: int = _f(32, 1)
    dropout: float = _f(0.1, 0, 1, hi_open=True)
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    layers_to_transform: tuple[int, ...] = field(default=(), metadata={"added": True})

    def check(self) -> None:
        if not self.target_modules or not all(self.target_modules):
            raise ConfigError("target_modules", list(self.target_modules),
                              "must name at least one module")
        if any(i < 0 for i in self.layers_to_transform):
            raise ConfigError("layers_to_transform", list(self.layers_to_transform),
                              "must be layer indices >= 0")


@dataclass(frozen=True)
class ModelSpec(Spec):
    """Which causal LM to load and where to run it."""

    name_or_path: str = str(DEMO_MODEL)
    device: str = field(default="auto", metadata={"rule": "must be auto, cpu, cuda, cuda:N "
                                                          "or mps"})
    # auto: bf16 on CUDA, fp32 elsewhere
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    chat_template: Literal["tulu", "model"] = "tulu"
    max_length: int = _f(512, 8)
    # keep_answer: a row over max_length loses its oldest prompt tokens, so its answer (and
    # its gradient) survives; right: LESS's cut, which can leave a row with no gradient.
    truncation: Literal["keep_answer", "right"] = field(default="keep_answer",
                                                        metadata={"added": True})

    def check(self) -> None:
        check_device(self.device)


def format_identity(spec: ModelSpec) -> dict[str, Any]:
    """How rows are cut, for fingerprints: empty for the default (keep_answer), so stores and
    warm-ups made before the setting existed keep their keys -- they differ from keep_answer
    only in rows longer than max_length, which `clusterucb validate` counts."""
    return {} if spec.truncation == "keep_answer" else {"truncation": spec.truncation}



@dataclass(frozen=True)
class WarmupSpec(Spec):
    """The short LoRA run that gives a checkpoint and its Adam state (LESS: 5%, 4 epochs)."""

    fraction: float = _f(0.05, 0, 1, lo_open=True)
    epochs: int = _f(4, 1)
    max_steps: int = _f(0, 0)  # > 0: stop after this many optimiser steps (Dynamic: 20)
    learning_rate: float = _f(2e-5, 0, lo_open=True)
    batch_size: int = _f(8, 1)
    warmup_ratio: float = _f(0.03, 0, 1, hi_open=True)
    weight_decay: float = _f(0.0, 0)
    seed: int = _f(0, 0)
    # Rows per forward; the optimiser step still sees `batch_size` rows (gradient
    # accumulation, same objective). 0 = the whole batch on the CPU, planned from free memory
    # on CUDA; halved on an out-of-memory error either way.
    micro_batch_size: int = _f(0, 0)
    gradient_checkpointing: bool = False  # recompute activations in the backward (less memory)
    max_grad_norm: float = _f(1.0, 0)  # clip the step's gradient norm (LESS: 1.0); 0 = off


@dataclass(frozen=True)
class FeatureSpec(Spec):
    """How one row becomes a feature vector."""

    kind: Literal["gradient", "hidden"] = "gradient"  # hidden: forward-only mean-pooled states
    mode: Literal["sgd", "adam"] = "adam"  # only for kind=gradient
    # countsketch preserves cosines as well as LESS's Rademacher matrix at ~80x the speed on a
    # CPU (bench/bench_projection.py); "rademacher" reproduces LESS's features exactly.
    projection: Literal["countsketch", "rademacher", "srht"] = "countsketch"
    dim: int = _f(8192, 1)
    seed: int = _f(0, 0)
    batch_size: int = _f(16, 1)
    store_dtype: Literal["float16", "float32"] = "float16"
    # local: one process or torchrun ranks; ray: actors (ray_engine.py)
    engine: Literal["local", "ray"] = "local"
    # cluster-feature options (bench/bench_fidelity.py measures each); defaults = the whole
    # model, mean-pooled, at the model's max_length
    pooling: Literal["mean", "answer", "last"] = field(default="mean", metadata={"added": True})
    # kind=hidden: > 0 runs only the first `layers` decoder blocks
    layers: int = field(default=0, metadata={"lo": 0, "added": True})
    # kind=gradient: > 0 = the LoRA gradient of the top blocks only
    top_blocks: int = field(default=0, metadata={"lo": 0, "added": True})
    # > 0: rows cut to this many tokens for these features only
    max_length: int = field(default=0, metadata={"lo": 0, "added": True})


def effective_max_length(spec: FeatureSpec, model_max_length: int) -> int:
    """Tokens a row keeps for these features: the model's max_length, or the features' own
    `max_length` when that is set and shorter."""
    return min(spec.max_length or model_max_length, model_max_length)


def feature_options(spec: FeatureSpec) -> dict[str, Any]:
    """The cluster-feature options that differ from their defaults (for identities and store
    names: stores made before the options existed keep their keys)."""
    base = FeatureSpec()
    return {k: getattr(spec, k) for k in ("pooling", "layers", "top_blocks", "max_length")
            if getattr(spec, k) != getattr(base, k)}


@dataclass(frozen=True)
class ClusterSpec(Spec):
    # "auto" (or 0) = pick K by `k_rule` (krule.py). size8 (each arm ~8 cold-start draws) was
    # chosen by bench/bench_fidelity.py: the silhouette scan picked K=2 on both real pools
    k: int | Literal["auto"] = _f(0, 0, rule='must be an integer >= 1, or "auto"')
    k_rule: str = field(default="size8", metadata={"added": True})  # size<m> | silhouette
    # none | center | whiten (conditioning.py): fitted once, stored with the clusters
    condition: Literal["none", "center", "whiten"] = field(default="none",
                                                          metadata={"added": True})
    seed: int = _f(0, 0)
    max_iter: int = _f(100, 1)
    tol: float = _f(1e-4, 0)
    minibatch: bool = False
    batch_size: int = _f(4096, 1)
    # k-means++ restarts, the lowest inertia kept
    n_init: int = field(default=3, metadata={"lo": 1, "added": True})

    def check(self) -> None:
        if not K_RULE.match(self.k_rule):
            raise ConfigError("k_rule", self.k_rule, "must be silhouette, size<m> (each arm "
                              "about m cold-start draws, m >= 1) or fixed<K> (K >= 1)")

    @property
    def auto_k(self) -> bool:
        return self.k in (0, "auto")


# what each final-selection rule does (SelectionSpec.balance; subtasks.py applies them)
BALANCE_HELP = {
    "max": "the top-p rows by score, a score being the best cosine over the target's "
           "subtasks: one easy subtask can take most of the places",
    "subtasks": "the top-p filled round-robin: each subtask in turn takes its best row not "
                "taken yet, so every subtask gets a share",
}


@dataclass(frozen=True)
class SelectionSpec(Spec):
    """ClusterUCB settings; fractions are of the pool size N (docs/METHOD.md section 4). Each
    field's help and label here are the only ones: the CLI flags (`clusterucb select`), the
    app's new-run form and the Python API (`ClusterUCB`) are built from them."""

    policy: POLICY = _f("ucb_beta", label="Policy", help=(
        "arm rule: ucb_beta = mean + beta*std (the paper); ucb1 = classic UCB1; thresh_hard / "
        "thresh_normal = share of draws above the top-quantile; random = the baseline; "
        "thompson = Gaussian Thompson sampling"))
    beta: float = _f(1.0, label="β (exploration)", help="ucb_beta: mean + beta*std")
    cold_start: float = _f(0.05, 0, 1, label="Cold start (fraction per cluster)",
                           help="fraction of each cluster drawn first, at random")
    budget: float = _f(0.2, 0, 1, lo_open=True, label="Budget (fraction of the pool scored)",
                       help="fraction of the pool scored in all, cold start included")
    top_p: float = _f(0.05, 0, 1, lo_open=True, label="Top-p (fraction selected)",
                      help="fraction of the pool selected")
    draw_batch: int = _f(8, 1, label="Draw batch (rows per round)",
                         help="rows drawn per round")
    seed: int = _f(42, 0, label="Seed", help="seed of every random draw")
    quantile: float = _f(0.25, 0, 1, lo_open=True, hi_open=True, label="Quantile (thresh_*)",
                         help="thresh_* policies: tau = the top-q quantile of the draws")
    # Beyond the paper, each off unless bench_fidelity.py measured it to help (README):
    pooled_variance: float = _f(0.0, 0, added=True, label="Pooled variance", help=(
        "ucb_beta's std shrunk toward the pool's, as if seen this many more draws (0 = off)"))
    # The class keeps the paper's default; RunConfig's (pipeline, CLI, app) is "predicted",
    # measured to help (README "Selection fidelity").
    draw_order: DRAW_ORDER = _f("random", added=True, label="Draw order (within the chosen "
                                "cluster)", choices={
        "predicted": "predicted (a reward model on the cluster features)",
        "random": "random (the paper)",
        "similar": "similar to the best rows so far"}, help=(
        "which undrawn rows of the chosen cluster a round scores. random: uniformly, as in the "
        "paper. predicted: the ones a ridge model of the reward on the cluster features ranks "
        "highest; the model is refitted on every row scored so far, and UCB's mean for a "
        "cluster becomes the predicted mean of its next draws. similar: the ones closest to "
        "the best rows scored so far. predicted and similar read the cluster features"))
    balance: Literal["max", "subtasks"] = _f("max", added=True, label="Final selection",
                                             choices={"max": "Top-p by score (LESS)",
                                                      "subtasks": "Round-robin over subtasks"},
                                             help="the final pick only, not the draws. " + "; "
                                             .join(f"{k}: {v}" for k, v in BALANCE_HELP.items()))
    split_hot: int = _f(0, 0, added=True, label="Split hot arms", help=(
        "split a hot arm in two once it has this many scored draws (0 = off; needs the "
        "cluster features)"))
    arms_per_round: int = _f(1, 1, added=True, label="Arms per round", help=(
        "arms a bandit round plays: the m clusters of largest policy index, each drawing "
        "draw_batch rows, scored together in one length-sorted gradient pass that fills the "
        "device batch; 1 is the paper's one arm a round, more gives more rows per gradient "
        "call, decided on slightly older statistics"))

    def check(self) -> None:
        if self.top_p > self.budget:
            raise ConfigError("top_p", self.top_p, f"cannot exceed the budget ({self.budget:g}):"
                              " the selection is taken from the scored rows")
        if self.arms_per_round > 1 and self.split_hot:
            raise ConfigError("arms_per_round", self.arms_per_round, "must be 1 while "
                              "split_hot is on: a hot arm splits after a round of its own")
        if self.split_hot == 1:
            raise ConfigError("split_hot", self.split_hot, "must be 0 (off) or >= 2: an arm's "
                              "spread needs two draws")

    @property
    def needs_features(self) -> bool:
        """A run with these settings needs the cluster features (a draw order, split_hot)."""
        return self.draw_order != "random" or self.split_hot > 0


def to_dict(spec: Any) -> dict[str, Any]:
    """A spec as plain JSON/TOML-ready data (tuples become lists). A field added after work
    was saved (`metadata["added"]`) is left out while at its default, so the fingerprints of
    that work stay valid."""
    out = json.loads(json.dumps(dataclasses.asdict(spec)))
    for f in dataclasses.fields(spec):
        if f.metadata.get("added") and getattr(spec, f.name) == f.default:
            out.pop(f.name, None)
    return out


def reject_unknown(cls: type, data: dict[str, Any], what: str | None = None) -> None:
    """Refuse keys that are not fields of the dataclass `cls`: a typo in a settings file must
    be an error, not a silently ignored line."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{what or cls.__name__}: unknown setting(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(names))}")


def from_dict(cls: type, data: dict[str, Any], what: str | None = None) -> Any:
    """Build a spec from a dict, refusing unknown keys and values that break a field's rule."""
    if not isinstance(data, dict):
        raise ConfigError(what or cls.__name__, data, "must be a table of settings")
    reject_unknown(cls, data, what and f"[{what}]")
    try:
        return cls(**data)
    except ConfigError as exc:
        raise exc.within(what) if what else exc from None


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


# ---------------------------------------------------------------------------------------------
# the whole run
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunConfig(Spec):
    """Everything one end-to-end run needs; `clusterucb run --config run.toml` reads it, and a
    workspace keeps the one it was last set up with in `workspace.json` under `config`."""

    workspace: str = "workspaces/demo"
    pool: str = str(DEMO_POOL)
    pool_format: POOL_FORMAT = "auto"
    pool_shape: POOL_SHAPE = "auto"
    pool_id_field: str = ""  # the column holding row ids ("" = `id`)
    pool_source_field: str = ""  # the column holding sources ("" = `dataset` / `source`)
    target: str = str(DEMO_TARGET)
    run_id: str = "ucb"
    model: ModelSpec = ModelSpec()
    lora: LoraSpec = LoraSpec()
    use_warmup: bool = True
    warmup: WarmupSpec = WarmupSpec()
    # The clustering features need not be the reward features (docs/METHOD.md s.3): forward-only
    # hidden states cost one forward pass per row, so clustering the whole pool stays cheap.
    # Early exit after the first decoder block: the best recall per cost on the demo and the
    # Flan + MMLU pools (bench/bench_fidelity.py; README "Selection fidelity").
    cluster_features: FeatureSpec = FeatureSpec(kind="hidden", layers=1, pooling="answer")
    reward_features: FeatureSpec = FeatureSpec(kind="gradient", mode="adam")
    reward_checkpoints: Literal["last", "all"] = "last"  # all: LESS's lr-weighted sum
    clusters: ClusterSpec = ClusterSpec(condition="center")
    selection: SelectionSpec = SelectionSpec(draw_order="predicted")
    make_map: bool = True
    exhaustive: bool = False  # also score every row (teaching, recall figures)
    # Dynamic ClusterUCB (docs/METHOD.md s.5): > 1 trains one epoch on each selection and selects
    # again at the new checkpoint with the same clusters and a fresh bandit.
    dynamic_rounds: int = _f(1, 1)
    export_dir: str = ""  # default: <workspace>/exports/<run_id>

    def check(self) -> None:
        try:
            check_name(self.run_id, "run id")
        except ValueError as exc:
            raise ConfigError("run_id", self.run_id, str(exc)) from None
        for key in ("workspace", "pool", "target"):
            if not getattr(self, key).strip():
                raise ConfigError(key, getattr(self, key), "must be a path")
        for key in ("pool_id_field", "pool_source_field"):
            value = getattr(self, key)
            if value != value.strip():
                raise ConfigError(key, value, "a column name without leading or trailing spaces")
        if not self.model.name_or_path.strip():
            raise ConfigError("[model] name_or_path", self.model.name_or_path,
                              "must be a model folder or a Hugging Face model id")


# the settings sections of a RunConfig (TOML tables): the one registry of them
SECTIONS: dict[str, type] = {"model": ModelSpec, "lora": LoraSpec, "warmup": WarmupSpec,
                             "cluster_features": FeatureSpec, "reward_features": FeatureSpec,
                             "clusters": ClusterSpec, "selection": SelectionSpec}
_TOP = {f.name for f in dataclasses.fields(RunConfig)} - set(SECTIONS) - {"use_warmup",
                                                                          "export_dir"}


def section_name(name: str) -> str:
    """`name` when it is a settings section; ValueError naming the sections if not."""
    if name not in SECTIONS:
        raise ValueError(f"unknown settings section {name!r}; sections: {', '.join(SECTIONS)}")
    return name


def config_from_dict(data: dict[str, Any], base_dir: Path | None = None, *,
                     lenient: bool = False) -> RunConfig:
    """A RunConfig from TOML-shaped data; relative paths are taken from `base_dir`.

    Unknown keys and bad values raise (a ValueError of one line); `lenient` (for settings a
    workspace saved under an older version) drops unknown keys instead."""
    if not isinstance(data, dict):
        raise ConfigError("config", data, "must be a table of settings")
    data = dict(data)
    defaults = RunConfig()
    kwargs: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        section = data.pop(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"[{name}]", section, "must be a table of settings")
        section = dict(section)
        if name == "warmup" and "enabled" in section:
            enabled = section.pop("enabled")
            if not isinstance(enabled, bool):
                raise ConfigError("[warmup] enabled", enabled, "must be true or false")
            kwargs["use_warmup"] = enabled
        if lenient:
            known = {f.name for f in dataclasses.fields(cls)}
            section = {k: v for k, v in section.items() if k in known}
        base = dataclasses.asdict(getattr(defaults, name))
        base.update(section)
        kwargs[name] = from_dict(cls, base, name)
    export = data.pop("export", {})
    if not isinstance(export, dict):
        raise ConfigError("[export]", export, "must be a table of settings")
    export = dict(export)
    if "out" in export:
        out = export.pop("out")
        if not isinstance(out, str):
            raise ConfigError("[export] out", out, "must be a path")
        kwargs["export_dir"] = out
    if export and not lenient:
        raise ValueError(f"[export]: unknown setting(s) {', '.join(sorted(export))}; known: out")
    unknown = sorted(set(data) - _TOP)
    if unknown and not lenient:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; top-level keys are "
                         f"{', '.join(sorted(_TOP))} and sections "
                         f"{', '.join('[' + s + ']' for s in [*SECTIONS, 'export'])}")
    kwargs.update({k: v for k, v in data.items() if k in _TOP})
    cfg = RunConfig(**kwargs)
    if base_dir is not None:
        cfg = dataclasses.replace(
            cfg, workspace=_under(base_dir, cfg.workspace),
            export_dir=_under(base_dir, cfg.export_dir) if cfg.export_dir else "",
            pool=_existing_under(base_dir, cfg.pool), target=_existing_under(base_dir, cfg.target),
            model=dataclasses.replace(cfg.model, name_or_path=_existing_under(
                base_dir, cfg.model.name_or_path)))
    return cfg


def _under(base: Path, p: str) -> str:
    return p if Path(p).is_absolute() else str((base / p).resolve())


def _existing_under(base: Path, p: str) -> str:
    """A relative path that exists next to the config file; anything else (a hub id such as
    `org/model`, or an absolute path) is kept as written."""
    return _under(base, p) if (base / p).exists() else p


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        data = load_toml(path)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None
    return config_from_dict(data, base_dir=path.resolve().parent)


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The TOML/JSON form of a RunConfig (what `config_from_dict` reads back). Every field
    is written, the added ones too: a section's default in RunConfig can differ from the
    field's own (cluster features run `layers = 1`), so leaving one out would change it."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(RunConfig):
        value = getattr(cfg, f.name)
        if f.name in SECTIONS:
            out[f.name] = json.loads(json.dumps(dataclasses.asdict(value)))
        elif f.name not in ("use_warmup", "export_dir"):
            out[f.name] = value
    out["warmup"]["enabled"] = cfg.use_warmup
    out["export"] = {"out": cfg.export_dir}
    return out


def check_runnable(cfg: RunConfig) -> None:
    """What `clusterucb run` checks before any work: the pool and the target exist, and the
    model is a folder with a config.json or looks like a Hugging Face id (`org/name`)."""
    for key in ("pool", "target"):
        if not Path(getattr(cfg, key)).expanduser().exists():
            raise ConfigError(key, getattr(cfg, key), "no such file or folder")
    name = cfg.model.name_or_path
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ConfigError("[model] name_or_path", name,
                              "this folder has no config.json; it is not a model folder")
    elif not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", name) or name.endswith((".", "-")):
        raise ConfigError("[model] name_or_path", name,
                          "no such folder, and it does not look like a Hugging Face model id")
