"""What an embedder returns for a page; numpy only (no torch), so ports, fakes and handlers can name it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PageEmbedding"]


@dataclass
class PageEmbedding:
    """One page's multivector (padding removed, L2-normalised rows) and where its image patches sit."""

    vectors: np.ndarray  # (n_tokens, dim) float32; prompt tokens included, exactly what colpali-engine scores
    grid: tuple[int, int] | None  # (rows, cols) of image-patch tokens on the page
    patch_offset: int  # index in `vectors` of the first image-patch token (row-major over `grid`)

    @property
    def patches(self) -> np.ndarray:
        """Only the image-patch rows, shaped (rows, cols, dim) when the family has a grid."""
        if self.grid is None:
            raise ValueError("this model family has no single patch grid")
        r, c = self.grid
        return self.vectors[self.patch_offset : self.patch_offset + r * c].reshape(r, c, -1)

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": list(self.vectors.shape),
            "dtype": "float32",
            "grid": list(self.grid) if self.grid else None,
            "patch_offset": self.patch_offset,
            "data": self.vectors.round(6).tolist(),
        }
