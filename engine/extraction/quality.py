"""Quality report: only what can be computed from the result, the schema and the run. No invented accuracy."""

from __future__ import annotations

import math
from typing import Any

from engine.extraction.schema import CompiledSchema, TypeNode


def _leaves(value: Any, node: TypeNode, required: bool, out: list[tuple[bool, bool]]) -> None:
    """(required, filled) for every scalar leaf, through objects and every array item."""
    if node.kind == "object":
        for f in node.fields:
            _leaves((value or {}).get(f.name), f.type, required and f.required, out)
    elif node.kind == "array":
        if not value:
            out.append((required, False))
        assert node.item
        for item in value or []:
            _leaves(item, node.item, required, out)
    else:
        out.append((required, value is not None))


def _path_values(data: Any, path: str) -> list[Any]:
    """`line_items[].value` → every value; `total_value` → [value]."""
    current = [data]
    for part in path.split("."):
        many = part.endswith("[]")
        key = part[:-2] if many else part
        nxt: list[Any] = []
        for c in current:
            v = c.get(key) if isinstance(c, dict) else None
            if many:
                nxt += v or []
            else:
                nxt.append(v)
        current = nxt
    return current


# The score, in one place (README "Quality score" quotes it). Validity is a gate; every term can fail.
WEIGHTS = {"grounding": 0.6, "consistency": 0.3, "optional_completeness": 0.1}
DEFINITION = (
    "0 when the answer is not schema-valid (a gate); otherwise the weighted mean of the terms that could be "
    "evaluated: grounding ratio (text-layer values found on the page / values checked) weight 0.6, share of "
    "evaluated consistency rules that pass weight 0.3, optional-field completeness weight 0.1. Terms that could "
    "not be evaluated (no text layer, no rule with values, no optional field) are left out and the weights "
    "renormalized; quality_terms lists what was used. null when no term could be evaluated."
)


def quality_report(
    data: dict[str, Any],
    compiled: CompiledSchema,
    *,
    valid: bool,
    errors: list[str],
    attempts: int,
    calls: int,
    conflicts: list[dict],
    grounding: dict[str, Any] | None = None,
    rejected: int = 0,
    citations: list[dict[str, Any]] | None = None,
    flags: list[dict[str, Any]] | None = None,
    arrays: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    leaves: list[tuple[bool, bool]] = []
    _leaves(data, compiled.root, True, leaves)
    req = [f for r, f in leaves if r]
    opt = [f for r, f in leaves if not r]
    checks = []
    for rule in compiled.schema.get("x-consistency", []):
        parts = [v for v in _path_values(data, rule["sum"]) if isinstance(v, int | float)]
        target = _path_values(data, rule["equals"])[0]
        if not parts or not isinstance(target, int | float):
            checks.append({"name": rule["name"], "status": "not_evaluated", "reason": "values missing"})
            continue
        total = math.fsum(parts)
        ok = abs(total - target) <= rule.get("tolerance", 0.0)
        checks.append(
            {
                "name": rule["name"],
                "status": "pass" if ok else "fail",
                "sum": round(total, 6),
                "expected": target,
                "difference": round(total - target, 6),
            }
        )
    evaluated = [c for c in checks if c["status"] != "not_evaluated"]
    confidence = None
    if path := compiled.schema.get("x-confidence"):
        values = [v for v in _path_values(data, path) if isinstance(v, int | float)]
        confidence = {"field": path, "values": values, "note": "reported by the model, not measured"}
    completeness_required = sum(req) / len(req) if req else 1.0
    terms: dict[str, float] = {}
    if grounding and grounding.get("ratio") is not None:
        terms["grounding"] = float(grounding["ratio"])
    if evaluated:
        terms["consistency"] = sum(c["status"] == "pass" for c in evaluated) / len(evaluated)
    if opt:
        terms["optional_completeness"] = sum(opt) / len(opt)
    weight = sum(WEIGHTS[k] for k in terms)
    # nothing that can fail was evaluated (a scan without rules or optional fields): no score, not a perfect one
    score = (sum(WEIGHTS[k] * v for k, v in terms.items()) / weight if weight else None) if valid else 0.0
    return {
        "schema_valid": valid,
        "validation_errors": errors,
        "rejected_answers": rejected,
        "grounding": grounding,
        "completeness": {
            "required_filled": sum(req), "required_total": len(req), "required_ratio": round(completeness_required, 4),
            "optional_filled": sum(opt), "optional_total": len(opt), "optional_ratio": round(sum(opt) / len(opt), 4) if opt else None,
        },
        "consistency": checks,
        "confidence": confidence,
        "attempts": attempts,
        "llm_calls": calls,
        "merge_conflicts": len(conflicts),
        "arrays": arrays or {},
        "verdict": verdict(compiled, valid=valid, citations=citations or [], flags=flags or [], arrays=arrays or {},
                           grounding=grounding),
        "quality_score": round(score, 4) if score is not None else None,
        "quality_terms": {k: round(v, 4) for k, v in terms.items()},
        "quality_score_definition": DEFINITION,
    }  # fmt: skip


# ------------------------------------------------------------------------------------------------ verdict
LOW_OCR_CONFIDENCE = 0.6  # an OCR word read with less confidence than this cannot ground a value on its own
REJECT_GROUNDED_BELOW = 0.2  # most checked values are not on the pages: the wrong document, or invented
VERDICT_DEFINITION = (
    "reject: not schema-valid, or fewer than 20% of at least 3 checked values are on the pages. review: any "
    "value of a required field ungrounded (not on the page the call saw) or unverifiable (no text layer or OCR "
    "word to check it against), any value cited in the wrong row or column, any other ungrounded value, an "
    "ambiguous value left null, a required field missing after every page, an OCR word below confidence 0.6, "
    "or an array with fewer rows than the pages print. accept: none of these. The quality score never overrides it."
)


def _required_paths(node: TypeNode, prefix: str = "$", required: bool = True) -> dict[str, bool]:
    """Schema path with [] for rows ($.lines[].amount) → is the leaf required (all the way up)?"""
    out: dict[str, bool] = {}
    for f in node.fields:
        path, req = f"{prefix}.{f.name}", required and f.required
        if f.type.kind == "object":
            out |= _required_paths(f.type, path, req)
        elif f.type.kind == "array":
            assert f.type.item
            item = f.type.item
            if item.kind == "object":
                out |= _required_paths(item, f"{path}[]", req or bool(f.listed_required))
            else:
                out[f"{path}[]"] = req or bool(f.listed_required)
        else:
            out[path] = req
    return out


def _schema_path(path: str) -> str:
    import re

    return re.sub(r"\[\d+\]", "[]", path)


def verdict(
    compiled: CompiledSchema,
    *,
    valid: bool,
    citations: list[dict[str, Any]],
    flags: list[dict[str, Any]],
    arrays: dict[str, dict[str, Any]],
    grounding: dict[str, Any] | None,
) -> dict[str, Any]:
    """accept | review | reject, with every reason (codes and paths only: values stay in result.json)."""
    required = _required_paths(compiled.root)
    reasons: list[dict[str, Any]] = []
    if not valid:
        return {
            "decision": "reject",
            "reasons": [{"reason": "schema_invalid"}],
            "definition": VERDICT_DEFINITION,
        }
    for c in citations:
        req = required.get(_schema_path(c["path"]), False)
        why = c.get("reason")
        if c.get("grounded") is False:
            code = (
                why
                if why in ("wrong_row", "wrong_column")
                else ("ungrounded_required" if req else "ungrounded")
            )
            reasons.append({"reason": code, "path": c["path"], "page": c.get("page")})
        elif c.get("grounded") is None and c["method"] != "none" and req:
            # a similarity-map box is an estimate of where, not a check of what
            reasons.append({"reason": "unverifiable_required", "path": c["path"], "page": c.get("page")})
        conf = c.get("ocr_confidence")
        if c.get("method") == "ocr" and isinstance(conf, int | float) and conf < LOW_OCR_CONFIDENCE:
            reasons.append({"reason": "low_ocr_confidence", "path": c["path"], "page": c.get("page"),
                            "confidence": round(float(conf), 3)})  # fmt: skip
    for f in flags:
        reasons.append({"reason": f["reason"], "path": f["path"]})
    for path, a in arrays.items():
        if a.get("complete") is False:
            reasons.append({"reason": "array_incomplete", "path": path, "rows": a["rows"],
                            "printed_rows": a["printed_rows"], "coverage": a["coverage"]})  # fmt: skip
    g = grounding or {}
    checked = g.get("checked") or 0
    decision = "accept"
    if reasons:
        decision = "review"
    if checked >= 3 and (g.get("grounded") or 0) < REJECT_GROUNDED_BELOW * checked:
        decision = "reject"
        reasons.insert(0, {"reason": "mostly_ungrounded", "grounded": g.get("grounded"), "checked": checked})
    return {"decision": decision, "reasons": reasons, "definition": VERDICT_DEFINITION}
