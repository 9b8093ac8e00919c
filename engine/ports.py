"""The core's ports: small typed interfaces the use cases (ingest, search, extraction, jobs) depend on.

Adapters implement them (engine.embedding.Embedder, engine.index backends, engine.storage stores,
engine.jobs.DynamoJobStore); ``engine.service.bootstrap`` builds them once from Settings. Tests hand in the
real embedded ones or fakes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from PIL import Image

from engine.index import PageIndex
from engine.jobs import JobStore
from engine.storage import BlobStore

__all__ = ["BlobStore", "Embedder", "JobStore", "PageIndex"]


class Embedder(Protocol):
    model_id: str
    dim: int
    plan: Any  # the compute plan (device, dtype), for reports

    def embed_images(self, images: Sequence[Image.Image]) -> list[Any]: ...  # list[PageEmbedding]
    def embed_queries(self, texts: Sequence[str]) -> list[np.ndarray]: ...
    def score(self, queries: Sequence[np.ndarray], pages: Sequence[np.ndarray]) -> np.ndarray: ...
    def batch_size_for(self, visual_tokens: int, reserve_mb: int = 768) -> int: ...
    def visual_tokens(self, width: int, height: int) -> int: ...
    def describe(self) -> dict[str, Any]: ...
