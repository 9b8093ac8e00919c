"""JSON Schema (a draft 2020-12 subset) → an intermediate form → BAML types (TypeBuilder) and `.baml` text.

Supported: object (nested), array of objects or scalars, string/number/integer/boolean, enum, required vs
optional, description, $ref/$defs inside the schema, format date/date-time, nullable via type ["x","null"]
or anyOf [X, {"type": "null"}]. Anything else raises SchemaError naming the JSON pointer.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InputTooLarge, SchemaError

# Bounds on the schema as it is used: with every $ref resolved (the compiled types are a DAG, one class per
# $ref target, but prompts, validation and tables walk it as a tree, so a few KB of $refs can mean 2^25 paths).
MAX_SCHEMA_DEPTH = 64  # nesting of types, through $refs
MAX_EXPANDED_TYPES = 5000  # types in the fully expanded tree
SCALARS = {"string", "integer", "number", "boolean"}
UNSUPPORTED = (
    "oneOf",
    "allOf",
    "not",
    "patternProperties",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "prefixItems",
    "unevaluatedProperties",
)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class TypeNode:
    kind: str  # string | integer | number | boolean | date | datetime | enum | object | array
    name: str = ""  # class name for objects
    fields: list[Field] = field(default_factory=list)  # objects
    item: TypeNode | None = None  # arrays
    values: list[str] = field(default_factory=list)  # enums
    description: str | None = None


@dataclass
class Field:
    name: str
    type: TypeNode
    required: bool  # must have a value (required and not nullable)
    description: str | None = None
    listed_required: bool = False  # named in the JSON Schema's `required` (may still be nullable)


@dataclass
class CompiledSchema:
    root: TypeNode
    schema: dict[str, Any]
    fingerprint: str  # sha256 of the canonical JSON of the schema

    def classes(self) -> list[TypeNode]:
        seen: dict[str, TypeNode] = {}

        def walk(node: TypeNode) -> None:
            if node.kind == "object" and node.name not in seen:
                seen[node.name] = node
                for f in node.fields:
                    walk(f.type)
            elif node.kind == "array" and node.item:
                walk(node.item)

        walk(self.root)
        return list(seen.values())


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _pascal(text: str) -> str:
    parts = re.split(r"[^A-Za-z0-9]+", text)
    name = "".join(p[:1].upper() + p[1:] for p in parts if p)
    return name if name and name[0].isalpha() else f"T{name}"


class _Compiler:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.names: set[str] = set()
        self.ref_stack: list[str] = []
        self.by_ref: dict[
            str, tuple[TypeNode, bool]
        ] = {}  # one class per $ref target, however often it is used
        self.measured: dict[int, tuple[int, int]] = {}  # id(type) → expansion(type)

    def unique(self, base: str) -> str:
        name, i = base, 2
        while name in self.names:
            name, i = f"{base}{i}", i + 1
        self.names.add(name)
        return name

    def resolve(self, ref: str, pointer: str) -> dict[str, Any]:
        if not ref.startswith("#/"):
            raise SchemaError(f"{pointer}: only $ref inside the schema (#/...) is supported, not {ref!r}")
        node: Any = self.schema
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise SchemaError(f"{pointer}: $ref {ref!r} points nowhere")
            node = node[part]
        return node

    def node(self, s: Any, pointer: str, name_hint: str, depth: int = 0) -> tuple[TypeNode, bool]:
        """Returns (type, nullable), the type measured (see expansion)."""
        node, nullable = self._node(s, pointer, name_hint, depth)
        self.expansion(node, pointer)
        return node, nullable

    def expansion(self, node: TypeNode, pointer: str) -> tuple[int, int]:
        """(types in the node's fully expanded tree, its height), refused above the limits. Measured on the
        compiled types, i.e. the resolved schema, so no key name can hide a $ref; children are measured before
        their parents, so each node costs one step however often it is shared (no recursion either)."""
        if id(node) not in self.measured:
            children = [f.type for f in node.fields] + ([node.item] if node.item else [])
            sizes = [self.measured[id(c)] for c in children]
            size, height = 1 + sum(n for n, _ in sizes), 1 + max((h for _, h in sizes), default=0)
            if height > MAX_SCHEMA_DEPTH:
                raise SchemaError(
                    f"{pointer}: the schema is nested deeper than {MAX_SCHEMA_DEPTH} levels with its $refs resolved"
                )
            if size > MAX_EXPANDED_TYPES:
                raise InputTooLarge(
                    f"the schema expands to more than {MAX_EXPANDED_TYPES:,} types with its $refs resolved "
                    f"(at {pointer}); simplify it or split the extraction",
                    document="schema",
                )
            self.measured[id(node)] = (size, height)
        return self.measured[id(node)]

    def _node(self, s: Any, pointer: str, name_hint: str, depth: int) -> tuple[TypeNode, bool]:
        # depth counts the types and $refs on the way here, however they are named: no RecursionError
        if depth > 2 * MAX_SCHEMA_DEPTH:
            raise SchemaError(
                f"{pointer}: the schema nests more than {2 * MAX_SCHEMA_DEPTH} types and $refs deep"
            )
        if not isinstance(s, dict):
            raise SchemaError(f"{pointer}: a schema must be an object, got {type(s).__name__}")
        for key in UNSUPPORTED:
            if key in s:
                raise SchemaError(
                    f"{pointer}/{key}: '{key}' is not supported (use one object type per field)"
                )
        if "$ref" in s:
            ref = s["$ref"]
            if ref in self.ref_stack:
                raise SchemaError(
                    f"{pointer}: recursive $ref {ref!r} is not supported (extraction output must be finite)"
                )
            if ref in self.by_ref:
                return self.by_ref[ref]
            self.ref_stack.append(ref)
            try:
                target = self.resolve(ref, pointer)
                self.by_ref[ref] = self.node(target, ref[1:] or pointer, ref.rsplit("/", 1)[-1], depth + 1)
                return self.by_ref[ref]
            finally:
                self.ref_stack.pop()
        if "anyOf" in s:
            options = s["anyOf"]
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            if len(non_null) != 1 or len(options) > 2:
                raise SchemaError(
                    f"{pointer}/anyOf: only anyOf [X, {{'type': 'null'}}] (a nullable X) is supported"
                )
            inner, _ = self.node(non_null[0], f"{pointer}/anyOf/0", name_hint, depth + 1)
            return inner, True
        type_ = s.get("type")
        nullable = False
        if isinstance(type_, list):
            rest = [t for t in type_ if t != "null"]
            nullable = len(rest) < len(type_)
            if len(rest) != 1:
                raise SchemaError(f"{pointer}/type: unions of types {type_} are not supported")
            type_ = rest[0]
        desc = s.get("description")
        if "enum" in s:
            values = s["enum"]
            if not values or not all(isinstance(v, str) for v in values):
                raise SchemaError(f"{pointer}/enum: only non-empty lists of strings are supported")
            return TypeNode("enum", values=list(values), description=desc), nullable or None in values
        if "const" in s:
            if not isinstance(s["const"], str):
                raise SchemaError(f"{pointer}/const: only string constants are supported")
            return TypeNode("enum", values=[s["const"]], description=desc), nullable
        if type_ is None and "properties" in s:
            type_ = "object"
        if type_ == "object":
            extra = s.get("additionalProperties")
            if isinstance(extra, dict) and extra:
                raise SchemaError(
                    f"{pointer}/additionalProperties: maps with free-form keys are not supported; list the properties"
                )
            props = s.get("properties")
            if not props:
                raise SchemaError(f"{pointer}: an object needs 'properties'")
            required = set(s.get("required", []))
            missing = required - set(props)
            if missing:
                raise SchemaError(f"{pointer}/required: {sorted(missing)} are not in properties")
            node = TypeNode("object", name=self.unique(_pascal(name_hint)), description=desc)
            for key, sub in props.items():
                child, child_nullable = self.node(sub, f"{pointer}/properties/{key}", key, depth + 1)
                node.fields.append(
                    Field(
                        key,
                        child,
                        key in required and not child_nullable,
                        sub.get("description") if isinstance(sub, dict) else None,
                        key in required,
                    )
                )
            return node, nullable
        if type_ == "array":
            if "items" not in s or not isinstance(s["items"], dict):
                raise SchemaError(f"{pointer}/items: an array needs one 'items' schema")
            hint = name_hint[:-1] if name_hint.endswith("s") and len(name_hint) > 3 else f"{name_hint}_item"
            item, _ = self.node(s["items"], f"{pointer}/items", hint, depth + 1)
            if item.kind == "array":
                raise SchemaError(
                    f"{pointer}/items: arrays of arrays are not supported (name the inner object)"
                )
            return TypeNode("array", item=item, description=desc), nullable
        if type_ == "string":
            fmt = s.get("format")
            kind = {"date": "date", "date-time": "datetime"}.get(fmt or "", "string")
            return TypeNode(kind, description=desc), nullable
        if type_ in SCALARS:
            return TypeNode(type_, description=desc), nullable
        if type_ is None:
            raise SchemaError(f"{pointer}: no 'type' (and no properties, enum or $ref)")
        raise SchemaError(f"{pointer}/type: type {type_!r} is not supported")


def compile_schema(schema: dict[str, Any] | str) -> CompiledSchema:
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"the schema is not valid JSON ({exc})") from exc
    if not isinstance(schema, dict):
        raise SchemaError("the schema must be a JSON object")
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError as JSError

    try:
        Draft202012Validator.check_schema(schema)
    except JSError as exc:
        raise SchemaError(
            f"/{'/'.join(map(str, exc.path))}: not a valid JSON Schema ({exc.message})"
        ) from exc
    compiler = _Compiler(schema)
    compiler.names.add("Extraction")
    root, _ = compiler.node(schema, "#", schema.get("title") or "Extraction")
    if root.kind != "object":
        raise SchemaError("#: the root of an extraction schema must be an object")
    fingerprint = hashlib.sha256(canonical_json(schema).encode()).hexdigest()
    return CompiledSchema(root, schema, fingerprint)


# ------------------------------------------------------------------------------------------ BAML output
def _baml_type(node: TypeNode, numbers_as_text: bool = False) -> str:
    if node.kind == "object":
        return node.name
    if node.kind == "array":
        assert node.item
        return f"{_baml_type(node.item, numbers_as_text)}[]"
    if numbers_as_text and node.kind in ("integer", "number"):
        return "string"
    if node.kind == "enum":
        return " | ".join(json.dumps(v, ensure_ascii=False) for v in node.values)
    return {
        "string": "string",
        "integer": "int",
        "number": "float",
        "boolean": "bool",
        "date": "string",
        "datetime": "string",
    }[node.kind]


def _describe(f: Field, numbers_as_text: bool = False) -> str | None:
    desc = f.description or ""
    if numbers_as_text and f.type.kind in ("integer", "number"):
        desc = f"{desc} ({'whole number' if f.type.kind == 'integer' else 'number'})".strip()
    elif f.type.kind == "date":
        desc = f"{desc} (date, YYYY-MM-DD)".strip()
    elif f.type.kind == "datetime":
        desc = f"{desc} (timestamp, ISO 8601)".strip()
    return desc or None


def _prop_name(name: str) -> str:
    return name if _IDENT.match(name) else re.sub(r"\W", "_", name)


def render_baml(
    compiled: CompiledSchema, *, numbers_as_text: bool = False, all_optional: bool = False
) -> str:
    """The compiled types as .baml text: what the model is asked for (`docvision schema show`), and what
    build_type_builder hands to BAML (the one source of the run-time types).

    numbers_as_text: numbers are asked as strings, so BAML's coercion never rewrites `4.904,94` or `18,870`
    (engine.extraction.locale parses them, and says when a value is ambiguous). all_optional: every field may
    be null (a page-by-page call: a page that does not print a field answers null; required is checked after
    the merge)."""
    lines = []
    for cls in compiled.classes():
        lines.append("dynamic class Extraction {" if cls is compiled.root else f"class {cls.name} {{")
        for f in cls.fields:
            t = _baml_type(f.type, numbers_as_text)
            if (all_optional or not f.required) and f.type.kind != "array":
                t = f"({t})?" if f.type.kind == "enum" and len(f.type.values) > 1 else f"{t}?"
            attrs = ""
            if _prop_name(f.name) != f.name:
                attrs += f" @alias({json.dumps(f.name, ensure_ascii=False)})"
            if d := _describe(f, numbers_as_text):
                attrs += f" @description({json.dumps(d, ensure_ascii=False)})"
            lines.append(f"  {_prop_name(f.name)} {t}{attrs}")
        lines.append("}\n")
    return "\n".join(lines)


def build_type_builder(compiled: CompiledSchema, *, all_optional: bool = False) -> Any:
    """A baml_client TypeBuilder whose dynamic `Extraction` class has the schema's fields — built from the very
    text render_baml returns (what `docvision schema show` prints), so what is shown is what is sent."""
    from baml_client.type_builder import TypeBuilder

    tb = TypeBuilder()
    tb.add_baml(render_baml(compiled, numbers_as_text=True, all_optional=all_optional))
    return tb
