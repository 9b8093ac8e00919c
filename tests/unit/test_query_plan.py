"""The index's query math without an index: FDE encoding, 2x4 blocks, the rerank plan's stages, point ids.
(Moved from tests/integration/test_search_plan.py and test_index.py: pure logic, no Qdrant.)"""

from __future__ import annotations

import numpy as np
import pytest

from engine.index import PageRecord, point_id
from engine.index.base import BLOCKS, COLS, FDE1, FDES, ROWS, ROWS_COLS_PLAN, query_plan
from engine.index.fde import FDE
from tests.fixtures.vectors import corpus, unit

pytestmark = pytest.mark.unit


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


def test_point_ids_are_deterministic_uuids() -> None:
    a = point_id("d" * 64, 3, "m1")
    assert (
        a == point_id("d" * 64, 3, "m1")
        and a != point_id("d" * 64, 4, "m1")
        and a != point_id("d" * 64, 3, "m2")
    )
    assert len(a) == 36
