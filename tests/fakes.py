"""Fakes of the core's ports (engine/ports.py) for unit tests: no model, no Qdrant, no AWS, no torch.

Integration tests use the real embedded components (tiny model, qdrant-edge, moto); these stand in where a
test is about the logic around the ports (the use cases in engine.service, the wiring in engine.bootstrap).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from engine.embedding.compute import ComputePlan
from engine.embedding.vectors import PageEmbedding
from engine.index import PageRecord, SearchHit, point_id

DIM = 16


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _seeded(text: str, n: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return _unit(np.random.default_rng(seed).standard_normal((n, DIM)))


class FakeEmbedder:
    """Deterministic vectors: a text's tokens are seeded by its words, a page's patches by its pixels."""

    model_id = "fake-embedder"
    dim = DIM
    plan = ComputePlan("cpu", "float32", False, 1, "fake")
    processor = None

    def __init__(self) -> None:
        self.images_embedded = 0
        self.queries_embedded = 0

    def embed_images(self, images: Sequence[Image.Image]) -> list[PageEmbedding]:
        out = []
        for image in images:
            rows, cols = max(1, image.height // 100), max(1, image.width // 100)
            vectors = np.vstack([_seeded("<prompt>", 2), _seeded(image.tobytes().hex()[:64], rows * cols)])
            out.append(PageEmbedding(vectors, (rows, cols), 2))
        self.images_embedded += len(images)
        return out

    def embed_queries(self, texts: Sequence[str]) -> list[np.ndarray]:
        self.queries_embedded += len(texts)
        return [np.vstack([_seeded(w, 1) for w in t.split()] or [_seeded("", 1)]) for t in texts]

    def score(self, queries: Sequence[np.ndarray], pages: Sequence[np.ndarray]) -> np.ndarray:
        return np.array(
            [[float((q @ p.T).max(axis=1).sum()) for p in pages] for q in queries], dtype=np.float32
        )

    def batch_size_for(self, visual_tokens: int, reserve_mb: int = 768) -> int:
        return 2

    def visual_tokens(self, width: int, height: int) -> int:
        return max(1, height // 100) * max(1, width // 100)

    def describe(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "dim": self.dim, "compute": self.plan.name}


class FakeIndex:
    """Pages in a dict; search is exact MaxSim over every stored page (every mode)."""

    backend = "fake"
    plan = "exact"
    text_channel = False

    def __init__(self) -> None:
        self.pages: dict[tuple[str, int], PageRecord] = {}

    def upsert(self, records: list[PageRecord], *, last_safe_page: int = 0) -> None:
        for r in records:
            self.pages[(r.document_id, r.page_number)] = r

    def delete_document(self, document_id: str) -> None:
        self.pages = {k: v for k, v in self.pages.items() if k[0] != document_id}

    def optimize(self) -> None:
        pass

    def stored_pages(self, document_id: str) -> set[int]:
        return {p for d, p in self.pages if d == document_id}

    def documents_for_source(self, source_uri: str) -> set[str]:
        return {r.document_id for r in self.pages.values() if r.source_uri == source_uri}

    def count(self, document_id: str | None = None) -> int:
        return sum(1 for d, _ in self.pages if document_id in (None, d))

    @staticmethod
    def _payload(r: PageRecord) -> dict[str, Any]:
        rows, cols = r.grid or (None, None)
        return {"document_id": r.document_id, "page_number": r.page_number, "page_count": r.page_count,
                "grid_rows": rows, "grid_cols": cols, "patch_offset": r.patch_offset, "width": r.width,
                "height": r.height, "image_key": r.image_key, "source_uri": r.source_uri}  # fmt: skip

    def get_page(self, document_id: str, page_number: int) -> tuple[dict[str, Any], np.ndarray] | None:
        r = self.pages.get((document_id, page_number))
        return None if r is None else (self._payload(r), r.vectors)

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
    ) -> list[SearchHit]:
        hits = [
            SearchHit(
                point_id(r.document_id, r.page_number, r.model_id),
                float((query @ r.vectors.T).max(axis=1).sum()),
                self._payload(r),
            )  # fmt: skip
            for r in self.pages.values()
            if document_ids is None or r.document_id in document_ids
        ]
        return sorted(hits, key=lambda h: -h.score)[:top_k]

    def info(self) -> dict[str, Any]:
        return {"backend": self.backend, "points": len(self.pages)}

    def close(self) -> None:
        pass


class MemoryStore:
    """A blob store in a dict."""

    uri = "memory://"

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        self.blobs[key] = data
        return key

    def get(self, key: str, *, version_id: str | None = None, max_bytes: int | None = None) -> bytes:
        from engine.errors import NotFound

        if key not in self.blobs:
            raise NotFound(f"no object {key}", document=key)
        return self.blobs[key]

    def exists(self, key: str) -> bool:
        return key in self.blobs

    def list(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.blobs if k.startswith(prefix))

    def delete(self, key: str) -> None:
        self.blobs.pop(key, None)

    def url(self, key: str) -> str:
        return self.uri + key
