"""Random projections of flattened LoRA gradients to d dimensions, then L2 normalisation.

Every projector is a fixed random linear map R (dim_in -> dim_out) that depends only on
(name, dim_in, dim_out, seed): never on the batch size, on how the input is cut into blocks,
on the chunk size used to apply it, or on the device. Its randomness is generated on the CPU
with NumPy's PCG64, one independent stream per fixed-size block of input coordinates
(`SeedSequence(seed, spawn_key=(block,))`), so any block can be made on its own, in any order,
in O(block x d) memory, for inputs of 100M+ coordinates.

Projectors (`PROJECTORS`):

- ``rademacher`` -- LESS's projection: a dense matrix of +-1/sqrt(d) entries (LESS and TRAK use
  it with d=8192, seed 0). Entry (i, j) is bit j%8 of byte j//8 of row i's share of its
  block's PCG64 byte stream (1 -> +1, 0 -> -1); blocks are `GEN_ROWS` input rows. Applying it
  costs 2*B*dim_in*d flops, and making it costs d random bits per input coordinate. TRAK's
  `BasicProjector`, which LESS uses on a CPU, regenerates the whole matrix (with a Bernoulli
  draw per entry) at every call of 16 rows; here the matrix is generated once and cached while
  it fits `cache_bytes` (1 GiB by default): as float32 when the whole matrix fits, else as
  +-1 int8 (4x denser; converting a chunk back to float costs ~20% of its matmul at B=16),
  else as packed bits (32x denser) for as many blocks as fit, regenerating the rest at every
  call -- each regenerated chunk is applied to the whole batch at once, so project many rows
  per call when the matrix does not fit.
- ``countsketch`` -- a sparse JL transform (count sketch; `nnz` non-zeros per input
  coordinate, default 1): coordinate i is added, with a random sign, to one output bucket.
  Buckets are balanced: within each block of `G` coordinates (a multiple of d) a random
  permutation assigns exactly G/d coordinates to each bucket. Cost O(B*dim_in) -- a gather and
  a sum -- and O(dim_in) bytes of state.
- ``srht`` -- subsampled randomized Hadamard transform: random signs, the orthonormal
  Walsh-Hadamard transform of the whole vector zero-padded to the next power of two N (done
  as a product of small Hadamard GEMMs, O(B*N*log N)), then d of the N outputs chosen
  uniformly without replacement, scaled by sqrt(N/d).

All three are JL maps: E<Rx, Ry> = <x, y>; for dense vectors the cosine error has standard
deviation about sqrt((1 + cos^2)/d) (~0.011 at d=8192) for each of them.

Default (`DEFAULT_PROJECTOR` = ``countsketch``), chosen by bench/bench_projection.py (one
run, same gradients, d=8192, B=64, errors averaged over 3 projection seeds, on this project's
2-core CPU while other jobs shared it -- absolute times are inflated, ratios are same-run):

  gradients (dim_in)                projector      mean|cos err|  max|err|  Spearman  speed
  synthetic LoRA-like (1,000,000)   rademacher     0.0082         0.041     0.9988    1x (97 s/call)
                                    countsketch    0.0080         0.036     0.9989    106x
                                    sjlt (nnz=4) 0.0087         0.042     0.9987    38x
                                    srht           0.0085         0.040     0.9988    15x
  real LoRA grads, random Llama     rademacher     0.0046         0.022     0.9986    1x (19 s/call)
  h=384 on demo chats (196,608)     countsketch    0.0050         0.024     0.9987    76x
                                    sjlt (nnz=4) 0.0043         0.022     0.9987    29x
                                    srht           0.0042         0.020     0.9985    9x

(seed-to-seed spread of the mean error: 0.0002-0.0009.) All four preserve cosines equally
well -- the differences are within the spread across seeds, as JL theory says (a count
sketch's inner-product variance is even slightly below a dense matrix's) -- while the count
sketch costs a gather-and-add instead of a 2*B*dim_in*d-flop GEMM plus d random bits per
input coordinate: ~100x faster here (speed = rademacher's time per call / this one's).
Rademacher at these sizes does not fit the 1 GiB cache as float32 or int8, so every call
unpacks 1 bit per entry (that, not the random generation, dominates: regenerating costs the
same). So the default is ``countsketch``; ``rademacher`` stays available (and is the reference
in every check) for features comparable with a LESS run, and is fast when its matrix fits the
cache as float32 (dim_in * d * 4 bytes <= cache_bytes) or on a GPU, where it is one GEMM.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

PROJECTORS = ("rademacher", "countsketch", "srht")
DEFAULT_PROJECTOR = "countsketch"
PROJECTION_VERSION = 1  # bump if any projector's matrix changes (it is in every spec)

GEN_ROWS = 1024  # rademacher: input rows per random stream (part of the matrix definition)
CS_BLOCK_MIN = 65536  # countsketch: coordinates per random stream, rounded up to a multiple of d


def _rng(seed: int, block: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed),
                                                                      spawn_key=(int(block),))))


def _device(device: Any) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


class Accumulator:
    """Projects one batch whose gradient arrives in consecutive column blocks.

    `add(block)` takes the next [B, n_i] block (any device/dtype; n_i can be anything);
    `result()` returns the [B, dim_out] float32 projection once all dim_in columns came.
    Lets a caller project a model's gradient module by module and free each block at once.
    """

    def __init__(self, proj: Projector, batch_size: int):
        self.proj = proj
        self.B = int(batch_size)
        self.pos = 0
        self.chunk = 0
        self._lo = 0
        self._hi = min(proj.chunk_rows, proj.dim_in)
        self._buf = torch.zeros(self.B, self._hi - self._lo, dtype=torch.float32,
                                device=proj.device)
        self._y = proj._new_output(self.B)

    def add(self, block: torch.Tensor) -> None:
        if block.dim() != 2 or block.shape[0] != self.B:
            raise ValueError(f"expected a [{self.B}, n] block, got {tuple(block.shape)}")
        n = block.shape[1]
        if self.pos + n > self.proj.dim_in:
            raise ValueError(f"blocks add up to more than dim_in={self.proj.dim_in} columns")
        block = block.to(self.proj.device)
        taken = 0
        while taken < n:
            step = min(n - taken, self._hi - self.pos)
            start = self.pos - self._lo
            self._buf[:, start:start + step].copy_(block[:, taken:taken + step])
            taken += step
            self.pos += step
            if self.pos == self._hi:
                self.proj._apply(self.chunk, self._lo, self._hi,
                                 self._buf[:, : self._hi - self._lo], self._y)
                self.chunk += 1
                self._lo = self._hi
                self._hi = min(self._lo + self.proj.chunk_rows, self.proj.dim_in)

    def result(self) -> torch.Tensor:
        if self.pos != self.proj.dim_in:
            raise ValueError(f"blocks cover {self.pos} of dim_in={self.proj.dim_in} columns")
        return self.proj._finish(self._y)


class Projector:
    """A fixed random map R^dim_in -> R^dim_out. Subclasses define the chunk step."""

    name = "base"

    def __init__(self, dim_in: int, dim_out: int, seed: int, device: Any, chunk_rows: int):
        if dim_in <= 0 or dim_out <= 0:
            raise ValueError(f"projection needs positive dims, got {dim_in} -> {dim_out}")
        self.dim_in = int(dim_in)
        self.dim_out = int(dim_out)
        self.seed = int(seed)
        self.device = _device(device)
        self.chunk_rows = int(chunk_rows)

    # -- public -----------------------------------------------------------------------------
    def project(self, grads: torch.Tensor) -> torch.Tensor:
        """[B, dim_in] (any float dtype, any device) -> [B, dim_out] float32 on self.device."""
        if grads.dim() != 2 or grads.shape[1] != self.dim_in:
            raise ValueError(f"expected [B, {self.dim_in}] gradients, got {tuple(grads.shape)}")
        y = self._new_output(grads.shape[0])
        step = self._span(grads.shape[0])
        for lo in range(0, self.dim_in, step):  # column views of the input: no copy of it
            hi = min(lo + step, self.dim_in)
            x = grads[:, lo:hi].to(device=self.device, dtype=torch.float32)
            self._apply(lo // self.chunk_rows, lo, hi, x, y)
        return self._finish(y)

    def project_blocks(self, blocks: Sequence[torch.Tensor]) -> torch.Tensor:
        """Same as project(torch.cat(blocks, 1)), without making the concatenation."""
        if not blocks:
            raise ValueError("no blocks to project")
        acc = self.accumulator(blocks[0].shape[0])
        for block in blocks:
            acc.add(block)
        return acc.result()

    def accumulator(self, batch_size: int) -> Accumulator:
        return Accumulator(self, batch_size)

    @property
    def spec(self) -> dict[str, Any]:
        """What identifies this map (put it in a feature store's manifest)."""
        return {"projection": self.name, "dim_in": self.dim_in, "dim_out": self.dim_out,
                "seed": self.seed, "version": PROJECTION_VERSION, **self._options()}

    def matrix_rows(self, lo: int, hi: int) -> torch.Tensor:
        """Rows lo..hi of the explicit matrix (for tests/benchmarks; small ranges only)."""
        eye = torch.zeros(hi - lo, self.dim_in, dtype=torch.float32)
        eye[torch.arange(hi - lo), torch.arange(lo, hi)] = 1.0
        return self.project(eye).cpu()

    def memory_plan(self) -> dict[str, Any]:
        """Bytes this map keeps on its device, bytes it regenerates at every call, and the
        working memory per projected row (what a caller budgets for)."""
        return {"state_bytes": 0, "regenerated_bytes_per_call": 0,
                "work_bytes_per_row": 4 * self.chunk_rows}

    # -- for subclasses ---------------------------------------------------------------------
    def _options(self) -> dict[str, Any]:
        return {}

    def _span(self, batch_size: int) -> int:
        """Input coordinates per `_apply` call in `project` (a multiple of chunk_rows)."""
        return self.chunk_rows

    def _new_output(self, B: int) -> torch.Tensor:
        return torch.zeros(B, self.dim_out, dtype=torch.float32, device=self.device)

    def _apply(self, chunk: int, lo: int, hi: int, x: torch.Tensor, y: torch.Tensor) -> None:
        raise NotImplementedError

    def _finish(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(dim_in={self.dim_in}, dim_out={self.dim_out}, "
                f"seed={self.seed}, device={self.device})")


class RademacherProjector(Projector):
    """LESS's dense +-1/sqrt(d) projection, generated per GEN_ROWS rows and cached."""

    name = "rademacher"

    def __init__(self, dim_in: int, dim_out: int = 8192, seed: int = 0, device: Any = "cpu",
                 chunk_rows: int = 4096, cache_bytes: int = 1 << 30):
        chunk_rows = max(GEN_ROWS, -(-int(chunk_rows) // GEN_ROWS) * GEN_ROWS)
        super().__init__(dim_in, dim_out, seed, device, chunk_rows)
        self.row_bytes = -(-self.dim_out // 8)
        entries = self.dim_in * self.dim_out
        self.cache_bytes = int(cache_bytes)
        if entries * 4 <= self.cache_bytes:
            self.cache_mode = "float32"
        elif entries <= self.cache_bytes:
            self.cache_mode = "int8"
        else:
            self.cache_mode = "bits"
        n_chunks = -(-self.dim_in // self.chunk_rows)
        if self.cache_mode == "bits":  # cache the leading chunks that fit, regenerate the rest
            self._cached_chunks, used = 0, 0
            for chunk in range(n_chunks):
                rows = min(self.chunk_rows, self.dim_in - chunk * self.chunk_rows)
                if used + rows * self.row_bytes > self.cache_bytes:
                    break
                used += rows * self.row_bytes
                self._cached_chunks += 1
        else:
            self._cached_chunks = n_chunks
        if self.device.type != "cpu" and self.cache_mode == "bits":
            raise ValueError(
                f"rademacher at dim_in={self.dim_in:,} x d={self.dim_out} is a "
                f"{entries / 1e9:.1f} GB matrix even as int8, over cache_bytes="
                f"{self.cache_bytes:,}: on {self.device.type} it would be regenerated at every "
                "call; use projection 'countsketch' (same cosine accuracy, bench_projection.py)")
        self._cache: dict[int, torch.Tensor] = {}
        self._work: torch.Tensor | None = None
        self._numpy_unpack = self.device.type == "cpu"
        self.scale = 1.0 / math.sqrt(self.dim_out)

    def _bits(self, lo: int, hi: int) -> np.ndarray:
        """Packed sign bits of rows lo..hi (aligned to GEN_ROWS at lo), uint8 [hi-lo, row_bytes]."""
        parts = []
        for block in range(lo // GEN_ROWS, -(-hi // GEN_ROWS)):
            rows = min(GEN_ROWS, self.dim_in - block * GEN_ROWS)
            raw = _rng(self.seed, block).bytes(rows * self.row_bytes)
            parts.append(np.frombuffer(raw, dtype=np.uint8).reshape(rows, self.row_bytes))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _signs_from_bits(self, bits: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        """Packed bits -> +-1 matrix of `dtype` on self.device (NumPy on the CPU, else torch)."""
        if self._numpy_unpack:
            u = np.unpackbits(bits, axis=1, count=self.dim_out, bitorder="little")
            u *= 2
            u -= 1  # 0 -> 255 (= -1 as int8), 1 -> 1
            signs = torch.from_numpy(u.view(np.int8))
            return signs if dtype == torch.int8 else signs.to(dtype)
        b = torch.from_numpy(bits if bits.flags.writeable else bits.copy()).to(self.device)
        shifts = torch.arange(8, dtype=torch.uint8, device=self.device)
        u = ((b.unsqueeze(-1) >> shifts) & 1).reshape(b.shape[0], -1)[:, : self.dim_out]
        return (u.to(torch.int8) * 2 - 1).to(dtype)

    def _matrix(self, chunk: int, lo: int, hi: int) -> torch.Tensor:
        """+-1 float32 matrix of rows lo..hi on self.device (cached / regenerated)."""
        cached = self._cache.get(chunk)
        fresh = None
        if cached is None:
            bits = self._bits(lo, hi)
            if self.cache_mode == "float32":
                cached = self._signs_from_bits(bits, torch.float32)
            elif self.cache_mode == "int8":
                cached = self._signs_from_bits(bits, torch.int8)
            elif chunk < self._cached_chunks:
                cached = torch.from_numpy(bits.copy())
            else:  # beyond the budget: regenerated at every call
                fresh = bits
            if fresh is None:
                self._cache[chunk] = cached
        if cached is not None and cached.dtype == torch.float32:
            return cached
        if self._work is None or self._work.shape[0] < hi - lo:
            self._work = torch.empty(self.chunk_rows, self.dim_out, dtype=torch.float32,
                                     device=self.device)
        work = self._work[: hi - lo]
        if cached is not None and cached.dtype == torch.int8:
            return work.copy_(cached)
        bits = fresh if fresh is not None else cached.numpy()  # type: ignore[union-attr]
        return work.copy_(self._signs_from_bits(bits, torch.int8))

    def _apply(self, chunk: int, lo: int, hi: int, x: torch.Tensor, y: torch.Tensor) -> None:
        y.addmm_(x, self._matrix(chunk, lo, hi))

    def _finish(self, y: torch.Tensor) -> torch.Tensor:
        return y.mul_(self.scale)

    def memory_plan(self) -> dict[str, Any]:
        per_entry = {"float32": 4, "int8": 1, "bits": 0.125}[self.cache_mode]
        regen = (self.dim_in - min(self.dim_in, self._cached_chunks * self.chunk_rows)) \
            * self.row_bytes
        return {"state_bytes": int(min(self.dim_in * self.dim_out * per_entry,
                                       self.cache_bytes)),
                "regenerated_bytes_per_call": int(regen),
                "work_bytes_per_row": 4 * self.chunk_rows}

    @property
    def cached_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._cache.values())


class CountSketchProjector(Projector):
    """Sparse JL: each input coordinate goes, with a random sign, to `nnz` balanced buckets.

    The hash is built once, for as many leading blocks as `cache_bytes` holds (5 bytes per
    coordinate and sketch: an int32 index and an int8 sign, ~0.67 GB at 2^27 coordinates), and
    kept on the projector's device; only blocks beyond that budget are regenerated per call.
    method "index_add" (CPU default): the index is each coordinate's bucket and the sign is the
    coordinate's. "fold" (GPU default, where `index_add_` uses atomics and is not deterministic):
    the index lists the coordinates bucket by bucket (a block's permutation) and the signs follow
    that order, so a span of many blocks is applied with one gather, one multiply and one sum.
    Same map either way."""

    name = "countsketch"

    def __init__(self, dim_in: int, dim_out: int = 8192, seed: int = 0, device: Any = "cpu",
                 nnz: int = 1, cache_bytes: int = 1 << 30, method: str = "auto",
                 work_bytes: int = 1 << 28):
        group = -(-CS_BLOCK_MIN // dim_out) * dim_out
        super().__init__(dim_in, dim_out, seed, device, group)
        if method == "auto":
            method = "index_add" if self.device.type == "cpu" else "fold"
        if method not in ("index_add", "fold"):
            raise ValueError(f"countsketch method must be auto, index_add or fold, not {method!r}")
        self.method = method
        self.nnz = int(nnz)
        if self.nnz < 1:
            raise ValueError("countsketch needs nnz >= 1")
        self.cache_bytes = int(cache_bytes)
        self.work_bytes = int(work_bytes)
        self.n_chunks = -(-self.dim_in // self.chunk_rows)
        self._index_dtype = torch.int32 if self.n_chunks * group < 2 ** 31 else torch.int64
        per_chunk = self.nnz * group * (self._index_dtype.itemsize + 1)
        self.resident_chunks = min(self.n_chunks, self.cache_bytes // per_chunk)
        self.hash_bytes = self.resident_chunks * per_chunk
        self._index: torch.Tensor | None = None  # [nnz, resident_chunks * G]
        self._sign: torch.Tensor | None = None  # int8, same shape

    def _options(self) -> dict[str, Any]:
        return {"nnz": self.nnz} if self.nnz != 1 else {}

    def memory_plan(self) -> dict[str, Any]:
        """What the hash costs: bytes kept on the device, and bytes regenerated at every call."""
        per_chunk = self.nnz * self.chunk_rows * (self._index_dtype.itemsize + 1)
        return {"state_bytes": self.hash_bytes,
                "regenerated_bytes_per_call": (self.n_chunks - self.resident_chunks) * per_chunk,
                "work_bytes_per_row": 2 * 4 * self.chunk_rows}

    def _chunk_hash(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """(index [nnz, G], sign [nnz, G] int8) of one block, in this projector's method."""
        rng = _rng(self.seed, chunk)
        G, d, base = self.chunk_rows, self.dim_out, chunk * self.chunk_rows
        index = np.empty((self.nnz, G), dtype=np.int64)
        sign = np.empty((self.nnz, G), dtype=np.int8)
        for k in range(self.nnz):
            perm = rng.permutation(G)
            s = rng.integers(0, 2, size=G, dtype=np.int8) * 2 - 1
            # coordinate perm[j] goes to bucket j % d: exactly G/d coordinates per bucket
            if self.method == "index_add":
                index[k, perm] = np.arange(G, dtype=np.int64) % d
                sign[k] = s
            else:
                coord = base + perm
                s = s[perm]
                s[coord >= self.dim_in] = 0  # the last block's padding adds nothing
                index[k] = np.minimum(coord, self.dim_in - 1)
                sign[k] = s
        return index, sign

    def _build(self) -> None:
        """The resident part of the hash, made once on the CPU and moved to the device."""
        G, n = self.chunk_rows, self.resident_chunks
        self._index = torch.empty(self.nnz, n * G, dtype=self._index_dtype, device=self.device)
        self._sign = torch.empty(self.nnz, n * G, dtype=torch.int8, device=self.device)
        step = max(1, (64 << 20) // (self.nnz * G * 9))  # ~64 MB of host memory per copy
        for c0 in range(0, n, step):
            parts = [self._chunk_hash(c) for c in range(c0, min(c0 + step, n))]
            idx = np.concatenate([p[0] for p in parts], axis=1)
            sgn = np.concatenate([p[1] for p in parts], axis=1)
            sl = slice(c0 * G, c0 * G + idx.shape[1])
            self._index[:, sl].copy_(torch.from_numpy(idx).to(self._index_dtype))
            self._sign[:, sl].copy_(torch.from_numpy(sgn))

    def _hash(self, lo: int, hi_chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Index and sign of blocks lo // G .. hi_chunk - 1 (resident, else regenerated)."""
        G = self.chunk_rows
        c0 = lo // G
        if hi_chunk <= self.resident_chunks:
            if self._index is None:
                self._build()
            return self._index[:, c0 * G:hi_chunk * G], self._sign[:, c0 * G:hi_chunk * G]
        parts = [self._chunk_hash(c) for c in range(c0, hi_chunk)]
        idx = torch.from_numpy(np.concatenate([p[0] for p in parts], axis=1)).to(self.device)
        sgn = torch.from_numpy(np.concatenate([p[1] for p in parts], axis=1)).to(self.device)
        return idx, sgn

    def _span(self, batch_size: int) -> int:
        """Coordinates per application step: whole blocks, as many as `work_bytes` allows."""
        G = self.chunk_rows
        if self.method == "index_add":
            return G
        blocks = max(1, self.work_bytes // max(1, 2 * 4 * G * batch_size))
        if self.resident_chunks < self.n_chunks:
            blocks = 1
        return G * blocks

    def _apply(self, chunk: int, lo: int, hi: int, x: torch.Tensor, y: torch.Tensor) -> None:
        G = self.chunk_rows
        hi_chunk = -(-hi // G)
        index, sign = self._hash(lo, hi_chunk)
        rows = hi - lo
        for k in range(self.nnz):
            if self.method == "index_add":
                y.index_add_(1, index[k, :rows], x * sign[k, :rows])
            else:
                take = index[k] - lo
                y += (x.index_select(1, take) * sign[k]).view(x.shape[0], -1, self.dim_out).sum(1)

    def _finish(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.nnz == 1 else y.mul_(1.0 / math.sqrt(self.nnz))


class SRHTProjector(Projector):
    """Subsampled randomized Hadamard transform over the whole (zero-padded) vector."""

    name = "srht"
    FACTOR = 128  # Hadamard applied as a Kronecker product of <=128x128 GEMMs

    def __init__(self, dim_in: int, dim_out: int = 8192, seed: int = 0, device: Any = "cpu",
                 max_batch_elems: int = 1 << 25):
        super().__init__(dim_in, dim_out, seed, device, chunk_rows=dim_in)
        self.N = 1 << max(0, (max(self.dim_in, self.dim_out) - 1).bit_length())
        rng = _rng(self.seed, 0)
        signs = rng.integers(0, 2, size=self.dim_in, dtype=np.int8) * 2 - 1
        rng_sel = _rng(self.seed, 1)
        sel = np.sort(rng_sel.choice(self.N, size=self.dim_out, replace=False))
        self._signs = torch.from_numpy(signs).to(self.device)
        self._sel = torch.from_numpy(sel.astype(np.int64)).to(self.device)
        self._factors = []
        k = self.N.bit_length() - 1
        while k > 0:
            step = min(k, self.FACTOR.bit_length() - 1)
            self._factors.append(self._hadamard(1 << step))
            k -= step
        self.scale = math.sqrt(self.N / self.dim_out) / math.sqrt(self.N)
        self.max_batch_elems = int(max_batch_elems)

    def _hadamard(self, n: int) -> torch.Tensor:
        H = torch.ones(1, 1)
        while H.shape[0] < n:
            H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
        return H.to(self.device)

    def hadamard(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised Sylvester-Hadamard transform of the rows of x ([B, N])."""
        B = x.shape[0]
        for H in self._factors:  # mode-wise Kronecker product: multiply mode 0, rotate modes
            f = H.shape[0]
            x = torch.matmul(H, x.reshape(B, f, -1)).transpose(1, 2).reshape(B, -1)
        return x

    def _apply(self, chunk: int, lo: int, hi: int, x: torch.Tensor, y: torch.Tensor) -> None:
        step = max(1, self.max_batch_elems // self.N)
        for b0 in range(0, x.shape[0], step):
            xb = x[b0:b0 + step] * self._signs
            if self.N > self.dim_in:
                xb = torch.nn.functional.pad(xb, (0, self.N - self.dim_in))
            y[b0:b0 + step] = self.hadamard(xb)[:, self._sel]

    def _finish(self, y: torch.Tensor) -> torch.Tensor:
        return y.mul_(self.scale)


def make_projector(name: str, dim_in: int, dim_out: int = 8192, seed: int = 0,
                   device: Any = "cpu", **options: Any) -> Projector:
    """A projector by name (see PROJECTORS); options go to its class (e.g. cache_bytes)."""
    classes = {"rademacher": RademacherProjector, "countsketch": CountSketchProjector,
               "srht": SRHTProjector}
    if name not in classes:
        raise ValueError(f"unknown projection {name!r}; choose one of {', '.join(PROJECTORS)}")
    return classes[name](dim_in, dim_out, seed=seed, device=device, **options)
