"""Index backends for real (qdrant-edge and qdrant-client local mode): the same tests run against each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.config import Settings
from engine.errors import ModelMismatch, UpsertFailed
from engine.index import PageRecord, open_index

pytestmark = pytest.mark.integration
BACKENDS = ["edge", "local"]
RNG = np.random.default_rng(7)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def record(
    doc: str, page: int, vectors: np.ndarray | None = None, model: str = "m1", source: str = ""
) -> PageRecord:
    v = unit(RNG.normal(size=(6 + 4 * 5, 128))) if vectors is None else vectors
    return PageRecord(
        doc, page, 10, v, (4, 5), 6, model, source_uri=source or f"s3://b/{doc}", width=500, height=400
    )


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return Settings(index_backend=request.param, index_path=tmp_path / "qdrant")


def test_planted_page_wins_and_filters_apply(settings: Settings) -> None:
    index = open_index("m1", 128, settings)
    query = unit(RNG.normal(size=(8, 128)))
    records = [record(f"doc{d}", p) for d in range(3) for p in range(1, 6)]
    planted = np.array(records[7].vectors)
    planted[6 : 6 + 8] = query  # these patches match every query token exactly
    records[7].vectors = planted
    index.upsert(records)
    assert index.count() == 15
    for mode in ("rerank", "exact"):
        hits = index.search(query, top_k=3, mode=mode)
        assert (hits[0].document_id, hits[0].page_number) == ("doc1", 3), mode
        assert hits[0].score == pytest.approx(
            8.0, abs=0.02
        )  # MaxSim of 8 identical unit vectors (float16 storage)
        assert {"source_uri", "image_key", "grid_rows", "model_id", "ingested_at"} <= set(hits[0].payload)
    only = index.search(query, top_k=10, document_ids=["doc0", "doc2"])
    assert only and {h.document_id for h in only} <= {"doc0", "doc2"}
    dense = index.search(query, top_k=15, mode="dense")
    assert len(dense) == 15
    index.close()


def test_upsert_is_idempotent_and_documents_can_be_deleted(settings: Settings) -> None:
    index = open_index("m1", 128, settings)
    recs = [record("docA", p) for p in (1, 2, 3)]
    index.upsert(recs)
    index.upsert(recs)
    assert index.count() == 3 and index.count("docA") == 3
    assert index.stored_pages("docA") == {1, 2, 3}
    assert index.documents_for_source("s3://b/docA") == {"docA"}
    payload, vectors = index.get_page("docA", 2)
    assert payload["page_number"] == 2 and vectors.shape == (26, 128)
    np.testing.assert_allclose(vectors, recs[1].vectors, atol=2e-3)  # float16 storage
    index.delete_document("docA")
    assert index.count() == 0 and index.get_page("docA", 2) is None
    index.close()


def test_reopen_keeps_data_and_refuses_another_model(settings: Settings) -> None:
    index = open_index("m1", 128, settings)
    index.upsert([record("docA", 1)])
    index.close()
    again = open_index("m1", 128, settings)
    assert again.count() == 1
    again.close()
    with pytest.raises(ModelMismatch, match="'m1'"):
        open_index("m2", 128, settings)
    with pytest.raises(ModelMismatch, match="128-d"):
        open_index("m1", 64, settings)


def test_transient_upsert_errors_are_retried_then_typed(tmp_path: Path) -> None:
    index = open_index("m1", 128, Settings(index_path=tmp_path))
    real = index.shard

    class Flaky:
        failures = 2

        def update(self, op):
            if Flaky.failures:
                Flaky.failures -= 1
                raise OSError("disk hiccup")
            return real.update(op)

        def __getattr__(self, name):
            return getattr(real, name)

    index.shard = Flaky()
    index.upsert([record("docA", 1)])
    assert index.count() == 1
    Flaky.failures = 99
    with pytest.raises(UpsertFailed) as info:
        index.upsert([record("docA", 2)], last_safe_page=1)
    assert (
        info.value.details["last_safe_page"] == 1
        and "docA" in str(info.value)
        and "resume" in str(info.value)
    )


def test_optimized_edge_shard_uses_hnsw_and_stays_correct(tmp_path: Path) -> None:
    """Edge never indexes by itself: optimize() builds the graphs; search, later upserts and reopen still work."""
    from engine.index.edge import EdgeIndex

    index = EdgeIndex(tmp_path / "edge", model_id="m1", indexing_threshold_kb=1)
    query = unit(RNG.normal(size=(8, 128)))
    records = [record(f"doc{d:03d}", 1) for d in range(300)]
    planted = np.array(records[123].vectors)
    planted[6 : 6 + 8] = query
    records[123].vectors = planted
    index.upsert(records)
    assert index.info()["indexed_vectors"] == 0
    index.optimize()
    assert index.info()["indexed_vectors"] > 0
    for mode in ("rerank", "exact", "dense"):
        assert index.search(query, top_k=3, mode=mode)[0].document_id == "doc123", mode
    late = record("late", 1)
    late.vectors = planted.copy()
    late.vectors[6 : 6 + 8] = query[::-1]
    index.upsert([late])  # lands in a new appendable segment, searchable before the next optimize
    assert {h.document_id for h in index.search(query, top_k=2, mode="rerank")} == {"doc123", "late"}
    index.optimize()
    index.close()
    again = EdgeIndex(tmp_path / "edge", model_id="m1")
    assert again.count() == 301
    assert again.search(query, top_k=1)[0].document_id in {"doc123", "late"}
    again.close()
