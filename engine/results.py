"""What the core's read use cases return (engine.service.DocVision): typed values, turned into JSON only at the
edge (handlers and CLI call ``to_dict()``, which rounds). numpy only: the handlers import this without torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.embedding.vectors import PageEmbedding
from engine.index.base import SearchHit

__all__ = ["EmbedResult", "PageRef", "ScoreResult", "SearchResult", "StoredPage"]


@dataclass(frozen=True)
class SearchResult:
    query: str
    mode: str  # rerank, exact, dense, text or hybrid (engine/index/base.py: query_plan)
    model_id: str
    hits: list[SearchHit]
    query_encode_s: float  # seconds to embed the query (0 in text mode)
    search_s: float  # seconds in the index

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "mode": self.mode,
            "model_id": self.model_id,
            "hits": [h.to_dict() for h in self.hits],
            "timing_ms": {
                "query_encode": round(self.query_encode_s * 1000, 1),
                "search": round(self.search_s * 1000, 1),
            },
        }


@dataclass(frozen=True)
class StoredPage:
    """An indexed page: its payload (document_id, page_number, grid, size, image_key, …) and full multivector."""

    document_id: str
    page_number: int
    payload: dict[str, Any]  # the point's payload as stored (JSON values)
    vectors: np.ndarray  # (n_tokens, dim) float32


@dataclass(frozen=True)
class PageRef:
    """What a score column is: an indexed page, or the i-th ad-hoc image of the request."""

    document_id: str | None = None
    page_number: int | None = None
    image: int | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.image is not None:
            return {"image": self.image}
        return {"document_id": self.document_id, "page_number": self.page_number}


@dataclass(frozen=True)
class ScoreResult:
    queries: list[str]
    pages: list[PageRef]
    scores: np.ndarray  # (n_queries, n_pages) late-interaction (MaxSim) scores
    model_id: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "pages": [p.to_dict() for p in self.pages],
            "scores": self.scores.round(5).tolist(),
            "model_id": self.model_id,
        }


@dataclass(frozen=True)
class EmbedResult:
    model_id: str
    dim: int
    queries: list[np.ndarray] | None = None  # one (tokens, dim) float32 multivector per text
    images: list[PageEmbedding] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model_id": self.model_id, "dim": self.dim}
        if self.queries:
            out["queries"] = [
                {"shape": list(v.shape), "dtype": "float32", "data": v.round(6).tolist()}
                for v in self.queries
            ]
        if self.images:
            out["images"] = [e.to_json() for e in self.images]
        return out
