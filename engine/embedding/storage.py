"""Per-model storage plan: how many of a page's vectors the index keeps, and what a page costs in bytes.

A ColQwen2 page is ~760 vectors of 128 dims (190 KiB as float16); VultronRetriever Flash's is 1,792 × 320
(1.1 MiB), six times as much. The plan keeps the full multivector (the last rerank stage) under a byte budget
per page with hierarchical token pooling (colpali-engine's HierarchicalTokenPooler, engine/index/base.py
pool_tokens): the smallest pool factor whose pooled page fits. A factor chosen explicitly
(DOCVISION_TOKEN_POOL_FACTOR) wins. The collection records the factor (payload ``token_pool_factor``, edge
metadata) and refuses a process that pools differently, so the plan is fixed per collection.

Pooling is lossy (bench/results/search-400-pooling.json: factor 3 kept 0.815 of the unpooled exhaustive top
10 on synthetic vectors); a projection to fewer dimensions was the other option, rejected because it changes
what a stored vector means (queries would need the same projection forever) while pooling leaves query
vectors untouched. No torch here: health checks and the CLI listing compute plans from manifests.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# Full multivector bytes per page (float16) a plan stays under: every 128-d family fits unpooled
# (ColPali 1,030 vectors = 258 KiB, ColSmol 1,151 = 288 KiB); 320-d pages of 1,256-1,792 vectors pool by 3-4.
PAGE_BUDGET_BYTES = 320 * 1024
MAX_POOL_FACTOR = 16  # Settings.token_pool_factor's bound
FLOAT16 = 2
FDE_DIM = 2560  # engine/index/base.py FDES[FDE1].dim (kept here so this module needs no numpy)
BLOCK_TOKENS = 8  # 2 x 4 patches a block vector


@dataclass(frozen=True)
class StoragePlan:
    page_vectors: int  # what the model emits for a US-letter page (prompt tokens included)
    dim: int
    pool_factor: int
    stored_vectors: int  # full multivector after pooling
    bytes_per_page: dict[str, int]  # full, blocks, fde, mean, total (float16 vectors, float32 mean)
    budget_bytes: int
    chosen: str  # "budget" (this plan) or "setting" (DOCVISION_TOKEN_POOL_FACTOR)

    def to_dict(self) -> dict:
        return asdict(self)


def page_bytes(page_vectors: int, dim: int, pool_factor: int) -> dict[str, int]:
    """What one page holds in the fde1 plan: the (pooled) full multivector, the 2x4 blocks (from the unpooled
    tokens), the FDE vector and the mean vector."""
    # HierarchicalTokenPooler keeps max(n // factor, 1) clusters
    stored = max(page_vectors // pool_factor, 1) if pool_factor > 1 else page_vectors
    parts = {
        "full": stored * dim * FLOAT16,
        "blocks": math.ceil(page_vectors / BLOCK_TOKENS) * dim * FLOAT16,
        "fde": FDE_DIM * FLOAT16,
        "mean": dim * 4,
    }
    return parts | {"total": sum(parts.values())}


def plan_storage(
    page_vectors: int, dim: int, *, pool_factor: int | None = None, budget_bytes: int = PAGE_BUDGET_BYTES
) -> StoragePlan:
    """The smallest pool factor whose full multivector fits `budget_bytes`, unless `pool_factor` is given."""
    if page_vectors < 0 or dim <= 0:
        raise ValueError(f"a page of {page_vectors} vectors of {dim} dims has no storage plan")
    chosen = "setting" if pool_factor is not None else "budget"
    if pool_factor is None:
        full = page_vectors * dim * FLOAT16
        pool_factor = min(MAX_POOL_FACTOR, max(1, math.ceil(full / budget_bytes)))
    sizes = page_bytes(page_vectors, dim, pool_factor)
    stored = sizes["full"] // (dim * FLOAT16)
    return StoragePlan(page_vectors, dim, pool_factor, stored, sizes, budget_bytes, chosen)


LETTER_300_DPI = (2550, 3300)  # what engine.documents renders a US-letter page to


def count_page_vectors(processor: object, size: tuple[int, int] = LETTER_300_DPI) -> int:
    """Vectors a model emits for a blank page of `size` (prompt tokens included): the processor's own
    preprocessing (no forward pass), so bake time and the non-baked path know it without running the model."""
    from PIL import Image

    batch = processor.process_images([Image.new("RGB", size, "white")])  # type: ignore[attr-defined]
    return int(batch["attention_mask"][0].sum())
