"""engine index check (issue 24 item 3) on both embedded backends (qdrant-edge; qdrant-client's local mode, the
server's code path): it detects a deliberately bad plan (5 FDE / 5 block candidates), --apply records limits
that reach the target in the collection, later searches (and a reopened collection) use them, ingest checks when
the collection has grown, /health?deep=1 reports the last result, and the CLI exits 1 on a missed target."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import Settings
from engine.index.check import candidates, check_index, pseudo_queries
from engine.index.client import ClientIndex
from engine.index.edge import EdgeIndex
from engine.service import DocVision
from tests.fixtures import documents as d
from tests.integration.test_search_plan import corpus

pytestmark = pytest.mark.integration
BACKENDS = ["edge", "local"]


def open_backend(backend: str, path: Path, model_id: str = "m1", dim: int = 128):
    if backend == "edge":
        return EdgeIndex(path / "edge", model_id=model_id, dim=dim)
    return ClientIndex(model_id=model_id, dim=dim, path=str(path / "local"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_check_detects_a_bad_plan_and_apply_fixes_it(tmp_path: Path, backend: str) -> None:
    records, _ = corpus(300 if backend == "edge" else 160)
    index = open_backend(backend, tmp_path)
    index.upsert(records)
    index.optimize()
    # the default plan on this collection meets the target
    assert check_index(index, queries=20, search=False).meets_target
    index.set_search_limits(5, 5)  # deliberately bad: 10 FDE candidates (at least top_k) for the whole rerank
    bad = check_index(index, queries=20, apply=True)
    assert (bad.current.prefetch_limit, bad.current.block_limit) == (5, 5)
    assert bad.current.recall_at_10 < 0.85 and not bad.meets_target
    assert bad.recommended is not None and bad.recommended.recall_at_10 >= 0.95 and bad.applied
    fixed = (bad.recommended.prefetch_limit, bad.recommended.block_limit)
    assert index.search_limits() == {"prefetch_limit": fixed[0], "block_limit": fixed[1]}
    # searches without explicit limits use the recorded ones: the same answers as asking for them
    q = pseudo_queries(index.sample_pages(1, seed=7), 1, seed=7)[0]
    plain = [h.point_id for h in index.search(q, top_k=10)]
    assert plain == [
        h.point_id for h in index.search(q, top_k=10, prefetch_limit=fixed[0], block_limit=fixed[1])
    ]
    index.close()
    reopened = open_backend(backend, tmp_path)  # recorded in the collection, not in this process
    assert reopened.search_limits() == {"prefetch_limit": fixed[0], "block_limit": fixed[1]}
    again = check_index(reopened, queries=20, search=False)
    assert again.meets_target and again.current.recall_at_10 >= 0.95
    last = reopened.last_check()
    assert last is not None and last["current"]["recall_at_10"] == again.current.recall_at_10
    reopened.close()


def test_candidates_end_with_every_page() -> None:
    grid = candidates("fde1", 5000)
    assert grid[-1] == (5000, 5000) and all(b <= p for p, b in grid)
    costs = [b * 8 + p for p, b in grid[:-1]]
    assert costs == sorted(costs)
    assert candidates("rows-cols", 150) == [(100, None), (150, None)]


@pytest.mark.slow
def test_ingest_checks_when_grown_and_health_reports_it(embedder, tmp_path: Path) -> None:
    s = Settings(index_path=tmp_path / "qdrant", store=str(tmp_path / "store"), recall_check_min_pages=4,
                 recall_check_queries=8, max_batch_size=2, ocr_languages="")  # fmt: skip
    dv = DocVision(s, embedder=embedder)
    assert dv.health(deep=True)["recall_check"] is None
    first = dv.ingest(d.multipage_pdf(tmp_path / "four.pdf"))
    assert first.recall_check is not None and first.recall_check["pages"] == 4
    assert 0 <= first.recall_check["recall_at_10"] <= 1
    second = dv.ingest(d.long_pdf(tmp_path / "three.pdf", 3))  # 7 pages: not yet twice the last check's 4
    assert second.recall_check is None
    health = dv.health(deep=True)["recall_check"]
    assert health["pages"] == 4 and health["current"]["recall_at_10"] == first.recall_check["recall_at_10"]
    assert "recall_check" not in dv.health()


@pytest.mark.slow
def test_cli_index_check_exits_1_on_a_missed_target_and_0_after_apply(
    embedder, baked_tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from engine.cli import main

    monkeypatch.setenv("DOCVISION_MODEL", str(baked_tiny))
    monkeypatch.setenv("DOCVISION_INDEX_PATH", str(tmp_path / "qdrant"))
    monkeypatch.setenv("DOCVISION_STORE", str(tmp_path / "store"))
    records, _ = corpus(300)
    for r in records:
        r.model_id = embedder.model_id
    index = open_backend("edge", tmp_path / "qdrant" / "pages", embedder.model_id, embedder.dim)
    index.upsert(records)
    index.optimize()
    index.set_search_limits(5, 5)
    index.close()
    assert main(["index", "check", "--queries", "20"]) == 1
    assert "misses the target" in capsys.readouterr().err
    assert main(["index", "check", "--queries", "20", "--apply"]) == 0
    assert main(["index", "check", "--queries", "20", "--json"]) == 0
    assert '"meets_target": true' in capsys.readouterr().out
