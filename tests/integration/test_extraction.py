"""Extraction through the real BAML runtime against a local OpenAI-compatible server (127.0.0.1)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from engine.config import Settings
from engine.errors import ExtractionFailed
from engine.extraction.runner import extract_document
from engine.extraction.schema import compile_schema
from engine.extraction.shape import rebuild
from engine.storage import LocalStore
from tests.fixtures import documents as d
from tests.fixtures.llm_server import ScriptedLLM

pytestmark = pytest.mark.integration
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "shipping_manifest.json").read_text())


def manifest(**over) -> dict:
    data = {
        "manifest_number": "4711",
        "shipper": {"name": "Acme Export GmbH", "address": "Hamburg", "country": "DE"},
        "consignee": {"name": "Northwind Traders", "address": None, "country": "IE"},
        "carrier": "Maersk",
        "vessel": None,
        "port_of_loading": "DEHAM",
        "port_of_discharge": "IEDUB",
        "departure_date": "2026-11-02",
        "arrival_date": None,
        "incoterm": "FOB",
        "currency": "EUR",
        "containers": [
            {
                "container_number": "MSKU1234565",
                "size_type": "40HC",
                "seal_numbers": ["S1", "S2"],
                "gross_weight_kg": 1628.5,
            }
        ],
        "line_items": [
            {
                "description": "Pumps",
                "hs_code": "8413",
                "quantity": 12,
                "unit": "PCS",
                "gross_weight_kg": 340.5,
                "value": 1200.0,
                "container_number": "MSKU1234565",
            },
            {
                "description": "Valves",
                "hs_code": None,
                "quantity": 40,
                "unit": "PCS",
                "gross_weight_kg": 88.0,
                "value": 800.0,
                "container_number": "MSKU1234565",
            },
            {
                "description": "Pipes",
                "hs_code": None,
                "quantity": 7,
                "unit": "PLT",
                "gross_weight_kg": 1200.0,
                "value": 500.0,
                "container_number": None,
            },
        ],
        "total_gross_weight_kg": 1628.5,
        "total_value": 2500.0,
    }
    data.update(over)
    return data


def run(llm: ScriptedLLM, path: Path, store: LocalStore, **settings):
    s = Settings(llm_base_url=llm.base_url, llm_model="test-vlm", **settings)
    return extract_document(
        path, SCHEMA, settings=s, store=store, csv=settings.pop("csv", False) if "csv" in settings else True
    )


@pytest.fixture
def pdf(tmp_path: Path) -> Path:
    return d.multipage_pdf(tmp_path / "manifest.pdf")


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_valid_answer_writes_canonical_tables_and_quality(pdf: Path, store: LocalStore) -> None:
    with ScriptedLLM([{"content": json.dumps(manifest())}]) as llm:
        out = run(llm, pdf, store)
        (req,) = llm.requests
    # the request carries every page as an image and the schema-derived output format
    assert len(llm.images_in(req)) == 4 and all(
        u.startswith("data:image/png;base64,") for u in llm.images_in(req)
    )
    prompt = llm.prompt_text(req)
    assert "container_number" in prompt and "ISO 6346 container number" in prompt and "YYYY-MM-DD" in prompt
    assert req["model"] == "test-vlm"
    data = out.result["data"]
    assert data["shipper"]["name"] == "Acme Export GmbH" and len(data["line_items"]) == 3
    prov = out.result["provenance"]
    assert prov["pages_used"] == [1, 2, 3, 4] and prov["attempts"] == 1 and prov["retries"] == 0
    assert prov["client"] == "openai-generic:test-vlm" and prov["usage"]["input_tokens"] == 1000
    assert prov["field_sources"]["shipper"] == [1]  # where it is printed, not every page of the call
    # tables: typed, with lineage, and they rebuild the canonical JSON exactly
    base = f"results/{prov['document_id']}/{out.cache_key[:16]}"
    tables = {
        Path(k).stem: pq.read_table(io.BytesIO(store.get(k)))
        for k in store.list(f"{base}/tables/")
        if k.endswith(".parquet")
    }
    assert set(tables) == {"root", "containers", "containers__seal_numbers", "line_items", "citations"}
    root = tables["root"]
    assert root.schema.field("departure_date").type == pa.date32()
    assert root.schema.field("total_value").type == pa.float64()
    assert root.schema.field("shipper__name").type == pa.string()
    items = tables["line_items"]
    assert items.schema.field("quantity").type == pa.int64()
    assert items.column("_parent_row_id").to_pylist() == ["$"] * 3
    assert items.column("_row_id").to_pylist() == ["$.line_items[0]", "$.line_items[1]", "$.line_items[2]"]
    assert set(items.column("_document_id").to_pylist()) == {prov["document_id"]}
    seals = tables["containers__seal_numbers"]
    assert (
        seals.column("value").to_pylist() == ["S1", "S2"]
        and seals.column("_parent_row_id").to_pylist() == ["$.containers[0]"] * 2
    )
    assert rebuild(tables, compile_schema(SCHEMA)) == data
    csv = pacsv.read_csv(io.BytesIO(store.get(f"{base}/tables/line_items.csv")))
    assert csv.num_rows == 3
    quality = json.loads(store.get(f"{base}/quality.json"))
    assert quality["schema_valid"] and quality["completeness"]["required_ratio"] == 1.0
    assert [c["status"] for c in quality["consistency"]] == ["pass", "pass"]


def test_fenced_answer_with_prose_is_parsed(pdf: Path, store: LocalStore) -> None:
    answer = (
        "Sure! Here is the data:\n```json\n" + json.dumps(manifest()) + "\n```\nLet me know if you need more."
    )
    with ScriptedLLM([{"content": answer}]) as llm:
        out = run(llm, pdf, store)
    assert out.result["data"]["manifest_number"] == "4711"


def test_invalid_json_then_valid_counts_a_retry(pdf: Path, store: LocalStore) -> None:
    with ScriptedLLM([{"content": "I cannot read this {"}, {"content": json.dumps(manifest())}]) as llm:
        out = run(llm, pdf, store)
        assert len(llm.requests) == 2
    assert out.result["provenance"]["attempts"] == 2 and out.quality["attempts"] == 2


def test_schema_violation_fails_and_writes_no_result(pdf: Path, store: LocalStore) -> None:
    bad = manifest(departure_date="next Tuesday", incoterm="FOB")
    with ScriptedLLM([{"content": json.dumps(bad)}]) as llm, pytest.raises(ExtractionFailed) as info:
        run(llm, pdf, store, extract_attempts=2)
    assert len(llm.requests) == 2
    assert "departure_date" in str(info.value) and "manifest.pdf" in str(info.value)
    location = info.value.details["raw_answer_location"]
    assert Path(location).exists() and "next Tuesday" in Path(location).read_text()
    assert not [k for k in store.list() if k.startswith("results/")]


@pytest.mark.slow
def test_server_errors_are_retried_then_fallback_client_answers(pdf: Path, store: LocalStore) -> None:
    with ScriptedLLM([{"status": 500}, {"status": 503}, {"content": json.dumps(manifest())}]) as llm:
        out = run(llm, pdf, store)
        assert len(llm.requests) == 3  # the Exponential retry policy covered two 5xx answers
    assert out.result["data"]["carrier"] == "Maersk"
    with ScriptedLLM([{"content": json.dumps(manifest(carrier="CMA CGM"))}]) as backup:
        s = Settings(
            llm_base_url="http://127.0.0.1:9/v1",
            llm_model="dead",
            llm_fallback=f"openai-generic|backup-vlm|{backup.base_url}",
        )
        out = extract_document(pdf, SCHEMA, settings=s, store=LocalStore(store.root / "other"))
        assert len(backup.requests) == 1 and backup.requests[0]["model"] == "backup-vlm"
    assert out.result["data"]["carrier"] == "CMA CGM"
    assert out.result["provenance"]["client"] == "openai-generic:dead > openai-generic:backup-vlm"


@pytest.mark.slow
def test_cache_hit_makes_no_request_and_changes_miss(pdf: Path, store: LocalStore) -> None:
    with ScriptedLLM([{"content": json.dumps(manifest())}]) as llm:
        first = run(llm, pdf, store)
        second = run(llm, pdf, store)
        assert len(llm.requests) == 1 and second.cached and second.result == first.result
        third = run(llm, pdf, store, prompt_version="extract-v2")
        assert len(llm.requests) == 2 and not third.cached
        s = Settings(llm_base_url=llm.base_url, llm_model="test-vlm")
        extract_document(pdf, SCHEMA, settings=s, store=store, use_cache=False)
        assert len(llm.requests) == 3
        expired = run(llm, pdf, store, cache_ttl_s=0)
        assert not expired.cached and len(llm.requests) == 4


def test_multi_call_documents_are_merged(pdf: Path, store: LocalStore) -> None:
    first = manifest(line_items=manifest()["line_items"][:2], total_value=None, carrier="Maersk")
    second = manifest(
        line_items=manifest()["line_items"][2:], manifest_number="4711", carrier="Maersk Line", containers=[]
    )
    with ScriptedLLM([{"content": json.dumps(first)}, {"content": json.dumps(second)}]) as llm:
        out = run(llm, pdf, store, pages_per_call=2, list_mode="whole")
        assert [len(llm.images_in(r)) for r in llm.requests] == [2, 2]
    data, prov = out.result["data"], out.result["provenance"]
    assert [li["description"] for li in data["line_items"]] == ["Pumps", "Valves", "Pipes"]
    assert data["carrier"] == "Maersk" and data["total_value"] == 2500.0  # first non-null wins
    assert {"field": "$.carrier", "kept_pages": [1, 2], "other_pages": [3, 4]} in prov["merge_conflicts"]
    assert "Maersk Line" not in json.dumps(prov["merge_conflicts"])  # values stay in data, not in provenance
    assert prov["calls"] == [{"pages": [1, 2]}, {"pages": [3, 4]}] and prov["call_mode"] == "whole"
    cites = {c["path"]: c for c in prov["citations"]}
    assert (
        cites["$.line_items[0].description"]["page"] == 1 and cites["$.line_items[0].description"]["grounded"]
    )
    # "Pipes" is printed on page 1, but the call that answered it saw pages 3-4 only: not grounded there
    assert cites["$.line_items[2].description"] == {"path": "$.line_items[2].description", "method": "text",
                                                    "page": None, "bbox": None, "grounded": False,
                                                    "reason": "not_found", "ocr_confidence": None}  # fmt: skip


@pytest.mark.slow
def test_consistency_failures_are_reported(pdf: Path, store: LocalStore) -> None:
    with ScriptedLLM([{"content": json.dumps(manifest(total_value=9999.0))}]) as llm:
        out = run(llm, pdf, store)
    value_rule = out.quality["consistency"][0]
    assert value_rule["status"] == "fail" and value_rule["sum"] == 2500.0 and value_rule["expected"] == 9999.0
    assert out.quality["quality_score"] < 1.0


def test_missing_llm_configuration_says_what_to_set(pdf: Path, store: LocalStore) -> None:
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="DOCVISION_LLM_MODEL"):
        extract_document(pdf, SCHEMA, settings=Settings(), store=store)


@pytest.mark.slow
def test_long_documents_are_narrowed_by_retrieval(
    pdf: Path, store: LocalStore, embedder, tmp_path: Path
) -> None:
    from engine.service import DocVision

    s = Settings(index_path=tmp_path / "q", store=str(store.root))
    svc = DocVision(s, embedder=embedder, store=store)
    with ScriptedLLM([{"content": json.dumps(manifest())}]) as llm:
        settings = Settings(
            llm_base_url=llm.base_url,
            llm_model="test-vlm",
            page_budget=2,
            index_path=tmp_path / "q",
            store=str(store.root),
        )
        out = extract_document(pdf, SCHEMA, settings=settings, store=store, service=svc)
        (req,) = llm.requests
    prov = out.result["provenance"]
    assert len(prov["pages_used"]) == 2 and len(llm.images_in(req)) == 2
    assert prov["page_selection"]["method"].startswith("late-interaction retrieval")
    assert set(prov["page_selection"]["pages"]) == {str(p) for p in prov["pages_used"]}
    # pages were ranked from embeddings made in memory: extraction never writes the shared index
    assert "in memory" in prov["page_selection"]["ranked_from"] and svc.index.count(prov["document_id"]) == 0
    svc.ingest(pdf)  # once ingested, its indexed points rank the pages
    with ScriptedLLM([{"content": json.dumps(manifest())}]) as llm:
        settings = settings.model_copy(update={"llm_base_url": llm.base_url})
        again = extract_document(pdf, SCHEMA, settings=settings, store=store, service=svc, use_cache=False)
    assert again.result["provenance"]["page_selection"]["ranked_from"] == "indexed points"
    assert svc.index.count(prov["document_id"]) == 4


def test_cli_extract_prints_tables_and_quality(pdf: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from engine.cli import main

    with ScriptedLLM([{"content": json.dumps(manifest())}]) as llm:
        monkeypatch.setenv("DOCVISION_LLM_BASE_URL", llm.base_url)
        monkeypatch.setenv("DOCVISION_LLM_MODEL", "test-vlm")
        schema = Path(__file__).resolve().parents[2] / "schemas" / "shipping_manifest.json"
        assert (
            main(
                [
                    "extract",
                    str(pdf),
                    "--schema",
                    str(schema),
                    "--out",
                    str(tmp_path / "out"),
                    "--format",
                    "csv",
                ]
            )
            == 0
        )
    text = capsys.readouterr().out
    flat = " ".join(text.split())
    # the fixture prints only some of the manifest's values: the score says so, and names what is missing
    assert re.search(r"quality 0\.\d\d \(grounded \d+/37 on the page", flat), flat
    assert "not found on the page: $.shipper.country" in flat and "result: " in flat
    assert "consistency: line values add up to the total value: pass" in flat
    assert list((tmp_path / "out").rglob("line_items.csv"))
    # `cite` draws the boxes on the pages that have citations
    (result_dir,) = {p.parent for p in (tmp_path / "out").rglob("result.json")}
    assert main(["cite", str(result_dir), "--out", str(tmp_path / "png")]) == 0
    from PIL import Image

    img = Image.open(tmp_path / "png" / "page-1.png").convert("RGB")
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["page-1.png"]
    assert (0, 160, 60) in {c for _, c in img.getcolors(1 << 20)}  # green boxes: grounded citations
    monkeypatch.delenv("DOCVISION_LLM_MODEL")
    assert main(["extract", str(pdf), "--schema", str(schema)]) == 2
    assert "DOCVISION_LLM_MODEL" in capsys.readouterr().err


def test_prompts_stay_out_of_logs_by_default() -> None:
    import os

    import engine.extraction.clients  # noqa: F401  (sets the default)

    assert os.environ.get("BAML_LOG") == "error"


class RankedRetriever:
    """A PageRetriever (engine.ports) answering from a fixed ranking: the seam extraction depends on."""

    def __init__(self, pages: list[int]) -> None:
        self.pages = pages
        self.asked: list[str] = []

    def indexed_pages(self, document_id: str) -> int:
        return 4

    def rank_indexed(self, document_id: str, query: str, top_k: int) -> list[tuple[int, float]]:
        self.asked.append(query)
        return [(p, 1.0 - i / 10) for i, p in enumerate(self.pages[:top_k])]

    def stored_vectors(self, document_id: str, page_number: int) -> None:
        return None

    def embed_page(self, image):  # type: ignore[no-untyped-def]
        raise AssertionError("an indexed document is ranked from its points, never embedded again")

    def embed_queries(self, texts):  # type: ignore[no-untyped-def]
        raise AssertionError("not needed for a text-layer document")

    def score(self, queries, pages):  # type: ignore[no-untyped-def]
        raise AssertionError("not needed for an indexed document")


def test_any_page_retriever_picks_the_pages(pdf: Path, store: LocalStore) -> None:
    """extract_document(retriever=...) needs no service: the pages the retriever ranks are the pages asked."""
    retriever = RankedRetriever([4, 2, 1, 3])
    with ScriptedLLM([{"content": json.dumps(manifest())}]) as llm:
        s = Settings(llm_base_url=llm.base_url, llm_model="test-vlm", page_budget=2)
        out = extract_document(pdf, SCHEMA, settings=s, store=store, retriever=retriever)
        (req,) = llm.requests
    prov = out.result["provenance"]
    assert prov["pages_used"] == [2, 4] and len(llm.images_in(req)) == 2
    assert prov["page_selection"]["ranked_from"] == "indexed points"
    assert len(retriever.asked) == len(compile_schema(SCHEMA).root.fields)  # one query per top-level field
