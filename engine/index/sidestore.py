"""A float16 copy of every page's full multivector beside the embedded shard, for an in-process BLAS MaxSim.

Qdrant stays the source of truth. The store is one append-only file (``fullvec.f16``: a header with a random
store id, then float16 token rows); each point's payload carries its pointer ``_side = [store id, first row,
rows, fingerprint]``, written by the same upsert that writes the point, after the rows were fsynced. So:

- upsert / replace: new rows are appended, the point's pointer moves to them (the old rows become garbage);
- delete: the point and its pointer go together (garbage again);
- crash between append and upsert: rows nobody points at, never a pointer to missing rows;
- a lost, truncated, replaced or foreign file: pointers whose store id, bounds or fingerprint (a hash of two
  of the page's rows) do not match are *stale*. A search that meets one reranks in Qdrant instead
  (correct, slower) and logs it; ``EdgeIndex.optimize`` rewrites the store from Qdrant's own vectors.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import threading
import uuid
from pathlib import Path

import numpy as np

MAGIC = b"DVSIDE01"
HEADER = 64  # magic (8) + store id (16) + dim (4) + padding
SIDE = "_side"  # payload field holding the pointer


def fingerprint(rows: np.ndarray) -> int:
    """48 bits of a keyed hash of a page's middle and last rows (as float16, whatever the store's type):
    catches misaligned, foreign or overwritten data. Not the first row: for causal models it is the prompt's
    first token, the same on every page."""
    sample = np.ascontiguousarray(rows[[len(rows) // 2, -1]], dtype=np.float16)
    return int.from_bytes(hashlib.blake2b(sample.tobytes(), digest_size=6).digest(), "little")


class SideStore:
    """float16 (half the disk and page cache) or float32 (no cast at search time) rows; one file per type."""

    def __init__(self, folder: Path, dim: int, dtype: str = "float16") -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float16, np.float32):
            raise ValueError(f"side store type {dtype!r} is not float16 or float32")
        self.path = Path(folder) / f"fullvec.f{self.dtype.itemsize * 8}"
        self.dim, self.row_bytes = dim, dim * self.dtype.itemsize
        self._lock = threading.Lock()
        self._map: mmap.mmap | None = None
        self._view: np.ndarray | None = None
        self.created = False  # True when this open started a new, empty store (any older pointers are stale)
        header = self._read_header()
        if header is None:
            self._create()
        else:
            self.store_id = header
        self._size = self.path.stat().st_size

    def _read_header(self) -> str | None:
        try:
            with self.path.open("rb") as f:
                head = f.read(HEADER)
        except FileNotFoundError:
            return None
        if len(head) < HEADER or head[:8] != MAGIC or int.from_bytes(head[24:28], "little") != self.dim:
            return None
        if (head[28] or 2) != self.dtype.itemsize:
            return None
        return head[8:24].hex()

    def _create(self) -> None:
        sid = uuid.uuid4().bytes
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            f.write(
                (MAGIC + sid + self.dim.to_bytes(4, "little") + bytes([self.dtype.itemsize])).ljust(
                    HEADER, b"\0"
                )
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.store_id, self.created = sid.hex(), True
        self._close_map()

    # ------------------------------------------------------------------------------------------ writes
    def append(self, pages: list[np.ndarray]) -> list[list]:
        """Append pages' rows (fsynced) and return their pointers, in order."""
        if not pages:
            return []
        with self._lock:
            size = self.path.stat().st_size
            # a torn tail from a crash mid-append is skipped, not reused: start at the next whole row
            first = -(-(size - HEADER) // self.row_bytes)
            pointers, chunks = [], []
            row = first
            for vectors in pages:
                rows = np.ascontiguousarray(vectors, dtype=self.dtype)
                pointers.append([self.store_id, row, len(rows), fingerprint(rows)])
                chunks.append(rows)
                row += len(rows)
            with self.path.open("r+b") as f:
                f.seek(HEADER + first * self.row_bytes)
                for rows in chunks:
                    f.write(rows.tobytes())
                f.flush()
                os.fsync(f.fileno())
            self._size = HEADER + row * self.row_bytes
            return pointers

    def reset(self) -> None:
        """Start an empty store under a new id: every existing pointer becomes stale."""
        with self._lock:
            self._create()
            self._size = self.path.stat().st_size

    # ------------------------------------------------------------------------------------------- reads
    def _rows_view(self) -> np.ndarray:
        if self._view is None or len(self._view) * self.row_bytes + HEADER < self._size:
            self._close_map()
            with self.path.open("rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            n = (len(self._map) - HEADER) // self.row_bytes
            self._view = np.frombuffer(
                self._map, dtype=self.dtype, count=n * self.dim, offset=HEADER
            ).reshape(n, self.dim)
        return self._view

    def valid(self, pointer: object) -> bool:
        """Does this payload pointer name rows of this store that still hold that page?"""
        if not (isinstance(pointer, list) and len(pointer) == 4 and pointer[0] == self.store_id):
            return False
        _, first, n, fp = pointer
        if not (isinstance(first, int) and isinstance(n, int) and n > 0 and first >= 0):
            return False
        view = self._rows_view()
        return first + n <= len(view) and fingerprint(view[first : first + n]) == fp

    def rows(self, pointer: list) -> np.ndarray:
        return np.asarray(self._rows_view()[pointer[1] : pointer[1] + pointer[2]], dtype=np.float32)

    def maxsim(
        self, query: np.ndarray, pointers: list[list], first_pass: tuple[np.ndarray, int] | None = None
    ) -> np.ndarray:
        """MaxSim of one query against each pointed page: one float32 GEMM over the gathered rows.

        first_pass=(cheap query, keep): score every page with the cheap query (e.g. a few centroids of the
        query's tokens) first and the full query only on the `keep` best; the others score -inf."""
        view = self._rows_view()
        sizes = np.array([p[2] for p in pointers])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        gathered = np.concatenate([view[p[1] : p[1] + p[2]] for p in pointers])
        if gathered.dtype != np.float32:
            gathered = _to_float32(gathered)
        q = np.asarray(query, dtype=np.float32)
        if first_pass is None or first_pass[1] >= len(pointers):
            return _maxsim(q, gathered, starts)
        cheap, keep = first_pass
        best = np.argsort(-_maxsim(np.asarray(cheap, dtype=np.float32), gathered, starts), kind="stable")[
            :keep
        ]
        best.sort()
        rows = np.concatenate([gathered[starts[i] : starts[i] + sizes[i]] for i in best])
        scores = np.full(len(pointers), -np.inf, dtype=np.float32)
        scores[best] = _maxsim(q, rows, np.concatenate([[0], np.cumsum(sizes[best])[:-1]]))
        return scores

    def garbage_ratio(self, live_rows: int) -> float:
        total = max(0, (self._size - HEADER) // self.row_bytes)
        return 0.0 if total == 0 else 1 - live_rows / total

    def _close_map(self) -> None:
        self._view = None
        if self._map is not None:
            with contextlib.suppress(BufferError):  # a caller still holds a view: the GC unmaps it later
                self._map.close()
            self._map = None

    def close(self) -> None:
        self._close_map()


def _maxsim(query: np.ndarray, rows: np.ndarray, starts: np.ndarray) -> np.ndarray:
    sims = query @ rows.T  # (query tokens, all gathered rows)
    return np.maximum.reduceat(sims, starts, axis=1).sum(axis=0)


def _to_float32(rows: np.ndarray) -> np.ndarray:
    """float16 -> float32 in one call. torch's cast is vectorised (F16C); numpy's is scalar, ~4x slower here.
    (One big cast: torch's per-slice copies wake its thread pool each time and were 10-100x slower.)"""
    try:
        import torch
    except ImportError:  # pragma: no cover - the image always has torch
        return rows.astype(np.float32)
    return torch.from_numpy(rows).float().numpy()
