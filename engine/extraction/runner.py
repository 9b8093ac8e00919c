"""Extraction over one opened document: plan (pages, calls) → ask (BAML) → assemble (merge, validate, cite) → write.

Outputs (through the blob store) under results/<document_id>/<cache_key[:16]>/:
    result.json      canonical nested data + provenance (with provenance.citations: page + box per value)
    tables/*.parquet one table per array path + `citations`, lineage columns (and *.csv on request)
    quality.json     computed quality report (grounding, completeness, consistency, score)
A run whose answer cannot be parsed or validated after the configured attempts writes nothing there;
its raw answers go to failures/<document_id>/<cache_key[:16]>/ and ExtractionFailed says where (never what).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine.config import Settings
from engine.documents import open_document
from engine.documents.source import DocumentInput
from engine.errors import ExtractionFailed
from engine.extraction import citations as cite
from engine.extraction import locale, values
from engine.extraction.clients import client_registry, describe_chain
from engine.extraction.coverage import array_coverage
from engine.extraction.quality import quality_report
from engine.extraction.schema import (
    CompiledSchema,
    TypeNode,
    build_type_builder,
    canonical_json,
    compile_schema,
)
from engine.extraction.shape import canonicalize, dumps, merge, shape, tables_json_summary, to_jsonable
from engine.extraction.textlayer import layer_isolated, ocr_frames

log = logging.getLogger(__name__)

INSTRUCTIONS = "Extract the fields described below from these {n} page image(s) (pages {pages} of {total})."
RETRY = (
    "\nYour previous answer for these pages was rejected: {errors}. Answer again with the complete result, "
    "giving every value in the type the schema asks for (use null for a value these pages do not print)."
)
PAGED = (
    " Answer only what these pages print: null for any field they do not show (other pages are asked too)."
)
CITATIONS_VERSION = "cite-v2"  # v2: OCR words, cell-level checks, reasons
VALUES_VERSION = (
    "locale-v1"  # numbers asked as text and parsed as printed; calls of a multi-call plan all-optional
)


@dataclass
class ExtractionOutput:
    cache_key: str
    cached: bool
    result: dict[str, Any]  # canonical result.json content
    quality: dict[str, Any]
    keys: dict[str, Any]  # where things were written


@dataclass
class Plan:
    key: str
    base: str
    pages: list[int]
    selection: dict[str, Any]
    calls: list[list[int]]
    mode: str  # "whole" | "paged"
    page_vectors: dict[int, tuple[Any, Any, int]] = field(default_factory=dict)  # in-memory embeddings


@dataclass
class Answer:
    pages: list[int]
    data: dict[str, Any]
    attempts: int
    rejected: list[dict[str, Any]]  # paths and reasons only
    flags: list[dict[str, Any]] = field(default_factory=list)  # soft problems accepted: {path, reason}
    as_printed: list[str] = field(default_factory=list)  # paths whose value was parsed from its printed form


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


# ------------------------------------------------------------------------------------------------- plan
def select_pages(doc: Any, compiled: CompiledSchema, settings: Settings, service: Any, plan_vectors: dict) -> tuple[list[int], dict[str, Any]]:  # fmt: skip
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
    if service is None:
        raise ExtractionFailed(
            f"{doc.page_count} pages exceed the page budget ({budget}) and no embedding model is available to pick "
            "pages; raise DOCVISION_PAGE_BUDGET or extract through the service",
            document=doc.name,
        )
    queries = schema_queries(compiled)
    ranked: list[list[tuple[int, float]]] = []
    if service.index.count(doc.document_id) >= doc.page_count:
        source = "indexed points"
        for q in queries:
            hits = service.search(q, top_k=budget, document_ids=[doc.document_id])["hits"]
            ranked.append([(h["page_number"], h["score"]) for h in hits])
    else:
        source = "embedded in memory (document not ingested; the index is not written)"
        emb = service.embedder
        for frame in doc.pages():
            (e,) = emb.embed_images([frame.image])
            plan_vectors[frame.page_number] = (e.vectors, tuple(e.grid) if e.grid else None, e.patch_offset)
        numbers = sorted(plan_vectors)
        scores = emb.score(emb.embed_queries(queries), [plan_vectors[p][0] for p in numbers])
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
    doc: Any, compiled: CompiledSchema, settings: Settings, service: Any, cite_values: bool = True
) -> Plan:
    key = cache_key(doc.document_id, compiled, settings, cite_values)
    vectors: dict[int, Any] = {}
    pages, selection = select_pages(doc, compiled, settings, service, vectors)
    calls, mode = plan_calls(pages, compiled, settings)
    return Plan(key, f"results/{doc.document_id}/{key[:16]}", pages, selection, calls, mode, vectors)


# -------------------------------------------------------------------------------------------------- ask
def _page_image(frame: Any, max_side: int) -> Any:
    import baml_py

    img = frame.image
    scale = max_side / max(img.size)
    if scale < 1:
        img = img.resize((round(img.width * scale), round(img.height * scale)))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return baml_py.Image.from_base64("image/png", base64.b64encode(buf.getvalue()).decode())


def _validator(schema: dict[str, Any]) -> Any:
    """Type, format and enum checks; `required` is left to values.missing_required (soft: flagged, not failed)."""
    from jsonschema import Draft202012Validator, FormatChecker

    return Draft202012Validator(values.relaxed(schema), format_checker=FormatChecker())


def _prune(value: Any, node: Any) -> Any:
    """Canonical form → what JSON Schema validates: a null field is simply absent (a missing required field is
    values.missing_required's to report: it may be flagged instead of failing)."""
    if node.kind == "object" and isinstance(value, dict):
        return {
            f.name: _prune(value.get(f.name), f.type) for f in node.fields if value.get(f.name) is not None
        }
    if node.kind == "array" and isinstance(value, list):
        return [_prune(v, node.item) for v in value]
    return value


def _reason(e: Any) -> str:
    """A jsonschema error without the offending value (values stay out of messages and logs)."""
    v = e.validator
    if v == "type":
        return f"not of type {e.validator_value}"
    if v == "format":
        return f"not a valid {e.validator_value}"
    if v == "enum":
        return "not one of the allowed values"
    if v == "required":
        return e.message.split(" is a required")[0] + " is required"  # the property name, not a value
    return f"fails {v}"


def schema_errors(validator: Any, root: Any, data: Any) -> list[tuple[str, str, str]]:
    """(path, reason without the value, full message for the model) for every violation."""
    import datetime as dt

    errors = [
        ("/" + "/".join(map(str, e.absolute_path)), _reason(e), e.message)
        for e in validator.iter_errors(_prune(data, root))
    ]

    # date-time is not checked by jsonschema without extra packages; check it here
    def walk(value: Any, node: Any, path: str) -> None:
        if node.kind == "object":
            for f in node.fields:
                walk((value or {}).get(f.name), f.type, f"{path}/{f.name}")
        elif node.kind == "array":
            for i, v in enumerate(value or []):
                walk(v, node.item, f"{path}/{i}")
        elif node.kind == "datetime" and value is not None:
            try:
                dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            except ValueError:
                errors.append((path, "not an ISO 8601 date-time", f"{value!r} is not an ISO 8601 date-time"))

    walk(data, root, "")
    return errors


def raw_json(text: str | None) -> Any:
    """The JSON object in a reply (fenced or bare, prose around it allowed); None when there is none."""
    if not text:
        return None
    fenced = re.search(r"```(?:json)?\s*(\{.*?\})\s*```", text, re.S)
    candidates = [fenced.group(1)] if fenced else []
    if "{" in text:
        candidates.append(text[text.index("{") :])
    for c in candidates:
        for attempt in (c, re.sub(r",\s*([}\]])", r"\1", c)):  # trailing commas, the common slip
            try:
                value, _ = json.JSONDecoder().raw_decode(attempt)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def losses(raw: Any, kept: Any, node: TypeNode, path: str = "") -> list[tuple[str, str]]:
    """Where coercion dropped what the model answered: (path, reason) — a value nulled, a row or item lost."""
    out: list[tuple[str, str]] = []
    if raw is None:
        return out
    if node.kind == "object":
        if not isinstance(raw, dict):
            return [(path or "/", "not an object")]
        for f in node.fields:
            r = raw.get(f.name, raw.get(f.prop))
            out += losses(r, (kept or {}).get(f.name), f.type, f"{path}/{f.name}")
        return out
    if node.kind == "array":
        if not isinstance(raw, list):
            return [(path, "not a list")]
        kept_list = kept or []
        if len(kept_list) < len(raw):
            bad = [i for i, item in enumerate(raw) if not _fits(item, node.item)]
            where = ", ".join(f"{path}/{i}" for i in bad[:10]) or path
            return [(where, f"{len(raw) - len(kept_list)} of {len(raw)} items did not fit the item type")]
        assert node.item
        for i, (r, k) in enumerate(zip(raw, kept_list, strict=False)):
            out += losses(r, k, node.item, f"{path}/{i}")
        return out
    if kept is None:
        return [(path, f"the answer's value did not fit type {node.kind}")]
    if not _same_value(raw, kept, node):
        return [(path, f"the answer's value is not a {node.kind} (coercion would have changed it)")]
    return out


def _same_value(raw: Any, kept: Any, node: TypeNode) -> bool:
    """Coercion may reformat a value (\"1,200.00\" → 1200.0) but not change it ("23 percent of x" → 23)."""
    if node.kind in ("integer", "number"):
        if isinstance(raw, bool):
            return False
        if isinstance(
            kept, str
        ):  # asked as text: BAML must have kept the answer's text (or number) as it was
            if isinstance(raw, int | float):
                try:
                    return float(kept) == float(raw)
                except ValueError:
                    return False
            return isinstance(raw, str) and raw.strip() == kept.strip()
        if isinstance(raw, int | float):
            return float(raw) == float(kept)
        return locale.same_value(
            str(raw), kept, node.kind
        )  # "€ 4.904,94" is 4904.94; "23 percent of x" is not 23
    if node.kind == "boolean":
        return isinstance(raw, bool) or str(raw).strip().lower() in ("true", "false")
    if node.kind == "enum":
        return str(raw).strip().lower() == str(kept).lower()
    return True


def _fits(value: Any, node: Any) -> bool:
    """Roughly what BAML accepts: used only to name the rows a coercion dropped."""
    if value is None:
        return True
    k = node.kind
    if k == "object":
        if not isinstance(value, dict):
            return False
        return all(
            (value.get(f.name) is not None or not f.required) and _fits(value.get(f.name), f.type)
            for f in node.fields
        )
    if k == "array":
        return isinstance(value, list) and all(_fits(v, node.item) for v in value)
    if k in ("integer", "number"):
        if isinstance(value, bool):
            return False
        if isinstance(value, int | float):
            return True
        return isinstance(value, str)  # asked as text: BAML keeps any string (values.typed parses it)
    if k == "boolean":
        return isinstance(value, bool) or str(value).lower() in ("true", "false")
    if k == "enum":
        return str(value).lower() in {v.lower() for v in node.values}
    return isinstance(value, str | int | float)


def ask(plan_: Plan, doc: Any, compiled: CompiledSchema, settings: Settings, registry: Any, store: Any, on_frame: Any = None,
        evidence: locale.LocaleEvidence | None = None) -> tuple[list[Answer], Any]:  # fmt: skip
    """One BAML call per planned call; an answer that does not parse, validate, or survive coercion whole is
    retried with the reasons, then the extraction fails naming the paths (raw replies only in the store).

    Numbers are asked as text and parsed as printed (values.typed, with the document's locale `evidence`).
    When the plan has several calls, each sees only some pages: every field is optional in its schema and
    required fields are checked after the merge. A soft problem (an ambiguous value; a required field missing
    from a single call's answer) is retried, then accepted as null and flagged — never guessed or invented."""
    from baml_py import Collector
    from baml_py.errors import BamlValidationError

    from baml_client import b

    wanted = {p for call in plan_.calls for p in call}
    frames = {}
    for f in doc.pages():  # rendered once: the LLM's images, and the embeddings scans need for citations
        if f.page_number in wanted:
            frames[f.page_number] = _page_image(f, settings.llm_image_max_side)
            if on_frame is not None:
                on_frame(f)
    several = len(plan_.calls) > 1
    tb = build_type_builder(compiled, all_optional=several)
    validator = _validator(compiled.schema)
    doc_evidence = evidence or locale.LocaleEvidence()
    collector = Collector(name="extract")
    answers: list[Answer] = []
    for ci, chunk in enumerate(plan_.calls):
        base_instructions = INSTRUCTIONS.format(
            n=len(chunk), pages=", ".join(map(str, chunk)), total=doc.page_count
        ) + (PAGED if several else "")
        instructions, data = base_instructions, None
        record: list[dict[str, Any]] = []
        flags: list[dict[str, Any]] = []
        printed: list[str] = []
        for attempt in range(1, settings.extract_attempts + 1):
            reply: str | None = None
            try:
                result = b.ExtractDocument([frames[p] for p in chunk], instructions,
                                           baml_options={"tb": tb, "client_registry": registry, "collector": collector})  # fmt: skip
                reply = collector.last.raw_llm_response if collector.last else None
            except BamlValidationError as exc:
                record.append({"attempt": attempt, "errors": [["/", "the answer does not parse as the schema's object"]],
                               "raw_output": exc.raw_output})  # fmt: skip
                instructions = base_instructions + RETRY.format(
                    errors="it was not one JSON object of the requested shape"
                )
                continue
            as_text = canonicalize(to_jsonable(result), compiled.root, from_model=True)
            answered = raw_json(reply)
            ev = values.combined(
                doc_evidence, locale.infer_locale(values.number_strings(as_text, compiled.root))
            )
            printed = []
            candidate, problems = values.typed(as_text, answered, compiled.root, ev, printed=printed)
            lost = losses(answered, as_text, compiled.root) if answered is not None else []
            if not several:  # a call that saw every page must answer every required field (or be flagged)
                named = {p.path for p in problems}
                problems += [
                    p for p in values.missing_required(candidate, compiled.root) if p.path not in named
                ]
            errors = [values.Problem(p, r, r, False, "lost") for p, r in lost]
            errors += [
                values.Problem(p, r, m, False, "schema")
                for p, r, m in schema_errors(validator, compiled.root, candidate)
            ]
            errors += problems
            if not errors or (attempt == settings.extract_attempts and all(e.soft for e in errors)):
                data = candidate
                flags = [{"path": values.jsonpath(e.path), "reason": e.code} for e in errors]
                break
            record.append({"attempt": attempt, "errors": [[e.path, e.reason] for e in errors[:20]], "raw_output": reply,
                           "messages": [e.message for e in errors[:20]]})  # fmt: skip
            instructions = base_instructions + RETRY.format(
                errors="; ".join(f"{values.jsonpath(e.path)}: {e.message}" for e in errors[:10])
            )
        rejected = [{"attempt": r["attempt"], "errors": r["errors"]} for r in record]
        if record:
            where = f"failures/{doc.document_id}/{plan_.key[:16]}/call-{ci}.json"
            store.put(
                where,
                dumps({"document": doc.name, "pages": chunk, "attempts": record}).encode(),
                "application/json",
            )
            for r in rejected:
                r["raw_answer"] = store.url(where)
        if data is None:
            last = record[-1]["errors"]
            paths = "; ".join(f"{p}: {r}" for p, r in last[:5])
            raise ExtractionFailed(
                f"pages {chunk}: no valid answer after {settings.extract_attempts} attempts ({paths}); the raw "
                f"answers are at {rejected[-1]['raw_answer']}",
                document=doc.name, raw_answer_location=rejected[-1]["raw_answer"], paths=[p for p, _ in last[:20]],
            )  # fmt: skip
        answers.append(Answer(chunk, data, len(record) + 1, rejected, flags, printed))
    return answers, collector


# --------------------------------------------------------------------------------------------- assemble
def _flags(answers: list[Answer], data: dict[str, Any], compiled: CompiledSchema) -> list[dict[str, Any]]:
    """What the merged result leaves open, by path and reason (never a value): a value a call could only
    report as ambiguous (unless another call answered it), and every required field still missing."""
    out: dict[str, dict[str, Any]] = {}
    for a in answers:
        for f in a.flags:
            if f["reason"] == "ambiguous_value" and _at(data, f["path"]) is None:
                out[f["path"]] = {**f, "pages": a.pages}
    for problem in values.missing_required(data, compiled.root):
        path = values.jsonpath(problem.path)
        out.setdefault(path, {"path": path, "reason": "missing_required"})
    return [out[k] for k in sorted(out)]


def _at(data: Any, jsonpath: str) -> Any:
    cur = data
    for key, idx in re.findall(r"\.([^.\[\]]+)|\[(\d+)\]", jsonpath):
        if key:
            cur = cur.get(key) if isinstance(cur, dict) else None
        else:
            cur = cur[int(idx)] if isinstance(cur, list) and int(idx) < len(cur) else None
    return cur


def scan_embedder(plan_: Plan, layer: cite.TextLayer, service: Any) -> Any:
    """A frame hook: pages without a text layer are embedded (in memory) for similarity-map citations."""
    if service is None:
        return None

    def on_frame(frame: Any) -> None:
        p = frame.page_number
        if layer.has_text(p) or p in plan_.page_vectors:
            return
        found = (
            service.index.get_page(frame.document_id, p) if service.index.count(frame.document_id) else None
        )
        if found is not None:
            payload, vectors = found
            grid = (payload["grid_rows"], payload["grid_cols"]) if payload.get("grid_rows") else None
            plan_.page_vectors[p] = (vectors, grid, int(payload.get("patch_offset") or 0))
        else:
            (e,) = service.embedder.embed_images([frame.image])
            plan_.page_vectors[p] = (e.vectors, tuple(e.grid) if e.grid else None, e.patch_offset)

    return on_frame


def locate(data: dict[str, Any], compiled: CompiledSchema, layer: cite.TextLayer, leaf_pages: dict[str, list[int]],
           plan_: Plan, service: Any) -> list[dict[str, Any]]:  # fmt: skip
    """One citation per non-null scalar leaf: text layer where the page has one, else the similarity map."""
    found = cite.leaves(data, compiled)
    text_pages = {p for p in plan_.pages if layer.has_text(p)}
    on_text = [lf for lf in found if any(p in text_pages for p in leaf_pages.get(lf.path, []))]
    on_scan = [lf for lf in found if lf not in on_text]
    located = cite.cite_text_layer(
        on_text, layer, {k: [p for p in v if p in text_pages] for k, v in leaf_pages.items()}
    )
    if on_scan and service is not None and plan_.page_vectors:
        located.update(
            cite.cite_similarity_map(on_scan, plan_.page_vectors.get, service.embedder, leaf_pages)
        )
    for lf in on_scan:
        located.setdefault(lf.path, {"method": "none", "page": None, "bbox": None, "grounded": None,
                                     "reason": "no_text", "ocr_confidence": None})  # fmt: skip
    return [{"path": lf.path, "row": lf.row, **located[lf.path]} for lf in found]


# ------------------------------------------------------------------------------------------------ write
def write(store: Any, base: str, tables: dict[str, Any], csv: bool) -> dict[str, Any]:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    outputs: dict[str, Any] = {
        "result": store.url(f"{base}/result.json"),
        "quality": store.url(f"{base}/quality.json"),
        "tables": {},
    }
    for tname, table in tables.items():
        buf = io.BytesIO()
        pq.write_table(table, buf)
        outputs["tables"][tname] = {
            "parquet": store.put(
                f"{base}/tables/{tname}.parquet", buf.getvalue(), "application/vnd.apache.parquet"
            ),
            "rows": table.num_rows,
        }
        if csv:
            cbuf = io.BytesIO()
            pacsv.write_csv(table, cbuf)
            outputs["tables"][tname]["csv"] = store.put(
                f"{base}/tables/{tname}.csv", cbuf.getvalue(), "text/csv"
            )
    return outputs  # fmt: skip


def _cached(store: Any, base: str, key: str, settings: Settings) -> ExtractionOutput | None:
    if not store.exists(f"{base}/result.json"):
        return None
    cached = json.loads(store.get(f"{base}/result.json"))
    age = time.time() - datetime.fromisoformat(cached["provenance"]["created"]).timestamp()
    if age > settings.cache_ttl_s:
        return None
    log.info("cache hit %s", key[:16])
    quality = json.loads(store.get(f"{base}/quality.json"))
    return ExtractionOutput(key, True, cached, quality, cached["provenance"]["outputs"])


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
    source: DocumentInput, schema: dict[str, Any] | str, *, settings: Settings, store: Any, service: Any = None,
    name: str | None = None, csv: bool = False, use_cache: bool = True, s3_client: Any = None, on_progress: Any = None,
    timings: dict[str, float] | None = None, cite_values: bool = True,
) -> ExtractionOutput:  # fmt: skip
    if settings.llm_debug:
        import os

        os.environ["BAML_LOG"] = "info"
    started = time.monotonic()
    compiled = compile_schema(schema)
    registry, client_desc = client_registry(settings)
    with _open(source, name, settings, s3_client, store) as doc:
        key = cache_key(doc.document_id, compiled, settings, cite_values)
        if use_cache and (hit := _cached(store, f"results/{doc.document_id}/{key[:16]}", key, settings)):
            return hit
        plan_ = plan(doc, compiled, settings, service, cite_values)
        if on_progress:
            on_progress(0, len(plan_.calls))
        t_layer = time.monotonic()
        text_pdf = getattr(doc, "text_pdf", None) if cite_values else None
        layer = cite.TextLayer(layer_isolated(text_pdf, plan_.pages, settings, doc.name) if text_pdf else {})
        t_layer = time.monotonic() - t_layer
        # OCR first (pages without a text layer, image regions of pages with one); what OCR cannot read falls
        # back to the similarity map
        ocr_hook, ocr = ocr_frames(settings, layer) if cite_values else (None, None)
        hooks = [h for h in (ocr_hook, scan_embedder(plan_, layer, service) if cite_values else None) if h]
        # the document's own conventions (decimal comma? day-first?) settle values like `1.234` or `03/04/2020`
        evidence = locale.infer_locale(w.text for p in plan_.pages for w in layer.words(p))
        if ocr is not None:  # a value the first OCR reading does not show is looked for in a second one
            layer.second_reader = ocr.second_reading
        try:
            answers, collector = ask(plan_, doc, compiled, settings, registry, store,
                                     (lambda f: [h(f) for h in hooks]) if hooks else None, evidence)  # fmt: skip
            return _assemble(doc, compiled, settings, store, plan_, answers, collector, layer, ocr, service,
                             key, csv, cite_values, evidence, client_desc, started, t_layer, timings)  # fmt: skip
        finally:
            if ocr is not None:
                ocr.close()


def _assemble(doc: Any, compiled: CompiledSchema, settings: Settings, store: Any, plan_: Plan, answers: list[Answer],
              collector: Any, layer: cite.TextLayer, ocr: Any, service: Any, key: str, csv: bool, cite_values: bool,
              evidence: locale.LocaleEvidence, client_desc: str, started: float, t_layer: float,
              timings: dict[str, float] | None) -> ExtractionOutput:  # fmt: skip
    """Merge, validate, cite and write one document's answers (OCR still open for second readings)."""
    t_assemble = time.monotonic()
    merged = merge([(a.pages, a.data) for a in answers], compiled.root)
    data = canonicalize(merged.data, compiled.root)
    validator = _validator(compiled.schema)
    if final := schema_errors(validator, compiled.root, data):
        where = f"failures/{doc.document_id}/{key[:16]}/merged.json"
        store.put(where, dumps({"merged": data, "errors": final}).encode(), "application/json")
        raise ExtractionFailed(f"the merged result violates the schema ({final[0][0]}: {final[0][1]}); see {store.url(where)}",
                               document=doc.name, raw_answer_location=store.url(where))  # fmt: skip
    flags = _flags(answers, data, compiled)
    t_cite = time.monotonic()
    citations = locate(data, compiled, layer, merged.leaf_pages, plan_, service) if cite_values else []
    grounding = cite.grounding(citations)
    arrays = array_coverage(data, citations, layer, plan_.pages) if cite_values else {}
    t_cited = time.monotonic()
    tables = shape(data, compiled, doc.document_id)
    tables["citations"] = cite.citations_table(citations, doc.document_id)
    outputs = write(store, plan_.base, tables, csv)
    rejected = [r for a in answers for r in a.rejected]
    attempts = sum(a.attempts for a in answers)
    quality = quality_report(data, compiled, valid=True, errors=[], attempts=attempts, calls=len(plan_.calls),
                             conflicts=merged.conflicts, grounding=grounding, rejected=len(rejected),
                             citations=citations, flags=flags, arrays=arrays)  # fmt: skip
    field_sources: dict[str, list[int]] = {}
    for c in citations:
        top = re.match(r"\$\.([^.\[]+)", c["path"])
        if top and c["page"]:
            field_sources.setdefault(top.group(1), [])
            if c["page"] not in field_sources[top.group(1)]:
                field_sources[top.group(1)].append(c["page"])
    usage = {"input_tokens": sum((c.usage.input_tokens or 0) for c in collector.logs),
             "output_tokens": sum((c.usage.output_tokens or 0) for c in collector.logs)}  # fmt: skip
    result = {
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
    if timings is not None:
        timings.update(text_layer_s=t_layer, citations_s=t_cited - t_cite, assemble_s=time.monotonic() - t_assemble,
                       pages=len(plan_.pages), ocr_s=ocr.seconds if ocr else 0.0,
                       ocr_images=ocr.images if ocr else 0)  # fmt: skip
    # quality and tables first, result.json last: its presence is what marks a complete (cacheable) result
    store.put(f"{plan_.base}/quality.json", dumps(quality).encode(), "application/json")
    store.put(f"{plan_.base}/result.json", dumps(result).encode(), "application/json")
    return ExtractionOutput(key, False, result, quality, outputs)
