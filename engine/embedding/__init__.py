"""Late-interaction embeddings with ColPali-family models.

from engine.embedding import Embedder
emb = Embedder("models/baked")            # baked int8 dir, HF dir, or hub id
pages = emb.embed_images([image])         # [PageEmbedding(vectors=(n, 128), grid=(rows, cols), ...)]
q = emb.embed_queries(["total weight"])   # [(m, 128)]
emb.score(q, [p.vectors for p in pages])  # MaxSim, identical to colpali-engine

Names are imported on first use (PEP 562): importing this package, or engine.embedding.manifest, does not
import torch (a cold start's largest import), so handlers and health checks stay light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.embedding.embedder import Embedder, score_multi_vector
    from engine.embedding.families import FAMILIES, Family, detect_family
    from engine.embedding.vectors import PageEmbedding

_WHERE = {
    "Embedder": "engine.embedding.embedder",
    "PageEmbedding": "engine.embedding.vectors",
    "score_multi_vector": "engine.embedding.embedder",
    "FAMILIES": "engine.embedding.families",
    "Family": "engine.embedding.families",
    "detect_family": "engine.embedding.families",
}
__all__ = ["FAMILIES", "Embedder", "Family", "PageEmbedding", "detect_family", "score_multi_vector"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'engine.embedding' has no attribute {name!r}")
