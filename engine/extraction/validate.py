"""Validate an answer: the schema's types, formats and enums (jsonschema), what BAML's coercion dropped or
changed (losses), the reply's own JSON (raw_json), and what the merged result leaves open (flags).

Messages name paths and reasons, never values: values stay out of errors and logs.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from engine.extraction import locale, values
from engine.extraction.schema import CompiledSchema, TypeNode

if TYPE_CHECKING:
    from engine.extraction.ask import Answer


def validator(schema: dict[str, Any]) -> Any:
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


def flags(answers: list[Answer], data: dict[str, Any], compiled: CompiledSchema) -> list[dict[str, Any]]:
    """What the merged result leaves open, by path and reason (never a value): a value a call could only
    report as ambiguous (unless another call answered it), and every required field still missing."""
    out: dict[str, dict[str, Any]] = {}
    for a in answers:
        for f in a.flags:
            if f["reason"] == "ambiguous_value" and at(data, f["path"]) is None:
                out[f["path"]] = {**f, "pages": a.pages}
    for problem in values.missing_required(data, compiled.root):
        path = values.jsonpath(problem.path)
        out.setdefault(path, {"path": path, "reason": "missing_required"})
    return [out[k] for k in sorted(out)]


def at(data: Any, jsonpath: str) -> Any:
    cur = data
    for key, idx in re.findall(r"\.([^.\[\]]+)|\[(\d+)\]", jsonpath):
        if key:
            cur = cur.get(key) if isinstance(cur, dict) else None
        else:
            cur = cur[int(idx)] if isinstance(cur, list) and int(idx) < len(cur) else None
    return cur
