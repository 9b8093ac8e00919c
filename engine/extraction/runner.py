"""Extraction: document + JSON Schema → pages → BAML vision-LLM call(s) → merge → validate → outputs.

Outputs (through the blob store) under results/<document_id>/<cache_key[:16]>/:
    result.json      canonical nested data + provenance
    tables/*.parquet one table per array path, lineage columns (and *.csv on request)
    quality.json     computed quality report
A run whose answer cannot be parsed or validated after the configured attempts writes nothing there;
its raw answers go to failures/<document_id>/<cache_key[:16]>/ and ExtractionFailed says where.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.config import Settings
from engine.documents import open_document
from engine.documents.source import DocumentInput
from engine.errors import ExtractionFailed
from engine.extraction.clients import client_registry
from engine.extraction.quality import quality_report
from engine.extraction.schema import CompiledSchema, build_type_builder, canonical_json, compile_schema
from engine.extraction.shape import canonicalize, dumps, merge, shape, tables_json_summary, to_jsonable

log = logging.getLogger(__name__)

INSTRUCTIONS = "Extract the fields described below from these {n} page image(s) (pages {pages} of {total})."


@dataclass
class ExtractionOutput:
    cache_key: str
    cached: bool
    result: dict[str, Any]  # canonical result.json content
    quality: dict[str, Any]
    keys: dict[str, Any]  # where things were written


def cache_key(document_id: str, compiled: CompiledSchema, client: str, prompt_version: str) -> str:
    return hashlib.sha256(
        f"{document_id}\n{canonical_json(compiled.schema)}\n{client}\n{prompt_version}".encode()
    ).hexdigest()


def schema_queries(compiled: CompiledSchema) -> list[str]:
    """Retrieval queries from the schema: one per top-level field (name + description)."""
    out = []
    for f in compiled.root.fields:
        text = f.name.replace("_", " ")
        desc = f.description or f.type.description or (f.type.item.description if f.type.item else None)
        out.append(f"{text}: {desc}" if desc else text)
    return out


def select_pages(
    doc: Any, source: Any, compiled: CompiledSchema, settings: Settings, service: Any
) -> tuple[list[int], dict[str, Any]]:
    """All pages of a small document; for a long one, the best pages by late-interaction retrieval."""
    if doc.page_count <= settings.page_budget:
        return list(range(1, doc.page_count + 1)), {
            "method": "all pages",
            "reason": f"{doc.page_count} pages <= page budget {settings.page_budget}",
        }
    if service is None:
        raise ExtractionFailed(
            f"{doc.page_count} pages exceed the page budget ({settings.page_budget}) and no index is available to pick pages",
            document=doc.name,
        )
    if service.index.count(doc.document_id) < doc.page_count:
        service.ingest(source, name=doc.name)  # resumable: only pages not yet indexed are embedded
    votes: dict[int, float] = {}
    why: dict[int, list[str]] = {}
    for q in schema_queries(compiled):
        hits = service.search(q, top_k=settings.page_budget, document_ids=[doc.document_id])["hits"]
        for rank, h in enumerate(hits):
            votes[h["page_number"]] = votes.get(h["page_number"], 0.0) + 1.0 / (
                rank + 1
            )  # reciprocal-rank fusion
            why.setdefault(h["page_number"], []).append(
                f"{q.split(':')[0]} (rank {rank + 1}, score {h['score']:.3f})"
            )
    chosen = sorted(sorted(votes, key=lambda p: -votes[p])[: settings.page_budget])
    return chosen, {"method": "late-interaction retrieval (reciprocal-rank fusion over schema-field queries)", "page_budget": settings.page_budget,
                    "pages": {str(p): {"fused_score": round(votes[p], 4), "matched": why[p]} for p in chosen}}  # fmt: skip


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
    from jsonschema import Draft202012Validator, FormatChecker

    return Draft202012Validator(schema, format_checker=FormatChecker())


def _prune(value: Any, node: Any) -> Any:
    """Canonical form → what JSON Schema validates: a null optional field is simply absent."""
    if node.kind == "object" and isinstance(value, dict):
        return {
            f.name: _prune(value.get(f.name), f.type)
            for f in node.fields
            if value.get(f.name) is not None or f.listed_required
        }
    if node.kind == "array" and isinstance(value, list):
        return [_prune(v, node.item) for v in value]
    return value


def _schema_errors(validator: Any, root: Any, data: Any) -> list[str]:
    import datetime as dt

    errors = [
        f"/{'/'.join(map(str, e.absolute_path))}: {e.message}"
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
                errors.append(f"{path}: {value!r} is not an ISO 8601 date-time")

    walk(data, root, "")
    return errors


def extract_document(
    source: DocumentInput, schema: dict[str, Any] | str, *, settings: Settings, store: Any, service: Any = None,
    name: str | None = None, csv: bool = False, use_cache: bool = True, s3_client: Any = None, on_progress: Any = None,
) -> ExtractionOutput:  # fmt: skip
    from baml_py import Collector
    from baml_py.errors import BamlValidationError

    if settings.llm_debug:
        import os

        os.environ["BAML_LOG"] = "info"
    from baml_client import b

    started = time.monotonic()
    compiled = compile_schema(schema)
    registry, client_desc = client_registry(settings)
    with open_document(source, name=name, settings=settings, s3_client=s3_client) as doc:
        key = cache_key(doc.document_id, compiled, client_desc, settings.prompt_version)
        base = f"results/{doc.document_id}/{key[:16]}"
        if use_cache and store.exists(f"{base}/result.json"):
            import json

            cached = json.loads(store.get(f"{base}/result.json"))
            age = time.time() - datetime.fromisoformat(cached["provenance"]["created"]).timestamp()
            if age <= settings.cache_ttl_s:
                log.info("cache hit %s", key[:16])
                quality = json.loads(store.get(f"{base}/quality.json"))
                return ExtractionOutput(key, True, cached, quality, cached["provenance"]["outputs"])
        pages, selection = select_pages(doc, source, compiled, settings, service)
        wanted = set(pages)
        frames = {
            f.page_number: _page_image(f, settings.llm_image_max_side)
            for f in doc.pages()
            if f.page_number in wanted
        }
        tb = build_type_builder(compiled)
        validator = _validator(compiled.schema)
        collector = Collector(name="extract")
        chunks = [
            pages[i : i + settings.pages_per_call] for i in range(0, len(pages), settings.pages_per_call)
        ]
        per_call: list[tuple[list[int], dict[str, Any]]] = []
        attempts_total = 0
        failures: list[dict[str, Any]] = []
        for ci, chunk in enumerate(chunks):
            if on_progress:
                on_progress(ci, len(chunks))
            instructions = INSTRUCTIONS.format(
                n=len(chunk), pages=", ".join(map(str, chunk)), total=doc.page_count
            )
            data = None
            for attempt in range(1, settings.extract_attempts + 1):
                attempts_total += 1
                try:
                    raw = b.ExtractDocument(
                        [frames[p] for p in chunk],
                        instructions,
                        baml_options={"tb": tb, "client_registry": registry, "collector": collector},
                    )
                except BamlValidationError as exc:
                    failures.append(
                        {
                            "call": ci,
                            "attempt": attempt,
                            "error": "unparseable answer",
                            "raw_output": exc.raw_output,
                        }
                    )
                    continue
                candidate = canonicalize(to_jsonable(raw), compiled.root, from_model=True)
                errors = _schema_errors(validator, compiled.root, candidate)
                if errors:
                    failures.append(
                        {
                            "call": ci,
                            "attempt": attempt,
                            "error": "schema violation: " + "; ".join(errors[:5]),
                            "raw_output": collector.last.raw_llm_response if collector.last else None,
                        }
                    )
                    continue
                data = candidate
                break
            if data is None:
                where = f"failures/{doc.document_id}/{key[:16]}/call-{ci}.json"
                store.put(
                    where,
                    dumps({"document": doc.name, "pages": chunk, "attempts": failures}).encode(),
                    "application/json",
                )
                raise ExtractionFailed(
                    f"pages {chunk}: no valid answer after {settings.extract_attempts} attempts ({failures[-1]['error'][:200]}); raw answers at {store.url(where)}",
                    document=doc.name, raw_answer_location=store.url(where),
                )  # fmt: skip
            per_call.append((chunk, data))
        merged, conflicts, field_sources = merge(per_call, compiled.root)
        merged = canonicalize(merged, compiled.root)
        final_errors = _schema_errors(validator, compiled.root, merged)
        if final_errors:
            where = f"failures/{doc.document_id}/{key[:16]}/merged.json"
            store.put(where, dumps({"merged": merged, "errors": final_errors}).encode(), "application/json")
            raise ExtractionFailed(
                f"the merged result violates the schema ({final_errors[0]}); see {store.url(where)}",
                document=doc.name,
                raw_answer_location=store.url(where),
            )
        usage = {
            "input_tokens": sum((c.usage.input_tokens or 0) for c in collector.logs),
            "output_tokens": sum((c.usage.output_tokens or 0) for c in collector.logs),
        }
        tables = shape(merged, compiled, doc.document_id)
        outputs: dict[str, Any] = {
            "result": store.url(f"{base}/result.json"),
            "quality": store.url(f"{base}/quality.json"),
            "tables": {},
        }
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

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
        quality = quality_report(
            merged,
            compiled,
            valid=True,
            errors=[],
            attempts=attempts_total,
            calls=len(chunks),
            conflicts=conflicts,
        )
        result = {
            "data": merged,
            "provenance": {
                "document_id": doc.document_id, "source": doc.uri or doc.name, "source_type": doc.type.value, "page_count": doc.page_count,
                "pages_used": pages, "page_selection": selection, "calls": [{"pages": c} for c in chunks], "field_sources": field_sources,
                "merge_conflicts": conflicts, "client": client_desc, "prompt_version": settings.prompt_version,
                "schema_fingerprint": compiled.fingerprint, "cache_key": key, "attempts": attempts_total, "retries": attempts_total - len(chunks),
                "usage": usage, "seconds": round(time.monotonic() - started, 2), "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "tables": tables_json_summary(tables), "outputs": outputs,
            },
        }  # fmt: skip
        # quality and tables first, result.json last: its presence is what marks a complete (cacheable) result
        store.put(f"{base}/quality.json", dumps(quality).encode(), "application/json")
        store.put(f"{base}/result.json", dumps(result).encode(), "application/json")
        return ExtractionOutput(key, False, result, quality, outputs)
