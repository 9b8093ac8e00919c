"""The retriever extraction uses (engine.ports.PageRetriever) over the service's index and embedder.

Extraction needs two things from retrieval, and only these: pages ranked for the schema's queries (to pick a
long document's pages) and one page's late-interaction vectors (similarity-map citations on pages with no
words to check). `ServiceRetriever` answers both from what the service already has: the index for an ingested
document, the embedder in memory for any other (the shared index is never written from extraction).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from engine.ports import PageVectors

if TYPE_CHECKING:
    from PIL import Image

    from engine.service import DocVision


class ServiceRetriever:
    """engine.ports.PageRetriever over engine.service.DocVision (its index; its embedder, loaded on first use)."""

    def __init__(self, service: DocVision) -> None:
        self.service = service

    def indexed_pages(self, document_id: str) -> int:
        return int(self.service.index.count(document_id))

    def rank_indexed(self, document_id: str, query: str, top_k: int) -> list[tuple[int, float]]:
        hits = self.service.search(query, top_k=top_k, document_ids=[document_id]).to_dict()["hits"]
        return [(int(h["page_number"]), float(h["score"])) for h in hits]

    def stored_vectors(self, document_id: str, page_number: int) -> PageVectors | None:
        found = self.service.index.get_page(document_id, page_number)
        if found is None:
            return None
        payload, vectors = found
        grid = (int(payload["grid_rows"]), int(payload["grid_cols"])) if payload.get("grid_rows") else None
        return PageVectors(vectors, grid, int(payload.get("patch_offset") or 0))

    def embed_page(self, image: Image.Image) -> PageVectors:
        (e,) = self.service.embedder.embed_images([image])
        return PageVectors(e.vectors, tuple(e.grid) if e.grid else None, int(e.patch_offset))  # type: ignore[arg-type]

    def embed_queries(self, texts: Sequence[str]) -> list[np.ndarray]:
        return list(self.service.embedder.embed_queries(list(texts)))

    def score(self, queries: Sequence[np.ndarray], pages: Sequence[np.ndarray]) -> np.ndarray:
        return np.asarray(self.service.embedder.score(list(queries), list(pages)))


def as_retriever(service: DocVision | None) -> ServiceRetriever | None:
    """The service a caller hands extraction, as its PageRetriever (None: none)."""
    return None if service is None else ServiceRetriever(service)
