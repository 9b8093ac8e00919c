import json
from pathlib import Path

import pytest

from engine.errors import SchemaError
from engine.extraction.schema import compile_schema, render_baml

pytestmark = pytest.mark.unit
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def obj(**props):
    return {"type": "object", "properties": props}


@pytest.mark.parametrize("name", ["shipping_manifest.json", "invoice.json"])
def test_shipped_schemas_compile(name: str) -> None:
    compiled = compile_schema(json.loads((SCHEMAS / name).read_text()))
    text = render_baml(compiled)
    assert text.startswith("dynamic class Extraction {")
    assert len(compiled.fingerprint) == 64


def test_constructs_map_to_baml_types() -> None:
    schema = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "The id"},
            "n": {"type": "integer"},
            "x": {"type": ["number", "null"]},
            "ok": {"type": "boolean"},
            "when": {"type": "string", "format": "date"},
            "at": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
            "kind": {"enum": ["a", "b c"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "parts": {"type": "array", "items": {"$ref": "#/$defs/part"}},
            "line-no": {"type": "integer"},
        },
        "required": ["id", "n", "x", "parts"],
        "$defs": {"part": obj(sku={"type": "string"})},
    }
    text = render_baml(compile_schema(schema))
    assert '  id string @description("The id")' in text
    assert "  n int\n" in text
    assert "  x float?" in text  # required but nullable → optional
    assert "  ok bool?" in text
    assert "(date, YYYY-MM-DD)" in text and "(timestamp, ISO 8601)" in text
    assert '  kind ("a" | "b c")?' in text
    assert "  tags string[]" in text and "  parts Part[]" in text
    assert "class Part {\n  sku string?" in text
    assert 'line_no int? @alias("line-no")' in text


@pytest.mark.parametrize(
    ("schema", "pointer"),
    [
        (obj(a={"oneOf": [obj(b={"type": "string"}), obj(c={"type": "string"})]}), "#/properties/a/oneOf"),
        (
            obj(a={"type": "object", "patternProperties": {"^x": {"type": "string"}}}),
            "#/properties/a/patternProperties",
        ),
        (
            obj(a={"type": "object", "additionalProperties": {"type": "string"}}),
            "#/properties/a/additionalProperties",
        ),
        (
            {**obj(a={"$ref": "#/$defs/node"}), "$defs": {"node": obj(child={"$ref": "#/$defs/node"})}},
            "recursive $ref",
        ),
        (obj(a={"$ref": "https://example.com/x.json"}), "#/properties/a"),
        (obj(a={"$ref": "#/$defs/missing"}), "points nowhere"),
        (
            obj(a={"type": "array", "items": {"type": "array", "items": {"type": "string"}}}),
            "#/properties/a/items",
        ),
        (obj(a={"type": ["string", "integer"]}), "#/properties/a/type"),
        (obj(a={"type": "object"}), "#/properties/a"),
        (obj(a={"enum": [1, 2]}), "#/properties/a/enum"),
        (obj(a={"allOf": [{"type": "string"}]}), "#/properties/a/allOf"),
        ({"type": "array", "items": {"type": "string"}}, "root of an extraction schema must be an object"),
        ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}, "#/required"),
        ({"type": "object", "properties": {"a": {"type": 5}}}, "not a valid JSON Schema"),
        ("{not json", "not valid JSON"),
    ],
)
def test_unsupported_constructs_name_the_pointer(schema, pointer: str) -> None:
    with pytest.raises(SchemaError) as info:
        compile_schema(schema)
    assert pointer in str(info.value)
    assert info.value.code == "schema_error"


def test_fingerprint_ignores_key_order() -> None:
    a = {"type": "object", "properties": {"x": {"type": "string"}, "y": {"type": "integer"}}}
    b = {"properties": {"y": {"type": "integer"}, "x": {"type": "string"}}, "type": "object"}
    assert compile_schema(a).fingerprint == compile_schema(b).fingerprint
