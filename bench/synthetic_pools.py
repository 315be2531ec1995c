"""Synthetic pools with a known truth, shared by bench_fidelity.py and bench_audit.py."""

from __future__ import annotations

import numpy as np


def synthetic_pool(seed: int = 0, n: int = 6000, k_true: int = 30, dim: int = 64):
    """Clustered rewards with features: K_true random directions plus one shared direction
    (as LM states have), rows = direction + noise; scores = cluster mean + row noise."""
    rng = np.random.default_rng(seed)
    sizes = rng.multinomial(n, rng.dirichlet(np.full(k_true, 2.0)))
    labels = np.repeat(np.arange(k_true), sizes)
    centres = rng.normal(size=(k_true, dim))
    shared = rng.normal(size=dim) * 4.0
    X = shared + centres[labels] + rng.normal(scale=0.9, size=(n, dim))
    means = rng.normal(0.0, 0.03, k_true)
    scores = means[labels] + rng.normal(0.0, 0.02, n)
    return X.astype(np.float32), scores, labels
