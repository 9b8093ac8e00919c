"""The embedded engine's in-process MaxSim over its float16 side store (engine/index/sidestore.py), for real on
qdrant-edge: the same answers as Qdrant's exhaustive MaxSim, kept in step through replace / delete / reopen,
and a side store that no longer matches the shard is detected, answered around, and rebuilt."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from engine.index import PageRecord
from engine.index.edge import EdgeIndex, reduce_query
from engine.index.sidestore import HEADER, SIDE

pytestmark = pytest.mark.integration
GRID, OFFSET, DIM = (4, 5), 6, 128
TOPICS = np.random.default_rng(1).normal(size=(12, DIM))


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def page(seed: int) -> np.ndarray:
    """Pages over a small shared vocabulary, so that many pages score close to each other."""
    rng = np.random.default_rng(seed)
    topics = TOPICS[rng.integers(0, len(TOPICS), OFFSET + GRID[0] * GRID[1])]
    return unit(topics + 0.7 * rng.normal(size=topics.shape))


def rec(doc: str, p: int, seed: int) -> PageRecord:
    return PageRecord(doc, p, 5, page(seed), GRID, OFFSET, "m1", source_uri=f"s3://b/{doc}")


def queries(n: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(99)
    return [
        unit(TOPICS[rng.integers(0, len(TOPICS), 12)] + 0.5 * rng.normal(size=(12, DIM))) for _ in range(n)
    ]


def check_same_as_exhaustive(index: EdgeIndex, plan: str) -> None:
    """With every page a candidate, the in-process top 10 must be Qdrant's exhaustive MaxSim top 10."""
    for q in queries():
        exact = index.search(q, top_k=10, mode="exact")
        got = index.search(q, top_k=10, prefetch_limit=1000)
        assert index.last_plan == plan
        assert [h.point_id for h in got] == [h.point_id for h in exact]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in exact], atol=5e-3)
        assert SIDE not in got[0].payload and {"document_id", "page_number"} <= set(got[0].payload)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_in_process_rerank_equals_exhaustive_maxsim_through_replace_delete_reopen(
    tmp_path: Path, dtype: str
) -> None:
    index = EdgeIndex(tmp_path / "edge", model_id="m1", side_store=dtype)
    index.upsert([rec(f"d{d}", p, d * 10 + p) for d in range(12) for p in range(1, 6)])
    check_same_as_exhaustive(index, "side")
    # the in-process scores are Qdrant's scores, not just the same order
    q = queries(1)[0]
    assert index.search(q, top_k=3, prefetch_limit=1000)[0].score == pytest.approx(
        index.search(q, top_k=3, mode="exact")[0].score, abs=5e-3
    )

    # replace: the same points get new vectors; their pointers move to the new rows
    before = index.side.path.stat().st_size
    index.upsert([rec("d3", p, 1000 + p) for p in range(1, 6)])
    replaced = index.shard.retrieve(
        [h.point_id for h in index.search(q, top_k=60, mode="exact") if h.document_id == "d3"],
        with_payload=True,
        with_vector=False,
    )
    for r in replaced:
        np.testing.assert_allclose(
            index.side.rows(r.payload[SIDE]), page(1000 + r.payload["page_number"]), atol=2e-3
        )
    assert index.side.path.stat().st_size > before  # old rows stay as garbage, never reused in place
    index.delete_document("d5")
    assert index.count() == 55
    check_same_as_exhaustive(index, "side")
    assert all(h.document_id != "d5" for h in index.search(q, top_k=60, prefetch_limit=1000))
    index.close()

    again = EdgeIndex(tmp_path / "edge", model_id="m1", side_store=dtype)
    assert not again.side.created and again.side.path.name == f"fullvec.f{dtype[-2:]}"
    check_same_as_exhaustive(again, "side")
    # filters still apply on the in-process plan
    only = again.search(q, top_k=10, document_ids=["d1", "d7"], prefetch_limit=1000)
    assert again.last_plan == "side" and only and {h.document_id for h in only} <= {"d1", "d7"}
    again.close()


@pytest.mark.parametrize("damage", ["missing", "truncated", "foreign", "rows_overwritten"])
def test_stale_side_store_is_detected_answered_by_qdrant_and_rebuilt(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    index = EdgeIndex(tmp_path / "edge", model_id="m1", side_store="float16")
    index.upsert([rec(f"d{d}", p, d * 10 + p) for d in range(8) for p in range(1, 6)])
    index.close()
    side = tmp_path / "edge" / "fullvec.f16"
    if damage == "missing":
        side.unlink()
    elif damage == "truncated":
        with side.open("r+b") as f:
            f.truncate(side.stat().st_size // 2)
    elif damage == "foreign":  # another collection's store (another id) copied over this one
        other = EdgeIndex(tmp_path / "other", model_id="m1", side_store="float16")
        other.upsert([rec(f"x{d}", p, 500 + d * 10 + p) for d in range(8) for p in range(1, 6)])
        other.close()
        side.write_bytes((tmp_path / "other" / "fullvec.f16").read_bytes())
    else:  # same id and length, different rows: the pointers' fingerprints no longer match
        data = bytearray(side.read_bytes())
        data[HEADER:] = bytes(len(data) - HEADER)
        side.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="engine.index.edge"):
        again = EdgeIndex(tmp_path / "edge", model_id="m1", side_store="float16")
        check_same_as_exhaustive(again, "qdrant")  # correct answers, from Qdrant's own rerank
    assert any("side store" in r.getMessage() for r in caplog.records)
    repaired = again.repair_side_store()
    assert repaired == 40 if damage != "truncated" else 0 < repaired < 40
    check_same_as_exhaustive(again, "side")
    assert again.repair_side_store() == 0  # nothing left to repair
    again.close()


def test_crash_leftovers_and_garbage_are_harmless_and_compacted(tmp_path: Path) -> None:
    index = EdgeIndex(tmp_path / "edge", model_id="m1", side_store="float16")
    index.upsert([rec(f"d{d}", p, d * 10 + p) for d in range(6) for p in range(1, 6)])
    # a crash after the rows were appended but before the points were written: rows nobody points at
    index.side.append([page(7777), page(7778)])
    # and a torn tail (a crash mid-write): the next append starts at the next whole row
    with index.side.path.open("ab") as f:
        f.write(b"\x01" * 100)
    index.upsert([rec("late", 1, 4242)])
    check_same_as_exhaustive(index, "side")
    # replacing everything several times makes the store mostly garbage; optimize() compacts it
    for round_ in range(3):
        index.upsert([rec(f"d{d}", p, 100 * round_ + d * 10 + p) for d in range(6) for p in range(1, 6)])
    size = index.side.path.stat().st_size
    index.optimize()
    assert index.side.path.stat().st_size < size / 2
    check_same_as_exhaustive(index, "side")
    index.close()


def test_reduced_prefetch_query_keeps_the_rerank_exact(tmp_path: Path) -> None:
    q = queries(1)[0]
    c = reduce_query(q, 4)
    assert c.shape == (4, DIM) and np.allclose(np.linalg.norm(c, axis=1), 1, atol=1e-5)
    short = q[:3]
    assert reduce_query(q, None) is q and reduce_query(short, 4) is short  # fewer tokens than k: unchanged
    index = EdgeIndex(tmp_path / "edge", model_id="m1", side_store="float16")
    index.upsert([rec(f"d{d}", p, d * 10 + p) for d in range(6) for p in range(1, 6)])
    index.prefetch_query_tokens = 4
    check_same_as_exhaustive(index, "side")  # every page is a candidate: the final ranking is still exact
    index.rerank_in_process = False  # the reduced prefetch query on Qdrant's own rerank
    check_same_as_exhaustive(index, "qdrant")
    index.rerank_in_process = True
    # a cheap first pass (4 centroids) keeping 12 of 30: whatever it returns carries its exact MaxSim score
    index.rerank_first_pass = (4, 12)
    for q in queries():
        exact = {h.point_id: h.score for h in index.search(q, top_k=30, mode="exact")}
        got = index.search(q, top_k=10, prefetch_limit=1000)
        assert len(got) == 10 and index.last_plan == "side"
        assert all(abs(h.score - exact[h.point_id]) < 5e-3 for h in got)
        assert [h.score for h in got] == sorted((h.score for h in got), reverse=True)
    index.close()


def test_truncated_store_then_new_pages_never_lend_rows_to_old_pointers(tmp_path: Path) -> None:
    """A store cut back (restored from an older copy) and then appended to: new pages land at offsets old
    pointers still name. Their fingerprints (a hash of two rows) must not match, so answers stay exact."""
    index = EdgeIndex(tmp_path / "edge", model_id="m1", side_store="float16")
    index.upsert([rec(f"d{d}", p, d * 10 + p) for d in range(8) for p in range(1, 6)])
    with index.side.path.open("r+b") as f:
        f.truncate(HEADER + 10 * (OFFSET + GRID[0] * GRID[1]) * DIM * 2)  # keeps the first 10 pages' rows
    index.side._close_map()
    index.upsert([rec(f"n{d}", p, 500 + d * 10 + p) for d in range(4) for p in range(1, 6)])
    for q in queries():
        exact = index.search(q, top_k=10, mode="exact")
        got = index.search(q, top_k=10, prefetch_limit=1000)
        assert [h.point_id for h in got] == [h.point_id for h in exact]
    assert index.last_plan == "qdrant"  # stale pointers were detected, not scored against the new rows
    index.optimize()
    check_same_as_exhaustive(index, "side")


def test_a_failing_side_store_never_fails_the_upsert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = EdgeIndex(tmp_path / "edge", model_id="m1", side_store="float16")
    index.upsert([rec("d0", p, p) for p in range(1, 6)])

    def disk_full(pages: list) -> list:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(index.side, "append", disk_full)
    index.upsert([rec("d1", p, 100 + p) for p in range(1, 6)])  # indexed without pointers
    assert index.count() == 10
    for q in queries(3):
        assert [h.point_id for h in index.search(q, top_k=10, prefetch_limit=1000)] == [
            h.point_id for h in index.search(q, top_k=10, mode="exact")
        ]
    index.optimize()  # its repair fails too: logged, not raised
    monkeypatch.undo()
    index.optimize()
    check_same_as_exhaustive(index, "side")


def test_first_pass_never_returns_unscored_pages(tmp_path: Path) -> None:
    index = EdgeIndex(tmp_path / "edge", model_id="m1", side_store="float32")
    index.upsert([rec(f"d{d}", p, d * 10 + p) for d in range(4) for p in range(1, 6)])
    index.rerank_first_pass = (2, 3)  # keep 3 candidates, ask for 10
    hits = index.search(queries(1)[0], top_k=10, prefetch_limit=1000)
    assert index.last_plan == "side" and len(hits) == 3 and all(np.isfinite(h.score) for h in hits)
