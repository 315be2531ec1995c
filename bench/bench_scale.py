"""How clustering and the 2-D map scale: time and peak memory for 10K, 50K and 100K rows.

Synthetic clustered features (20 planted directions in 256 dims plus noise, L2-normalised,
float32), the same array for every method in one run:

* ``ours``: ``kmeans.spherical_kmeans`` (k-means++, Lloyd, tol 1e-4, one start), on the
  CPU or the GPU when there is one;
* ``ours-minibatch``: ``kmeans.minibatch_spherical_kmeans`` reading a float16 memmap in
  chunks of 4096 rows (the 1M-row path; its in-memory start is a 20K-row sample, so below
  20K rows it is the full fit plus streamed passes);
* ``sklearn``: ``sklearn.cluster.KMeans`` (k-means++, Lloyd, one start, same K, max_iter) on
  the same normalised rows -- Euclidean k-means on unit vectors, the closest stock
  equivalent. Its ``tol`` is relative to the data's variance (sum of squared centre shifts
  <= tol * mean variance); it is given the tol that makes that bound 1e-4, like ours (ours
  bounds the largest squared shift, so sklearn remains slightly stricter). Its run with the
  default ``tol=1e-4`` (about 250x stricter here) is printed too, iteration counts with both;
* ``umap``: ``embedding2d.compute_map`` (PCA 50 -> UMAP cosine), fitted on at most 20K rows and
  the rest placed with ``transform``.

k-means times are the best of ``--repeat`` runs (3; ours and sklearn alternate, so a busy
neighbour on a shared machine slows both alike). Peak memory is the largest resident-set growth
over the process's RSS just before the call, sampled every 5 ms from a thread (it counts torch,
numba and BLAS buffers, which tracemalloc would miss). numba/torch compilation is excluded by a
warm-up on a tiny input, and reported.

Time growth: the slope of log(time) against log(N) over the sizes run (1 = linear).

Last line: ``kmeans_ratio_vs_sklearn=<ours time / sklearn time at the largest N>
umap_100k_s=<seconds for the 100K map>`` (``nan`` under ``--quick``, which runs 1K/2K/4K rows
and a 1K-row UMAP fit, in under a minute on two idle cores).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

# torch and scikit-learn each bring their own OpenMP runtime; with the default (active) wait
# policy the threads of the one that ran last keep spinning and starve the other on a small
# machine, which made whichever ran second look up to 100x slower on 2 cores. Passive
# waiting measures each library on its own. Must be set before either library loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

K_TRUE = 20
DIM = 256


def make_data(n: int, seed: int = 0, noise: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((K_TRUE, DIM)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    truth = rng.integers(0, K_TRUE, n)
    X = np.empty((n, DIM), dtype=np.float32)
    for s in range(0, n, 65536):
        t = truth[s:s + 65536]
        part = centers[t] + (noise / math.sqrt(DIM)) * rng.standard_normal(
            (len(t), DIM), dtype=np.float32)
        X[s:s + 65536] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return X, truth


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS so the RSS baseline is the live data only."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure(fn, *args, **kwargs):
    """(result, seconds, peak RSS growth in bytes)."""
    _release_freed_memory()
    base = rss()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    try:
        out = fn(*args, **kwargs)
    finally:
        dt = time.perf_counter() - t0
        stop.set()
        th.join()
    peak[0] = max(peak[0], rss())
    return out, dt, peak[0] - base


def slope(ns, ts) -> float:
    ok = [(n, t) for n, t in zip(ns, ts) if t and t > 0]
    if len(ok) < 2:
        return float("nan")
    x = np.log([n for n, _ in ok])
    y = np.log([t for _, t in ok])
    return float(np.polyfit(x, y, 1)[0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1K/2K/4K rows, 1K-row UMAP fit")
    ap.add_argument("--sizes", default=None, help="comma-separated N values (overrides)")
    ap.add_argument("--k", type=int, default=K_TRUE)
    ap.add_argument("--no-umap", action="store_true")
    ap.add_argument("--repeat", type=int, default=3,
                    help="k-means timings: best of this many runs, ours and sklearn "
                         "alternating (default 3; the machine may be shared)")
    args = ap.parse_args(argv)

    import torch
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from clusterucb_core.clustering import embedding2d as e2
    from clusterucb_core.clustering import kmeans

    sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes
             else [1_000, 2_000, 4_000] if args.quick else [10_000, 50_000, 100_000])
    max_fit = 1_000 if args.quick else 20_000
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"bench_scale: {DIM}-d synthetic features, {K_TRUE} planted clusters, K={args.k}, "
          f"device {device}, torch threads {torch.get_num_threads()}, "
          f"cpu count {os.cpu_count()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"load average {os.getloadavg()[0]:.1f} (a shared machine "
          "slows multi-threaded code unevenly)", flush=True)

    # warm-up: torch kernels, numba compilation (timed separately, not counted below)
    # (UMAP switches to approximate neighbours, another set of numba kernels, from 4096 rows)
    Xw, _ = make_data(300, seed=9)
    _, t_warm_km, _ = measure(kmeans.spherical_kmeans, Xw, 5, device=device)
    KMeans(5, n_init=1, random_state=0).fit(Xw)
    t_warm_umap = float("nan")
    if not args.no_umap:
        n_warm = 4_500 if max_fit >= 4_096 else 300
        Xw, _ = make_data(n_warm, seed=9)
        _, t_warm_umap, _ = measure(e2.compute_map, Xw, max_fit=n_warm - 200, pca_dims=50)
    print(f"warm-up (compilation, excluded): k-means {t_warm_km:.1f} s, "
          f"UMAP/numba {t_warm_umap:.1f} s", flush=True)

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    try:
        for n in sizes:
            X, truth = make_data(n, seed=0)
            # sklearn's tol is relative: it stops when the SUM over centres of squared shifts
            # is <= tol * mean feature variance; ``sk_tol`` makes that absolute bound 1e-4
            # (ours: the LARGEST squared shift <= 1e-4, so sklearn stays slightly stricter)
            sk_tol = 1e-4 / float(np.var(X, axis=0).mean())
            t_ours = t_sk = t_skd = math.inf
            for _ in range(max(1, args.repeat)):
                ours, t, m_ours = measure(kmeans.spherical_kmeans, X, args.k, seed=0,
                                          max_iter=100, tol=1e-4, device=device)
                t_ours = min(t_ours, t)
                sk, t, m_sk = measure(
                    lambda X=X, sk_tol=sk_tol: KMeans(args.k, init="k-means++", n_init=1,
                                                      max_iter=100, tol=sk_tol,
                                                      random_state=0).fit(X))
                t_sk = min(t_sk, t)
                skd, t, _ = measure(
                    lambda X=X: KMeans(args.k, init="k-means++", n_init=1, max_iter=100,
                                       tol=1e-4, random_state=0).fit(X))
                t_skd = min(t_skd, t)
            mm_path = tmp / f"x{n}.npy"
            mm = np.lib.format.open_memmap(mm_path, mode="w+", dtype=np.float16, shape=X.shape)
            mm[:] = X
            mm.flush()
            del mm
            mm = np.load(mm_path, mmap_mode="r")
            mb, t_mb, m_mb = measure(kmeans.minibatch_spherical_kmeans, mm, args.k, seed=0,
                                     batch_size=4096, device=device)
            row = {
                "n": n,
                "ours_s": t_ours, "ours_mb": m_ours / 2**20, "ours_iter": ours.n_iter,
                "sk_s": t_sk, "sk_mb": m_sk / 2**20, "sk_iter": int(sk.n_iter_),
                "skd_s": t_skd, "skd_iter": int(skd.n_iter_),
                "mb_s": t_mb, "mb_mb": m_mb / 2**20, "mb_passes": mb.n_iter,
                "ari_ours_truth": adjusted_rand_score(truth, ours.labels),
                "ari_sk_truth": adjusted_rand_score(truth, sk.labels_),
                "ari_ours_sk": adjusted_rand_score(ours.labels, sk.labels_),
                "ari_mb_ours": adjusted_rand_score(ours.labels, mb.labels),
                "data_mb": X.nbytes / 2**20,
            }
            print(f"N={n:>7,}: ours {t_ours:7.2f} s {m_ours / 2**20:7.1f} MB "
                  f"({ours.n_iter} it) | sklearn {t_sk:7.2f} s {m_sk / 2**20:7.1f} MB "
                  f"({sk.n_iter_} it) | ours/sklearn time {t_ours / t_sk:5.2f} | "
                  f"mini-batch (fp16 memmap) {t_mb:6.2f} s {m_mb / 2**20:6.1f} MB "
                  f"({mb.n_iter} passes)", flush=True)
            print(f"           sklearn with its default relative tol=1e-4: {t_skd:7.2f} s "
                  f"({skd.n_iter_} it); ours/that {t_ours / t_skd:5.2f}", flush=True)
            print(f"           ARI vs planted: ours {row['ari_ours_truth']:.3f}, sklearn "
                  f"{row['ari_sk_truth']:.3f}; ours vs sklearn {row['ari_ours_sk']:.3f}; "
                  f"mini-batch vs full {row['ari_mb_ours']:.3f}  (data {row['data_mb']:.0f} MB)",
                  flush=True)
            if not args.no_umap:
                res, t_map, m_map = measure(e2.compute_map, X, max_fit=max_fit, seed=0)
                row.update({"umap_s": t_map, "umap_mb": m_map / 2**20, "umap_fit": res.n_fit,
                            "umap_sample": res.fit_on_sample})
                print(f"           UMAP {t_map:7.1f} s {m_map / 2**20:7.1f} MB "
                      f"({res.note})", flush=True)
            rows.append(row)
            del X, mm
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)

    ns = [r["n"] for r in rows]
    print("\ntime growth with N (slope of log t vs log N; 1 = linear): "
          f"ours {slope(ns, [r['ours_s'] for r in rows]):.2f}, "
          f"sklearn {slope(ns, [r['sk_s'] for r in rows]):.2f}, "
          f"mini-batch {slope(ns, [r['mb_s'] for r in rows]):.2f}"
          + ("" if args.no_umap else
             f", UMAP {slope(ns, [r['umap_s'] for r in rows]):.2f} "
             f"(fit capped at {max_fit:,} rows, the rest transformed)"))
    last = rows[-1]
    ratio = last["ours_s"] / last["sk_s"]
    umap_100k = next((r.get("umap_s", float("nan")) for r in rows if r["n"] == 100_000),
                     float("nan"))
    print(f"kmeans_ratio_vs_sklearn is our time / sklearn's (matched tolerance) at "
          f"N={last['n']:,} (< 1: ours is faster); against sklearn's default tolerance: "
          f"{last['ours_s'] / last['skd_s']:.3f}")
    print(f"kmeans_ratio_vs_sklearn={ratio:.3f} umap_100k_s={umap_100k:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
