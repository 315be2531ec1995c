"""The whole ClusterUCB path as resumable stages over one workspace.

pool + target + model -> warm-up checkpoint -> cluster features -> clusters (+ map)
-> target features -> SelectionRun with a lazy oracle -> export.

Every stage writes its output into the workspace and is skipped when that output already
exists for the same inputs, so `clusterucb run --config` (and `clusterucb demo`) can be killed
and rerun: each store resumes where it stopped and the selection reopens from its log. The app
uses the same `Pipeline` so the browser and the CLI meet at the same files.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import atomic
from .config import (DEMO_DIR, DEMO_POOL, ClusterSpec, FeatureSpec, LoraSpec, ModelSpec,
                     SelectionSpec, WarmupSpec, fingerprint, from_dict, load_toml, to_dict)
from .workspace import Workspace, check_name

Log = Callable[[str], None]
DEMO_TARGET = DEMO_DIR / "targets" / "arithmetic.jsonl"
SCORES_DIR = "scores"


@dataclass(frozen=True)
class RunConfig:
    """Everything one end-to-end run needs; `clusterucb run --config run.toml` reads it."""

    workspace: str = "workspaces/demo"
    pool: str = str(DEMO_POOL)
    pool_format: str = "auto"  # jsonl | json | csv | tsv | parquet | datasets
    pool_shape: str = "auto"  # messages | alpaca | sharegpt | prompt_completion
    pool_id_field: str = ""  # the column holding row ids ("" = `id`)
    pool_source_field: str = ""  # the column holding sources ("" = `dataset` / `source`)
    target: str = str(DEMO_TARGET)
    run_id: str = "ucb"
    model: ModelSpec = ModelSpec()
    lora: LoraSpec = LoraSpec()
    use_warmup: bool = True
    warmup: WarmupSpec = WarmupSpec()
    # The clustering features need not be the reward features (METHOD.md s.3): forward-only
    # hidden states cost one forward pass per row, so clustering the whole pool stays cheap.
    cluster_features: FeatureSpec = FeatureSpec(kind="hidden")
    reward_features: FeatureSpec = FeatureSpec(kind="gradient", mode="adam")
    reward_checkpoints: str = "last"  # last | all (LESS: lr-weighted sum over checkpoints)
    clusters: ClusterSpec = ClusterSpec()
    selection: SelectionSpec = SelectionSpec()
    make_map: bool = True
    exhaustive: bool = False  # also score every row (teaching, recall figures)
    # Dynamic ClusterUCB (METHOD.md s.5): > 1 trains one epoch on each selection and selects
    # again at the new checkpoint with the same clusters and a fresh bandit.
    dynamic_rounds: int = 1
    export_dir: str = ""  # default: <workspace>/exports/<run_id>


_SECTIONS: dict[str, type] = {"model": ModelSpec, "lora": LoraSpec, "warmup": WarmupSpec,
                              "cluster_features": FeatureSpec, "reward_features": FeatureSpec,
                              "clusters": ClusterSpec, "selection": SelectionSpec}


def config_from_dict(data: dict[str, Any], base_dir: Path | None = None) -> RunConfig:
    """A RunConfig from TOML-shaped data; relative paths are taken from `base_dir`."""
    data = dict(data)
    kwargs: dict[str, Any] = {}
    defaults = RunConfig()
    for name, cls in _SECTIONS.items():
        section = dict(data.pop(name, {}))
        if name == "warmup" and "enabled" in section:
            kwargs["use_warmup"] = bool(section.pop("enabled"))
        base = dataclasses.asdict(getattr(defaults, name))
        base.update(section)
        kwargs[name] = from_dict(cls, base)
    export = dict(data.pop("export", {}))
    if export:
        kwargs["export_dir"] = str(export.pop("out", ""))
        if export:
            raise ValueError(f"[export]: unknown setting(s) {', '.join(sorted(export))}")
    known = {f.name for f in dataclasses.fields(RunConfig)} - set(_SECTIONS) - {"use_warmup"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; top-level keys are "
                         f"{', '.join(sorted(known))} and sections "
                         f"{', '.join('[' + s + ']' for s in [*_SECTIONS, 'export'])}")
    kwargs.update(data)
    cfg = RunConfig(**kwargs)
    if base_dir is not None:
        cfg = replace(cfg, workspace=_under(base_dir, cfg.workspace),
                      export_dir=_under(base_dir, cfg.export_dir) if cfg.export_dir else "",
                      pool=_existing_under(base_dir, cfg.pool),
                      target=_existing_under(base_dir, cfg.target),
                      model=replace(cfg.model,
                                    name_or_path=_existing_under(base_dir, cfg.model.name_or_path)))
    return cfg


def _under(base: Path, p: str) -> str:
    return p if Path(p).is_absolute() else str((base / p).resolve())


def _existing_under(base: Path, p: str) -> str:
    """A relative path that exists next to the config file; anything else (a hub id such as
    `org/model`, or an absolute path) is kept as written."""
    return _under(base, p) if (base / p).exists() else p


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    return config_from_dict(load_toml(path), base_dir=path.resolve().parent)


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(RunConfig):
        value = getattr(cfg, f.name)
        if f.name in _SECTIONS:
            out[f.name] = to_dict(value)
        elif f.name not in ("use_warmup", "export_dir"):
            out[f.name] = value
    out["warmup"]["enabled"] = cfg.use_warmup
    out["export"] = {"out": cfg.export_dir}
    return out


class Pipeline:
    """One configured run over one workspace; each property computes its stage once."""

    def __init__(self, cfg: RunConfig, log: Log | None = print):
        self.cfg = cfg
        self.ws = Workspace.open(cfg.workspace)
        self.ws.update_meta(config=config_to_dict(cfg))
        self._log = log or (lambda _msg: None)
        self._reward_override: list[Path] | None = None
        self.work = {"cluster_feature_rows": 0, "reward_gradient_rows": 0,
                     "target_gradient_rows": 0}

    @classmethod
    def from_workspace(cls, root: str | Path, log: Log | None = print) -> "Pipeline":
        """The pipeline last configured in a workspace (the app and `clusterucb select`
        continue where `run`/`demo` or the browser left off)."""
        ws = Workspace.open(root, create=False)
        saved = ws.meta().get("config")
        if saved is None:
            raise ValueError(f"workspace {ws.root} has no saved run settings yet; run "
                             "`clusterucb run --config ...` or set it up in the app first")
        cfg = config_from_dict(saved)
        return cls(replace(cfg, workspace=str(ws.root)), log=log)

    def log(self, msg: str) -> None:
        self._log(msg)

    def progress(self, stage: str) -> Callable[..., None]:
        """A progress callback that logs at most a line every 5 s per stage, with rate and ETA."""
        last = {"t": 0.0}

        def report(done: int, total: int, message: str = "", **extra: Any) -> None:
            now = time.monotonic()
            if done not in (0, total) and now - last["t"] < 5.0:
                return
            last["t"] = now
            rate, eta = extra.get("rate"), extra.get("eta_s")
            tail = f" {rate:.1f}/s" if rate else ""
            tail += f" ETA {eta:.0f}s" if eta else ""
            self.log(f"  [{stage}] {message or f'{done}/{total}'}{tail}")
        return report

    # ------------------------------------------------------------------ inputs
    @cached_property
    def pool(self):
        from .pool import load_pool

        pool = load_pool(self.cfg.pool, format=self.cfg.pool_format, shape=self.cfg.pool_shape,
                         cache_dir=self.ws.pool_cache(),
                         id_field=self.cfg.pool_id_field or None,
                         source_field=self.cfg.pool_source_field or None)
        rep = pool.report
        self.log(f"pool: {len(pool)} rows from {pool.path} ({pool.format}, {pool.shape})"
                 + (f", {len(rep.problems)} problem(s) reported" if rep.problems else ""))
        self.ws.update_meta(pool={"path": str(pool.path), "fingerprint": pool.fingerprint,
                                  "format": pool.format, "shape": pool.shape,
                                  "id_field": self.cfg.pool_id_field,
                                  "source_field": self.cfg.pool_source_field,
                                  "n_rows": len(pool)})
        return pool

    @cached_property
    def target(self):
        from .targets import load_target

        target = load_target(self.cfg.target)
        self.log(f"target: {target.name} ({len(target.examples)} examples, "
                 f"{len(target.subtasks)} subtasks)")
        self.ws.update_meta(target={"path": str(self.cfg.target), "name": target.name,
                                    "fingerprint": target.fingerprint})
        return target

    # ------------------------------------------------------------------ warm-up
    @property
    def warmup_dir(self) -> Path:
        """Where this pool/model/LoRA/warm-up setting's checkpoints live."""
        from .model import weights_fingerprint

        c = self.cfg
        # The model by content, not path: a moved repository or workspace keeps its warm-up.
        key = fingerprint(self.pool.fingerprint, weights_fingerprint(c.model.name_or_path),
                          replace(c.model, name_or_path=""), c.lora, c.warmup)
        return self.ws.checkpoints(f"warmup-{key[:8]}")

    def warmup_ready(self) -> bool:
        """True when the warm-up for these settings is trained (nothing to compute)."""
        from .warmup import json_load

        info = self.warmup_dir / "warmup.json"
        try:
            return info.exists() and json_load(info).get("status") == "done"
        except (OSError, ValueError):
            return False

    @cached_property
    def checkpoints(self) -> list[Path]:
        """The warm-up checkpoints (epoch order), trained once per distinct setting."""
        if not self.cfg.use_warmup:
            return []
        from .model import find_checkpoints
        from .warmup import warmup

        out = self.warmup_dir
        if self.warmup_ready():
            ckpts = find_checkpoints(out)
            self.log(f"warm-up: reusing {len(ckpts)} checkpoint(s) in {out}")
            return ckpts
        self.log(f"warm-up: training LoRA on {self.cfg.warmup.fraction:.0%} of the pool "
                 f"into {out}")
        return warmup(self.pool, self.cfg.model, self.cfg.lora, self.cfg.warmup, out,
                      progress=self.progress("warm-up"))

    def at_checkpoint(self, checkpoint: str | Path) -> "Pipeline":
        """The same pool, target and clusters, with rewards taken at another checkpoint."""
        other = Pipeline.__new__(Pipeline)
        other.cfg, other.ws, other._log = self.cfg, self.ws, self._log
        other.work = dict.fromkeys(self.work, 0)
        for name in ("pool", "target", "checkpoints", "cluster_store", "clusters"):
            if name in self.__dict__:
                other.__dict__[name] = self.__dict__[name]
        other._reward_override = [Path(checkpoint)]
        return other

    @property
    def reward_checkpoints(self) -> list[Path | None]:
        if self._reward_override is not None:
            return list(self._reward_override)
        if not self.checkpoints:
            return [None]
        return list(self.checkpoints) if self.cfg.reward_checkpoints == "all" \
            else [self.checkpoints[-1]]

    def checkpoint_weights(self) -> list[float] | None:
        """LESS weights each checkpoint by its epoch's average learning rate."""
        cks = self.reward_checkpoints
        if len(cks) < 2:
            return None
        from .model import checkpoint_meta

        lrs = [float(checkpoint_meta(c)["avg_lr"]) for c in cks]
        total = sum(lrs)
        return [lr / total for lr in lrs] if total > 0 else [1 / len(lrs)] * len(lrs)

    # ------------------------------------------------------------------ clustering
    @cached_property
    def cluster_store(self):
        from .features import FeatureEngine, store_name

        spec = self.cfg.cluster_features
        # Hidden states come from the base model; gradients use the warm-up checkpoint.
        ckpt = self.checkpoints[0] if spec.kind == "gradient" and self.checkpoints else None
        path = self.ws.features(store_name(spec, ckpt))
        self.log(f"cluster features: {spec.kind} -> {path.name}")
        engine = FeatureEngine(self.pool, self.cfg.model, self.cfg.lora, ckpt, spec, path)
        if spec.engine == "ray":
            from .ray_engine import compute_with_ray

            compute_with_ray(engine, progress=self.progress("cluster features"))
            store = engine.store()
        else:
            store = engine.compute(progress=self.progress("cluster features"))
        self.work["cluster_feature_rows"] = store.n_rows
        return store

    @property
    def clusters_name(self) -> str:
        k = self.cfg.clusters.k
        return check_name(f"{self.cluster_store.path.name}-k{k if k else 'auto'}")

    @cached_property
    def clusters(self):
        from .clusterset import load_clusters, save_clusters
        from .kmeans import cluster_features, fits_in_memory
        from .kscan import k_scan, pick_k
        from .summaries import summarize_clusters

        store, spec = self.cluster_store, self.cfg.clusters
        name = self.clusters_name
        try:
            cs = load_clusters(self.ws, name, features_fingerprint=store.fingerprint)
            if cs.meta.get("spec") == to_dict(spec):
                self.log(f"clusters: reusing {name} (K={cs.k})")
                return cs
        except (FileNotFoundError, ValueError):
            pass
        scan = None
        k = spec.k
        if k <= 0:
            scan = k_scan(store, seed=spec.seed)
            k = pick_k(scan)
            self.log(f"clusters: K scan picked K={k}")
        # The store is read in chunks; one float32 copy is made only when it fits.
        minibatch = spec.minibatch or not fits_in_memory(store.n_rows, store.dim)
        if minibatch and not spec.minibatch:
            self.log("clusters: the features would not fit in memory; streaming mini-batches")
        result = cluster_features(store, k, seed=spec.seed, max_iter=spec.max_iter, tol=spec.tol,
                                  minibatch=minibatch, batch_size=spec.batch_size,
                                  progress=self.progress("k-means"))
        summary = summarize_clusters(self.pool.frame(), result.labels, store, result.centroids)
        save_clusters(self.ws, name, result, features_fingerprint=store.fingerprint, spec=spec,
                      features_name=store.path.name, summary=summary, kscan=scan)
        self.log(f"clusters: K={k} saved as {name}")
        return load_clusters(self.ws, name)

    @cached_property
    def map(self):
        from .embedding2d import compute_map

        store = self.cluster_store
        res = compute_map(store, self.ws, features_fingerprint=store.fingerprint,
                          progress=self.progress("map"))
        self.log(f"map: {res.note}")
        return res

    # ------------------------------------------------------------------ rewards
    @cached_property
    def reward_engines(self):
        """One loaded model per reward checkpoint, kept alive so lazy rounds reuse it."""
        from .features import FeatureEngine, store_name

        spec = self.cfg.reward_features
        if spec.mode == "adam" and not self.checkpoints:
            self.log("reward features: no warm-up checkpoint, so plain SGD gradients")
            spec = replace(spec, mode="sgd")
        return [FeatureEngine(self.pool, self.cfg.model, self.cfg.lora, ck, spec,
                              self.ws.features(store_name(spec, ck)))
                for ck in self.reward_checkpoints]

    @cached_property
    def target_features(self) -> tuple[list[np.ndarray], np.ndarray]:
        from .features import target_features, target_name

        feats, ids = [], None
        for eng in self.reward_engines:
            out = self.ws.targets(target_name(self.target, eng.checkpoint_dir))
            f, ids = target_features(self.target, self.cfg.model, self.cfg.lora,
                                     eng.checkpoint_dir, eng.spec, out_dir=out, engine=eng,
                                     progress=self.progress("target gradients"))
            feats.append(f)
        self.work["target_gradient_rows"] = int(len(ids)) * len(feats)
        return feats, ids

    def compute_reward_rows(self, rows: np.ndarray) -> None:
        for eng in self.reward_engines:
            eng.compute(rows, progress=self.progress("reward gradients"))

    @cached_property
    def oracle(self):
        from .oracle import LazyOracle

        feats, ids = self.target_features
        stores = [eng.store() for eng in self.reward_engines]
        multi = len(stores) > 1
        oracle = LazyOracle.from_store(stores[0], self._count(self.compute_reward_rows),
                                       feats if multi else feats[0], ids,
                                       weights=self.checkpoint_weights(),
                                       stores=stores if multi else None)
        oracle.info["target"] = self.target.fingerprint
        return oracle

    def _count(self, fn: Callable[[np.ndarray], None]) -> Callable[[np.ndarray], None]:
        def counted(rows: np.ndarray) -> None:
            fn(rows)
            self.work["reward_gradient_rows"] += int(len(rows))
        return counted

    @property
    def scores_path(self) -> Path:
        """Exhaustive scores, where `clusterucb select` and the app look for them."""
        return self.ws.root / SCORES_DIR / "exhaustive.npy"

    def _scores_identity(self) -> dict[str, Any]:
        return {"stores": [eng.fingerprint for eng in self.reward_engines],
                "target": self.target.fingerprint, "weights": self.checkpoint_weights()}

    def known_exhaustive(self) -> np.ndarray | None:
        """The saved exhaustive scores when they were made from these features and target."""
        meta = self.scores_path.with_suffix(".json")
        if not (self.scores_path.exists() and meta.exists()):
            return None
        import json

        if json.loads(meta.read_text()).get("identity") != self._scores_identity():
            return None
        return np.load(self.scores_path)

    def exhaustive_scores(self) -> np.ndarray:
        """Every row scored (LESS without the bandit): for teaching and recall figures."""
        known = self.known_exhaustive()
        if known is not None:
            return known
        self.log("exhaustive scoring: a gradient for every row")
        scores = self.oracle.score(np.arange(len(self.pool)))
        with atomic.atomic_path(self.scores_path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, scores)
        atomic.write_json(self.scores_path.with_suffix(".json"),
                          {"identity": self._scores_identity(), "n_rows": len(scores)})
        return scores

    # ------------------------------------------------------------------ selection
    def ledger(self):
        from .curation import Ledger

        return Ledger(self.ws.ledger_path, clustering=self.clusters.name)

    def selection(self, run_id: str | None = None, spec: SelectionSpec | None = None):
        """A SelectionRun with the lazy oracle: the saved one reopened (refused when `spec` is
        given and differs), or a new one with `spec` (default: the config's)."""
        from .runlog import RunLog, RunMeta
        from .runs import new_run, open_run

        run_id = check_name(run_id or self.cfg.run_id, "run id")
        if RunLog(self.ws.runs(run_id)).exists():
            run = open_run(self.ws, run_id, self.oracle)
            if spec is not None and run.spec != spec:
                raise ValueError(f"run {run_id!r} exists with other settings "
                                 f"({to_dict(run.spec)}); choose another run id")
            return run
        meta = RunMeta(clustering=self.clusters.name, reward="lazy", workspace=self.ws.name,
                       config=config_to_dict(self.cfg))
        return new_run(self.ws, run_id, spec or self.cfg.selection, meta, self.oracle)

    def run_all(self) -> dict[str, Any]:
        """Every stage in order; returns a summary (also written to the run folder)."""
        t0 = time.perf_counter()
        _ = self.pool, self.target, self.checkpoints, self.clusters
        if self.cfg.make_map:
            _ = self.map
        if self.cfg.dynamic_rounds > 1:
            summary = self.run_dynamic(self.cfg.dynamic_rounds)
        else:
            summary = self.run_selection(self.cfg.run_id)
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        return summary

    def run_selection(self, run_id: str, export_dir: str | Path | None = None) -> dict[str, Any]:
        """Run (or continue) one selection to its end and export it."""
        exhaustive = self.exhaustive_scores() if self.cfg.exhaustive else self.known_exhaustive()
        run = self.selection(run_id, self.cfg.selection)
        while not run.done:
            rec = run.step()
            self.log(f"  round {rec.round}: arm {rec.arm}, {len(rec.rows)} rows, "
                     f"budget {rec.budget_used}/{run.budget_total}")
        summary = {"run_id": run_id, "selected": int(len(run.selected())),
                   "budget_used": int(run.budget_used), "budget_total": int(run.budget_total),
                   "rounds": len(run.records), "work": dict(self.work)}
        if exhaustive is not None:
            from .oracle import run_metrics

            summary["metrics"] = run_metrics(run, exhaustive)
        summary["export"] = str(self.export(run, run_id, export_dir))
        atomic.write_json(self.ws.runs(run_id) / "summary.json", summary)
        return summary

    def run_dynamic(self, rounds: int) -> dict[str, Any]:
        """Dynamic ClusterUCB: select; train one epoch on the selection from the current
        checkpoint; take the new checkpoint (new target gradients, new reward features); select
        again with the same clusters and a fresh bandit. Records the gradient work spent
        against recomputing every row at every checkpoint."""
        from .warmup import warmup

        if not self.checkpoints:
            raise ValueError("the dynamic variant continues a warm-up checkpoint: enable "
                             "[warmup]")
        epoch = replace(self.cfg.warmup, epochs=1, max_steps=0)
        pipe: Pipeline = self.at_checkpoint(self.checkpoints[-1])
        steps = []
        for r in range(rounds):
            run_id = check_name(f"{self.cfg.run_id}-dyn{r}", "run id")
            self.log(f"dynamic round {r + 1}/{rounds} at {pipe.reward_checkpoints[0]}")
            out = Path(self.cfg.export_dir) / run_id if self.cfg.export_dir else None
            step = pipe.run_selection(run_id, out)
            step["checkpoint"] = str(pipe.reward_checkpoints[0])
            steps.append(step)
            if r + 1 < rounds:
                rows = pipe.selection(run_id).selected()
                ck_dir = self.ws.checkpoints(f"{self.cfg.run_id}-dyn{r + 1}")
                ckpt = warmup(self.pool, self.cfg.model, self.cfg.lora, epoch, ck_dir,
                              progress=self.progress("dynamic epoch"), rows=rows,
                              init_checkpoint=pipe.reward_checkpoints[0])[-1]
                pipe = self.at_checkpoint(ckpt)
        n = len(self.pool)
        spent = sum(s["work"]["reward_gradient_rows"] for s in steps)
        summary = {"run_id": self.cfg.run_id, "dynamic_rounds": steps,
                   "work": {"reward_gradient_rows": spent,
                            "cluster_feature_rows": self.work["cluster_feature_rows"],
                            "exhaustive_alternative_gradient_rows": rounds * n,
                            "fraction_of_exhaustive": round(spent / (rounds * n), 4)}}
        atomic.write_json(self.ws.root / "dynamic" / f"{self.cfg.run_id}.json", summary)
        return summary

    def export(self, run, run_id: str, out_dir: str | Path | None = None) -> Path:
        """The selection as files ready for training (see export.py), written atomically."""
        from .export import export_selection

        out = Path(out_dir or self.cfg.export_dir or self.ws.exports(run_id))
        path = export_selection(
            out, self.pool, run.result(), run_id=run_id, clustering=self.clusters.name,
            cluster_names=self.clusters.cluster_names(), oracle_info=self.oracle.describe(),
            ledger_state=self.ledger().state(), log_path=run.log_path,
            exhaustive=self.known_exhaustive(), extra={"config": config_to_dict(self.cfg)})
        self.log(f"export: {len(run.result().rows)} rows -> {path}")
        return path
