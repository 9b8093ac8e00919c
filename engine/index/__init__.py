"""Late-interaction page index in Qdrant: one interface, three backends chosen by configuration.

    QDRANT_URL set                       → Qdrant server through qdrant-client (production)
    DOCVISION_INDEX_BACKEND=edge (default) → qdrant-edge, Qdrant's in-process Rust engine
    DOCVISION_INDEX_BACKEND=local        → qdrant-client's pure-Python local mode

Per page: the full multivector (MaxSim, no HNSW) for the last rerank stage, the page's tokens pooled over 2x4
patch blocks (MaxSim, no HNSW) for the middle one, one FDE vector (engine/index/fde.py; scanned, or HNSW above
20k pages) that finds the candidates, one mean vector (the dense baseline) and, in collections built since
hybrid search, a BM25 sparse vector of the page's text (engine/index/text.py) for the text and hybrid modes. Collections built before the FDE plan hold row/column-
pooled multivectors (HNSW) instead and keep that plan. bench/search.py measures both; see it also for why
edge is the default.
Every backend reranks inside Qdrant by default; the edge backend can instead keep a float16/float32 copy of
the full multivectors (DOCVISION_SIDE_STORE, engine/index/sidestore.py) and rerank in process with one BLAS
GEMM (off by default: slower on the measured 10k collection, bench/results/search-10k-plans.json).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from engine.config import Settings, get_settings
from engine.errors import ConfigError
from engine.index.base import PageRecord, SearchHit, point_id

__all__ = ["PageIndex", "PageRecord", "SearchHit", "open_index", "point_id"]


class PageIndex(Protocol):
    backend: str
    plan: str  # the rerank plan the collection was built for (engine/index/base.py: query_plan)
    text_channel: bool  # the collection holds BM25 text vectors (engine/index/text.py): text/hybrid modes

    def upsert(self, records: list[PageRecord], *, last_safe_page: int = 0) -> None: ...
    def delete_document(self, document_id: str) -> None: ...
    def optimize(self) -> None: ...
    def stored_pages(self, document_id: str) -> set[int]: ...
    def documents_for_source(self, source_uri: str) -> set[str]: ...
    def count(self, document_id: str | None = None) -> int: ...
    def get_page(self, document_id: str, page_number: int) -> tuple[dict[str, Any], np.ndarray] | None: ...
    def search(
        self,
        query: np.ndarray,
        *,
        top_k: int = 10,
        document_ids: list[str] | None = None,
        mode: str = "rerank",
        prefetch_limit: int | None = None,
        block_limit: int | None = None,
        text: str | None = None,
    ) -> list[SearchHit]: ...
    def info(self) -> dict[str, Any]: ...
    def close(self) -> None: ...
    # recall checks (engine/index/check.py): pages to make pseudo-queries from, limits recorded by --apply
    def sample_pages(self, n: int, seed: int = 0) -> list[tuple[dict[str, Any], np.ndarray]]: ...
    def search_limits(self) -> dict[str, int | None]: ...
    def set_search_limits(self, prefetch_limit: int | None, block_limit: int | None) -> None: ...
    def record_check(self, result: dict[str, Any]) -> None: ...
    def last_check(self) -> dict[str, Any] | None: ...


def open_index(
    model_id: str,
    dim: int = 128,
    settings: Settings | None = None,
    backend: str | None = None,
    token_pool_factor: int | None = None,
) -> PageIndex:
    """`token_pool_factor`: the model's storage plan (engine/embedding/storage.py); None = the setting."""
    s = settings or get_settings()
    pool = s.token_pool_factor if token_pool_factor is None else token_pool_factor
    if s.qdrant_url:
        from engine.index.client import ClientIndex

        return ClientIndex(
            model_id=model_id,
            dim=dim,
            collection=s.collection,
            url=s.qdrant_url,
            api_key=s.qdrant_api_key,
            token_pool_factor=pool,
        )
    chosen = backend or s.index_backend
    path = s.index_path / s.collection
    if chosen == "edge":
        from engine.index.edge import EdgeIndex

        index = EdgeIndex(
            path / "edge",
            model_id=model_id,
            dim=dim,
            side_store=None if s.side_store == "off" else s.side_store,
            token_pool_factor=pool,
        )
        index.prefetch_query_tokens = s.prefetch_query_tokens or None
        return index
    if chosen == "local":
        from engine.index.client import ClientIndex

        return ClientIndex(
            model_id=model_id, dim=dim, collection=s.collection, path=str(path / "local"),
            token_pool_factor=pool,
        )  # fmt: skip
    raise ConfigError(
        f"DOCVISION_INDEX_BACKEND={chosen!r} is not one of edge, local (or set QDRANT_URL for a server)"
    )
