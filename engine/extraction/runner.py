"""Extraction over one opened document, as stages: plan (pages, calls: engine.extraction.plan) → ask (BAML:
.ask) → validate (.validate) → provenance (citations and the result's record: .provenance) → write (.write).

This module only opens the document and runs the stages in order.

Outputs (through the blob store) under results/<document_id>/<cache_key[:16]>/:
    result.json      canonical nested data + provenance (with provenance.citations: page + box per value)
    tables/*.parquet one table per array path + `citations`, lineage columns (and *.csv on request)
    quality.json     computed quality report (grounding, completeness, consistency, score)
A run whose answer cannot be parsed or validated after the configured attempts writes nothing there;
its raw answers go to failures/<document_id>/<cache_key[:16]>/ and ExtractionFailed says where (never what).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from engine.config import Settings
from engine.documents import open_document
from engine.documents.source import DocumentInput
from engine.errors import ExtractionFailed
from engine.extraction import citations as cite
from engine.extraction import locale, validate
from engine.extraction.ask import Answer, _page_image, ask
from engine.extraction.clients import client_registry, configure_baml_log
from engine.extraction.coverage import array_coverage
from engine.extraction.plan import CITATIONS_VERSION, VALUES_VERSION, Plan, cache_key, output_settings, plan
from engine.extraction.provenance import build_result, locate, scan_embedder
from engine.extraction.quality import quality_report
from engine.extraction.retrieval import as_retriever
from engine.extraction.schema import CompiledSchema, compile_schema
from engine.extraction.shape import canonicalize, dumps, merge, shape
from engine.extraction.textlayer import layer_isolated, ocr_frames
from engine.extraction.write import ExtractionOutput, cached, finish, write
from engine.ports import PageRetriever

if TYPE_CHECKING:
    from engine.service import DocVision

__all__ = [
    "CITATIONS_VERSION", "VALUES_VERSION", "ExtractionOutput", "_page_image", "cache_key", "extract_document",
    "output_settings", "pages_without_converting",
]  # fmt: skip


def _open(source: DocumentInput, name: str | None, settings: Settings, s3_client: Any, store: Any) -> Any:
    """The one place extraction opens a document: read once; an Office/HTML document's converted PDF is taken
    from the store when ingest (or an earlier extraction) kept it, and kept there otherwise."""
    from engine.documents.sniff import DocumentType
    from engine.documents.source import load_bytes

    loaded = load_bytes(source, name=name, max_bytes=settings.max_bytes, s3_client=s3_client)
    converted = _converted(store)
    kept = converted.get(loaded.sha256) if converted is not None else None
    doc = open_document(loaded.data, name=loaded.name, settings=settings, pdf_bytes=kept)
    doc.uri = loaded.uri
    if converted is not None and doc.pdf_bytes and kept is None:
        converted.put(doc.document_id, doc.pdf_bytes)
    # the PDF whose text layer citations read: the original, or what LibreOffice made of it
    doc.text_pdf = doc.pdf_bytes or (loaded.data if doc.type == DocumentType.PDF else None)  # type: ignore[attr-defined]
    return doc


def _converted(store: Any) -> Any:
    """The store of converted PDFs kept once per document (the ingest side provides it)."""
    try:
        from engine.storage.converted import ConvertedPdfs  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return ConvertedPdfs(store)


def pages_without_converting(source: DocumentInput, settings: Settings, store: Any, index: Any = None,
                             s3_client: Any = None) -> int | None:  # fmt: skip
    """How many pages a document has, without converting or rendering it (the API's sync-or-202 decision):
    the index's count when it was ingested, a PDF's (or a kept converted PDF's) page tree read in the limited
    child process; None when only a conversion could tell (an Office/HTML document never converted)."""
    from engine.documents.sniff import DocumentType, sniff
    from engine.documents.source import load_bytes
    from engine.extraction.textlayer import page_count_isolated

    loaded = load_bytes(source, name=None, max_bytes=settings.max_bytes, s3_client=s3_client)
    if index is not None and (n := index.count(loaded.sha256)):
        return int(n)
    kind = sniff(loaded.data).type
    if kind == DocumentType.PDF:
        return page_count_isolated(loaded.data, settings)
    if kind is not None and kind.is_image:
        return 1 if kind.value not in ("tiff", "gif", "webp") else None
    converted = _converted(store)
    kept = converted.get(loaded.sha256) if converted is not None else None
    return page_count_isolated(kept, settings) if kept else None


def extract_document(
    source: DocumentInput, schema: dict[str, Any] | str, *, settings: Settings, store: Any,
    retriever: PageRetriever | None = None, service: DocVision | None = None,
    name: str | None = None, csv: bool = False, use_cache: bool = True, s3_client: Any = None, on_progress: Any = None,
    timings: dict[str, float] | None = None, cite_values: bool = True,
) -> ExtractionOutput:  # fmt: skip
    """Plan → ask → validate → cite → write one document (see the module's docstring for what is written).

    retriever: picks a long document's pages and gives scans' page vectors (engine.ports.PageRetriever);
    service: the older way to hand one in (an engine.service.DocVision, wrapped in a ServiceRetriever)."""
    retriever = retriever if retriever is not None else as_retriever(service)
    configure_baml_log(settings)
    started = time.monotonic()
    compiled = compile_schema(schema)
    registry, client_desc = client_registry(settings)
    with _open(source, name, settings, s3_client, store) as doc:
        key = cache_key(doc.document_id, compiled, settings, cite_values)
        if use_cache and (hit := cached(store, f"results/{doc.document_id}/{key[:16]}", key, settings)):
            return hit
        plan_ = plan(doc, compiled, settings, retriever, cite_values)
        if on_progress:
            on_progress(0, len(plan_.calls))
        t_layer = time.monotonic()
        text_pdf = getattr(doc, "text_pdf", None) if cite_values else None
        layer = cite.TextLayer(layer_isolated(text_pdf, plan_.pages, settings, doc.name) if text_pdf else {})
        t_layer = time.monotonic() - t_layer
        # OCR first (pages without a text layer, image regions of pages with one); what OCR cannot read falls
        # back to the similarity map
        ocr_hook, ocr = ocr_frames(settings, layer) if cite_values else (None, None)
        hooks = [h for h in (ocr_hook, scan_embedder(plan_, layer, retriever) if cite_values else None) if h]
        # the document's own conventions (decimal comma? day-first?) settle values like `1.234` or `03/04/2020`
        evidence = locale.infer_locale(w.text for p in plan_.pages for w in layer.words(p))
        if ocr is not None:  # a value the first OCR reading does not show is looked for in a second one
            layer.second_reader = ocr.second_reading
        try:
            answers, collector = ask(plan_, doc, compiled, settings, registry, store,
                                     (lambda f: [h(f) for h in hooks]) if hooks else None, evidence)  # fmt: skip
            return _assemble(doc, compiled, settings, store, plan_, answers, collector, layer, ocr, retriever,
                             key, csv, cite_values, evidence, client_desc, started, t_layer, timings)  # fmt: skip
        finally:
            if ocr is not None:
                ocr.close()


def _assemble(doc: Any, compiled: CompiledSchema, settings: Settings, store: Any, plan_: Plan, answers: list[Answer],
              collector: Any, layer: cite.TextLayer, ocr: Any, retriever: PageRetriever | None, key: str, csv: bool, cite_values: bool,
              evidence: locale.LocaleEvidence, client_desc: str, started: float, t_layer: float,
              timings: dict[str, float] | None) -> ExtractionOutput:  # fmt: skip
    """Merge, validate, cite and write one document's answers (OCR still open for second readings)."""
    t_assemble = time.monotonic()
    merged = merge([(a.pages, a.data) for a in answers], compiled.root)
    data = canonicalize(merged.data, compiled.root)
    validator = validate.validator(compiled.schema)
    if final := validate.schema_errors(validator, compiled.root, data):
        where = f"failures/{doc.document_id}/{key[:16]}/merged.json"
        store.put(where, dumps({"merged": data, "errors": final}).encode(), "application/json")
        raise ExtractionFailed(f"the merged result violates the schema ({final[0][0]}: {final[0][1]}); see {store.url(where)}",
                               document=doc.name, raw_answer_location=store.url(where))  # fmt: skip
    flags = validate.flags(answers, data, compiled)
    t_cite = time.monotonic()
    citations = locate(data, compiled, layer, merged.leaf_pages, plan_, retriever) if cite_values else []
    grounding = cite.grounding(citations)
    arrays = array_coverage(data, citations, layer, plan_.pages) if cite_values else {}
    t_cited = time.monotonic()
    tables = shape(data, compiled, doc.document_id)
    tables["citations"] = cite.citations_table(citations, doc.document_id)
    outputs = write(store, plan_.base, tables, csv)
    quality = quality_report(data, compiled, valid=True, errors=[], attempts=sum(a.attempts for a in answers),
                             calls=len(plan_.calls), conflicts=merged.conflicts, grounding=grounding,
                             rejected=sum(len(a.rejected) for a in answers),
                             citations=citations, flags=flags, arrays=arrays)  # fmt: skip
    result = build_result(doc, data, compiled, settings, plan_, answers, collector, merged, citations, flags,
                          evidence, client_desc, key, cite_values, started, tables, outputs)  # fmt: skip
    if timings is not None:
        timings.update(text_layer_s=t_layer, citations_s=t_cited - t_cite, assemble_s=time.monotonic() - t_assemble,
                       pages=len(plan_.pages), ocr_s=ocr.seconds if ocr else 0.0,
                       ocr_images=ocr.images if ocr else 0)  # fmt: skip
    finish(store, plan_.base, quality, result)  # tables first, then quality.json, result.json last
    return ExtractionOutput(key, False, result, quality, outputs)
