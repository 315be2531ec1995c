"""FeatureStore: feature rows on disk, written as they are computed, resumable after a crash.

A store is a folder:

    manifest.json   what made the rows (identity keys given by the caller: pool, model,
                    checkpoint and spec fingerprints...), shape, dtype, package versions.
                    Written atomically, last, so a folder without it is an unfinished creation.
    features.npy    [n_rows, dim] float16 or float32, a normal .npy file (np.load(...,
                    mmap_mode="r") reads it), created at full size (sparse) and memory-mapped.
    done.npy        [n_rows] uint8, one byte per row: 0 = not computed, 1 = done,
                    2 = done but flagged (the row has no gradient, e.g. every label masked;
                    its features are NaN). One byte per row (not a bitmap) so processes that
                    write disjoint rows never read-modify-write each other's bytes.

Crash safety: `write` stores the rows, flushes that range of the data file, and only then
sets the rows' done bytes and flushes those. A run killed at any point (even `kill -9`)
leaves every row marked done fully written; the rows it was writing are simply not done and
are recomputed on resume, so a resumed run ends with the same bytes as an uninterrupted one
(given deterministic rows). Several processes (torchrun ranks) may write disjoint rows of the
same store at once: creation is serialised with a file lock, writes touch disjoint bytes.

Opening an existing store with different identity keys raises `StoreMismatch`, naming every
differing key with both values. Package versions are recorded; a version difference alone only
warns (features computed by another torch release are still the same features, up to rounding).
"""

from __future__ import annotations

import contextlib
import json
import mmap
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from clusterucb_core import __version__
from clusterucb_core.config import fingerprint as _fingerprint
from clusterucb_core.runtime import atomic

try:  # POSIX; on other systems creation is simply not serialised
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

FORMAT = "clusterucb-feature-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATA = "features.npy"
DONE = "done.npy"
DTYPES = ("float16", "float32")

NOT_DONE, DONE_OK, DONE_FLAGGED = 0, 1, 2


class StoreMismatch(ValueError):
    """An existing store was made from different inputs than the ones requested."""


class StoreIncomplete(ValueError):
    """Rows were requested that have not been computed yet."""


class StoreVersionWarning(UserWarning):
    """The store was written with other package versions (not refused)."""


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the features (recorded, compared with a warning)."""


    out = {"clusterucb": __version__, "numpy": np.__version__}
    for name in ("torch", "transformers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _plain(obj: Any) -> Any:
    """JSON round trip: tuples become lists, paths strings; what the manifest file holds."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: obj}


_ABSENT = "<absent>"


def _diff(stored: dict[str, Any], requested: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    a, b = _flatten(stored), _flatten(requested)
    keys = sorted(set(a) | set(b))
    return [(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in keys
            if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(folder / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class _MappedNpy:
    """A .npy file mapped whole with `mmap`, so byte ranges can be flushed precisely."""

    def __init__(self, path: Path, writable: bool):
        self.path = path
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            self.header_len = fh.tell()
        if fortran:
            raise ValueError(f"{path}: Fortran-ordered array, not a feature store file")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self._fh = open(path, "r+b" if writable else "rb")
        self._mm = mmap.mmap(self._fh.fileno(), 0,
                             access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ)
        self.array = np.ndarray(self.shape, self.dtype, buffer=self._mm, offset=self.header_len)
        if not writable:
            self.array.flags.writeable = False
        self.row_bytes = int(self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64)))

    @staticmethod
    def create(path: Path, shape: tuple[int, ...], dtype: str) -> None:
        # open_memmap writes the header and extends the file to full size (sparse: no I/O).
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=shape)
        arr.flush()
        del arr

    def flush_rows(self, lo: int, hi: int) -> None:
        """Flush rows [lo, hi) of the mapping to disk."""
        if hi <= lo:
            return
        start = self.header_len + lo * self.row_bytes
        stop = self.header_len + hi * self.row_bytes
        page = mmap.PAGESIZE
        start -= start % page
        self._mm.flush(start, stop - start)

    def close(self) -> None:
        self.array = None  # type: ignore[assignment]
        with contextlib.suppress(BufferError, ValueError):
            self._mm.close()
        self._fh.close()


class FeatureStore:
    """Feature rows on disk with a done-map and a manifest. See the module docstring."""

    def __init__(self, path: Path, manifest: dict[str, Any], writable: bool):
        self.path = Path(path)
        self.manifest = manifest
        self.writable = writable
        self.n_rows = int(manifest["n_rows"])
        self.dim = int(manifest["dim"])
        self.dtype = str(manifest["dtype"])
        self._data = _MappedNpy(self.path / DATA, writable)
        self._done = _MappedNpy(self.path / DONE, writable)
        if self._data.shape != (self.n_rows, self.dim) or self._done.shape != (self.n_rows,):
            self.close()
            raise ValueError(f"{self.path}: files do not match the manifest's shape "
                             f"({self.n_rows}, {self.dim}); the store is damaged")

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def create_or_open(cls, path: str | Path, n_rows: int, dim: int, manifest: dict[str, Any],
                       dtype: str = "float16") -> FeatureStore:
        """Open the store at `path` for writing, creating it when absent.

        `manifest` holds the caller's identity keys (fingerprints of pool, model, checkpoint,
        spec...). An existing store whose keys, shape or dtype differ raises `StoreMismatch`.
        """
        path = Path(path)
        if dtype not in DTYPES:
            raise ValueError(f"store dtype must be one of {DTYPES}, not {dtype!r}")
        if n_rows < 0 or dim <= 0:
            raise ValueError(f"bad store shape ({n_rows}, {dim})")
        identity = _plain(dict(manifest))
        with _locked(path):
            if (path / MANIFEST).exists():
                existing = json.loads((path / MANIFEST).read_text())
                cls._check(path, existing, identity, n_rows, dim, dtype)
                return cls(path, existing, writable=True)
            # No manifest: nothing here or an interrupted creation. Start clean.
            for name in (DATA, DONE):
                with contextlib.suppress(FileNotFoundError):
                    (path / name).unlink()
            full = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "n_rows": int(n_rows),
                "dim": int(dim),
                "dtype": dtype,
                "identity": identity,
                "versions": package_versions(),
            }
            full["fingerprint"] = _fingerprint(cls._identity_of(full))
            _MappedNpy.create(path / DATA, (int(n_rows), int(dim)), dtype)
            _MappedNpy.create(path / DONE, (int(n_rows),), "uint8")
            atomic.write_json(path / MANIFEST, full)
            return cls(path, json.loads((path / MANIFEST).read_text()), writable=True)

    @classmethod
    def open(cls, path: str | Path, writable: bool = False) -> FeatureStore:
        """Open an existing store (read-only unless `writable`)."""
        path = Path(path)
        if not (path / MANIFEST).exists():
            raise FileNotFoundError(f"no feature store at {path} (no {MANIFEST})")
        manifest = json.loads((path / MANIFEST).read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{path} is not a feature store (format {manifest.get('format')!r})")
        if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{path}: store format version {manifest['format_version']} is "
                             f"newer than this program's ({FORMAT_VERSION}); upgrade clusterucb")
        return cls(path, manifest, writable=writable)

    @staticmethod
    def _identity_of(manifest: dict[str, Any]) -> dict[str, Any]:
        return {"n_rows": manifest["n_rows"], "dim": manifest["dim"], "dtype": manifest["dtype"],
                "identity": manifest["identity"]}

    @classmethod
    def _check(cls, path: Path, existing: dict[str, Any], identity: dict[str, Any],
               n_rows: int, dim: int, dtype: str) -> None:
        if existing.get("format") != FORMAT:
            raise StoreMismatch(f"{path} holds something else than a feature store")
        stored = cls._identity_of(existing)
        requested = {"n_rows": int(n_rows), "dim": int(dim), "dtype": dtype,
                     "identity": identity}
        diffs = _diff(stored, requested)
        if diffs:
            lines = "; ".join(f"{k.removeprefix('identity.')}: stored={a!r}, requested={b!r}"
                              for k, a, b in diffs)
            raise StoreMismatch(
                f"the feature store at {path} was made from different inputs ({lines}). "
                f"Use another store name, or delete the folder to recompute.")
        vdiff = _diff(existing.get("versions", {}), package_versions())
        if vdiff:
            lines = "; ".join(f"{k}: stored={a}, now={b}" for k, a, b in vdiff)
            warnings.warn(f"feature store at {path} was written with other package versions "
                          f"({lines}); continuing with it", StoreVersionWarning, stacklevel=3)

    # ---- state ---------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self.manifest["identity"])

    @property
    def done(self) -> np.ndarray:
        """Which rows are computed (a fresh copy: other processes may be writing)."""
        return np.asarray(self._done.array != NOT_DONE)

    @property
    def flagged(self) -> np.ndarray:
        """Rows computed but without features (no gradient): their values are NaN."""
        return np.asarray(self._done.array == DONE_FLAGGED)

    @property
    def n_done(self) -> int:
        return int(np.count_nonzero(self._done.array))

    @property
    def complete(self) -> bool:
        return self.n_done == self.n_rows

    def __len__(self) -> int:
        return self.n_rows

    def missing(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Rows (of `rows`, in their order; default all) that still have to be computed."""
        if rows is None:
            return np.flatnonzero(self._done.array == NOT_DONE).astype(np.int64)
        rows = self._rows(rows)
        return rows[self._done.array[rows] == NOT_DONE]

    def _rows(self, rows: Any) -> np.ndarray:
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (self.n_rows,):
                raise ValueError(f"boolean row mask must have length {self.n_rows}")
            return np.flatnonzero(rows).astype(np.int64)
        if rows.size == 0:
            return np.zeros(0, dtype=np.int64)
        if not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(f"rows must be integers, not {rows.dtype}")
        rows = rows.astype(np.int64).reshape(-1)
        if rows.min() < 0 or rows.max() >= self.n_rows:
            raise IndexError(f"row index out of range 0..{self.n_rows - 1}")
        return rows

    def annotate(self, key: str, value: Any) -> None:
        """Record a note in the manifest (not part of the identity), e.g. the formatting report
        saying how many rows cannot be scored."""
        if key in ("identity", "fingerprint", "n_rows", "dim", "dtype", "format",
                   "format_version"):
            raise ValueError(f"{key!r} is a store identity field, not a note")
        with _locked(self.path):
            manifest = json.loads((self.path / MANIFEST).read_text())
            manifest[key] = _plain(value)
            atomic.write_json(self.path / MANIFEST, manifest)
        self.manifest = manifest

    # ---- writing -------------------------------------------------------------------------
    def write(self, rows: np.ndarray, feats: np.ndarray, flagged: np.ndarray | None = None
              ) -> None:
        """Store `feats[i]` as row `rows[i]`, flush it, then mark the rows done.

        Rows in `flagged` (bool mask over `rows`), and rows with any non-finite value, are
        stored as NaN and marked flagged (computed, but without a feature vector).
        """
        if not self.writable:
            raise PermissionError(f"feature store at {self.path} was opened read-only")
        rows = self._rows(rows)
        feats = np.asarray(feats)
        if feats.shape != (len(rows), self.dim):
            raise ValueError(f"features of shape {feats.shape} for {len(rows)} rows of dim "
                             f"{self.dim}")
        if len(np.unique(rows)) != len(rows):
            raise ValueError("rows passed to write() must be distinct")
        if len(rows) == 0:
            return
        bad = ~np.isfinite(feats).all(axis=1)
        if flagged is not None:
            bad |= np.asarray(flagged, dtype=bool).reshape(-1)
        vals = feats.astype(self.dtype, copy=True)
        vals[bad] = np.nan
        order = np.argsort(rows, kind="stable")
        rows, vals, bad = rows[order], vals[order], bad[order]
        self._data.array[rows] = vals
        self._data.flush_rows(int(rows[0]), int(rows[-1]) + 1)
        self._done.array[rows] = np.where(bad, DONE_FLAGGED, DONE_OK).astype(np.uint8)
        self._done.flush_rows(int(rows[0]), int(rows[-1]) + 1)

    def copy_rows(self, other: FeatureStore, rows: np.ndarray) -> None:
        """Copy done rows of another store of the same shape byte for byte (a shard merge):
        values first, flushed, then the done bytes, as `write` does."""
        if not self.writable:
            raise PermissionError(f"feature store at {self.path} was opened read-only")
        rows = np.sort(self._rows(rows))
        if not len(rows):
            return
        status = other._done.array[rows]
        if np.any(status == NOT_DONE):
            raise StoreIncomplete(f"rows not done in {other.path}: "
                                  f"{rows[status == NOT_DONE][:5].tolist()}")
        self._data.array[rows] = other._data.array[rows]
        self._data.flush_rows(int(rows[0]), int(rows[-1]) + 1)
        self._done.array[rows] = status
        self._done.flush_rows(int(rows[0]), int(rows[-1]) + 1)

    # ---- reading -------------------------------------------------------------------------
    def read(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Rows as float32 (flagged rows are NaN). Raises `StoreIncomplete` on rows not done."""
        idx = np.arange(self.n_rows) if rows is None else self._rows(rows)
        status = self._done.array[idx]
        if np.any(status == NOT_DONE):
            bad = idx[status == NOT_DONE]
            raise StoreIncomplete(
                f"{len(bad)} of the {len(idx)} requested rows of {self.path} are not computed "
                f"yet (e.g. rows {', '.join(map(str, bad[:5]))})")
        if rows is None:
            return np.array(self._data.array, dtype=np.float32)
        return self._data.array[idx].astype(np.float32)

    def iter_chunks(self, chunk_rows: int = 65536, rows: np.ndarray | None = None,
                    skip_flagged: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (row indices, float32 features) chunk by chunk, for streaming over big stores.

        Raises `StoreIncomplete` on a row not computed; `skip_flagged` leaves out the flagged
        (NaN) rows, so a chunk may hold fewer than `chunk_rows` rows (never zero)."""
        idx = np.arange(self.n_rows) if rows is None else self._rows(rows)
        for lo in range(0, len(idx), max(1, int(chunk_rows))):
            part = idx[lo:lo + chunk_rows]
            feats = self.read(part)
            if skip_flagged:
                keep = self._done.array[part] != DONE_FLAGGED
                part, feats = part[keep], feats[keep]
                if not len(part):
                    continue
            yield part, feats

    # ---- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        for mapped in (getattr(self, "_data", None), getattr(self, "_done", None)):
            if mapped is not None:
                mapped.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"FeatureStore({str(self.path)!r}, rows={self.n_rows}, dim={self.dim}, "
                f"dtype={self.dtype}, done={self.n_done})")
