"""OCR-grounded citations: real Tesseract (Debian's tesseract-ocr) in the render worker, the real BAML runtime
against the local scripted model. A scan's faithful values are grounded with `method: "ocr"`; a planted one
is flagged; text inside an image on a text page (a logo) is read too; a failing OCR never fails extraction."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pymupdf
import pytest
from PIL import Image, ImageDraw

from engine.config import Settings
from engine.documents.ocr import OcrWorker, parse_tsv, tesseract_binary, usable_languages
from engine.extraction.runner import extract_document
from engine.storage import LocalStore
from tests.fixtures import documents as d
from tests.fixtures.llm_server import ScriptedLLM

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not tesseract_binary() or not usable_languages("eng"), reason="tesseract-ocr not installed"
    ),
]

SCHEMA = {
    "type": "object",
    "properties": {
        "vendor": {"type": ["string", "null"]},
        "invoice_number": {"type": "string"},
        "total_due": {"type": "number"},
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"item": {"type": "string"}, "price": {"type": "number"}},
                "required": ["item"],
            },
        },
    },
    "required": ["invoice_number"],
}


def run(tmp_path: Path, doc: Path, answer: dict, **over) -> dict:
    with ScriptedLLM([{"content": json.dumps(answer)}]) as llm:
        s = Settings(llm_base_url=llm.base_url, llm_model="test-vlm", **over)
        timings: dict = {}
        out = extract_document(doc, SCHEMA, settings=s, store=LocalStore(tmp_path / "store"), timings=timings)
    return {"cites": {c["path"]: c for c in out.result["provenance"]["citations"]}, "quality": out.quality,
            "timings": timings}  # fmt: skip


@pytest.mark.slow
def test_a_scan_is_checked_by_ocr_and_a_planted_value_is_flagged(tmp_path: Path) -> None:
    scan = d.scanned_pdf(
        tmp_path / "scan.pdf"
    )  # image only: "SCANNED INVOICE 2026-117", "Position n  x.xx EUR"
    faithful = {"invoice_number": "2026-117", "total_due": 7.5,
                "lines": [{"item": "Position 3", "price": 15.0}, {"item": "Position 4", "price": 22.5}]}  # fmt: skip
    got = run(tmp_path / "a", scan, faithful)
    cites = got["cites"]
    assert all(c["method"] == "ocr" and c["grounded"] is True for c in cites.values()), cites
    assert all(c["ocr_confidence"] is not None and 0 < c["ocr_confidence"] <= 1 for c in cites.values())
    assert cites["$.lines[1].price"]["bbox"][1] > cites["$.lines[0].price"]["bbox"][1]  # its own row, below
    assert got["quality"]["grounding"]["checked_by_ocr"] == 6 and got["quality"]["grounding"]["ratio"] == 1.0
    assert got["timings"]["ocr_images"] == 1 and got["timings"]["ocr_s"] > 0

    planted = {**faithful, "total_due": 1234.56, "lines": [{"item": "Position 3", "price": 22.5}]}
    cites = run(tmp_path / "b", scan, planted)["cites"]
    assert cites["$.total_due"] == {
        **cites["$.total_due"],
        "method": "ocr",
        "grounded": False,
        "reason": "not_found",
    }
    # 22.50 is printed, but on Position 4's line: a value moved between rows is caught on a scan too
    assert (
        cites["$.lines[0].price"]["grounded"] is False and cites["$.lines[0].price"]["reason"] == "wrong_row"
    )
    assert cites["$.invoice_number"]["grounded"] is True


def logo_pdf(path: Path) -> Path:
    """A text page whose vendor name is only inside an image (a logo)."""
    img = Image.new("RGB", (900, 200), (255, 255, 255))
    ImageDraw.Draw(img).text((30, 50), "NORDWIND LOGISTIK", fill=(20, 40, 120), font=d._font(80))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_image(pymupdf.Rect(72, 40, 342, 100), stream=buf.getvalue())
    page.insert_text((72, 140), "Invoice 2026-0815", fontsize=11)
    page.insert_text((72, 160), "Total due 99.00", fontsize=11)
    doc.save(path)
    return path


@pytest.mark.slow
def test_text_inside_an_image_of_a_text_page_is_read_by_ocr(tmp_path: Path) -> None:
    pdf = logo_pdf(tmp_path / "logo.pdf")
    answer = {"vendor": "Nordwind Logistik", "invoice_number": "2026-0815", "total_due": 99.0, "lines": []}
    cites = run(tmp_path / "a", pdf, answer)["cites"]
    assert cites["$.vendor"]["grounded"] is True and cites["$.vendor"]["method"] == "ocr", cites["$.vendor"]
    x0, y0, x1, y1 = cites["$.vendor"]["bbox"]
    assert 72 / 612 - 0.01 <= x0 < x1 <= 342 / 612 + 0.01 and 40 / 792 - 0.01 <= y0 < y1 <= 100 / 792 + 0.01
    assert cites["$.total_due"]["method"] == "text"  # the text layer's words are not read twice
    # without OCR the logo's name is a false alarm: that is what OCR fixes
    off = run(tmp_path / "b", pdf, answer, ocr_languages="")["cites"]
    assert off["$.vendor"]["grounded"] is False


def test_tesseract_tsv_boxes_map_into_the_page_region() -> None:
    tsv = (
        "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n"
        "1\t1\t0\t0\t0\t0\t0\t0\t200\t100\t-1\t\n"
        "5\t1\t1\t1\t1\t1\t20\t10\t80\t30\t91.5\tACME\n"
        "5\t1\t1\t1\t1\t2\t120\t10\t40\t30\t-1\t \n"
    )
    (word,) = parse_tsv(tsv, 200, 100, [0.5, 0.5, 1.0, 1.0])
    assert word == [0.55, 0.55, 0.75, 0.7, "ACME", 0, 0.915]


def test_ocr_past_its_limit_is_no_words_and_the_caller_lives_on(tmp_path: Path) -> None:
    img = Image.new("RGB", (2550, 3300), (255, 255, 255))
    ImageDraw.Draw(img).text((100, 100), "TIMEOUT CHECK " * 10, fill=0, font=d._font(60))
    s = Settings(render_page_timeout_s=0.05)
    with OcrWorker(s, "eng") as w:
        assert w.words(img, 300) is None  # Tesseract killed at the page limit: an error reply, not a hang
    with OcrWorker(Settings(render_memory_mb=64), "eng") as w:  # the worker's RLIMIT_AS binds Tesseract too
        assert w.words(img, 300) is None


def test_an_image_the_text_layer_already_covers_is_not_read_again(tmp_path: Path) -> None:
    """A searchable scan (page image + invisible text layer) costs no OCR; a logo on a text page does."""
    img = Image.new("RGB", (1275, 1650), (250, 250, 250))
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_image(page.rect, stream=buf.getvalue())
    for i, text in enumerate(["Invoice 2026-0815", "Total due 99.00", "Thank you for your order"]):
        page.insert_text((72, 140 + 20 * i), text, fontsize=11, render_mode=3)  # invisible, as OCR'd PDFs are
    doc.save(tmp_path / "searchable.pdf")
    answer = {"vendor": None, "invoice_number": "2026-0815", "total_due": 99.0, "lines": []}
    got = run(tmp_path / "a", tmp_path / "searchable.pdf", answer)
    assert got["timings"]["ocr_images"] == 0 and got["cites"]["$.total_due"]["method"] == "text"
    assert run(tmp_path / "b", logo_pdf(tmp_path / "logo.pdf"), answer)["timings"]["ocr_images"] == 1


@pytest.mark.slow
def test_a_sideways_scan_is_read_and_its_rows_checked(tmp_path: Path) -> None:
    """A scan placed on its side: the plain read is poor, the orientation-detecting one reads it; rows run
    along the words' direction, so a value moved to another row is still caught."""
    img = Image.new("L", (1700, 2200), 250)
    draw = ImageDraw.Draw(img)
    draw.text((150, 150), "SCANNED INVOICE 2026-117", fill=10, font=d._font(60))
    for i in range(8):
        draw.text((150, 300 + i * 70), f"Position {i + 1}   {i * 7.5:.2f} EUR", fill=30, font=d._font(40))
    buf = io.BytesIO()
    img.rotate(90, expand=True).save(buf, format="PNG")  # text now runs upwards
    doc = pymupdf.open()
    page = doc.new_page(width=792, height=612)
    page.insert_image(page.rect, stream=buf.getvalue())
    doc.save(tmp_path / "sideways.pdf")
    answer = {"invoice_number": "2026-117", "total_due": 7.5,
              "lines": [{"item": "Position 3", "price": 15.0}, {"item": "Position 4", "price": 15.0}]}  # fmt: skip
    cites = run(tmp_path / "a", tmp_path / "sideways.pdf", answer)["cites"]
    assert cites["$.invoice_number"]["grounded"] is True and cites["$.invoice_number"]["method"] == "ocr"
    assert cites["$.lines[0].price"]["grounded"] is True
    x0, y0, x1, y1 = cites["$.invoice_number"]["bbox"]
    assert y1 - y0 > x1 - x0  # the box stands on the displayed page, as the text does
    # Position 4 prints 22.50; 15.00 is on Position 3's line
    assert (
        cites["$.lines[1].price"]["grounded"] is False and cites["$.lines[1].price"]["reason"] == "wrong_row"
    )
