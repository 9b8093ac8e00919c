"""Token pooling at index time (DOCVISION_TOKEN_POOL_FACTOR), for real on both embedded backends: the full
multivector is stored pooled, the factor is recorded in the collection and another factor is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.config import Settings
from engine.errors import TokenPoolMismatch
from engine.index import PageRecord, open_index
from engine.index.base import pool_tokens

pytestmark = pytest.mark.integration
RNG = np.random.default_rng(3)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def rec(doc: str, vectors: np.ndarray) -> PageRecord:
    return PageRecord(doc, 1, 1, vectors, (6, 5), 6, "m1", source_uri=f"s3://b/{doc}")


def test_pool_tokens_keeps_a_third_of_unit_vectors() -> None:
    v = unit(RNG.normal(size=(36, 128)))
    pooled = pool_tokens(v, 3)
    assert pooled.shape == (12, 128) and np.allclose(np.linalg.norm(pooled, axis=1), 1, atol=1e-5)
    assert pool_tokens(v, 1) is not None and np.array_equal(pool_tokens(v, 1), v)
    # identical tokens pool into one cluster: a page of 3 distinct tokens repeated keeps exactly those 3
    three = unit(RNG.normal(size=(3, 128)))
    assert np.allclose(
        np.sort(pool_tokens(np.repeat(three, 12, axis=0), 12), axis=0), np.sort(three, axis=0), atol=1e-5
    )


@pytest.mark.parametrize("backend", ["edge", "local"])
def test_pooled_collection_stores_pooled_pages_and_refuses_another_factor(
    tmp_path: Path, backend: str
) -> None:
    settings = Settings(index_backend=backend, index_path=tmp_path / "q", token_pool_factor=3)
    index = open_index("m1", 128, settings)
    query = unit(RNG.normal(size=(4, 128)))
    pages = [unit(RNG.normal(size=(36, 128))) for _ in range(8)]
    planted = pages[5].copy()
    planted[6:18] = np.repeat(query, 3, axis=0)  # the query's tokens, three patches each: they pool together
    pages[5] = planted
    index.upsert([rec(f"doc{i}", v) for i, v in enumerate(pages)])
    payload, stored = index.get_page("doc5", 1)
    assert stored.shape == (12, 128) and payload["token_pool_factor"] == 3
    for mode in ("rerank", "exact"):
        hit = index.search(query, top_k=1, mode=mode)[0]
        assert hit.document_id == "doc5" and hit.score == pytest.approx(4.0, abs=0.02), mode
    index.close()
    for other in (1, 2):
        with pytest.raises(TokenPoolMismatch) as info:
            open_index(
                "m1", 128, Settings(index_backend=backend, index_path=tmp_path / "q", token_pool_factor=other)
            )
        assert info.value.code == "token_pool_mismatch" and "DOCVISION_TOKEN_POOL_FACTOR" in str(info.value)
    again = open_index("m1", 128, settings)
    assert again.count() == 8
    again.close()
    # an unpooled collection refuses a pooling process too
    plain = open_index("m1", 128, Settings(index_backend=backend, index_path=tmp_path / "p"))
    plain.upsert([rec("doc0", pages[0])])
    plain.close()
    with pytest.raises(TokenPoolMismatch):
        open_index("m1", 128, Settings(index_backend=backend, index_path=tmp_path / "p", token_pool_factor=3))
