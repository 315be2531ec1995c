"""LESS datastores and .npy matrices round-trip into a FeatureStore."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clusterucb_core.features.less_import import find_source, import_features
from clusterucb_core.features.store import FeatureStore, StoreMismatch


def less_datastore(root, N=120, d=64, seed=0):
    """Write what LESS's collect_grad_reps writes: dim{d}/all_orig.pt (normalised rows)."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(N, d, generator=g) * torch.rand(N, 1, generator=g) * 10
    raw[7] = 0.0  # a zero gradient
    raw[9, 3] = float("nan")  # a NaN loss
    out = root / f"dim{d}"
    out.mkdir(parents=True)
    torch.save(torch.nn.functional.normalize(raw, dim=1), out / "all_orig.pt")
    torch.save(raw, out / "all_unormalized.pt")
    return raw


def expected(raw):
    x = raw.double().numpy()
    with np.errstate(invalid="ignore"):
        return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_less_all_orig_roundtrip(tmp_path, dtype):
    raw = less_datastore(tmp_path / "grads")
    store = import_features(tmp_path / "grads", tmp_path / "store", manifest={"pool": "p1"},
                            n_rows=120, dtype=dtype, chunk_rows=50)
    assert store.complete and store.dim == 64 and store.n_rows == 120
    got = store.read()
    ok = np.ones(120, bool)
    ok[[7, 9]] = False
    np.testing.assert_array_equal(store.flagged, ~ok)
    assert np.isnan(got[~ok]).all()
    atol = 1e-6 if dtype == "float32" else 1e-3
    np.testing.assert_allclose(got[ok], expected(raw)[ok], atol=atol)
    assert store.identity["pool"] == "p1"
    assert store.identity["imported_from"]["path"].endswith("dim64/all_orig.pt")
    store.close()


def test_unnormalised_file_bf16_and_npy(tmp_path):
    raw = less_datastore(tmp_path / "grads", seed=1)
    ok = np.ones(120, bool)
    ok[[7, 9]] = False
    un = import_features(tmp_path / "grads" / "dim64" / "all_unormalized.pt", tmp_path / "s1",
                         dtype="float32")
    np.testing.assert_allclose(un.read()[ok], expected(raw)[ok], atol=1e-6)
    bf = tmp_path / "bf16.pt"
    torch.save(raw.to(torch.bfloat16), bf)
    got = import_features(bf, tmp_path / "s2", dtype="float32").read()
    np.testing.assert_allclose(got[ok], expected(raw.to(torch.bfloat16).float())[ok], atol=1e-6)
    npy = tmp_path / "feats.npy"
    np.save(npy, raw.numpy())
    got = import_features(npy, tmp_path / "s3", dtype="float32").read()
    np.testing.assert_allclose(got[ok], expected(raw)[ok], atol=1e-6)


def test_row_count_and_layout_errors(tmp_path):
    less_datastore(tmp_path / "grads")
    with pytest.raises(ValueError, match="120 rows but the pool has 121"):
        import_features(tmp_path / "grads", tmp_path / "s", n_rows=121)
    less_datastore(tmp_path / "grads", d=32)
    with pytest.raises(ValueError, match="dim32, dim64"):
        find_source(tmp_path / "grads")
    assert find_source(tmp_path / "grads", dim=32).parent.name == "dim32"
    with pytest.raises(FileNotFoundError):
        find_source(tmp_path / "grads", dim=8192)
    with pytest.raises(FileNotFoundError):
        find_source(tmp_path / "nothing")
    torch.save({"a": torch.zeros(2, 2)}, tmp_path / "dict.pt")
    with pytest.raises(ValueError, match="dict"):
        import_features(tmp_path / "dict.pt", tmp_path / "s4")
    np.save(tmp_path / "vec.npy", np.zeros(5))
    with pytest.raises(ValueError, match="N, d"):
        import_features(tmp_path / "vec.npy", tmp_path / "s5")


def test_reimport_reuses_and_other_source_refused(tmp_path):
    less_datastore(tmp_path / "a")
    store = import_features(tmp_path / "a", tmp_path / "s", manifest={"pool": "p"})
    before = (tmp_path / "s" / "features.npy").read_bytes()
    store.close()
    again = import_features(tmp_path / "a", tmp_path / "s", manifest={"pool": "p"})
    assert again.complete and (tmp_path / "s" / "features.npy").read_bytes() == before
    again.close()
    less_datastore(tmp_path / "b", seed=5)
    with pytest.raises(StoreMismatch, match="imported_from.path"):
        import_features(tmp_path / "b", tmp_path / "s", manifest={"pool": "p"})
    assert FeatureStore.open(tmp_path / "s").complete
