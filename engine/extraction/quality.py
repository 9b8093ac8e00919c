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


def quality_report(
    data: dict[str, Any],
    compiled: CompiledSchema,
    *,
    valid: bool,
    errors: list[str],
    attempts: int,
    calls: int,
    conflicts: list[dict],
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
    parts_of_score = [1.0 if valid else 0.0, completeness_required] + (
        [sum(c["status"] == "pass" for c in evaluated) / len(evaluated)] if evaluated else []
    )
    return {
        "schema_valid": valid,
        "validation_errors": errors,
        "completeness": {
            "required_filled": sum(req), "required_total": len(req), "required_ratio": round(completeness_required, 4),
            "optional_filled": sum(opt), "optional_total": len(opt), "optional_ratio": round(sum(opt) / len(opt), 4) if opt else None,
        },
        "consistency": checks,
        "confidence": confidence,
        "attempts": attempts,
        "llm_calls": calls,
        "merge_conflicts": len(conflicts),
        "quality_score": round(sum(parts_of_score) / len(parts_of_score), 4),
        "quality_score_definition": "mean of: schema valid (0/1), required completeness, share of evaluated consistency rules that pass",
    }  # fmt: skip
