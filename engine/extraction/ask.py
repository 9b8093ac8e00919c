"""Ask the model: one BAML call per planned call, with the page images, retried with the reasons when the
answer does not parse, validate or survive coercion whole; numbers asked as text and parsed as printed.

A call that still fails writes its raw replies to the store (failures/…) and raises ExtractionFailed naming the
paths and where the replies are (never what they say).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

from engine.config import Settings
from engine.errors import ExtractionFailed
from engine.extraction import locale, validate, values
from engine.extraction.plan import Plan
from engine.extraction.schema import CompiledSchema, build_type_builder
from engine.extraction.shape import canonicalize, dumps, to_jsonable

INSTRUCTIONS = "Extract the fields described below from these {n} page image(s) (pages {pages} of {total})."
RETRY = (
    "\nYour previous answer for these pages was rejected: {errors}. Answer again with the complete result, "
    "giving every value in the type the schema asks for (use null for a value these pages do not print)."
)
PAGED = (
    " Answer only what these pages print: null for any field they do not show (other pages are asked too)."
)


@dataclass
class Answer:
    pages: list[int]
    data: dict[str, Any]
    attempts: int
    rejected: list[dict[str, Any]]  # paths and reasons only
    flags: list[dict[str, Any]] = field(default_factory=list)  # soft problems accepted: {path, reason}
    as_printed: list[str] = field(default_factory=list)  # paths whose value was parsed from its printed form


def _page_image(frame: Any, max_side: int) -> Any:
    import baml_py

    img = frame.image
    scale = max_side / max(img.size)
    if scale < 1:
        img = img.resize((round(img.width * scale), round(img.height * scale)))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return baml_py.Image.from_base64("image/png", base64.b64encode(buf.getvalue()).decode())


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
    validator = validate.validator(compiled.schema)
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
            answered = validate.raw_json(reply)
            ev = values.combined(
                doc_evidence, locale.infer_locale(values.number_strings(as_text, compiled.root))
            )
            printed = []
            candidate, problems = values.typed(as_text, answered, compiled.root, ev, printed=printed)
            lost = validate.losses(answered, as_text, compiled.root) if answered is not None else []
            if not several:  # a call that saw every page must answer every required field (or be flagged)
                named = {p.path for p in problems}
                problems += [
                    p for p in values.missing_required(candidate, compiled.root) if p.path not in named
                ]
            errors = [values.Problem(p, r, r, False, "lost") for p, r in lost]
            errors += [
                values.Problem(p, r, m, False, "schema")
                for p, r, m in validate.schema_errors(validator, compiled.root, candidate)
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
