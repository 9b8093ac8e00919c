"""The core's ports: small typed interfaces the use cases (ingest, search, extraction, jobs) depend on.

Adapters implement them (engine.embedding.Embedder, engine.index backends, engine.storage stores,
engine.jobs.DynamoJobStore); ``engine.bootstrap.build`` builds them once from Settings. Tests hand in the
real embedded ones or fakes (tests/fakes.py). Nothing here imports torch: the handlers import this module
and must start without it (tests/integration/test_cold_start.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
from PIL import Image

from engine.index import PageIndex
from engine.jobs import JobStore
from engine.storage import BlobStore

if TYPE_CHECKING:
    from engine.documents.source import DocumentInput
    from engine.embedding.compute import ComputePlan
    from engine.embedding.vectors import PageEmbedding
    from engine.ingest import IngestResult

__all__ = ["BlobStore", "Embedder", "IngestService", "JobStore", "PageIndex", "PageRetriever", "PageVectors"]


class Embedder(Protocol):
    model_id: str
    dim: int
    plan: ComputePlan  # the compute plan (device, dtype), for reports
    processor: Any  # the family's colpali-engine processor (untyped third-party): tokenizer, process_queries

    def embed_images(self, images: Sequence[Image.Image]) -> list[PageEmbedding]: ...
    def embed_queries(self, texts: Sequence[str]) -> list[np.ndarray]: ...
    def score(self, queries: Sequence[np.ndarray], pages: Sequence[np.ndarray]) -> np.ndarray: ...
    def batch_size_for(self, visual_tokens: int, reserve_mb: int = 768) -> int: ...
    def visual_tokens(self, width: int, height: int) -> int: ...
    def describe(self) -> dict[str, Any]: ...  # a JSON report


class IngestService(Protocol):
    """What the Batch backfill needs of the core (engine.service.DocVision implements it)."""

    @property
    def store(self) -> BlobStore: ...
    @property
    def s3_client(self) -> Any: ...  # a boto3 S3 client (untyped third-party) or None

    def ingest(
        self,
        source: DocumentInput,
        *,
        name: str | None = ...,
        source_uri: str | None = ...,
        on_progress: Callable[[int, int], None] | None = ...,
    ) -> IngestResult: ...


class PageVectors(NamedTuple):
    """One page's late-interaction vectors: (tokens, dim), its patch grid (rows, cols) and where patches start."""

    vectors: np.ndarray
    grid: tuple[int, int] | None
    patch_offset: int


class PageRetriever(Protocol):
    """What extraction needs from retrieval (engine.extraction.plan / .provenance): pages ranked for queries,
    and one page's vectors. Implemented over the service's index and embedder by
    engine.extraction.retrieval.ServiceRetriever."""

    def indexed_pages(self, document_id: str) -> int: ...  # how many of its pages the index holds
    def rank_indexed(self, document_id: str, query: str, top_k: int) -> list[tuple[int, float]]: ...
    def stored_vectors(self, document_id: str, page_number: int) -> PageVectors | None: ...
    def embed_page(self, image: Image.Image) -> PageVectors: ...  # in memory, never written to the index
    def embed_queries(self, texts: Sequence[str]) -> list[np.ndarray]: ...
    def score(self, queries: Sequence[np.ndarray], pages: Sequence[np.ndarray]) -> np.ndarray: ...
