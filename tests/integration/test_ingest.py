"""Ingest pipeline on the tiny model with the real embedded index and a local blob store."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from engine.config import Settings
from engine.errors import CorruptDocument
from engine.service import DocVision
from tests.fixtures import documents as d

pytestmark = pytest.mark.integration


class CountingEmbedder:
    """The real embedder, counting pages embedded and optionally failing after N pages (a crash)."""

    def __init__(self, inner, fail_after: int | None = None) -> None:
        self.inner, self.fail_after, self.pages = inner, fail_after, 0

    def embed_images(self, images):
        if self.fail_after is not None and self.pages + len(images) > self.fail_after:
            raise RuntimeError("simulated crash")
        self.pages += len(images)
        return self.inner.embed_images(images)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
def service(embedder, tmp_path: Path) -> DocVision:
    s = Settings(index_path=tmp_path / "qdrant", store=str(tmp_path / "store"), max_batch_size=2)
    return DocVision(s, embedder=CountingEmbedder(embedder))


@pytest.mark.slow
def test_ingest_stores_pages_points_and_is_idempotent(service: DocVision, tmp_path: Path) -> None:
    pdf = d.long_pdf(tmp_path / "doc.pdf", 5)
    r = service.ingest(pdf)
    assert (r.page_count, r.pages_embedded, r.complete) == (5, 5, True)
    assert service.index.count(r.document_id) == 5
    keys = service.store.list(f"pages/{r.document_id}/")
    assert len(keys) == 5 and service.store.get(keys[0]).startswith(b"\x89PNG")
    again = service.ingest(pdf)
    assert (again.pages_embedded, again.pages_already_stored) == (0, 5)
    assert service.embedder.pages == 5 and service.index.count() == 5


def test_changed_document_under_the_same_source_replaces_the_old(service: DocVision, tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    first = service.ingest(d.long_pdf(path, 3))
    second = service.ingest(d.long_pdf(path, 2))  # new bytes, same key
    assert first.document_id != second.document_id
    assert second.replaced_documents == [first.document_id]
    assert service.index.count(first.document_id) == 0 and service.index.count() == 2


@pytest.mark.slow
def test_crash_then_resume_embeds_only_the_missing_pages(embedder, tmp_path: Path) -> None:
    s = Settings(index_path=tmp_path / "qdrant", store=str(tmp_path / "store"), max_batch_size=2)
    pdf = d.long_pdf(tmp_path / "doc.pdf", 7)
    crashing = DocVision(s, embedder=CountingEmbedder(embedder, fail_after=4))
    with pytest.raises(RuntimeError):
        crashing.ingest(pdf)
    assert crashing.index.stored_pages(_doc_id(pdf)) == {1, 2, 3, 4}
    crashing.index.close()
    resumed = DocVision(s, embedder=CountingEmbedder(embedder))
    r = resumed.ingest(pdf)
    assert (r.pages_already_stored, r.pages_embedded, r.complete) == (4, 3, True)
    assert resumed.embedder.pages == 3 and resumed.index.count() == 7


def _doc_id(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_deadline_checkpoints_instead_of_running_out_of_time(service: DocVision, tmp_path: Path) -> None:
    pdf = d.long_pdf(tmp_path / "doc.pdf", 6)
    r = service.ingest(pdf, deadline=time.monotonic() + 0.01)
    assert not r.complete and r.next_page == 3 and r.pages_embedded == 2  # first batch done, then it stops
    r2 = service.ingest(pdf, start_page=r.next_page)
    assert r2.complete and r2.pages_embedded == 4 and service.embedder.pages == 6
    assert service.index.stored_pages(r.document_id) == set(range(1, 7))


def test_failed_document_leaves_nothing(service: DocVision, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.7\n" + b"\x00junk" * 200)
    with pytest.raises(CorruptDocument):
        service.ingest(bad)
    assert service.index.count() == 0 and service.store.list() == []


def test_search_score_embed_and_similarity_map(service: DocVision, tmp_path: Path) -> None:
    r = service.ingest(d.multipage_pdf(tmp_path / "m.pdf"))
    found = service.search("shipping manifest", top_k=3)
    res = found.to_dict()  # the JSON the API and CLI answer
    assert (
        len(res["hits"]) == 3 and res["hits"][0]["document_id"] == r.document_id == found.hits[0].document_id
    )
    hit = res["hits"][0]
    scored = service.score(
        ["shipping manifest"], pages=[{"document_id": r.document_id, "page_number": hit["page_number"]}]
    )
    assert scored.scores.shape == (1, 1) and scored.to_dict()["scores"][0][0] == pytest.approx(
        hit["score"], rel=1e-3
    )
    emb = service.embed_multivector(texts=["a query"]).to_dict()
    assert emb["queries"][0]["shape"][1] == 128 and emb["queries"][0]["dtype"] == "float32"
    typed = service.similarity_map("shipping manifest", r.document_id, 1)
    smap = typed.to_dict()
    rows, cols = smap["grid"]
    assert len(smap["patches"]) == rows * cols == len(typed.patches)
    assert smap["patch_contribution_total"] <= smap["score"] + 1e-4
    boxes = np.array([p["box"] for p in smap["patches"]])
    assert boxes[:, 2].max() == 2550 and boxes[:, 3].max() == 3300 and boxes.min() == 0
    png = service.heatmap_png("shipping manifest", r.document_id, 1)
    assert png.startswith(b"\x89PNG")
