"""Embedded index on qdrant-edge (Qdrant's in-process Rust engine): the default when QDRANT_URL is unset."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from engine.errors import IndexLocked
from engine.index.base import (
    COLS,
    FULL,
    MEAN,
    PAYLOAD_INDEXES,
    ROWS,
    PageRecord,
    PayloadQueries,
    SearchHit,
    check_model,
    hnsw_ef,
    point_id,
    query_plan,
    with_retries,
)

log = logging.getLogger(__name__)
_SCHEMA = {"keyword": qe.PayloadSchemaType.Keyword, "integer": qe.PayloadSchemaType.Integer}
# qdrant-edge raises plain Exceptions; these messages mean the request itself is wrong, so retrying is useless
_PERMANENT = ("Wrong input", "Bad input", "Bad request", "Not found", "wrong vector", "dimension")


def _transient_edge_error(exc: BaseException) -> bool:
    return not any(marker.lower() in str(exc).lower() for marker in _PERMANENT)


def _open_shard(path: Path, create: qe.EdgeConfig | None = None) -> qe.EdgeShard:
    try:
        if create is not None:
            return qe.EdgeShard.create(str(path), create)
        return qe.EdgeShard.load(str(path))
    except Exception as exc:
        if "WouldBlock" in str(exc) or "temporarily unavailable" in str(exc) or "lock" in str(exc).lower():
            raise IndexLocked(
                "the embedded index is open in another process (it serves one process at a time); stop the "
                "other process, use another DOCVISION_INDEX_PATH, or share a Qdrant server (QDRANT_URL)",
                document=str(path.parent),
            ) from exc
        raise


class EdgeIndex(PayloadQueries):
    backend = "qdrant-edge"

    def __init__(
        self,
        path: str | Path,
        *,
        model_id: str,
        dim: int = 128,
        float16: bool = True,
        indexing_threshold_kb: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.model_id, self.dim = model_id, dim
        meta_path = self.path / "docvision-collection.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            check_model(meta["model_id"], meta["dim"], model_id, dim, str(self.path))
            self.shard = _open_shard(self.path / "shard")
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            config = self._config(dim, float16, indexing_threshold_kb)
            self.shard = _open_shard(self.path / "shard", create=config)
            for field, kind in PAYLOAD_INDEXES.items():
                self.shard.update(qe.UpdateOperation.create_field_index(field, _SCHEMA[kind]))
            meta_path.write_text(json.dumps({"model_id": model_id, "dim": dim, "float16": float16}))

    @staticmethod
    def _config(dim: int, float16: bool, indexing_threshold_kb: int | None = None) -> qe.EdgeConfig:
        dtype = qe.VectorStorageDatatype.Float16 if float16 else None
        maxsim = qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim)
        hnsw = qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=1000)
        return qe.EdgeConfig(
            vectors={
                # The full multivector is only ever used to rerank a prefetch: no graph for it (m=0).
                FULL: qe.EdgeVectorParams(dim, qe.Distance.Cosine, multivector_config=maxsim, datatype=dtype,
                                          hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=1000)),
                ROWS: qe.EdgeVectorParams(dim, qe.Distance.Cosine, multivector_config=maxsim, hnsw_config=hnsw),
                COLS: qe.EdgeVectorParams(dim, qe.Distance.Cosine, multivector_config=maxsim, hnsw_config=hnsw),
                MEAN: qe.EdgeVectorParams(dim, qe.Distance.Cosine, hnsw_config=hnsw),
            },
            hnsw_config=hnsw,
            # segments below this size (Qdrant's default: 10 MB of vectors, ~350 pages) stay brute-force
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb),
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------ writes
    def upsert(self, records: list[PageRecord], *, last_safe_page: int = 0) -> None:
        points = []
        for r in records:
            vectors = r.named_vectors()
            points.append(qe.Point(point_id(r.document_id, r.page_number, r.model_id), vectors, r.payload()))
        if points:

            def write() -> None:
                self.shard.update(qe.UpdateOperation.upsert_points(points))
                self.shard.flush()

            with_retries(write, what="upsert", document_id=records[0].document_id, last_safe_page=last_safe_page,
                         transient=(Exception,), retry_if=_transient_edge_error)  # fmt: skip

    def delete_document(self, document_id: str) -> None:
        def delete() -> None:
            self.shard.update(qe.UpdateOperation.delete_points_by_filter(_match("document_id", document_id)))
            self.shard.flush()

        with_retries(delete, what="delete", document_id=document_id, last_safe_page=0,
                     transient=(Exception,), retry_if=_transient_edge_error)  # fmt: skip

    def optimize(self) -> None:
        """Build the HNSW graphs and merge segments. Edge never does this by itself: until it runs, every
        search is a brute-force scan of the unindexed segment (bench/results/search.json shows the cost)."""
        self.shard.optimize()
        self.shard.flush()

    # ------------------------------------------------------------------------------------------- reads
    def _payloads(self, field: str, value: str, fields: list[str]) -> list[dict[str, Any]]:
        flt, out, offset = _match(field, value), [], None
        while True:
            records, offset = self.shard.scroll(
                qe.ScrollRequest(
                    limit=1000, offset=offset, filter=flt, with_payload=fields, with_vector=False
                )
            )
            out += [r.payload or {} for r in records]
            if offset is None:
                return out

    def count(self, document_id: str | None = None) -> int:
        return self.shard.count(
            qe.CountRequest(filter=_match("document_id", document_id) if document_id else None, exact=True)
        )

    def get_page(self, document_id: str, page_number: int) -> tuple[dict[str, Any], np.ndarray] | None:
        recs = self.shard.retrieve(
            [point_id(document_id, page_number, self.model_id)], with_payload=True, with_vector=[FULL]
        )
        if not recs:
            return None
        vectors = recs[0].vector
        assert isinstance(vectors, dict)
        return dict(recs[0].payload or {}), np.asarray(vectors[FULL], dtype=np.float32)

    def search(self, query: np.ndarray, *, top_k: int = 10, document_ids: list[str] | None = None,
               mode: str = "rerank", prefetch_limit: int = 100) -> list[SearchHit]:  # fmt: skip
        flt = (
            qe.Filter(must=[qe.FieldCondition("document_id", match=qe.MatchAny(list(document_ids)))])
            if document_ids
            else None
        )
        vector, using, stages = query_plan(query, mode, prefetch_limit)
        prefetches = [
            qe.Prefetch(
                limit=limit,
                query=qe.Query.Nearest(vector, using=name),
                filter=flt,
                params=qe.SearchParams(hnsw_ef=hnsw_ef(limit)),
            )
            for name, limit in stages
        ]
        req = qe.QueryRequest(
            limit=top_k,
            query=qe.Query.Nearest(vector, using=using),
            prefetches=prefetches or None,
            filter=flt,
            with_payload=True,
        )
        return [SearchHit(str(p.id), float(p.score), dict(p.payload or {})) for p in self.shard.query(req)]

    def info(self) -> dict[str, Any]:
        info = self.shard.info()
        return {
            "backend": self.backend,
            "path": str(self.path),
            "model_id": self.model_id,
            "dim": self.dim,
            "points": self.count(),
            "segments": info.segments_count,
            "indexed_vectors": info.indexed_vectors_count,
        }

    def close(self) -> None:
        self.shard.close()


def _match(field: str, value: str) -> qe.Filter:
    return qe.Filter(must=[qe.FieldCondition(field, match=qe.MatchValue(value))])
