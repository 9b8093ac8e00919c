"""From the model's answer to the schema's values: numbers and dates parsed as printed, soft and hard problems.

BAML is asked for every number as a string (schema.render_baml(numbers_as_text=True)), so its coercion never
rewrites `4.904,94` into 4.90494 or drops `18,870`; here each number is parsed by engine.extraction.locale with
the document's conventions (LocaleEvidence), and each date is turned into ISO form. A JSON number the model
answered is taken as is (read from the raw reply, since BAML turned it into text).

Problems are of two kinds:
  hard: the value is not of the type (not a number, not a date, a fraction for an integer) → the call is retried
        naming the path, then fails;
  soft: the value is ambiguous (`1.234` with no evidence) or a required field is missing → retried when a retry
        can help, then accepted with the value left null and *flagged* (quality.json's verdict says review):
        never guessed, never invented.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from engine.extraction.locale import LocaleEvidence, infer_locale, parse_date, parse_number
from engine.extraction.schema import TypeNode


@dataclass
class Problem:
    path: str  # JSON pointer: /lines/1/amount
    reason: str  # without the value (goes to provenance and error messages)
    message: str  # for the model's retry (may quote its own answer)
    soft: bool  # ambiguous or missing: flagged, not failed, once retries are spent
    code: str  # ambiguous_value | not_a_number | not_whole | not_a_date | missing_required


def jsonpath(pointer: str) -> str:
    """/lines/1/amount → $.lines[1].amount (the form citations and quality use)."""
    out = "$"
    for part in [p for p in pointer.split("/") if p]:
        out += f"[{part}]" if part.isdigit() else f".{part}"
    return out


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


def number_strings(value: Any, node: TypeNode) -> list[str]:
    """The number texts of an answer (its own evidence for the document's locale)."""
    out: list[str] = []
    if node.kind == "object" and isinstance(value, dict):
        for f in node.fields:
            out += number_strings(value.get(f.name), f.type)
    elif node.kind == "array" and isinstance(value, list) and node.item:
        for v in value:
            out += number_strings(v, node.item)
    elif node.kind in ("integer", "number") and isinstance(value, str):
        out.append(value)
    return out


def typed(
    value: Any,
    raw: Any,
    node: TypeNode,
    evidence: LocaleEvidence,
    path: str = "",
    printed: list[str] | None = None,
) -> tuple[Any, list[Problem]]:
    """The canonical answer with numbers and dates in the schema's types, and what could not be typed.

    value: BAML's result (numbers as text); raw: the reply's JSON at the same place (or None)."""
    problems: list[Problem] = []
    if node.kind == "object":
        src = value if isinstance(value, dict) else {}
        rsrc = raw if isinstance(raw, dict) else {}
        out = {}
        for f in node.fields:
            r = rsrc.get(f.name, rsrc.get(f.prop))
            out[f.name], ps = typed(src.get(f.name), r, f.type, evidence, f"{path}/{f.name}", printed)
            problems += ps
        return out, problems
    if node.kind == "array":
        assert node.item
        items = value or []
        raws = raw if isinstance(raw, list) and len(raw) == len(items) else [None] * len(items)
        outl = []
        for i, (v, r) in enumerate(zip(items, raws, strict=True)):
            t, ps = typed(v, r, node.item, evidence, f"{path}/{i}", printed)
            outl.append(t)
            problems += ps
        return outl, problems
    if value is None:
        return None, problems
    if node.kind in ("integer", "number"):
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            number: float | None = float(raw)
        else:
            p = parse_number(value, hint=evidence.decimal)
            number = p.value
            if p.ambiguous:
                a, b = (_fmt(x) for x in p.readings)
                problems.append(Problem(path, "ambiguous number (the decimal separator is not known)",
                                        f"'{value}' could be {a} or {b}, and the pages do not show which separator is the "
                                        "decimal one; answer a JSON number", True, "ambiguous_value"))  # fmt: skip
                return None, problems
            if number is None:
                problems.append(Problem(path, "not a number", f"'{value}' is not a number ({p.problem}); answer a "
                                        "JSON number (or null when the pages do not print it)", False, "not_a_number"))  # fmt: skip
                return None, problems
            if printed is not None and not re.fullmatch(r"-?\d+(\.\d+)?", str(value).strip()):
                printed.append(jsonpath(path))
        assert number is not None
        if node.kind == "integer":
            if not float(number).is_integer():
                problems.append(Problem(path, "not a whole number", f"'{value}' is {_fmt(number)}, not a whole number",
                                        False, "not_whole"))  # fmt: skip
                return None, problems
            return int(number), problems
        return float(number), problems
    if node.kind == "date" and isinstance(value, str):
        iso = re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip())
        if iso:
            return value.strip(), problems
        d = parse_date(value, hint=evidence.date_order)
        if d.ambiguous:
            a, b = (x.isoformat() for x in d.readings)
            problems.append(Problem(path, "ambiguous date (day-first or month-first)",
                                    f"'{value}' could be {a} or {b}; answer YYYY-MM-DD", True, "ambiguous_value"))  # fmt: skip
            return None, problems
        if d.value is not None:
            if printed is not None:
                printed.append(jsonpath(path))
            return d.value.isoformat(), problems
        return value, problems  # the schema's date format check names it
    return value, problems


def missing_required(value: Any, node: TypeNode, path: str = "") -> list[Problem]:
    """Required fields without a value (through objects and every array row)."""
    out: list[Problem] = []
    if node.kind == "object":
        src = value if isinstance(value, dict) else {}
        for f in node.fields:
            v = src.get(f.name)
            p = f"{path}/{f.name}"
            if v is None and f.required and f.type.kind != "array":
                out.append(Problem(p, "is required", "is required: answer it when the pages print it", True,
                                   "missing_required"))  # fmt: skip
            elif v is not None:
                out += missing_required(v, f.type, p)
    elif node.kind == "array" and isinstance(value, list) and node.item:
        for i, v in enumerate(value):
            out += missing_required(v, node.item, f"{path}/{i}")
    return out


def relaxed(schema: Any) -> Any:
    """The JSON Schema without `required` lists: hard type/format/enum checks only (required is checked by
    missing_required, which can flag instead of failing)."""
    if isinstance(schema, dict):
        return {k: relaxed(v) for k, v in schema.items() if not (k == "required" and isinstance(v, list))}
    if isinstance(schema, list):
        return [relaxed(v) for v in schema]
    return schema


def document_evidence(texts: list[str]) -> LocaleEvidence:
    return infer_locale(texts)


def combined(doc: LocaleEvidence, answer: LocaleEvidence) -> LocaleEvidence:
    """The document's words first; the answer's own unambiguous numbers count too (a model copying `5,39`
    elsewhere on the page tells which separator `1.234` uses)."""
    return LocaleEvidence(
        doc.decimal_comma + answer.decimal_comma, doc.decimal_point + answer.decimal_point,
        doc.day_first + answer.day_first, doc.month_first + answer.month_first, doc.samples + answer.samples,
    )  # fmt: skip
