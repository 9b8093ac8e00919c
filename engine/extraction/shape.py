"""Canonical form, merging, and shaping into 1NF tables (and back).

Canonical form (what result.json holds, and what the tables rebuild exactly): every schema property is
present; a missing scalar is null; a missing array is []; a missing object is an object whose fields are
null (so "no shipper printed" and "shipper with no fields" are the same thing, and tables can round-trip).

Tables: `root` holds the root object's scalars, nested objects flattened as `parent__child` columns; each
array path gets its own table (`line_items`, `containers`, `containers__seal_numbers`, …) with lineage
columns `_document_id`, `_row_id` (JSON path of the row), `_parent_row_id`, `_path`, and `_index`.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from engine.extraction.schema import CompiledSchema, TypeNode, canonical_json

ARROW = {
    "string": pa.string(), "enum": pa.string(), "integer": pa.int64(), "number": pa.float64(),
    "boolean": pa.bool_(), "date": pa.date32(), "datetime": pa.timestamp("us", tz="UTC"),
}  # fmt: skip
LINEAGE = ["_document_id", "_row_id", "_parent_row_id", "_path", "_index"]


# ------------------------------------------------------------------------------------ canonical form
def canonicalize(value: Any, node: TypeNode, *, from_model: bool = False) -> Any:
    """Fill the canonical form; with from_model, read BAML's sanitized property names."""
    if node.kind == "object":
        src = value if isinstance(value, dict) else {}
        out = {}
        for f in node.fields:
            raw = src.get(f.prop if from_model else f.name, src.get(f.name))
            out[f.name] = canonicalize(raw, f.type, from_model=from_model)
        return out
    if node.kind == "array":
        assert node.item
        return [canonicalize(v, node.item, from_model=from_model) for v in (value or [])]
    if value is None:
        return None
    if node.kind == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if node.kind == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def to_jsonable(obj: Any) -> Any:
    """BAML's dynamic pydantic result → plain JSON values (extra dynamic fields included)."""
    if hasattr(obj, "model_dump"):
        return to_jsonable(obj.model_dump())
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "value") and obj.__class__.__module__.startswith("baml"):
        return obj.value
    return obj


# ---------------------------------------------------------------------------------------------- merge
@dataclass
class Merged:
    data: dict[str, Any]
    conflicts: list[dict[str, Any]]  # field paths and pages only: values stay in result.json's data
    leaf_pages: dict[str, list[int]]  # JSON path of every scalar leaf → pages of the call that supplied it
    duplicates_dropped: int


def merge(results: list[tuple[list[int], dict[str, Any]]], node: TypeNode) -> Merged:
    """Merge per-call results (each with the pages it saw) into one.

    Rules: scalars take the first non-null value in page order, a different later non-null value is
    recorded as a conflict; objects merge field by field; arrays concatenate in page order. A row is dropped
    as a duplicate only when an identical row (same canonical JSON) came from an earlier call that saw one of
    the same pages (overlapping segments print it twice); identical rows on different pages, or twice within
    one call, are kept — they are separate lines of the document.
    """
    conflicts: list[dict[str, Any]] = []
    leaf_pages: dict[str, list[int]] = {}
    dropped = 0

    def go(values: list[tuple[list[int], Any]], n: TypeNode, path: str) -> Any:
        nonlocal dropped
        if n.kind == "object":
            return {
                f.name: go([(p, (v or {}).get(f.name)) for p, v in values], f.type, f"{path}.{f.name}")
                for f in n.fields
            }
        if n.kind == "array":
            assert n.item
            kept: list[tuple[list[int], Any]] = []
            for pages, v in values:
                before = list(kept)
                for item in v or []:
                    key = canonical_json(item)
                    if any(canonical_json(x) == key and set(p) & set(pages) for p, x in before):
                        dropped += 1
                        continue
                    kept.append((pages, item))
            return [go([(p, item)], n.item, f"{path}[{i}]") for i, (p, item) in enumerate(kept)]
        chosen, chosen_pages = None, None
        for pages, v in values:
            if v is None:
                continue
            if chosen is None:
                chosen, chosen_pages = v, pages
            elif v != chosen:
                conflicts.append({"field": path, "kept_pages": chosen_pages, "other_pages": pages})
        if chosen is not None:
            leaf_pages[path] = list(chosen_pages or [])
        return chosen

    ordered = sorted(results, key=lambda r: min(r[0]) if r[0] else 0)
    merged = go(ordered, node, "$")
    return Merged(merged, conflicts, leaf_pages, dropped)


# --------------------------------------------------------------------------------------------- shaping
def _columns(node: TypeNode, prefix: str = "") -> list[tuple[str, TypeNode]]:
    """Scalar columns of an object, nested objects flattened (arrays go to their own tables)."""
    cols = []
    for f in node.fields:
        name = f"{prefix}{f.name}"
        if f.type.kind == "object":
            cols += _columns(f.type, f"{name}__")
        elif f.type.kind != "array":
            cols.append((name, f.type))
    return cols


def _arrays(node: TypeNode, prefix: str = "") -> list[tuple[str, list[str], TypeNode]]:
    """(table name, key path inside the object, array node) for arrays directly reachable without arrays."""
    out = []
    for f in node.fields:
        if f.type.kind == "object":
            out += [(f"{prefix}{f.name}__{t}", [f.name, *k], a) for t, k, a in _arrays(f.type, "")]
        elif f.type.kind == "array":
            out.append((f"{prefix}{f.name}", [f.name], f.type))
    return out


def _to_arrow(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "datetime":
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return value


def _from_arrow(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "date":
        return value.isoformat()
    if kind == "datetime":
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return value


def _get(obj: Any, flat: str) -> Any:
    for part in flat.split("__"):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def shape(data: dict[str, Any], compiled: CompiledSchema, document_id: str) -> dict[str, pa.Table]:
    rows: dict[str, list[dict[str, Any]]] = {}
    types: dict[str, list[tuple[str, TypeNode]]] = {}

    def emit(
        table: str, obj: Any, node: TypeNode, row_id: str, parent: str | None, path: str, index: int
    ) -> None:
        row: dict[str, Any] = {
            "_document_id": document_id,
            "_row_id": row_id,
            "_parent_row_id": parent,
            "_path": path,
            "_index": index,
        }
        if node.kind == "object":
            cols = _columns(node)
            for name, t in cols:
                row[name] = _to_arrow(_get(obj, name), t.kind)
            for sub, keys, arr in _arrays(node):
                items = obj
                for k in keys:
                    items = items.get(k) if isinstance(items, dict) else None
                for i, item in enumerate(items or []):
                    assert arr.item
                    emit(
                        f"{table}__{sub}" if table != "root" else sub,
                        item,
                        arr.item,
                        f"{row_id}.{'.'.join(keys)}[{i}]",
                        row_id,
                        f"{path}.{'.'.join(keys)}" if path != "$" else f"$.{'.'.join(keys)}",
                        i,
                    )
        else:
            cols = [("value", node)]
            row["value"] = _to_arrow(obj, node.kind)
        types.setdefault(table, cols)
        rows.setdefault(table, []).append(row)

    emit("root", data, compiled.root, "$", None, "$", 0)

    # tables for arrays that had no rows still exist (empty, typed)
    def declare(node: TypeNode, table: str) -> None:
        for sub, _, arr in _arrays(node):
            name = sub if table == "root" else f"{table}__{sub}"
            assert arr.item
            types.setdefault(name, _columns(arr.item) if arr.item.kind == "object" else [("value", arr.item)])
            rows.setdefault(name, [])
            if arr.item.kind == "object":
                declare(arr.item, name)

    declare(compiled.root, "root")
    tables = {}
    for name, cols in types.items():
        schema = pa.schema(
            [
                ("_document_id", pa.string()),
                ("_row_id", pa.string()),
                ("_parent_row_id", pa.string()),
                ("_path", pa.string()),
                ("_index", pa.int32()),
            ]
            + [(c, ARROW[t.kind]) for c, t in cols]
        )
        tables[name] = pa.Table.from_pylist(rows[name], schema=schema)
    return tables


def rebuild(tables: dict[str, pa.Table], compiled: CompiledSchema) -> dict[str, Any]:
    """Tables → the canonical nested JSON (the inverse of shape)."""
    by_parent: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name, table in tables.items():
        for row in table.to_pylist():
            by_parent.setdefault(name, {}).setdefault(row["_parent_row_id"] or "", []).append(row)

    def build(table: str, row: dict[str, Any], node: TypeNode) -> Any:
        if node.kind != "object":
            return _from_arrow(row["value"], node.kind)
        obj: dict[str, Any] = {}
        for name, t in _columns(node):
            target = obj
            parts = name.split("__")
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = _from_arrow(row[name], t.kind)
        for sub, keys, arr in _arrays(node):
            child_table = sub if table == "root" else f"{table}__{sub}"
            children = sorted(
                by_parent.get(child_table, {}).get(row["_row_id"], []), key=lambda r: r["_index"]
            )
            target = obj
            for k in keys[:-1]:
                target = target.setdefault(k, {})
            assert arr.item
            target[keys[-1]] = [build(child_table, c, arr.item) for c in children]
        return canonicalize(obj, node)

    (root_row,) = tables["root"].to_pylist()
    return build("root", root_row, compiled.root)


def tables_json_summary(tables: dict[str, pa.Table]) -> dict[str, Any]:
    return {
        name: {"rows": t.num_rows, "columns": [f"{f.name}:{f.type}" for f in t.schema]}
        for name, t in tables.items()
    }


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
