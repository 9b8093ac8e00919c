"""Similarity maps: which patches of a page a query matched, and the page image with that map laid over it.

Plain array code over an indexed page (engine.results.StoredPage) and a query's multivector, apart from the
service (as colpali-engine keeps its interpretability module apart from its models).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from engine.errors import NotFound
from engine.results import StoredPage

__all__ = ["Patch", "SimilarityMap", "render_heatmap", "similarity_map"]


@dataclass(frozen=True)
class Patch:
    row: int
    col: int
    box: tuple[int, int, int, int]  # page pixels: left, top, right, bottom
    contribution: float  # what this patch adds to the page's MaxSim score
    max_similarity: float  # the best similarity of any query token to this patch


@dataclass(frozen=True)
class SimilarityMap:
    query: str
    document_id: str
    page_number: int
    grid: tuple[int, int]  # (rows, cols) of image patches
    page_size: tuple[int, int]  # (width, height) in pixels
    image_key: str | None  # the page image in the blob store
    score: float  # the page's MaxSim score
    patch_contribution_total: float
    patches: list[Patch]  # most similar first

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query, "document_id": self.document_id, "page_number": self.page_number,
            "grid": list(self.grid), "page_size": list(self.page_size), "image_key": self.image_key,
            "score": round(self.score, 5), "patch_contribution_total": round(self.patch_contribution_total, 5),
            "patches": [{"row": p.row, "col": p.col, "box": list(p.box), "contribution": round(p.contribution, 5),
                         "max_similarity": round(p.max_similarity, 5)} for p in self.patches],
        }  # fmt: skip


def similarity_map(query: str, q: np.ndarray, page: StoredPage) -> SimilarityMap:
    """Per-patch MaxSim contributions of query multivector ``q`` mapped to page-pixel boxes.

    MaxSim = Σ over query tokens of the best page token; each query token's best match is credited to
    that patch, so the patch contributions (plus what prompt tokens won) sum to the page score.
    """
    payload, vectors = page.payload, page.vectors
    rows, cols = payload.get("grid_rows"), payload.get("grid_cols")
    if not rows or not cols:
        raise NotFound("this model family has no patch grid, so no similarity map", document=page.document_id)
    sims = q @ vectors.T  # (query tokens, page tokens)
    best = sims.argmax(axis=1)
    offset, n = int(payload["patch_offset"]), rows * cols
    contrib = np.zeros(n, dtype=np.float32)
    for t, tok in enumerate(best):
        if offset <= tok < offset + n:
            contrib[tok - offset] += sims[t, tok]
    patch_max = sims[:, offset : offset + n].max(axis=0)
    w, h = int(payload["width"]), int(payload["height"])
    patches = []
    for i in np.argsort(-patch_max):
        r, c = divmod(int(i), cols)
        box = (round(c * w / cols), round(r * h / rows), round((c + 1) * w / cols), round((r + 1) * h / rows))
        patches.append(Patch(r, c, box, float(contrib[i]), float(patch_max[i])))
    return SimilarityMap(
        query=query, document_id=page.document_id, page_number=page.page_number, grid=(rows, cols),
        page_size=(w, h), image_key=payload.get("image_key"), score=float(sims.max(axis=1).sum()),
        patch_contribution_total=float(contrib.sum()), patches=patches,
    )  # fmt: skip


def render_heatmap(page_png: bytes, smap: SimilarityMap, alpha: float = 0.45) -> bytes:
    """The page image with a similarity map laid over it (red = most similar patches), as PNG."""
    page = Image.open(io.BytesIO(page_png)).convert("RGB")
    rows, cols = smap.grid
    grid = np.zeros((rows, cols), dtype=np.float32)
    for p in smap.patches:
        grid[p.row, p.col] = round(p.max_similarity, 5)
    lo, hi = float(grid.min()), float(grid.max())
    norm = (grid - lo) / (hi - lo) if hi > lo else np.zeros_like(grid)
    heat = np.zeros((rows, cols, 3), dtype=np.uint8)
    heat[..., 0] = (255 * norm).astype(np.uint8)  # red = most similar
    heat[..., 2] = (255 * (1 - norm)).astype(np.uint8)
    overlay = Image.fromarray(heat).resize(page.size, Image.Resampling.NEAREST)
    buf = io.BytesIO()
    Image.blend(page, overlay, alpha).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
