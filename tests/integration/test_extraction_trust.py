"""Citations, grounding, the quality score, no silent loss, long lists and privacy — real BAML runtime against the
local OpenAI-compatible server (127.0.0.1), a born-digital 3-page invoice and the shipped invoice schema."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pymupdf
import pytest

from engine.config import Settings
from engine.errors import ExtractionFailed
from engine.extraction.runner import extract_document
from engine.storage import LocalStore
from tests.fixtures.llm_server import ScriptedLLM

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "invoice.json").read_text())


def invoice_pdf(path: Path) -> Path:
    """3 pages: header (page 1), lines (page 2, amounts printed 1,200.00 style), totals and terms (page 3)."""
    doc = pymupdf.open()
    p1 = doc.new_page()
    p1.insert_text((72, 80), "INVOICE  No. INV-2026-0042", fontsize=18)
    p1.insert_text((72, 110), "Issue date: 2 November 2026      Due: 02.12.2026", fontsize=11)
    p1.insert_text((72, 140), "From: Acme Export GmbH", fontsize=11)
    p1.insert_text((72, 155), "Hafenstrasse 1, 20457 Hamburg", fontsize=11)
    p1.insert_text((72, 185), "To: Northwind Traders Ltd", fontsize=11)
    p1.insert_text((72, 200), "VAT ID IE6388047V", fontsize=11)
    p2 = doc.new_page()
    p2.insert_text((72, 80), "Description              Qty    Unit price     Amount", fontsize=11)
    rows = [("Centrifugal pump", "2", "600.00", "1,200.00"), ("Ball valve DN50", "10", "35.50", "355.00")]
    for i, (desc, qty, price, amount) in enumerate(rows):
        y = 105 + 20 * i
        p2.insert_text((72, y), desc, fontsize=11)
        p2.insert_text((250, y), qty, fontsize=11)
        p2.insert_text((300, y), price, fontsize=11)
        p2.insert_text((400, y), amount, fontsize=11)
    # a description split over two lines
    p2.insert_text((72, 150), "Stainless steel flange", fontsize=11)
    p2.insert_text((72, 163), "with gasket set", fontsize=11)
    p2.insert_text((250, 150), "4", fontsize=11)
    p2.insert_text((300, 150), "11.25", fontsize=11)
    p2.insert_text((400, 150), "45.00", fontsize=11)
    p3 = doc.new_page()
    p3.insert_text((72, 80), "Subtotal EUR 1,600.00", fontsize=11)
    p3.insert_text((72, 100), "VAT 23%  368.00", fontsize=11)
    p3.insert_text((72, 120), "Total due: EUR 1.968,00", fontsize=12)
    p3.insert_text((72, 150), "Payment terms: 30 days net", fontsize=11)
    doc.save(path)
    return path


def faithful() -> dict:
    return {
        "invoice_number": "INV-2026-0042", "issue_date": "2026-11-02", "due_date": "2026-12-02",
        "vendor": {"name": "Acme Export GmbH", "address": "Hafenstrasse 1, 20457 Hamburg", "vat_id": None},
        "customer": {"name": "Northwind Traders Ltd", "address": None, "vat_id": "IE6388047V"},
        "currency": "EUR",
        "lines": [
            {"description": "Centrifugal pump", "quantity": 2, "unit_price": 600.0, "amount": 1200.0},
            {"description": "Ball valve DN50", "quantity": 10, "unit_price": 35.5, "amount": 355.0},
            {"description": "Stainless steel flange with gasket set", "quantity": 4, "unit_price": 11.25, "amount": 45.0},
        ],
        "subtotal": 1600.0, "tax_amount": 368.0, "total_due": 1968.0, "payment_terms": "30 days net", "confidence": 0.9,
    }  # fmt: skip


def hallucinated() -> dict:
    """Well-formed and consistent, but read from nowhere: the values are not on these pages."""
    return {
        "invoice_number": "A-77120", "issue_date": "2025-03-14", "due_date": "2025-04-13",
        "vendor": {"name": "Globex Corporation", "address": "1 Main Street, Springfield", "vat_id": "US99-1234567"},
        "customer": {"name": "Initech Inc", "address": "500 Oak Avenue, Austin", "vat_id": None},
        "currency": "USD",
        "lines": [
            {"description": "Consulting services", "quantity": 12, "unit_price": 150.0, "amount": 1800.0},
            {"description": "Travel expenses", "quantity": 1, "unit_price": 420.0, "amount": 420.0},
        ],
        "subtotal": 2220.0, "tax_amount": 177.6, "total_due": 2397.6, "payment_terms": "due on receipt", "confidence": 0.97,
    }  # fmt: skip


def alarm_threshold() -> float:
    """The template's default QualityAlarmThreshold (percent) as a 0-1 score."""
    text = (ROOT / "template.yaml").read_text()
    block = text[text.index("  QualityAlarmThreshold:") :]
    return float(re.search(r"Default:\s*([\d.]+)", block).group(1)) / 100  # type: ignore[union-attr]


@pytest.fixture
def pdf(tmp_path: Path) -> Path:
    return invoice_pdf(tmp_path / "invoice.pdf")


def run(llm: ScriptedLLM, pdf: Path, tmp_path: Path, **over):
    s = Settings(llm_base_url=llm.base_url, llm_model="test-vlm", **over)
    return extract_document(pdf, SCHEMA, settings=s, store=LocalStore(tmp_path / "store"))


def test_faithful_answer_is_cited_grounded_and_scores_above_the_alarm(pdf: Path, tmp_path: Path) -> None:
    with ScriptedLLM([{"content": json.dumps(faithful())}]) as llm:
        out = run(llm, pdf, tmp_path)
    cites = {c["path"]: c for c in out.result["provenance"]["citations"]}
    # one citation per non-null scalar leaf, except the model's self-reported confidence
    assert "$.confidence" not in cites and "$.vendor.vat_id" not in cites
    assert len(cites) == 24
    assert all(c["method"] == "text" and c["grounded"] for c in cites.values()), [
        p for p, c in cites.items() if not c["grounded"]
    ]
    # found where printed, whatever the printed form
    assert cites["$.invoice_number"]["page"] == 1
    assert cites["$.issue_date"]["page"] == 1  # "2 November 2026"
    assert cites["$.due_date"]["page"] == 1  # "02.12.2026"
    assert cites["$.lines[0].amount"]["page"] == 2  # "1,200.00"
    assert cites["$.total_due"]["page"] == 3  # "EUR 1.968,00"
    flange = cites["$.lines[2].description"]  # split over two lines: the box covers both
    assert flange["page"] == 2 and flange["bbox"][3] - flange["bbox"][1] > 0.02
    # boxes are fractions of the page, origin top-left: the invoice number is in the top tenth
    x0, y0, x1, y1 = cites["$.invoice_number"]["bbox"]
    assert 0 < x0 < x1 <= 1 and 0 < y0 < y1 < 0.12
    # the box really holds the value's words
    page = pymupdf.open(pdf)[0]
    r = page.rect
    clip = pymupdf.Rect(x0 * r.width, y0 * r.height, x1 * r.width, y1 * r.height)
    assert "INV-2026-0042" in page.get_textbox(clip)
    assert out.result["provenance"]["field_sources"]["lines"] == [2]
    q = out.quality
    assert q["grounding"]["ratio"] == 1.0 and q["grounding"]["checked"] == 24
    assert q["quality_score"] > alarm_threshold()
    # the citations table: 1NF with lineage, joinable to the data rows
    base = f"results/{out.result['provenance']['document_id']}/{out.cache_key[:16]}"
    table = pq.read_table(io.BytesIO(LocalStore(tmp_path / "store").get(f"{base}/tables/citations.parquet")))
    rows = {r["field_path"]: r for r in table.to_pylist()}
    assert (
        rows["$.lines[1].amount"]["_parent_row_id"] == "$.lines[1]" and rows["$.lines[1].amount"]["page"] == 2
    )
    assert set(table.column_names) >= {
        "_document_id",
        "_row_id",
        "_parent_row_id",
        "field_path",
        "page",
        "x0",
        "y1",
        "method",
        "grounded",
    }


def test_hallucinated_answer_scores_below_the_alarm(pdf: Path, tmp_path: Path) -> None:
    with ScriptedLLM([{"content": json.dumps(hallucinated())}]) as llm:
        out = run(llm, pdf, tmp_path)
    q = out.quality
    assert q["schema_valid"] and [c["status"] for c in q["consistency"]] == ["pass"]  # valid and consistent …
    assert q["grounding"]["ratio"] < 0.2  # … but not on the page
    assert q["quality_score"] < alarm_threshold()
    assert "$.invoice_number" in q["grounding"]["ungrounded_paths"]


def test_three_invented_values_are_named(pdf: Path, tmp_path: Path) -> None:
    """The issue's case: invoice number, total and payment terms invented, everything else read correctly."""
    answer = faithful() | {"invoice_number": "INV-9999", "total_due": 4711.0, "payment_terms": "60 days"}
    with ScriptedLLM([{"content": json.dumps(answer)}]) as llm:
        out = run(llm, pdf, tmp_path)
    g = out.quality["grounding"]
    assert set(g["ungrounded_paths"]) == {"$.invoice_number", "$.total_due", "$.payment_terms"}
    assert g["ratio"] == round(21 / 24, 4) and out.quality["quality_score"] < 1.0


def test_a_dropped_row_is_retried_with_the_error_then_reported(pdf: Path, tmp_path: Path) -> None:
    """A value that does not fit its type would make BAML drop the whole row: never silently."""
    bad = faithful()
    bad["lines"][1]["amount"] = "three hundred fifty-five"
    with ScriptedLLM([{"content": json.dumps(bad)}, {"content": json.dumps(faithful())}]) as llm:
        out = run(llm, pdf, tmp_path)
        assert len(llm.requests) == 2
        retry_prompt = llm.prompt_text(llm.requests[1])
    assert (
        "previous answer for these pages was rejected" in retry_prompt and "$.lines[1].amount" in retry_prompt
    )
    assert len(out.result["data"]["lines"]) == 3
    (rejected,) = out.result["provenance"]["rejected_answers"]
    assert rejected["errors"][0][0] == "/lines/1/amount" and out.quality["rejected_answers"] == 1
    raw = Path(rejected["raw_answer"]).read_text()
    assert "three hundred fifty-five" in raw  # what the model said: in the store, referenced by key

    with ScriptedLLM([{"content": json.dumps(bad)}]) as llm, pytest.raises(ExtractionFailed) as info:
        run(llm, pdf, tmp_path / "again", extract_attempts=2)
    assert "/lines/1" in str(info.value) and "three hundred" not in str(info.value)
    assert "three hundred" not in json.dumps(info.value.to_dict())


def test_a_nulled_optional_value_is_a_failure_not_a_null(pdf: Path, tmp_path: Path) -> None:
    bad = faithful() | {"tax_amount": "23 percent of the subtotal"}
    with ScriptedLLM([{"content": json.dumps(bad)}]) as llm, pytest.raises(ExtractionFailed) as info:
        run(llm, pdf, tmp_path, extract_attempts=1)
    assert info.value.details["paths"] == ["/tax_amount"]


def catalogue_pdf(path: Path, pages: int = 5, rows: int = 20) -> Path:
    doc = pymupdf.open()
    for p in range(pages):
        page = doc.new_page()
        page.insert_text((72, 60), f"Catalogue page {p + 1}", fontsize=14)
        for r in range(rows):
            page.insert_text(
                (72, 90 + r * 30), f"SKU-{p + 1}{r:02d}  Item {p + 1}-{r}  {10 + r}.00", fontsize=10
            )
    doc.save(path)
    return path


CATALOGUE = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string"},
                    "name": {"type": "string"},
                    "price": {"type": "number"},
                },
                "required": ["sku", "name", "price"],
            },
        }
    },
    "required": ["items"],
}


def catalogue_server(max_rows: int = 50) -> ScriptedLLM:
    """Answers with the rows of the pages it was shown (read from the instructions), at most max_rows: an answer
    that would be longer is truncated, as a real model's output limit does."""

    def reply(request: dict) -> str:
        text = "\n".join(m["content"] if isinstance(m["content"], str) else " ".join(p.get("text", "") for p in m["content"])
                         for m in request["messages"])  # fmt: skip
        shown = [int(x) for x in re.search(r"\(pages ([\d, ]+) of", text).group(1).split(",")]  # type: ignore[union-attr]
        items = [
            {"sku": f"SKU-{p}{r:02d}", "name": f"Item {p}-{r}", "price": 10.0 + r}
            for p in shown
            for r in range(20)
        ]
        return json.dumps({"items": items[:max_rows]})

    return ScriptedLLM([{"reply": reply}])


def test_long_lists_are_extracted_page_by_page(tmp_path: Path) -> None:
    pdf = catalogue_pdf(tmp_path / "catalogue.pdf")
    with catalogue_server() as llm:
        s = Settings(llm_base_url=llm.base_url, llm_model="test-vlm", pages_per_call=8, list_mode="whole")
        whole = extract_document(pdf, CATALOGUE, settings=s, store=LocalStore(tmp_path / "a"))
        assert len(llm.requests) == 1
    assert len(whole.result["data"]["items"]) == 50  # one call: truncated
    with catalogue_server() as llm:
        s = Settings(
            llm_base_url=llm.base_url, llm_model="test-vlm"
        )  # auto: 5 pages > 4 per call, a list → paged
        paged = extract_document(pdf, CATALOGUE, settings=s, store=LocalStore(tmp_path / "b"))
        assert [len(llm.images_in(r)) for r in llm.requests] == [1] * 5
    items = paged.result["data"]["items"]
    assert len(items) == 100 and len({i["sku"] for i in items}) == 100
    assert paged.result["provenance"]["call_mode"] == "paged"
    assert paged.quality["grounding"]["ratio"] == 1.0
    # overlapping segments see shared pages twice; their rows are merged once
    with catalogue_server() as llm:
        s = Settings(
            llm_base_url=llm.base_url, llm_model="test-vlm", list_segment_pages=2, list_segment_overlap=1
        )
        overlap = extract_document(pdf, CATALOGUE, settings=s, store=LocalStore(tmp_path / "c"))
        assert [len(llm.images_in(r)) for r in llm.requests] == [2, 2, 2, 2]
    assert (
        len(overlap.result["data"]["items"]) == 100
        and overlap.result["provenance"]["duplicates_dropped"] == 60
    )


def test_identical_rows_on_different_pages_are_kept(tmp_path: Path) -> None:
    from engine.extraction.schema import compile_schema
    from engine.extraction.shape import merge

    node = compile_schema(CATALOGUE).root
    row = {"sku": "A", "name": "Pallet", "price": 1.0}
    m = merge([([1], {"items": [row, row]}), ([2], {"items": [row]})], node)
    assert len(m.data["items"]) == 3 and m.duplicates_dropped == 0
    m = merge([([1, 2], {"items": [row]}), ([2, 3], {"items": [row]})], node)
    assert len(m.data["items"]) == 1 and m.duplicates_dropped == 1


def test_no_document_text_in_logs_or_errors_by_default(pdf: Path, tmp_path: Path, capfd, caplog) -> None:
    secret = "Zyxwv-SECRET-VALUE-31337"
    bad = faithful() | {"issue_date": secret}
    with (
        ScriptedLLM(
            [{"content": "Here you go: {" + secret + " not json"}, {"content": json.dumps(bad)}]
        ) as llm,
        pytest.raises(ExtractionFailed) as info,
    ):
        run(llm, pdf, tmp_path, extract_attempts=2)
    captured = capfd.readouterr()
    assert secret not in captured.out + captured.err
    assert secret not in caplog.text
    assert secret not in str(info.value) and secret not in json.dumps(info.value.to_dict())
    assert "Extract the fields" not in captured.err  # no prompt either
    assert secret in Path(info.value.details["raw_answer_location"]).read_text()  # only in the store


SMALL_INVOICE = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": "string"},
        "total_due": {"type": "number"},
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "item": {"type": "string"},
                    "quantity": {"type": "integer"},
                    "price": {"type": "number"},
                },
                "required": ["item"],
            },
        },
        "payment_terms": {"type": ["string", "null"]},
    },
    "required": ["invoice_number"],
}


def test_libreoffice_converted_documents_are_cited_on_the_converted_pdf(tmp_path: Path) -> None:
    from tests.fixtures import documents as d

    docx = d.docx(tmp_path / "invoice.docx")
    answer = {
        "invoice_number": "INV-2026-0042", "total_due": 1234.5, "payment_terms": "30 days net",
        "lines": [{"item": "Widget", "quantity": 10, "price": 100.0}, {"item": "Gadget", "quantity": 2, "price": 117.25}],
    }  # fmt: skip
    with ScriptedLLM([{"content": json.dumps(answer)}]) as llm:
        s = Settings(llm_base_url=llm.base_url, llm_model="test-vlm")
        out = extract_document(docx, SMALL_INVOICE, settings=s, store=LocalStore(tmp_path / "store"))
    cites = {c["path"]: c for c in out.result["provenance"]["citations"]}
    assert all(c["method"] == "text" and c["grounded"] for c in cites.values()), cites
    assert cites["$.invoice_number"]["page"] == 1 and cites["$.payment_terms"]["page"] == 2
    assert cites["$.lines[1].price"]["page"] == 1
    assert out.quality["grounding"] == {
        "ratio": 1.0, "grounded": 9, "checked": 9, "checked_by_ocr": 0, "estimated": 0, "ungrounded_paths": [],
        "reasons": {},
    }  # fmt: skip


def test_scans_without_ocr_are_cited_by_the_similarity_map_and_not_called_grounded(
    tmp_path: Path, embedder
) -> None:
    """OCR off (DOCVISION_OCR_LANGUAGES empty, or no Tesseract): the similarity map is the last resort."""
    from engine.service import DocVision
    from tests.fixtures import documents as d

    scan = d.scanned_pdf(tmp_path / "scan.pdf")
    store = LocalStore(tmp_path / "store")
    svc = DocVision(
        Settings(index_path=tmp_path / "q", store=str(store.root)), embedder=embedder, store=store
    )
    with ScriptedLLM(
        [{"content": json.dumps({"invoice_number": "2026-117", "total_due": 7.5, "lines": []})}]
    ) as llm:
        s = Settings(
            llm_base_url=llm.base_url,
            llm_model="test-vlm",
            index_path=tmp_path / "q",
            store=str(store.root),
            ocr_languages="",
        )
        out = extract_document(scan, SMALL_INVOICE, settings=s, store=store, service=svc)
    cites = out.result["provenance"]["citations"]
    assert {c["method"] for c in cites} == {"similarity"} and {c["grounded"] for c in cites} == {None}
    for c in cites:
        x0, y0, x1, y1 = c["bbox"]
        assert c["page"] == 1 and 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    g = out.quality["grounding"]
    assert g["checked"] == 0 and g["ratio"] is None and g["estimated"] == 2
    assert "grounding" not in out.quality["quality_terms"]  # an estimate is not a check: no grounding term
    assert svc.index.count(out.result["provenance"]["document_id"]) == 0  # embedded in memory only


def test_page_count_for_the_sync_or_202_decision_never_converts(tmp_path: Path, monkeypatch) -> None:
    import engine.documents
    from engine.extraction.runner import pages_without_converting
    from engine.storage.converted import ConvertedPdfs
    from tests.fixtures import documents as d

    def no_conversion(*a, **k):
        raise AssertionError("converted")

    monkeypatch.setattr(engine.documents, "to_pdf", no_conversion)
    store, s = LocalStore(tmp_path / "store"), Settings()
    assert pages_without_converting(catalogue_pdf(tmp_path / "c.pdf"), s, store) == 5
    assert pages_without_converting(d.image_file(tmp_path / "r.png", "PNG"), s, store) == 1
    docx = d.docx(tmp_path / "i.docx")
    assert (
        pages_without_converting(docx, s, store) is None
    )  # only a conversion could tell: the API answers 202
    import hashlib

    ConvertedPdfs(store).put(
        hashlib.sha256(docx.read_bytes()).hexdigest(), invoice_pdf(tmp_path / "conv.pdf").read_bytes()
    )
    assert pages_without_converting(docx, s, store) == 3  # the converted PDF kept by ingest
    assert pages_without_converting(b"%PDF-1.7 garbage", s, store) is None  # unreadable: decided as 202
