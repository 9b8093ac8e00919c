"""Late-interaction embeddings with ColPali-family models.

from engine.embedding import Embedder
emb = Embedder("models/baked")            # baked int8 dir, HF dir, or hub id
pages = emb.embed_images([image])         # [PageEmbedding(vectors=(n, 128), grid=(rows, cols), ...)]
q = emb.embed_queries(["total weight"])   # [(m, 128)]
emb.score(q, [p.vectors for p in pages])  # MaxSim, identical to colpali-engine
"""

from engine.embedding.embedder import Embedder, PageEmbedding, score_multi_vector
from engine.embedding.families import FAMILIES, Family, detect_family

__all__ = ["FAMILIES", "Embedder", "Family", "PageEmbedding", "detect_family", "score_multi_vector"]
