"""A 1M-row pool end to end on one machine: time and peak memory of every stage but the model.

A synthetic pool (JSONL, ~1 KB chats, 20 sources, seeded) goes through:

* ``parse``: the first command's pool load: parsed (streamed) into the workspace's columnar
  cache (``pool_cache.py``);
* ``load``: a second command's pool load from that cache, in a fresh process, against the same
  fresh-process load parsing the JSONL without a cache (the ratio is printed; both time the
  ``load_pool`` call, after the imports);
* ``store``: a cluster-feature store of synthetic features (float16, 256-d, 20 planted
  directions plus noise; no model), written through ``FeatureStore``;
* ``kmeans``: ``clustering.cluster_features(minibatch=True)`` streaming the store;
* ``map``: ``embedding2d.compute_map`` (UMAP fit on a 20K sample, the rest placed by weighted
  kNN interpolation, ``placement.py``), then a held-out slice of the placed rows (``--slice``,
  5K) placed again by UMAP's own ``transform`` (after a warm-up call that compiles its
  kernels): its time per row, extrapolated linearly to every placed row, against the kNN
  placement's time (``map_speedup_vs_umap_transform``), and the neighbour keep of both on the
  slice (``placement.neighbour_keep``: the share of each row's 10 nearest in feature space
  among its 30 nearest on the map);
* ``summaries``: ``summaries.summarize_clusters`` of the pool (chats streamed; keywords from
  at most 2,000 rows per cluster);
* ``find``: the text index of every row (``search.pool_texts``, what the app caches once),
  then a text search, a regular-expression search and "more like this" (``search.neighbours``
  of 10 rows over the feature store);
* ``rounds``: a ClusterUCB run with a table oracle (synthetic scores: a mean per planted
  cluster plus noise), logged to the workspace: the cold start, then 100 rounds; each round's
  engine time is ``step()`` plus what the Rounds page reads to redraw (``peek()``, ``stats()``);
* ``export``: ``export.export_selection`` of the top 5% (original lines re-read by byte offset;
  without the ``datasets`` folder).

Peak RSS per stage is the process's high-water mark (VmHWM) reset before the stage
(``/proc/self/clear_refs``); memory-mapped file pages the stage touches count in it. The
``load`` stage's peaks are those of its own processes.

Last line: ``rows=<n> peak_rss_gb=<largest stage peak> total_s=<sum of the stages>
round_ms=<median engine time of one round> map_s=<s> map_speedup_vs_umap_transform=<x>
map_neighbour_keep=<q> umap_neighbour_keep=<q0>``. ``--quick``: 200K rows.

``--app`` (with ``--dir``) leaves a workspace the app opens (the pool, a target, the
clustering, the map, the synthetic scores as its exhaustive table): what ``make e2e-scale``
drives in a browser.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_scale.py

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

N_SOURCES = 20
K_TRUE = 20
DIM = 256
WORDS = ("the of and to in is that for it as with was on be by this are from or an at which "
         "have not but all were when we there can more if will one about what so their up out "
         "them would some into time has two like him see other than then now its only could "
         "after first also new because any these most way our over even well such take why "
         "give day same very find where while last might must between under never house "
         "number water answer question reason step solve compute explain write list").split()


def peak_reset() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def peak_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def make_pool(path: Path, n: int, seed: int = 0) -> int:
    """n chats of ~1 KB (a user turn and an assistant turn) from 20 sources, as JSONL."""
    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    with open(path, "w", encoding="utf-8") as fh:
        for lo in range(0, n, 10_000):
            m = min(10_000, n - lo)
            src = rng.integers(0, N_SOURCES, m)
            ids = rng.integers(0, len(words), (m, 170))
            lines = []
            for j in range(m):
                w = words[ids[j]]
                lines.append(json.dumps({
                    "id": f"r{lo + j}", "dataset": f"source_{src[j]:02d}",
                    "messages": [{"role": "user", "content": " ".join(w[:60]) + "?"},
                                 {"role": "assistant", "content": " ".join(w[60:]) + "."}]}))
            fh.write("\n".join(lines) + "\n")
    return path.stat().st_size


LOAD_SCRIPT = """
import sys, time
sys.path.insert(0, sys.argv[1])
from clusterucb_core.data.load import load_pool
t0 = time.perf_counter()
pool = load_pool(sys.argv[2], cache_dir=sys.argv[3] if sys.argv[3] != "-" else None)
n = len(pool)
dt = time.perf_counter() - t0
hwm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(n, dt, hwm)
"""


def load_in_fresh_process(pool: Path, cache: Path | None) -> tuple[int, float, int]:
    out = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(REPO), str(pool),
                          str(cache) if cache else "-"], capture_output=True, text=True,
                         check=True).stdout.split()
    return int(out[0]), float(out[1]), int(out[2])


def synthetic_store(path: Path, n: int, seed: int = 0, pool_fp: str = ""):
    """Float16 256-d clustered features written through FeatureStore; returns (store, truth)."""
    from clusterucb_core.features.store import FeatureStore

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((K_TRUE, DIM)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    truth = rng.integers(0, K_TRUE, n)
    store = FeatureStore.create_or_open(path, n, DIM, {"synthetic": "bench_pool_1m",
                                                       "seed": seed, "pool": pool_fp},
                                        dtype="float16")
    for lo in range(0, n, 65536):
        t = truth[lo:lo + 65536]
        x = centers[t] + (0.6 / np.sqrt(DIM)) * rng.standard_normal((len(t), DIM),
                                                                    dtype=np.float32)
        store.write(np.arange(lo, lo + len(t)), x / np.linalg.norm(x, axis=1, keepdims=True))
    return store, truth


def map_versus_transform(res, store, map_s: float, n_slice: int) -> str:
    """UMAP.transform of a held-out slice of the kNN-placed rows against the kNN placement:
    time (per row, extrapolated to every placed row) and neighbour keep on the slice."""
    import warnings

    from clusterucb_core.clustering.embedding2d import _read_rows
    from clusterucb_core.clustering.placement import neighbour_keep
    from clusterucb_core.features.rowsource import as_source, normalize_rows

    src = as_source(store)
    fitted = res.fitted
    placed = np.flatnonzero(np.isfinite(res.coords[:, 0]))
    placed = np.setdiff1d(placed, fitted.rows, assume_unique=True)
    n_placed = len(placed)
    sl = np.sort(np.random.default_rng(7).choice(placed, size=min(n_slice, n_placed),
                                                 replace=False))
    P = _read_rows(src, sl, fitted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res.model.transform(P[:50])  # compiles UMAP's transform kernels: not timed
        t = time.perf_counter()
        umap_xy = res.model.transform(P)
        umap_s = time.perf_counter() - t
    feats = normalize_rows(src.take(sl))[0]
    keep = neighbour_keep(feats, res.coords[sl])
    keep0 = neighbour_keep(feats, umap_xy)
    place_s = float(res.info["place_s"])
    umap_all = umap_s / len(sl) * n_placed
    speedup = umap_all / max(place_s, 1e-9)
    print(f"map: UMAP fitted on {res.n_fit:,} rows, {n_placed:,} placed by kNN in "
          f"{place_s:.1f} s; UMAP.transform of a held-out subsample of {len(sl):,} of them "
          f"took {umap_s:.1f} s, {umap_all:.0f} s for all {n_placed:,} extrapolated linearly "
          f"(a whole map that way: ~{map_s - place_s + umap_all:.0f} s against {map_s:.0f} s)"
          f"; neighbour keep on the subsample: kNN {keep:.3f}, UMAP.transform {keep0:.3f}",
          flush=True)
    return (f"map_s={map_s:.1f} map_speedup_vs_umap_transform={speedup:.1f} "
            f"map_neighbour_keep={keep:.3f} umap_neighbour_keep={keep0:.3f}")


def find_stages(pool, store, stage) -> None:
    """Find at scale: the text index (built once per pool and process), a text and a regex
    search over every row, and "more like this" over the feature store."""
    from clusterucb_core.clustering import search

    texts = stage("find_index", lambda: search.pool_texts(pool))
    hits = stage("find_text", lambda: search.search_texts(texts, "reason step solve"))
    rx = stage("find_regex", lambda: search.search_texts(texts, r"^r\d*77$", "regex"))
    like, _ = stage("like", lambda: search.neighbours(store, list(range(0, 1000, 100)), k=50))
    print(f"find: {len(hits):,} rows hold 'reason step solve', {len(rx):,} ids match "
          f"^r\\d*77$, {len(like)} rows like 10 chosen ones", flush=True)


def app_workspace(ws, pool_path, pool, store, km, summary, scores) -> None:
    """Make the bench's workspace one the app opens: its pool and a demo target chosen, the
    clustering saved with its summary, and the synthetic scores as the exhaustive table (with
    the identity the app checks: this target, a store made from this pool)."""
    from clusterucb_core.clustering.clusterset import save_clusters
    from clusterucb_core.config import fingerprint
    from clusterucb_core.data.targets import load_target
    from clusterucb_core.runtime import atomic

    target = REPO / "sample_data" / "targets" / "arithmetic.jsonl"
    name = f"synthetic-k{km.centroids.shape[0]}"
    save_clusters(ws, name, km, features_fingerprint=store.fingerprint,
                  features_name="synthetic", summary=summary)
    ws.update_meta(pool={"path": str(pool_path), "format": "auto", "shape": "auto"},
                   target={"path": str(target), "kind": "auto", "trim": False}, clusters=name)
    manifest = json.loads((ws.features("synthetic") / "manifest.json").read_text())
    path = ws.root / "scores" / "exhaustive.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, scores.astype(np.float32))
    atomic.write_json(path.with_suffix(".json"), {"identity": {
        "target": load_target(target).fingerprint,
        "stores": [fingerprint(manifest["identity"])]}, "n_rows": len(scores)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="200K rows")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--pool", default=None,
                    help="a pool this script made before (its row count is read from it), "
                         "instead of making one")
    ap.add_argument("--no-map", action="store_true", help="skip the map (the slowest stage)")
    ap.add_argument("--slice", type=int, default=5000,
                    help="held-out placed rows that UMAP.transform places too (the baseline)")
    ap.add_argument("--app", action="store_true",
                    help="leave a workspace the app opens (needs --dir)")
    args = ap.parse_args()
    if args.app and not args.dir:
        ap.error("--app needs --dir (the workspace is kept there)")
    n = 200_000 if args.quick else args.rows

    from clusterucb_core.clustering.embedding2d import compute_map
    from clusterucb_core.clustering.kmeans import cluster_features
    from clusterucb_core.clustering.summaries import summarize_clusters
    from clusterucb_core.config import SelectionSpec
    from clusterucb_core.data.load import load_pool
    from clusterucb_core.export.files import export_selection
    from clusterucb_core.selection.oracle import TableOracle
    from clusterucb_core.selection.run import SelectionRun
    from clusterucb_core.workspace import Workspace

    tmp = tempfile.TemporaryDirectory(prefix="bench_pool_1m.") if args.dir is None else None
    root = Path(args.dir or tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    ws = Workspace.open(root / "ws")
    t0 = time.perf_counter()
    if args.pool:
        pool_path = Path(args.pool)
        with open(pool_path, "rb") as fh:
            n = sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 24), b""))
        size = pool_path.stat().st_size
        made = "given"
    else:
        pool_path = root / "pool.jsonl"
        size = make_pool(pool_path, n)
        made = f"made in {time.perf_counter() - t0:.1f} s"
    print(f"synthetic pool: {n:,} rows, {size / 1e9:.2f} GB ({size / n:.0f} B/row), "
          f"{N_SOURCES} sources, {made}", flush=True)

    stages: dict[str, tuple[float, int]] = {}

    def stage(name: str, fn):
        peak_reset()
        t = time.perf_counter()
        out = fn()
        stages[name] = (time.perf_counter() - t, peak_bytes())
        sec, peak = stages[name]
        print(f"{name:>7}: {sec:8.2f} s   peak RSS {peak / 2**30:5.2f} GB", flush=True)
        return out

    pool = stage("parse", lambda: load_pool(pool_path, cache_dir=ws.pool_cache()))
    assert len(pool) == n, (len(pool), pool.report.lines(5))
    n_plain, plain_s, plain_peak = load_in_fresh_process(pool_path, None)
    n_cached, cached_s, cached_peak = load_in_fresh_process(pool_path, ws.pool_cache())
    assert n_plain == n_cached == n
    stages["load"] = (cached_s, cached_peak)
    print(f"   load: {cached_s:8.2f} s   peak RSS {cached_peak / 2**30:5.2f} GB   (a second "
          f"command, from the cache; parsing the JSONL in the same kind of process: "
          f"{plain_s:.2f} s, peak {plain_peak / 2**30:.2f} GB)", flush=True)
    ratio = plain_s / max(cached_s, 1e-9)
    print(f"cache speed-up of a command's pool load: {ratio:.0f}x (target >= 10x)", flush=True)

    store, truth = stage("store", lambda: synthetic_store(ws.features("synthetic"), n,
                                                          pool_fp=pool.fingerprint))
    km = stage("kmeans", lambda: cluster_features(store, args.k, seed=0, minibatch=True,
                                                  n_init=1))
    tail = ""
    if not args.no_map:
        res = stage("map", lambda: compute_map(store, ws=ws, force=True))
        tail = " " + map_versus_transform(res, store, stages["map"][0], args.slice)
    summary = stage("summaries", lambda: summarize_clusters(pool, km.labels, store,
                                                            km.centroids))
    print(f"summaries: {len(summary)} clusters, keywords from "
          f"{summary.attrs['keyword_rows']:,} rows (<= 2,000 per cluster)", flush=True)
    find_stages(pool, store, stage)

    rng = np.random.default_rng(1)
    means = rng.normal(0, 0.05, K_TRUE)
    scores = means[truth] + rng.normal(0, 0.02, n)
    spec = SelectionSpec(policy="ucb_beta", beta=1.0, cold_start=0.05, budget=0.2, top_p=0.05,
                         draw_batch=8, seed=42)
    round_s: list[float] = []

    def rounds():
        run = SelectionRun(km.labels, TableOracle(scores), spec, ws.runs("bench"))
        t = time.perf_counter()
        run.step()  # the cold start
        print(f"cold start: {len(run.records[0].rows):,} rows in "
              f"{time.perf_counter() - t:.2f} s", flush=True)
        for _ in range(args.rounds):
            if run.done:  # a small pool's budget can end first
                break
            t = time.perf_counter()
            run.step()
            run.peek()
            run.stats()
            round_s.append(time.perf_counter() - t)
        return run

    run = stage("rounds", rounds)
    round_ms = float(np.median(round_s)) * 1000
    print(f"one round: median {round_ms:.1f} ms, max {max(round_s) * 1000:.1f} ms "
          f"(target < 200 ms)", flush=True)
    result = run.result()
    stage("export", lambda: export_selection(ws.exports("bench"), pool, result,
                                             run_id="bench", with_dataset=False))
    got = (ws.exports("bench") / "selected.jsonl").read_bytes().count(b"\n")
    assert got == len(result.rows), (got, len(result.rows))
    print(f"exported {got:,} rows (top 5%) by byte offset", flush=True)

    total = sum(s for s, _ in stages.values())
    peak = max(p for _, p in stages.values())
    if args.app:
        app_workspace(ws, pool_path, pool, store, km, summary, scores)
        print(f"app workspace: {ws.root}", flush=True)
    print(f"rows={n} peak_rss_gb={peak / 2**30:.2f} total_s={total:.1f} "
          f"round_ms={round_ms:.1f}{tail}", flush=True)
    if tmp is not None:
        store.close()
        tmp.cleanup()


if __name__ == "__main__":
    main()
