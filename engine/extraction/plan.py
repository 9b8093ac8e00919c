"""Plan one extraction: which pages (all, or the best by retrieval), in which calls, under which cache key.

The cache key covers the document, the schema and every setting that changes what an extraction produces
(output_settings). A document within the page budget is read whole; a longer one is narrowed by
late-interaction retrieval over the schema's fields (engine.ports.PageRetriever: its indexed points when it
was ingested, else embedded here in memory, never written to the shared index). Calls: pages_per_call pages
each ("whole"), or small overlapping segments whose list rows are merged afterwards ("paged").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from engine.config import Settings
from engine.errors import ExtractionFailed
from engine.extraction.clients import describe_chain
from engine.extraction.schema import CompiledSchema, TypeNode, canonical_json
from engine.ports import PageRetriever, PageVectors

CITATIONS_VERSION = "cite-v2"  # v2: OCR words, cell-level checks, reasons
VALUES_VERSION = (
    "locale-v1"  # numbers asked as text and parsed as printed; calls of a multi-call plan all-optional
)


@dataclass
class Plan:
    key: str
    base: str
    pages: list[int]
    selection: dict[str, Any]
    calls: list[list[int]]
    mode: str  # "whole" | "paged"
    page_vectors: dict[int, PageVectors] = field(default_factory=dict)  # in-memory embeddings


def output_settings(settings: Settings, citations: bool = True) -> dict[str, Any]:
    """Every setting that changes what an extraction produces (the cache key covers all of them)."""
    return {
        "clients": describe_chain(settings), "prompt_version": settings.prompt_version, "pages_per_call": settings.pages_per_call,
        "page_budget": settings.page_budget, "image_max_side": settings.llm_image_max_side, "dpi": settings.dpi,
        "list_mode": settings.list_mode, "list_segment_pages": settings.list_segment_pages,
        "list_segment_overlap": settings.list_segment_overlap, "citations": CITATIONS_VERSION if citations else "off",
        "attempts": settings.extract_attempts, "ocr": _ocr_languages(settings) if citations else "off",
        "values": VALUES_VERSION,
    }  # fmt: skip


def _ocr_languages(settings: Settings) -> str:
    from engine.documents.ocr import usable_languages

    return usable_languages(settings.ocr_languages) if settings.ocr_languages else ""


def cache_key(document_id: str, compiled: CompiledSchema, settings: Settings, citations: bool = True) -> str:
    return hashlib.sha256(
        f"{document_id}\n{canonical_json(compiled.schema)}\n{canonical_json(output_settings(settings, citations))}".encode()
    ).hexdigest()


def schema_queries(compiled: CompiledSchema) -> list[str]:
    """Retrieval queries from the schema: one per top-level field (name + description)."""
    out = []
    for f in compiled.root.fields:
        text = f.name.replace("_", " ")
        desc = f.description or f.type.description or (f.type.item.description if f.type.item else None)
        out.append(f"{text}: {desc}" if desc else text)
    return out


def _has_arrays(node: TypeNode) -> bool:
    return any(
        f.type.kind == "array" or (f.type.kind == "object" and _has_arrays(f.type)) for f in node.fields
    )


def select_pages(doc: Any, compiled: CompiledSchema, settings: Settings, retriever: PageRetriever | None,
                 plan_vectors: dict[int, PageVectors]) -> tuple[list[int], dict[str, Any]]:  # fmt: skip
    """All pages of a small document; for a long one, the best pages by late-interaction retrieval.

    An ingested document is ranked from its indexed points; any other is embedded here, in memory (the
    shared index is never written from extraction); those embeddings are kept for similarity-map citations.
    """
    budget = settings.page_budget
    if doc.page_count <= budget:
        return list(range(1, doc.page_count + 1)), {
            "method": "all pages",
            "reason": f"{doc.page_count} pages <= page budget {budget}",
        }
    if retriever is None:
        raise ExtractionFailed(
            f"{doc.page_count} pages exceed the page budget ({budget}) and no embedding model is available to pick "
            "pages; raise DOCVISION_PAGE_BUDGET or extract through the service",
            document=doc.name,
        )
    queries = schema_queries(compiled)
    ranked: list[list[tuple[int, float]]] = []
    if retriever.indexed_pages(doc.document_id) >= doc.page_count:
        source = "indexed points"
        for q in queries:
            ranked.append(retriever.rank_indexed(doc.document_id, q, budget))
    else:
        source = "embedded in memory (document not ingested; the index is not written)"
        for frame in doc.pages():
            plan_vectors[frame.page_number] = retriever.embed_page(frame.image)
        numbers = sorted(plan_vectors)
        scores = retriever.score(retriever.embed_queries(queries), [plan_vectors[p].vectors for p in numbers])
        for row in scores:
            order = sorted(range(len(numbers)), key=lambda i: -row[i])[:budget]
            ranked.append([(numbers[i], float(row[i])) for i in order])
    votes: dict[int, float] = {}
    why: dict[int, list[str]] = {}
    for q, hits in zip(queries, ranked, strict=True):
        for rank, (page, score) in enumerate(hits):
            votes[page] = votes.get(page, 0.0) + 1.0 / (rank + 1)  # reciprocal-rank fusion
            why.setdefault(page, []).append(f"{q.split(':')[0]} (rank {rank + 1}, score {score:.3f})")
    chosen = sorted(sorted(votes, key=lambda p: -votes[p])[:budget])
    return chosen, {"method": "late-interaction retrieval (reciprocal-rank fusion over schema-field queries)", "page_budget": budget,
                    "ranked_from": source, "pages": {str(p): {"fused_score": round(votes[p], 4), "matched": why[p]} for p in chosen}}  # fmt: skip


def plan_calls(pages: list[int], compiled: CompiledSchema, settings: Settings) -> tuple[list[list[int]], str]:
    """Whole: pages_per_call pages per call. Paged (long lists): small overlapping segments, rows merged after.

    auto = paged when the schema has a list and the pages do not fit one call (a single answer truncates lists).
    """
    mode = settings.list_mode
    if mode == "auto":
        mode = "paged" if _has_arrays(compiled.root) and len(pages) > settings.pages_per_call else "whole"
    if mode == "paged":
        size = max(1, settings.list_segment_pages)
        step = max(1, size - max(0, settings.list_segment_overlap))
        calls = []
        for i in range(0, len(pages), step):
            calls.append(pages[i : i + size])
            if i + size >= len(pages):
                break
        return calls, mode
    n = settings.pages_per_call
    return [pages[i : i + n] for i in range(0, len(pages), n)], "whole"


def plan(
    doc: Any,
    compiled: CompiledSchema,
    settings: Settings,
    retriever: PageRetriever | None,
    cite_values: bool = True,
) -> Plan:
    key = cache_key(doc.document_id, compiled, settings, cite_values)
    vectors: dict[int, PageVectors] = {}
    pages, selection = select_pages(doc, compiled, settings, retriever, vectors)
    calls, mode = plan_calls(pages, compiled, settings)
    return Plan(key, f"results/{doc.document_id}/{key[:16]}", pages, selection, calls, mode, vectors)
