"""Fixed-dimensional encodings (MUVERA, Dhulipala et al. 2024): one dense vector per page whose dot product
with a query's encoding approximates the MaxSim (Chamfer) similarity of the two multivectors.

It is the first stage of the rerank plan: one HNSW search over one vector per page finds the candidates
(a pooled-multivector HNSW search costs MaxSim per graph hop), which cheaper stages then rerank.

Per repetition r: k random hyperplanes (SimHash) split the sphere into 2**k buckets; each token is projected
to `dproj` dimensions by a random ±1 matrix (an AMS sketch). A page's block for bucket b is the mean of its
projected tokens that fall in b (an empty bucket takes the token whose hash is nearest in Hamming distance);
a query's block is the sum. Concatenated over the repetitions: reps * 2**k * dproj dimensions.

The random matrices come from numpy's legacy ``RandomState`` (its stream is frozen by numpy's compatibility
policy): pages encoded years ago and a query encoded today use the same matrices. The parameters are
recorded in the collection; tests pin the encoding's values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cache

import numpy as np


@dataclass(frozen=True)
class FDE:
    reps: int = 20
    ksim: int = 5
    dproj: int = 16
    seed: int = 20240526

    @property
    def dim(self) -> int:
        return self.reps * (1 << self.ksim) * self.dproj

    def params(self) -> dict[str, int]:
        return asdict(self)

    def matrices(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """The random hyperplanes and projections for token vectors of `dim` (see _matrices)."""
        return _matrices(self.reps, self.ksim, self.dproj, self.seed, dim)

    def encode(self, tokens: np.ndarray, *, query: bool) -> np.ndarray:
        """The encoding (float32, self.dim) of one multivector (n_tokens, dim) of unit tokens."""
        v = np.asarray(tokens, dtype=np.float32)
        hyper, proj = self.matrices(v.shape[1])
        buckets, n = 1 << self.ksim, len(v)
        bits = (v @ hyper).reshape(n, self.reps, self.ksim) > 0  # one GEMM for every repetition
        codes = (bits.astype(np.int64) @ (1 << np.arange(self.ksim))).T  # (reps, n_tokens)
        onehot = (codes[:, None, :] == np.arange(buckets)[None, :, None]).astype(
            np.float32
        )  # (reps, buckets, n)
        projected = (v @ proj).reshape(n, self.reps, self.dproj).transpose(1, 0, 2)  # (reps, n_tokens, dproj)
        out = onehot @ projected  # per-bucket sums
        if not query:
            counts = onehot.sum(axis=2)  # (reps, buckets)
            filled = counts > 0
            out[filled] /= counts[filled][:, None]
            er, eb = np.nonzero(~filled)  # an empty bucket takes the nearest token (first of the nearest)
            if len(er):
                nearest = _hamming(self.ksim)[eb[:, None], codes[er]].argmin(axis=1)
                out[er, eb] = projected[er, nearest]
        return out.reshape(-1)


@cache
def _hamming(ksim: int) -> np.ndarray:
    """(buckets, buckets) Hamming distances between the buckets' SimHash codes."""
    codes = np.arange(1 << ksim)
    return np.bitwise_count(codes[:, None] ^ codes[None, :])


@cache
def _matrices(reps: int, ksim: int, dproj: int, seed: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(hyperplanes (dim, reps * ksim), projections (dim, reps * dproj)), repetition-major columns."""
    rng = np.random.RandomState(seed)  # legacy generator on purpose: its stream never changes
    hyper = rng.standard_normal((reps, dim, ksim)).astype(np.float32)
    signs = rng.randint(0, 2, size=(reps, dim, dproj)).astype(np.float32) * 2 - 1
    proj = signs / np.float32(np.sqrt(dproj))
    return (
        np.ascontiguousarray(hyper.transpose(1, 0, 2).reshape(dim, reps * ksim)),
        np.ascontiguousarray(proj.transpose(1, 0, 2).reshape(dim, reps * dproj)),
    )
