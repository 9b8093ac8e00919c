"""JSON Schema (a draft 2020-12 subset) → an intermediate form → BAML types (TypeBuilder) and `.baml` text.

Supported: object (nested), array of objects or scalars, string/number/integer/boolean, enum, required vs
optional, description, $ref/$defs inside the schema, format date/date-time, nullable via type ["x","null"]
or anyOf [X, {"type": "null"}]. Anything else raises SchemaError naming the JSON pointer.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InputTooLarge, SchemaError

# Bounds on the schema as it is used: with every $ref resolved (the compiled types are a DAG, one class per
# $ref target, but prompts, validation and tables walk it as a tree, so a few KB of $refs can mean 2^25 paths).
MAX_SCHEMA_DEPTH = 64  # nesting of types, through $refs
MAX_EXPANDED_TYPES = 5000  # types in the fully expanded tree
MAX_SCHEMA_OBJECTS = 1000  # JSON objects in the schema as written (what the metaschema check walks)
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
_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # what BAML's grammar takes as a field name
# BAML's own type names: a field may not be named like its type (the pydantic generator's rule)
_BAML_TYPES = {"string", "int", "float", "bool", "null"}
# class names BAML reserves (its scalar types) or baml_src defines; a schema's object named so gets a suffix
RESERVED_CLASS_NAMES = {
    "Extraction",
    "String",
    "Int",
    "Float",
    "Bool",
    "Null",
    "Image",
    "Audio",
    "Pdf",
    "Video",
}


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
    prop: str = ""  # the BAML property name (an identifier BAML accepts; `name` is its @alias)


@dataclass
class CompiledSchema:
    root: TypeNode
    schema: dict[str, Any]
    fingerprint: str  # sha256 of the canonical JSON of the schema
    props_checked: bool = False  # property names tried against BAML's validator (settle_props)

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
            folded: dict[str, str] = {}
            for key in props:
                if (other := folded.setdefault(key.casefold(), key)) != key:
                    # BAML's parser matches keys without case when it coerces: one of the two values would
                    # be lost or given to the other field
                    raise SchemaError(
                        f"{pointer}/properties: {other!r} and {key!r} differ only in case, which the model's "
                        "answer parser cannot tell apart; rename one of them"
                    )
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


def _check_raw_size(schema: dict[str, Any]) -> None:
    """Bound the schema as written before the metaschema check, which costs about 0.3 ms per object (a
    1,500-link $ref chain took 2.6 s of CPU there). Iterative: the text may be nested arbitrarily deep."""
    count, stack = 0, [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            count += 1
            if count > MAX_SCHEMA_OBJECTS:
                raise InputTooLarge(
                    f"the schema has more than {MAX_SCHEMA_OBJECTS:,} objects; simplify it or split the extraction",
                    document="schema",
                )
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def compile_schema(schema: dict[str, Any] | str) -> CompiledSchema:
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"the schema is not valid JSON ({exc})") from exc
    if not isinstance(schema, dict):
        raise SchemaError("the schema must be a JSON object")
    _check_raw_size(schema)
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError as JSError

    try:
        Draft202012Validator.check_schema(schema)
    except JSError as exc:
        raise SchemaError(
            f"/{'/'.join(map(str, exc.path))}: not a valid JSON Schema ({exc.message})"
        ) from exc
    compiler = _Compiler(schema)
    compiler.names.update(RESERVED_CLASS_NAMES)
    root, _ = compiler.node(schema, "#", schema.get("title") or "Extraction")
    if root.kind != "object":
        raise SchemaError("#: the root of an extraction schema must be an object")
    fingerprint = hashlib.sha256(canonical_json(schema).encode()).hexdigest()
    compiled = CompiledSchema(root, schema, fingerprint)
    _name_props(compiled)
    return compiled


# ----------------------------------------------------------------------------------- property names
def _ident(name: str) -> str:
    """An identifier BAML's grammar takes for any property name: ASCII letters (accents folded), digits and
    underscores, starting with a letter ("unit price" → unit_price, "größe" → grosse, "1st" → f_1st)."""
    if _IDENT.match(name):
        return name
    folded = unicodedata.normalize("NFKD", name.replace("ß", "ss")).encode("ascii", "ignore").decode()
    out = re.sub(r"[^A-Za-z0-9]+", "_", folded).strip("_")
    return out if out[:1].isalpha() else f"f_{out}".rstrip("_")


def _name_props(compiled: CompiledSchema, refused: frozenset[str] = frozenset()) -> None:
    """Each field's BAML property name, unique within its class: the name itself when BAML can take it,
    else an identifier made from it (the JSON name stays the @alias, so the model and the output see only the
    name the schema gave). Never a BAML type or class name, nor a name in `refused` (names BAML's validator
    rejected: keywords of BAML and of its generated clients, `ref`, `class`, `enum`, ...)."""
    classes = compiled.classes()
    taken_globally = {c.name for c in classes} | _BAML_TYPES
    for cls in classes:
        taken: set[str] = set()
        plain = {f.name for f in cls.fields if _IDENT.match(f.name)}

        def free(name: str, taken: set[str] = taken) -> bool:
            return name not in taken and name not in taken_globally and name not in refused

        for f in cls.fields:  # names BAML takes as they are keep them; the others go around them
            f.prop = f.name if f.name in plain and free(f.name) else ""
            taken.add(f.prop)
        for f in cls.fields:
            if f.prop:
                continue
            base = _ident(f.name)
            cand, i = base, 1
            while not free(cand) or cand in plain:  # a name the schema spells plainly is its field's
                cand, i = (f"{base}_" if i == 1 else f"{base}_{i}"), i + 1
            f.prop = cand
            taken.add(cand)


@functools.lru_cache(maxsize=4096)
def _baml_refuses(prop: str) -> bool:
    """Does BAML's validator refuse `prop` as a field name (a keyword of BAML or of a generated client)?"""
    from baml_client.type_builder import TypeBuilder

    try:
        TypeBuilder().add_baml(f"class DocvisionNameProbe {{\n  {prop} string\n}}\n")
    except Exception:  # baml_py raises its own error type; any refusal means: not this name
        return True
    return False


def settle_props(compiled: CompiledSchema) -> None:
    """Make every property name one BAML accepts: the rendered types are tried once (one validator run);
    only when BAML refuses them is each name tried alone and the refused ones renamed (`ref` → ref_)."""
    if compiled.props_checked:
        return
    from baml_client.type_builder import TypeBuilder

    refused: set[str] = set()
    for _ in range(4):  # a renamed property (ref_) is itself tried again
        try:
            TypeBuilder().add_baml(render_baml(compiled, numbers_as_text=True, check=False))
        except Exception as exc:  # baml_py's error type; the message names the field BAML refused
            problem = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            props = {f.prop for cls in compiled.classes() for f in cls.fields}
            new = {p for p in props if _baml_refuses(p)} - refused
            if not new:
                break
            refused |= new
            _name_props(compiled, frozenset(refused))
            continue
        compiled.props_checked = True
        return
    raise SchemaError(
        f"#: BAML cannot express the schema's types ({problem}); rename the property or class it names"
    )


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


def _baml_string(text: str) -> str:
    """A BAML string literal (BAML reads JSON's escapes)."""
    return json.dumps(text, ensure_ascii=False)


def render_baml(
    compiled: CompiledSchema, *, numbers_as_text: bool = False, all_optional: bool = False, check: bool = True
) -> str:
    """The compiled types as .baml text: what the model is asked for (`docvision schema show`), and what
    build_type_builder hands to BAML (the one source of the run-time types).

    numbers_as_text: numbers are asked as strings, so BAML's coercion never rewrites `4.904,94` or `18,870`
    (engine.extraction.locale parses them, and says when a value is ambiguous). all_optional: every field may
    be null (a page-by-page call: a page that does not print a field answers null; required is checked after
    the merge). check: property names are first settled against BAML's validator (settle_props)."""
    if check:
        settle_props(compiled)
    lines = []
    for cls in compiled.classes():
        lines.append("dynamic class Extraction {" if cls is compiled.root else f"class {cls.name} {{")
        for f in cls.fields:
            t = _baml_type(f.type, numbers_as_text)
            if (all_optional or not f.required) and f.type.kind != "array":
                t = f"({t})?" if f.type.kind == "enum" and len(f.type.values) > 1 else f"{t}?"
            attrs = ""
            if f.prop != f.name:
                attrs += f" @alias({_baml_string(f.name)})"
            if d := _describe(f, numbers_as_text):
                attrs += f" @description({_baml_string(d)})"
            lines.append(f"  {f.prop} {t}{attrs}")
        lines.append("}\n")
    return "\n".join(lines)


def build_type_builder(compiled: CompiledSchema, *, all_optional: bool = False) -> Any:
    """A baml_client TypeBuilder whose dynamic `Extraction` class has the schema's fields — built from the very
    text render_baml returns (what `docvision schema show` prints), so what is shown is what is sent."""
    from baml_client.type_builder import TypeBuilder

    tb = TypeBuilder()
    tb.add_baml(render_baml(compiled, numbers_as_text=True, all_optional=all_optional))
    return tb
