"""The FDE rerank plan (FDE vector -> MaxSim on 2x4 blocks -> full MaxSim), on both embedded backends,
and collections built for the rows-cols plan before it, which keep answering with theirs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.config import Settings
from engine.index import PageRecord, open_index
from engine.index.base import FDE_PLAN, ROWS_COLS_PLAN
from tests.fixtures.vectors import corpus

pytestmark = pytest.mark.integration
BACKENDS = ["edge", "local"]


def exact_top(records: list[PageRecord], q: np.ndarray, k: int) -> list[str]:
    scores = [float((q @ r.vectors.T).max(axis=1).sum()) for r in records]
    return [records[i].document_id for i in np.argsort(scores)[::-1][:k]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_fde_plan_finds_what_exact_maxsim_finds(backend: str, tmp_path: Path) -> None:
    settings = Settings(index_backend=backend, index_path=tmp_path / "qdrant")
    records, queries = corpus(120)
    index = open_index("m1", 128, settings)
    index.upsert(records)
    index.optimize()
    assert index.plan == FDE_PLAN
    agree = []
    for q in queries:
        want = exact_top(records, q, 5)
        exact = [h.document_id for h in index.search(q, top_k=5, mode="exact")]
        assert exact[:3] == want[:3]  # the engine's MaxSim is the reference's (float16 storage)
        every = index.search(
            q, top_k=5, prefetch_limit=200, block_limit=200
        )  # every page reaches the last stage
        assert [h.document_id for h in every][:3] == want[:3]
        narrow = index.search(q, top_k=5, prefetch_limit=30, block_limit=10)
        agree.append(len({h.document_id for h in narrow} & set(want)) / 5)
    assert np.mean(agree) >= 0.8, agree  # 30 FDE candidates -> 10 by blocks: most of the exact top 5
    # a filter applies at every stage: a page far down the unfiltered ranking is still found
    last = exact_top(records, queries[0], 120)[-1]
    only = index.search(queries[0], top_k=3, document_ids=[last, "doc000"], prefetch_limit=5, block_limit=5)
    assert {h.document_id for h in only} == {last, "doc000"}
    index.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_collections_built_for_rows_cols_keep_their_plan(backend: str, tmp_path: Path) -> None:
    records, queries = corpus(60)
    path = tmp_path / "qdrant" / "pages"
    if backend == "edge":
        from engine.index.edge import EdgeIndex

        old = EdgeIndex(path / "edge", model_id="m1", plan=ROWS_COLS_PLAN)
        old.upsert(records)
        old.close()
        meta_path = path / "edge" / "docvision-collection.json"  # as written before the plan was recorded
        meta = json.loads(meta_path.read_text())
        meta.pop("search_plan")
        meta_path.write_text(json.dumps(meta))
    else:
        from engine.index.client import ClientIndex

        old = ClientIndex(model_id="m1", path=str(path / "local"), plan=ROWS_COLS_PLAN)
        old.upsert(records)
        old.close()
    index = open_index("m1", 128, Settings(index_backend=backend, index_path=tmp_path / "qdrant"))
    assert index.plan == ROWS_COLS_PLAN
    more, _ = corpus(3, seed=9)
    index.upsert([PageRecord("late", 1, 1, more[0].vectors, (6, 5), 6, "m1")])  # stored with rows/cols
    assert index.count() == 61
    q = queries[1]
    got = [h.document_id for h in index.search(q, top_k=3, prefetch_limit=61)]
    assert got == exact_top([*records, PageRecord("late", 1, 1, more[0].vectors, (6, 5), 6, "m1")], q, 3)
    index.close()
