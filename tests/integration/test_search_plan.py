"""The FDE rerank plan (FDE vector -> MaxSim on 2x4 blocks -> full MaxSim), on both embedded backends,
and collections built for the rows-cols plan before it, which keep answering with theirs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.config import Settings
from engine.index import PageRecord, open_index
from engine.index.base import BLOCKS, COLS, FDE1, FDE_PLAN, FDES, ROWS, ROWS_COLS_PLAN, query_plan
from engine.index.fde import FDE

pytestmark = pytest.mark.integration
BACKENDS = ["edge", "local"]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def corpus(n: int, seed: int = 3) -> tuple[list[PageRecord], list[np.ndarray]]:
    """Pages of 6 prompt tokens + a 6x5 patch grid over a 40-topic vocabulary (bands of one topic per two rows,
    as text lines are), and 8-token queries about two topics of a page: MaxSim scores that differ by page."""
    rng = np.random.default_rng(seed)
    topics, prompt = rng.normal(size=(40, 128)), rng.normal(size=(6, 128))
    records, queries = [], []
    for i in range(n):
        own = rng.choice(40, size=3, replace=False)
        grid = np.repeat(topics[rng.choice(own, size=3)], 2 * 5, axis=0) + 0.7 * rng.normal(size=(30, 128))
        v = unit(np.vstack([prompt + 0.1 * rng.normal(size=prompt.shape), grid]))
        records.append(PageRecord(f"doc{i:03d}", 1, 1, v, (6, 5), 6, "m1", source_uri=f"s3://b/{i}"))
        if i % 7 == 0:
            queries.append(unit(topics[rng.choice(own[:2], size=8)] + 0.7 * rng.normal(size=(8, 128))))
    return records, queries


def exact_top(records: list[PageRecord], q: np.ndarray, k: int) -> list[str]:
    scores = [float((q @ r.vectors.T).max(axis=1).sum()) for r in records]
    return [records[i].document_id for i in np.argsort(scores)[::-1][:k]]


def test_fde_values_are_pinned_and_approximate_maxsim() -> None:
    """The encoding is part of the stored data: a change to it (numpy's legacy stream, the code) would make
    old pages and new queries disagree silently. Pinned values catch it; the scores must track MaxSim."""
    fde = FDES[FDE1]
    assert fde.params() == {"reps": 10, "ksim": 4, "dproj": 16, "seed": 20240526} and fde.dim == 2560
    tokens = unit(np.random.RandomState(0).standard_normal((12, 128)))
    doc, query = fde.encode(tokens, query=False), fde.encode(tokens[:3], query=True)
    assert np.allclose(doc[:4], [-0.0818, -0.3151, 0.5791, -0.1535], atol=1e-3), doc[:4]
    assert np.flatnonzero(query)[:3].tolist() == [48, 49, 50]  # buckets with none of the 3 tokens stay empty
    assert np.allclose(query[48:51], [0.2901, -0.2342, 0.0461], atol=1e-3), query[48:51]
    # every bucket of a one-token page holds that token (empty buckets take the nearest token)
    one = fde.encode(tokens[:1], query=False).reshape(10, 16, 16)
    assert np.allclose(one, one[:, :1, :].repeat(16, axis=1))
    # a query's encoding is the sum of its tokens' projections per bucket: it scales with the tokens
    assert np.allclose(fde.encode(np.vstack([tokens[:3]] * 2), query=True), 2 * query, atol=1e-5)
    records, queries = corpus(120)
    pages = np.stack([fde.encode(r.vectors, query=False) for r in records])
    for q in queries:
        approx = pages @ fde.encode(q, query=True)
        exact = np.array([(q @ r.vectors.T).max(axis=1).sum() for r in records])
        assert np.corrcoef(approx, exact)[0, 1] > 0.8


def test_fde_parameters_change_the_encoding() -> None:
    tokens = unit(np.random.RandomState(1).standard_normal((20, 128)))
    a = FDE(reps=2, ksim=3, dproj=8).encode(tokens, query=False)
    b = FDE(reps=2, ksim=3, dproj=8, seed=1).encode(tokens, query=False)
    assert a.shape == (2 * 8 * 8,) and not np.allclose(a, b)


def test_blocks_pool_2x4_keep_the_prompt_and_ragged_edges() -> None:
    v = unit(np.random.default_rng(0).normal(size=(2 + 3 * 5, 128)))
    rec = PageRecord("d", 1, 1, v, (3, 5), 2, "m1")
    blocks = rec.blocks()
    assert blocks.shape == (2 + 2 * 2, 128)  # 3x5 patches -> 2x2 blocks of 2 rows x 4 columns, edges ragged
    assert np.allclose(blocks[:2], v[:2], atol=1e-6)
    grid = v[2:].reshape(3, 5, 128)
    assert np.allclose(blocks[2], unit(grid[:2, :4].mean(axis=(0, 1))), atol=1e-6)
    assert np.allclose(blocks[3], unit(grid[:2, 4:].mean(axis=(0, 1))), atol=1e-6)  # a 2x1 block
    assert np.allclose(blocks[5], grid[2, 4], atol=1e-6)  # the corner patch is a block alone
    gridless = PageRecord("d", 1, 1, v, None, 0, "m1").blocks()
    assert gridless.shape == (3, 128) and np.allclose(gridless[2], unit(v[16:].mean(axis=0)), atol=1e-6)


def test_query_plan_stages() -> None:
    q = unit(np.random.default_rng(0).normal(size=(5, 128)))
    top = query_plan(q, "rerank", top_k=10)
    (blocks,) = top.inner
    (first,) = blocks.inner
    assert (top.using, blocks.using, first.using) == ("colqwen", BLOCKS, FDE1)
    assert (top.limit, blocks.limit, first.limit) == (10, 60, 300) and len(first.vector) == 2560
    assert not first.exact and query_plan(q, "rerank", top_k=10, pages=20_000).inner[0].inner[0].exact
    assert not query_plan(q, "rerank", top_k=10, pages=20_001).inner[0].inner[0].exact
    wide = query_plan(q, "rerank", top_k=100, prefetch_limit=50, block_limit=20)
    assert (wide.inner[0].limit, wide.inner[0].inner[0].limit) == (100, 100)  # never fewer than top_k
    legacy = query_plan(q, "rerank", top_k=10, plan=ROWS_COLS_PLAN)
    assert [(s.using, s.limit) for s in legacy.inner] == [(ROWS, 100), (COLS, 100)]
    assert not query_plan(q, "exact", top_k=10).inner


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
