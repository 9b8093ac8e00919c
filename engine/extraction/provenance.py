"""Provenance: where each value is (citations: text layer, OCR, or the similarity map), and the result's
record of how it was made (pages, calls, sources, settings, usage).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from engine.config import Settings
from engine.extraction import citations as cite
from engine.extraction import locale
from engine.extraction.ask import Answer
from engine.extraction.plan import Plan, output_settings
from engine.extraction.schema import CompiledSchema
from engine.extraction.shape import tables_json_summary
from engine.ports import PageRetriever


def scan_embedder(plan_: Plan, layer: cite.TextLayer, retriever: PageRetriever | None) -> Any:
    """A frame hook: pages without a text layer are embedded (in memory) for similarity-map citations."""
    if retriever is None:
        return None

    def on_frame(frame: Any) -> None:
        p = frame.page_number
        if layer.has_text(p) or p in plan_.page_vectors:
            return
        stored = (
            retriever.stored_vectors(frame.document_id, p)
            if retriever.indexed_pages(frame.document_id)
            else None
        )
        plan_.page_vectors[p] = stored if stored is not None else retriever.embed_page(frame.image)

    return on_frame


def locate(data: dict[str, Any], compiled: CompiledSchema, layer: cite.TextLayer, leaf_pages: dict[str, list[int]],
           plan_: Plan, retriever: PageRetriever | None) -> list[dict[str, Any]]:  # fmt: skip
    """One citation per non-null scalar leaf: text layer where the page has one, else the similarity map."""
    found = cite.leaves(data, compiled)
    text_pages = {p for p in plan_.pages if layer.has_text(p)}
    on_text = [lf for lf in found if any(p in text_pages for p in leaf_pages.get(lf.path, []))]
    on_scan = [lf for lf in found if lf not in on_text]
    located = cite.cite_text_layer(
        on_text, layer, {k: [p for p in v if p in text_pages] for k, v in leaf_pages.items()}
    )
    if on_scan and retriever is not None and plan_.page_vectors:
        located.update(cite.cite_similarity_map(on_scan, plan_.page_vectors.get, retriever, leaf_pages))
    for lf in on_scan:
        located.setdefault(lf.path, {"method": "none", "page": None, "bbox": None, "grounded": None,
                                     "reason": "no_text", "ocr_confidence": None})  # fmt: skip
    return [{"path": lf.path, "row": lf.row, **located[lf.path]} for lf in found]


def build_result(doc: Any, data: dict[str, Any], compiled: CompiledSchema, settings: Settings, plan_: Plan,
                 answers: list[Answer], collector: Any, merged: Any, citations: list[dict[str, Any]],
                 flags: list[dict[str, Any]], evidence: locale.LocaleEvidence, client_desc: str, key: str,
                 cite_values: bool, started: float, tables: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """result.json: the canonical data and its provenance (pages, calls, citations, value sources, flags, locale,
    merge conflicts, rejected answers by path, client, settings, usage, timing, tables and outputs)."""
    rejected = [r for a in answers for r in a.rejected]
    attempts = sum(a.attempts for a in answers)
    field_sources: dict[str, list[int]] = {}
    for c in citations:
        top = re.match(r"\$\.([^.\[]+)", c["path"])
        if top and c["page"]:
            field_sources.setdefault(top.group(1), [])
            if c["page"] not in field_sources[top.group(1)]:
                field_sources[top.group(1)].append(c["page"])
    usage = {"input_tokens": sum((c.usage.input_tokens or 0) for c in collector.logs),
             "output_tokens": sum((c.usage.output_tokens or 0) for c in collector.logs)}  # fmt: skip
    return {
        "data": data,
        "provenance": {
            "document_id": doc.document_id, "source": doc.uri or doc.name, "source_type": doc.type.value, "page_count": doc.page_count,
            "pages_used": plan_.pages, "page_selection": plan_.selection, "calls": [{"pages": c} for c in plan_.calls],
            "call_mode": plan_.mode, "field_sources": {k: sorted(v) for k, v in field_sources.items()},
            "citations": [{k: v for k, v in c.items() if k != "row"} for c in citations],
            "value_sources": {p: {"pages": v} for p, v in merged.leaf_pages.items()},
            "values_as_printed": sorted({p for a in answers for p in a.as_printed}), "flags": flags,
            "locale": evidence.as_dict(),
            "merge_conflicts": merged.conflicts, "duplicates_dropped": merged.duplicates_dropped, "rejected_answers": rejected,
            "client": client_desc, "prompt_version": settings.prompt_version, "settings": output_settings(settings, cite_values),
            "schema_fingerprint": compiled.fingerprint, "cache_key": key, "attempts": attempts, "retries": attempts - len(plan_.calls),
            "usage": usage, "seconds": round(time.monotonic() - started, 2), "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "tables": tables_json_summary(tables), "outputs": outputs,
        },
    }  # fmt: skip
