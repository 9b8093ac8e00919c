"""The text channel and hybrid search (issue 24 item 2) on both embedded backends (qdrant-edge and qdrant-client's
local mode), through the real ingest with the tiny model: a page is found by its words (text layer, or OCR
words on a real scan), a page without words survives, a stop-word query falls back to the visual plan, and a
collection built without the channel refuses text/hybrid with a typed error. The channel reads nothing from
the network (checked in a network namespace without interfaces)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pymupdf
import pytest

from engine.config import Settings
from engine.documents.ocr import tesseract_binary, usable_languages
from engine.errors import TextChannelMissing
from engine.index.text import encode_page, encode_query, ocr_words_text
from engine.service import DocVision
from tests.fixtures import documents as d

pytestmark = pytest.mark.integration
BACKENDS = ["edge", "local"]
SCAN = Path(__file__).resolve().parents[1] / "corpus" / "scans" / "tesseract-phototest.tif"
needs_ocr = pytest.mark.skipif(
    not tesseract_binary() or not usable_languages("eng"), reason="tesseract-ocr not installed"
)


def service(embedder, tmp_path: Path, backend: str, **over) -> DocVision:
    s = Settings(index_path=tmp_path / "qdrant", store=str(tmp_path / "store"), index_backend=backend,
                 max_batch_size=2, ocr_languages="eng", **over)  # fmt: skip
    return DocVision(s, embedder=embedder)


def with_blank_page(path: Path) -> Path:
    """The 4-page fixture plus a fifth page with no text and no picture."""
    doc = pymupdf.open(d.multipage_pdf(path.with_name("four.pdf")))
    doc.new_page()
    doc.save(path)
    return path


def pages(hits: list[dict]) -> list[int]:
    return [h["page_number"] for h in hits]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_text_and_hybrid_find_a_page_by_its_words(embedder, tmp_path: Path, backend: str) -> None:
    dv = service(embedder, tmp_path, backend)
    dv.ingest(with_blank_page(tmp_path / "doc.pdf"))
    assert dv.index.text_channel and dv.index.count() == 5
    text = dv.search("terms and conditions", mode="text").to_dict()["hits"]
    assert pages(text) == [2]  # only page two holds these words ("and" is a stop word)
    assert pages(dv.search("Valves Pumps", mode="text").to_dict()["hits"]) == [1]
    hybrid = dv.search("terms and conditions", mode="hybrid").to_dict()["hits"]
    # RRF: the page both channels rank is ahead of every page only the (random-weight) visual plan ranks
    assert pages(hybrid)[0] == 2 and set(pages(hybrid)) == {1, 2, 3, 4, 5}
    # the blank page has no text vector: never a text hit, still found by the visual plan and by hybrid
    assert 5 not in pages(dv.search("page", mode="text", top_k=10).to_dict()["hits"])
    assert 5 in pages(dv.search("page", mode="rerank").to_dict()["hits"]) and 5 in pages(
        dv.search("page", mode="hybrid").to_dict()["hits"]
    )
    # only stop words: text finds nothing, hybrid is the visual plan alone
    assert dv.search("and the of", mode="text").to_dict()["hits"] == []
    assert pages(dv.search("and the of", mode="hybrid").to_dict()["hits"]) == pages(
        dv.search("and the of", mode="rerank").to_dict()["hits"]
    )
    # the text channel follows deletes: the IDF statistics and postings are the collection's
    dv.index.delete_document(dv.index.documents_for_source((tmp_path / "doc.pdf").resolve().as_uri()).pop())
    assert dv.search("terms and conditions", mode="text").to_dict()["hits"] == []
    dv.index.close()


@pytest.mark.slow
@needs_ocr
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_real_scan_gets_a_text_channel_from_ocr(embedder, tmp_path: Path, backend: str) -> None:
    """tests/corpus/scans/tesseract-phototest.tif (Tesseract's own test scan, Apache-2.0) has no text layer:
    its OCR words are indexed, so text search finds it; with DOCVISION_INDEX_OCR off it has no text vector."""
    shutil.copy(SCAN, tmp_path / "scan.tif")
    blank = tmp_path / "blank.png"
    d.image_file(blank, "PNG")  # a second document (a receipt image), so the scan's terms are not everywhere
    on = service(embedder, tmp_path / "on", backend)
    on.ingest(tmp_path / "scan.tif")
    on.ingest(blank)
    hits = on.search("quick brown dog jumped over the lazy fox", mode="text").to_dict()["hits"]
    assert len(hits) == 1 and hits[0]["source_uri"].endswith("scan.tif")
    assert on.search("lazy fox", mode="hybrid").to_dict()["hits"][0]["source_uri"].endswith("scan.tif")
    on.index.close()
    off = service(embedder, tmp_path / "off", backend, index_ocr=False)
    off.ingest(tmp_path / "scan.tif")
    assert off.search("quick brown dog", mode="text").to_dict()["hits"] == []
    off.index.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_collection_without_the_channel_refuses_text_modes(embedder, tmp_path: Path, backend: str) -> None:
    if backend == "edge":
        from engine.index.edge import EdgeIndex

        index = EdgeIndex(tmp_path / "edge", model_id=embedder.model_id, dim=embedder.dim, text_channel=False)
    else:
        from engine.index.client import ClientIndex

        index = ClientIndex(model_id=embedder.model_id, dim=embedder.dim, path=str(tmp_path / "local"),
                            text_channel=False)  # fmt: skip
    dv = DocVision(Settings(store=str(tmp_path / "store")), embedder=embedder, index=index)
    for mode in ("text", "hybrid"):
        with pytest.raises(TextChannelMissing) as err:
            dv.search("anything", mode=mode)
        assert err.value.http_status == 409 and "DOCVISION_COLLECTION" in str(err.value)
    assert dv.search("anything", mode="rerank").to_dict()["hits"] == []
    index.close()


def test_encodings_bound_hostile_text() -> None:
    assert encode_page("") is None and encode_page("\x00\x01 the and of") is None
    assert encode_query("the of and") is None
    many = encode_query(" ".join(f"word{i}" for i in range(500)))
    assert many is not None and len(many[0]) == 64  # a query's distinct terms are capped
    huge = encode_page("invoice " * 1_000_000)  # 8 MB of one word: indexed up to the page cap, one term
    assert huge is not None and len(huge[0]) == 1
    # OCR words below the confidence floor (specks, pictures) are not indexed
    assert ocr_words_text([[0, 0, 1, 1, "Total", 0, 0.93], [0, 0, 1, 1, "~%", 0, 0.2], [0, 0, 1]]) == "Total"


@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare")
def test_the_text_channel_needs_no_network(tmp_path: Path) -> None:
    """Index and search text in a network namespace with no interface up (unshare -rn): nothing to reach."""
    if subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode != 0:
        pytest.skip("user namespaces not permitted here")
    script = f"""
import numpy as np
from engine.index.edge import EdgeIndex
from engine.index.base import PageRecord
idx = EdgeIndex({str(tmp_path / "edge")!r}, model_id="m", dim=8)
v = np.eye(8, dtype=np.float32)
idx.upsert([PageRecord("d1", 1, 1, v, None, 0, "m", text="Quarterly revenue report"),
            PageRecord("d2", 1, 1, v, None, 0, "m", text="")])
idx.optimize()
hits = idx.search(None, mode="text", text="revenue")
assert [h.document_id for h in hits] == ["d1"], hits
print("ok")
"""
    done = subprocess.run(["unshare", "-rn", sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=120)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
