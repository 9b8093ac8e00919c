"""Index through qdrant-client: a Qdrant server (QDRANT_URL + QDRANT_API_KEY) or qdrant-client's local mode."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from engine.index.base import (
    BLOCKS,
    COLS,
    FDE1,
    FDE_PLAN,
    FDES,
    FULL,
    MEAN,
    PAYLOAD_INDEXES,
    ROWS,
    PageRecord,
    PayloadQueries,
    SearchHit,
    Stage,
    check_model,
    check_pool_factor,
    hnsw_ef,
    plan_of,
    point_id,
    query_plan,
    with_retries,
)
from engine.index.text import RRF_K, TEXT

log = logging.getLogger(__name__)


def _transient() -> tuple[type[BaseException], ...]:
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException

    return (OSError, httpx.TransportError, ResponseHandlingException)


class ClientIndex(PayloadQueries):
    def __init__(self, *, model_id: str, dim: int = 128, collection: str = "pages", url: str | None = None,
                 api_key: str | None = None, path: str | None = None, float16: bool = True, timeout: int = 30,
                 token_pool_factor: int = 1, plan: str = FDE_PLAN, text_channel: bool = True) -> None:  # fmt: skip
        """`plan` and `text_channel` apply to a new collection (an existing one keeps the plan its named
        vectors tell, and has the text channel when it holds the `bm25` sparse vector)."""
        self.model_id, self.dim, self.collection = model_id, dim, collection
        self.pool_factor = token_pool_factor
        self.backend = "qdrant-server" if url else "qdrant-client-local"
        self.client = (
            QdrantClient(url=url, api_key=api_key, timeout=timeout) if url else QdrantClient(path=path)
        )
        self.where = f"{url or path}/{collection}"
        if self.client.collection_exists(collection):
            config = self.client.get_collection(collection).config.params
            params = config.vectors
            self.text_channel = TEXT in (config.sparse_vectors or {})
            stored_dim = params[FULL].size if isinstance(params, dict) and FULL in params else None
            self.plan = plan_of(params if isinstance(params, dict) else {})
            sample, _ = self.client.scroll(
                collection, limit=1, with_payload=["model_id", "token_pool_factor"], with_vectors=False
            )
            stored = (sample[0].payload or {}) if sample else {}
            try:
                check_model(stored.get("model_id"), stored_dim, model_id, dim, self.where)
                if sample:
                    check_pool_factor(stored.get("token_pool_factor"), token_pool_factor, self.where)
            except Exception:
                self.client.close()  # local mode holds a file lock: release it for the caller's next attempt
                raise
        else:
            self.plan, self.text_channel = plan, text_channel
            self._create(float16)

    def _create(self, float16: bool) -> None:
        maxsim = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
        dtype = models.Datatype.FLOAT16 if float16 else None
        no_graph = models.HnswConfigDiff(m=0)  # reranking only
        vectors = {
            FULL: models.VectorParams(size=self.dim, distance=models.Distance.COSINE, multivector_config=maxsim,
                                      datatype=dtype, hnsw_config=no_graph),
            MEAN: models.VectorParams(size=self.dim, distance=models.Distance.COSINE),
        }  # fmt: skip
        if self.plan == FDE_PLAN:
            vectors[FDE1] = models.VectorParams(
                size=FDES[FDE1].dim, distance=models.Distance.DOT, datatype=dtype
            )
            vectors[BLOCKS] = models.VectorParams(size=self.dim, distance=models.Distance.COSINE,
                                                  multivector_config=maxsim, datatype=dtype, hnsw_config=no_graph)  # fmt: skip
        else:
            for name in (ROWS, COLS):
                vectors[name] = models.VectorParams(size=self.dim, distance=models.Distance.COSINE,
                                                    multivector_config=maxsim)  # fmt: skip
        # the text channel: BM25 term weights per page (engine/index/text.py), IDF applied by Qdrant
        sparse = (
            {TEXT: models.SparseVectorParams(modifier=models.Modifier.IDF)} if self.text_channel else None
        )
        self.client.create_collection(self.collection, vectors_config=vectors, sparse_vectors_config=sparse)
        kinds = {"keyword": models.PayloadSchemaType.KEYWORD, "integer": models.PayloadSchemaType.INTEGER}
        for field, kind in PAYLOAD_INDEXES.items():
            self.client.create_payload_index(self.collection, field, kinds[kind])

    def upsert(self, records: list[PageRecord], *, last_safe_page: int = 0) -> None:
        points = []
        for r in records:
            vectors = r.named_vectors(self.pool_factor, plan=self.plan)
            terms = r.sparse() if self.text_channel else None
            if terms is not None:  # a page without words has no text vector
                vectors[TEXT] = models.SparseVector(indices=terms[0], values=terms[1])
            points.append(
                models.PointStruct(
                    id=point_id(r.document_id, r.page_number, r.model_id),
                    vector=vectors,
                    payload=r.payload(self.pool_factor),
                )
            )
        if points:
            with_retries(lambda: self.client.upsert(self.collection, points=points, wait=True), what="upsert",
                         document_id=records[0].document_id, last_safe_page=last_safe_page, transient=_transient())  # fmt: skip

    def delete_document(self, document_id: str) -> None:
        self.client.delete(
            self.collection,
            points_selector=models.FilterSelector(filter=_match("document_id", document_id)),
            wait=True,
        )

    def optimize(self) -> None:
        """Nothing to do: a Qdrant server indexes in the background; local mode has no HNSW at all."""

    def _payloads(self, field: str, value: str, fields: list[str]) -> list[dict[str, Any]]:
        flt, out, offset = _match(field, value), [], None
        while True:
            recs, offset = self.client.scroll(
                self.collection,
                scroll_filter=flt,
                limit=1000,
                offset=offset,
                with_payload=fields,
                with_vectors=False,
            )
            out += [r.payload or {} for r in recs]
            if offset is None:
                return out

    def count(self, document_id: str | None = None) -> int:
        return self.client.count(
            self.collection,
            count_filter=_match("document_id", document_id) if document_id else None,
            exact=True,
        ).count

    def get_page(self, document_id: str, page_number: int) -> tuple[dict[str, Any], np.ndarray] | None:
        recs = self.client.retrieve(
            self.collection,
            [point_id(document_id, page_number, self.model_id)],
            with_payload=True,
            with_vectors=[FULL],
        )
        if not recs:
            return None
        vectors = recs[0].vector
        assert isinstance(vectors, dict)
        return dict(recs[0].payload or {}), np.asarray(vectors[FULL], dtype=np.float32)

    def search(self, query: np.ndarray, *, top_k: int = 10, document_ids: list[str] | None = None,
               mode: str = "rerank", prefetch_limit: int | None = None,
               block_limit: int | None = None, text: str | None = None) -> list[SearchHit]:  # fmt: skip
        flt = (
            models.Filter(
                must=[models.FieldCondition(key="document_id", match=models.MatchAny(any=list(document_ids)))]
            )
            if document_ids
            else None
        )
        top = query_plan(query, mode, top_k=top_k, plan=self.plan, prefetch_limit=prefetch_limit,
                         block_limit=block_limit, text=text, text_channel=self.text_channel)  # fmt: skip

        def prefetch(stage: Stage) -> models.Prefetch:
            return models.Prefetch(
                query=_query(stage),
                using=stage.using or None,
                limit=stage.limit,
                filter=flt,
                prefetch=[prefetch(s) for s in stage.inner] or None,
                params=None
                if stage.inner or stage.sparse is not None
                else models.SearchParams(
                    hnsw_ef=hnsw_ef(2 * stage.limit if stage.using == FDE1 else stage.limit)
                ),
            )

        res = self.client.query_points(
            self.collection,
            prefetch=[prefetch(s) for s in top.inner] or None,
            query=_query(top),
            using=top.using or None,
            limit=top.limit,
            query_filter=flt,
            with_payload=True,
        )
        return [SearchHit(str(p.id), float(p.score), dict(p.payload or {})) for p in res.points]

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "where": self.where,
            "model_id": self.model_id,
            "dim": self.dim,
            "points": self.count(),
            "search_plan": self.plan,
            "text_channel": self.text_channel,
        }

    def close(self) -> None:
        self.client.close()


def _query(stage: Stage) -> Any:
    """A stage's scoring query: reciprocal rank fusion of its inner stages, BM25 terms, or a vector."""
    if stage.fusion:
        return models.RrfQuery(rrf=models.Rrf(k=RRF_K))
    if stage.sparse is not None:
        return models.SparseVector(indices=stage.sparse[0], values=stage.sparse[1])
    return stage.vector


def _match(field: str, value: str) -> models.Filter:
    return models.Filter(must=[models.FieldCondition(key=field, match=models.MatchValue(value=value))])
