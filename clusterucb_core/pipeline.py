"""The whole ClusterUCB path as resumable stages over one workspace.

pool + target + model -> warm-up checkpoint -> cluster features -> clusters (+ map)
-> target features -> SelectionRun with a lazy oracle -> export.

Every stage writes its output into the workspace and is skipped when that output already
exists for the same inputs, so `clusterucb run --config` (and `clusterucb demo`) can be killed
and rerun: each store resumes where it stopped and the selection reopens from its log. The app
uses the same `Pipeline` so the browser and the CLI meet at the same files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from dataclasses import replace as _replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from clusterucb_core.clustering import conditioning
from clusterucb_core.clustering.clusterset import load_clusters, save_clusters
from clusterucb_core.clustering.embedding2d import compute_map
from clusterucb_core.clustering.kmeans import cluster_features, fits_in_memory
from clusterucb_core.clustering.krule import choose_k_with_scan
from clusterucb_core.clustering.summaries import summarize_clusters
from clusterucb_core.config import (
    FeatureSpec,
    RunConfig,
    SelectionSpec,
    WarmupSpec,
    config_from_dict,
    config_to_dict,
    effective_max_length,
    feature_options,
    fingerprint,
    to_dict,
)
from clusterucb_core.data.load import load_pool
from clusterucb_core.data.pool_record import problems_sentence, problems_summary, record_pool
from clusterucb_core.data.targets import load_target
from clusterucb_core.export.files import export_selection
from clusterucb_core.features.engine import (
    TARGET_FEATURES,
    TARGET_MANIFEST,
    FeatureEngine,
    store_name,
    target_features,
    target_name,
)
from clusterucb_core.features.influence import subtask_scores
from clusterucb_core.features.model import (
    SharedBase,
    checkpoint_meta,
    find_checkpoints,
    free_memory,
    load_tokenizer,
    weights_fingerprint,
)
from clusterucb_core.features.planner import plan_summary
from clusterucb_core.features.scorable import (
    format_report,
    load_report,
    report_key,
    save_report,
    target_manifest_sentence,
)
from clusterucb_core.features.store import FeatureStore
from clusterucb_core.features.warmup import json_load, warmup
from clusterucb_core.runtime import atomic
from clusterucb_core.runtime.timings import StageClock
from clusterucb_core.selection import exhaustive
from clusterucb_core.selection.audit import audit_run
from clusterucb_core.selection.curation import Ledger
from clusterucb_core.selection.oracle import LazyOracle
from clusterucb_core.selection.runlog import RunLog, RunMeta
from clusterucb_core.selection.runs import new_run, open_run
from clusterucb_core.selection.subtasks import BALANCES, balanced_top, best_subtask
from clusterucb_core.selection.takeover import counts_of, takeover
from clusterucb_core.workspace import Workspace, check_name

Log = Callable[[str], None]


def warmup_key(spec: WarmupSpec) -> dict[str, Any]:
    """The warm-up settings that change its checkpoints: not how rows are split into
    micro-batches or whether activations are recomputed (the same objective), and no clipping
    (0) keys as warm-ups made before clipping existed."""
    d = to_dict(spec)
    d.pop("micro_batch_size")
    d.pop("gradient_checkpointing")
    if not d["max_grad_norm"]:
        d.pop("max_grad_norm")
    return d


def warmup_name(pool_fingerprint: str, model: Any, lora: Any, warmup: WarmupSpec) -> str:
    """The checkpoint set `warmup-<key>` of one pool/model/LoRA/warm-up setting (`run` trains
    it, `features` finds it)."""

    # The model by content, not path: a moved repository or workspace keeps its warm-up.
    key = fingerprint(pool_fingerprint, weights_fingerprint(model.name_or_path),
                      replace(model, name_or_path=""), lora, warmup_key(warmup))
    return f"warmup-{key[:8]}"


def clusters_name(store: str, spec: Any) -> str:
    """A clustering's folder name, from its feature store and settings (`run`, `cluster`)."""
    cond = f"-{spec.condition}" if spec.condition != "none" else ""
    k = ("auto" if spec.k_rule == "silhouette" else spec.k_rule) if spec.auto_k else spec.k
    return check_name(f"{store}{cond}-k{k}")


def describe_features(spec: FeatureSpec, model_max_length: int) -> str:
    """One sentence naming the cluster features and why they cost what they do."""
    ml = effective_max_length(spec, model_max_length)
    if spec.kind == "hidden":
        depth = (f"the first {spec.layers} decoder block(s) only (early exit)" if spec.layers
                 else "the whole model")
        return (f"forward-only hidden states ({spec.pooling}-pooled) from {depth}, rows cut to "
                f"{ml} tokens: one partial forward pass per row, no gradient")
    top = f"the top {spec.top_blocks} block(s)" if spec.top_blocks else "every LoRA layer"
    return (f"{spec.mode} LoRA gradients of {top}, projected to {spec.dim} dimensions, rows cut "
            f"to {ml} tokens: a forward and a backward pass per row")


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
        self.clock = StageClock(self.ws.root)  # measured seconds per stage (the planner's)
        self._reward_stage = "bandit_gradients"

    @classmethod
    def from_workspace(cls, root: str | Path, log: Log | None = print) -> Pipeline:
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

        pool = load_pool(self.cfg.pool, format=self.cfg.pool_format, shape=self.cfg.pool_shape,
                         cache_dir=self.ws.pool_cache(),
                         id_field=self.cfg.pool_id_field or None,
                         source_field=self.cfg.pool_source_field or None)
        self.__dict__["pool_problems"] = problems = problems_summary(self.ws.root, pool)
        said = problems_sentence(problems)
        self.log(f"pool: {len(pool)} rows from {pool.path} ({pool.format}, {pool.shape})"
                 + (f"; {said}" if said else ""))
        record_pool(self.ws, pool, self.cfg.pool_id_field, self.cfg.pool_source_field)
        return pool

    @cached_property
    def pool_problems(self) -> dict[str, Any]:
        """Dropped rows and warnings of the pool (set when the pool is read)."""
        return problems_summary(self.ws.root, self.pool)

    @cached_property
    def target(self):

        target = load_target(self.cfg.target)
        self.log(f"target: {target.name} ({len(target.examples)} examples, "
                 f"{len(target.subtasks)} subtasks)")
        self.ws.update_meta(target={"path": str(self.cfg.target), "name": target.name,
                                    "fingerprint": target.fingerprint})
        return target

    @cached_property
    def format_report(self):
        """How truncation treats the pool's rows and which rows cannot be scored (tokenizer
        only; computed once per pool and formatting setting, kept in the workspace)."""

        key = report_key(self.pool.fingerprint, self.cfg.model)
        rep = load_report(self.ws.root, key)
        if rep is None:
            rep = format_report(list(self.pool.table["messages"]),
                                load_tokenizer(self.cfg.model), self.cfg.model)
            save_report(self.ws.root, key, rep)
        summary = {k: v for k, v in rep.to_dict().items() if k != "unscorable"}
        self.ws.update_meta(formatting={**summary, "key": key, "sentence": rep.sentence()})
        self.log(f"formatting: {rep.sentence()}")
        return rep

    # ------------------------------------------------------------------ warm-up
    @property
    def warmup_dir(self) -> Path:
        """Where this pool/model/LoRA/warm-up setting's checkpoints live."""
        c = self.cfg
        return self.ws.checkpoints(warmup_name(self.pool.fingerprint, c.model, c.lora, c.warmup))

    def warmup_ready(self) -> bool:
        """True when the warm-up for these settings is trained (nothing to compute)."""

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

        out = self.warmup_dir
        if self.warmup_ready():
            ckpts = find_checkpoints(out)
            self.log(f"warm-up: reusing {len(ckpts)} checkpoint(s) in {out}")
            return ckpts
        self.log(f"warm-up: training LoRA on {self.cfg.warmup.fraction:.0%} of the pool "
                 f"into {out}")
        with self.clock.stage("warmup", key=out.name):
            ckpts = warmup(self.pool, self.cfg.model, self.cfg.lora, self.cfg.warmup, out,
                           progress=self.progress("warm-up"))

        info = json_load(out / "warmup.json")  # rows passed through the model, all steps
        with self.clock.stage("warmup", key=out.name, rows=len(info["rows"]) *
                              info["total_steps"] / max(info["steps_per_epoch"], 1)):
            pass
        return ckpts

    def at_checkpoint(self, checkpoint: str | Path) -> Pipeline:
        """The same pool, target and clusters, with rewards taken at another checkpoint."""
        other = Pipeline.__new__(Pipeline)
        other.cfg, other.ws, other._log = self.cfg, self.ws, self._log
        other.work = dict.fromkeys(self.work, 0)
        other.clock, other._reward_stage = self.clock, self._reward_stage
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

        lrs = [float(checkpoint_meta(c)["avg_lr"]) for c in cks]
        total = sum(lrs)
        return [lr / total for lr in lrs] if total > 0 else [1 / len(lrs)] * len(lrs)

    # ------------------------------------------------------------------ clustering
    @cached_property
    def cluster_store(self):

        spec = self.cfg.cluster_features
        # Hidden states come from the base model; gradients use the warm-up checkpoint.
        ckpt = self.checkpoints[0] if spec.kind == "gradient" and self.checkpoints else None
        path = self.ws.features(store_name(spec, ckpt))
        self.log(f"cluster features: {spec.kind} -> {path.name}")
        with self.clock.stage("model_load", key="loads", rows=1):
            engine = FeatureEngine(self.pool, self.cfg.model, self.cfg.lora, ckpt, spec, path)
        todo = len(engine.store().missing())
        t0 = time.perf_counter()
        with self.clock.stage("cluster_features", key=path.name, rows=todo):
            if spec.engine == "ray":
                from clusterucb_core.features.ray_engine import compute_with_ray

                compute_with_ray(engine, progress=self.progress("cluster features"))
                store = engine.store()
            else:
                store = engine.compute(progress=self.progress("cluster features"))
        self.work["cluster_feature_rows"] = store.n_rows
        if todo:  # what one row cost, kept in the store for the Clusters page
            store.annotate("compute_ms_per_row",
                           round((time.perf_counter() - t0) * 1e3 / todo, 3))
        return store

    @property
    def clusters_name(self) -> str:
        return clusters_name(self.cluster_store.path.name, self.cfg.clusters)

    @cached_property
    def clusters(self):

        store, spec = self.cluster_store, self.cfg.clusters
        name = self.clusters_name
        try:
            cs = load_clusters(self.ws, name, features_fingerprint=store.fingerprint)
            if cs.meta.get("spec") == to_dict(spec):
                self.log(f"clusters: reusing {name} (K={cs.k})")
                return cs
        except (FileNotFoundError, ValueError):
            pass
        # the k-means fit is the planner's stage; conditioning, K, summaries and saving are
        # measured beside it
        with self.clock.stage("clustering_other", key=name, rows=store.n_rows):
            return self._cluster(store, spec, name)

    def _cluster(self, store, spec, name: str):
        """Condition, choose K, run k-means, summarise and save the clusters."""

        # The store is read in chunks; one float32 copy is made only when it fits.
        minibatch = spec.minibatch or not fits_in_memory(store.n_rows, store.dim)
        if minibatch and not spec.minibatch:
            self.log("clusters: the features would not fit in memory; streaming mini-batches")
        cond = conditioning.fit(store, spec.condition, seed=spec.seed)
        X: Any = conditioning.conditioned(store, cond)  # read chunk by chunk, like the store
        unscorable = self.format_report.mask()
        scan, k, why = None, spec.k, f"K={spec.k} was set by hand"
        if spec.auto_k:
            k, why, scan = choose_k_with_scan(spec.k_rule, n_rows=int((~unscorable).sum()),
                                              cold_start=self.cfg.selection.cold_start, X=X,
                                              seed=spec.seed)
        self.log(f"clusters: {why}")
        with self.clock.stage("kmeans", key=name, rows=store.n_rows):
            result = cluster_features(X, k, seed=spec.seed, max_iter=spec.max_iter,
                                      tol=spec.tol, minibatch=minibatch,
                                      batch_size=spec.batch_size, n_init=spec.n_init,
                                      progress=self.progress("k-means"))
        # rows that cannot be scored are in no arm: the bandit never spends budget on them
        result.labels[unscorable] = -1
        summary = summarize_clusters(self.pool, result.labels, store, result.centroids)
        cost = self.cluster_feature_cost()
        path = save_clusters(self.ws, name, result, features_fingerprint=store.fingerprint,
                             spec=spec, features_name=store.path.name, summary=summary,
                             kscan=scan, extra={"k_reason": why, "condition": cond.kind,
                                                "n_unscorable": int(unscorable.sum()),
                                                "feature_cost": cost})
        cond.save(path)
        self.log(f"clusters: K={k} saved as {name}")
        return load_clusters(self.ws, name)

    def cluster_feature_cost(self) -> dict[str, Any]:
        """What the cluster features are and what they cost, in the words the Clusters page
        uses: kind, options and the rows computed."""

        spec = self.cfg.cluster_features
        return {"kind": spec.kind, "options": feature_options(spec),
                "rows": int(self.cluster_store.n_rows),
                "ms_per_row": self.cluster_store.manifest.get("compute_ms_per_row"),
                "what": describe_features(spec, self.cfg.model.max_length)}

    @cached_property
    def map(self):

        store = self.cluster_store
        res = compute_map(store, self.ws, features_fingerprint=store.fingerprint,
                          progress=self.progress("map"))
        self.log(f"map: {res.note}")
        return res

    # ------------------------------------------------------------------ rewards
    @cached_property
    def reward_engines(self):
        """One engine per reward checkpoint, kept alive so lazy rounds reuse it; they share
        one base model, each checkpoint a named adapter on it."""

        spec = self.reward_spec
        if spec.mode != self.cfg.reward_features.mode:
            self.log("reward features: no warm-up checkpoint, so plain SGD gradients")
        with self.clock.stage("model_load", key="loads", rows=1):
            base = SharedBase(self.cfg.model)
            engines = [FeatureEngine(self.pool, self.cfg.model, self.cfg.lora, ck, spec, path,
                                     base=base)
                       for ck, path in zip(self.reward_checkpoints, self.reward_store_paths())]
        rep = self.format_report
        note = {k: v for k, v in rep.to_dict().items() if k != "unscorable"}
        for eng in engines:
            if eng.store().manifest.get("formatting") != {**note, "sentence": rep.sentence()}:
                eng.store().annotate("formatting", {**note, "sentence": rep.sentence()})
        return engines

    @property
    def reward_spec(self) -> FeatureSpec:
        """The reward features' settings as used: Adam needs a checkpoint, else plain SGD."""
        spec = self.cfg.reward_features
        if spec.mode == "adam" and not self.checkpoints:
            return replace(spec, mode="sgd")
        return spec

    def reward_store_paths(self) -> list[Path]:
        """Where each reward checkpoint's features are stored (known without the model)."""

        return [self.ws.features(store_name(self.reward_spec, ck))
                for ck in self.reward_checkpoints]

    def subtasks_ready(self, rows: np.ndarray) -> str | None:
        """None when the per-subtask scores of `rows` can be read without computing a
        gradient (their reward features and the target's are stored); else why not. Reads
        files only: no model is loaded."""

        rows = np.asarray(rows, dtype=np.int64)
        for ck, path in zip(self.reward_checkpoints, self.reward_store_paths()):
            if not (self.ws.targets(target_name(self.target, ck)) / TARGET_FEATURES).exists():
                return "the target's gradients are not computed yet"
            try:
                with FeatureStore.open(path) as store:
                    missing = int((~store.done[rows]).sum()) if len(rows) else 0
            except (FileNotFoundError, ValueError, IndexError):
                return "no reward features are stored for these settings"
            if missing:
                return f"{missing:,} of the {len(rows):,} rows have no stored reward features"
        return None

    def release_engines(self) -> None:
        """Free the reward engines' model (before a warm-up loads another in this process)."""

        for eng in self.__dict__.pop("reward_engines", []):
            eng.release()
        free_memory()

    @cached_property
    def target_features(self) -> tuple[list[np.ndarray], np.ndarray]:

        feats, ids = [], None
        for eng in self.reward_engines:
            out = self.ws.targets(target_name(self.target, eng.checkpoint_dir))
            todo = 0 if (out / TARGET_MANIFEST).exists() else len(self.target.examples)
            with self.clock.stage("target_gradients", key=out.name, rows=todo):
                f, ids = target_features(self.target, self.cfg.model, self.cfg.lora,
                                         eng.checkpoint_dir, eng.spec, out_dir=out, engine=eng,
                                         progress=self.progress("target gradients"))
            feats.append(f)
        self.log(f"target: {self.target_sentence()}")
        self.work["target_gradient_rows"] = int(len(ids)) * len(feats)
        return feats, ids

    def target_sentence(self) -> str:
        """How truncation treated the target examples (from the target features' manifest)."""

        eng = self.reward_engines[-1]
        path = self.ws.targets(target_name(self.target, eng.checkpoint_dir)) / TARGET_MANIFEST

        m = json.loads(path.read_text()) if path.exists() else {}
        return target_manifest_sentence(m, self.cfg.model.max_length) or \
            "target truncation not recorded (target features made by an older version)"

    def compute_reward_rows(self, rows: np.ndarray) -> None:
        bandit = self._reward_stage == "bandit_gradients"
        for eng in self.reward_engines:
            todo = len(eng.store().missing(rows))
            key = self.cfg.run_id if bandit else eng.store_path.name
            with self.clock.stage(self._reward_stage, key=key, rows=todo):
                eng.compute(rows, progress=self.progress("reward gradients"))

    @cached_property
    def oracle(self):

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
        return self.ws.scores()

    def _scores_identity(self) -> dict[str, Any]:
        return {"stores": [eng.fingerprint for eng in self.reward_engines],
                "target": self.target.fingerprint, "weights": self.checkpoint_weights()}

    def known_exhaustive(self) -> np.ndarray | None:
        """The saved exhaustive scores when they were made from these features and target."""
        ident = exhaustive.identity(self.ws)
        if ident is None or ident.get("weights") != self.checkpoint_weights():
            return None
        return exhaustive.saved_exhaustive(
            self.ws, self.pool.fingerprint, self.target.fingerprint, len(self.pool),
            stores=[eng.fingerprint for eng in self.reward_engines])

    def exhaustive_scores(self) -> np.ndarray:
        """Every row scored (LESS without the bandit): for teaching and recall figures."""
        known = self.known_exhaustive()
        if known is not None:
            return known
        self.log("exhaustive scoring: a gradient for every row")
        self._reward_stage = "exhaustive_gradients"
        try:
            scores = self.oracle.score(np.arange(len(self.pool)))
        finally:
            self._reward_stage = "bandit_gradients"
        with atomic.atomic_path(self.scores_path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, scores)
        atomic.write_json(self.scores_path.with_suffix(".json"),
                          {"identity": self._scores_identity(), "n_rows": len(scores)})
        return scores

    # ------------------------------------------------------------------ selection
    def ledger(self):

        return Ledger(self.ws.ledger_path, clustering=self.clusters.name)

    def selection(self, run_id: str | None = None, spec: SelectionSpec | None = None):
        """A SelectionRun with the lazy oracle: the saved one reopened (refused when `spec` is
        given and differs), or a new one with `spec` (default: the config's)."""

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
        rep = self.format_report
        summary = {"run_id": run_id, "selected": int(len(run.selected())),
                   "budget_used": int(run.budget_used), "budget_total": int(run.budget_total),
                   "rounds": len(run.records), "work": dict(self.work),
                   "unscorable_rows": rep.n_unscorable, "truncated_rows": rep.n_truncated,
                   "formatting": rep.sentence(), "target_truncation": self.target_sentence(),
                   "pool_problems": self.pool_problems}
        if exhaustive is not None:
            from clusterucb_core.selection.oracle import run_metrics

            metrics = run_metrics(run, exhaustive)
            table = metrics.pop("rounds")  # per round: a file beside the summary, not JSON
            table.to_csv(self.ws.runs(run_id) / "rounds.csv", index=False)
            summary["metrics"] = {**metrics, "rounds_csv": str(self.ws.runs(run_id) /
                                                                 "rounds.csv")}
        meta = self.clusters.meta
        summary["clusters"] = {"name": self.clusters.name, "k": int(self.clusters.k),
                               "k_reason": meta.get("k_reason"),
                               "condition": meta.get("condition", "none"),
                               "features": (meta.get("feature_cost") or {}).get("what")}
        result = self.result(run)
        summary["subtask_coverage"] = self.subtask_counts(result)
        quality = self.quality(run, result)
        if "metrics" in quality:
            summary["metrics"] = {**summary.get("metrics", {}), **quality.pop("metrics")}
        summary.update(quality)
        summary["export"] = str(self.export(run, run_id, export_dir))

        summary["plan"] = plan_summary(self.ws.root, self.cfg)  # predicted vs measured
        atomic.write_json(self.ws.runs(run_id) / "summary.json", summary)
        return summary

    def run_dynamic(self, rounds: int) -> dict[str, Any]:
        """Dynamic ClusterUCB: select; train one epoch on the selection from the current
        checkpoint; take the new checkpoint (new target gradients, new reward features); select
        again with the same clusters and a fresh bandit. Records the gradient work spent
        against recomputing every row at every checkpoint."""

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
                pipe.release_engines()
                self.release_engines()
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

    def subtask_counts(self, result) -> dict[str, int]:
        """Per target subtask, how many of a result's rows serve it best."""

        return counts_of(result.rows, result.best_subtask or {}, list(self.target.subtasks))

    def quality(self, run, result, audit: bool = True) -> dict[str, Any]:
        """What a summary says about how good a selection is without exhaustive scores:
        `metrics` with `recall_estimate` and `mass_share_estimate` (selection/audit.py) and,
        when one subtask takes a max-rule selection, `subtask_note` with what the balanced
        rule would pick per subtask (selection/takeover.py)."""

        out: dict[str, Any] = {}
        estimate = audit_run(run) if audit else None
        if estimate is not None:
            out["metrics"] = estimate.to_dict()
        counts = self.subtask_counts(result)
        if takeover(counts, result.spec.balance) is not None:
            balanced = self.subtask_counts(self.result(run, balance="subtasks"))
            out["subtask_note"] = takeover(counts, result.spec.balance, balanced).to_dict()
        return out

    def subtask_scores(self, rows: np.ndarray) -> np.ndarray:
        """[len(rows), S]: each scored row's mean cosine to every target subtask (the columns
        whose max is its score). The rows' reward features must exist."""

        rows = np.asarray(rows, dtype=np.int64)
        S = len(self.target.subtasks)
        memo = self.__dict__.setdefault("_subtask_memo", {})  # a row's features never change
        new = np.array(sorted({int(r) for r in rows} - memo.keys()), dtype=np.int64)
        if len(new):
            feats, ids = self.target_features
            train = [eng.store().read(new) for eng in self.reward_engines]
            multi = len(train) > 1
            out = subtask_scores(train if multi else train[0], feats if multi else feats[0],
                                 ids, weights=self.checkpoint_weights(), n_subtasks=S)
            memo.update(zip(new.tolist(), out))
        return np.array([memo[int(r)] for r in rows], dtype=np.float32).reshape(len(rows), S)

    def best_subtasks(self, rows: np.ndarray) -> dict[int, str]:
        """Scored row -> the target subtask it serves best (rows without a score left out)."""

        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return {}
        best = best_subtask(self.subtask_scores(rows))
        names = list(self.target.subtasks)
        return {int(r): names[b] for r, b in zip(rows, best) if b >= 0}

    def result(self, run, balance: str | None = None):
        """The run's final selection with each scored row's best subtask; under
        `balance = "subtasks"` the top-p is refilled round-robin over subtasks (pins kept,
        rejected rows and banned clusters left out, as for the max rule). `balance` overrides
        the run's rule (it only changes the final pick, not the draws) and is then recorded
        in the result's spec, so an export says which rule made it."""


        balance = run.spec.balance if balance is None else balance
        if balance not in BALANCES:
            raise ValueError(f"balance {balance!r} is not one of {', '.join(BALANCES)}")
        res = run.result()
        scored = np.flatnonzero(np.isfinite(res.scores))
        best = self.best_subtasks(scored)
        res = _replace(res, best_subtask=best, spec=_replace(res.spec, balance=balance))
        if balance != "subtasks":
            return res
        banned = np.isin(res.labels, np.array(sorted(res.banned), dtype=np.int64))
        free = scored[~banned[scored] & ~np.isin(scored, list(res.rejected | res.pinned))]
        pins = [r for r in res.rows.tolist() if r in res.pinned]
        fill = balanced_top(free, self.subtask_scores(free), max(res.n_top - len(pins), 0))
        return _replace(res, rows=np.array(pins + fill.tolist(), dtype=np.int64))

    def export(self, run, run_id: str, out_dir: str | Path | None = None) -> Path:
        """The selection as files ready for training (see export.py), written atomically."""

        out = Path(out_dir or self.cfg.export_dir or self.ws.exports(run_id))
        result = self.result(run)
        note = {k: v for k, v in self.quality(run, result, audit=False).items()
                if k == "subtask_note"}
        path = export_selection(
            out, self.pool, result, run_id=run_id, clustering=self.clusters.name,
            cluster_names=self.clusters.cluster_names(), oracle_info=self.oracle.describe(),
            ledger_state=self.ledger().state(), log_path=run.log_path,
            exhaustive=self.known_exhaustive(), features=run.features,
            extra={"config": config_to_dict(self.cfg), **note})
        self.log(f"export: {len(result.rows)} rows -> {path}")
        return path
