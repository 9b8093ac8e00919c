"""Awkward property names through the real BAML runtime: words BAML or its generated clients reserve (`ref`,
`class`, `enum`, `if`, `string`, `image`, ...), spaces, dashes, dots, unicode, leading digits or underscores,
an empty name, names that collide once made identifiers ("a b" / "a-b" / "a_b"). The model sees and answers the
schema's own names; the result, the tables and the citations carry them unchanged."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pymupdf
import pytest

from engine.config import Settings
from engine.extraction.runner import extract_document
from engine.extraction.schema import build_type_builder, compile_schema, render_baml
from engine.extraction.shape import rebuild
from engine.storage import LocalStore
from tests.fixtures.llm_server import ScriptedLLM

pytestmark = pytest.mark.integration

AWKWARD = [
    "ref", "class", "enum", "if", "for", "return", "self", "null", "true", "function", "env", "image", "pdf",
    "string", "int", "my field", "my-field", "my_field", "a.b", "größe", "日付", "1st", "_x", "", 'quo"te',
    "ref_", "Extraction", "Float",
]  # fmt: skip


def schema() -> dict[str, Any]:
    props: dict[str, Any] = {n: {"type": "string"} for n in AWKWARD}
    props["class"] = {"type": "number", "description": "a number named like a keyword"}
    props["enum"] = {"enum": ["a", "b"]}
    props["ref obj"] = {
        "type": "object",
        "properties": {"ref": {"type": "string"}, "if": {"type": "integer"}, "Float": {"type": "string"}},
    }
    props["image"] = {  # an array named like BAML's image type, its items with keyword fields
        "type": "array",
        "items": {"type": "object", "properties": {"ref": {"type": "string"}, "in": {"type": "number"}}},
    }
    return {"type": "object", "properties": props, "required": ["ref", "class"]}


def answer() -> dict[str, Any]:
    data: dict[str, Any] = {n: f"V{i:02d}" for i, n in enumerate(AWKWARD)}
    data["class"] = 1250.5
    data["enum"] = "b"
    data["ref obj"] = {"ref": "R-77", "if": 7, "Float": "F1"}
    data["image"] = [{"ref": "L-1", "in": 3.5}, {"ref": "L-2", "in": 4.25}]
    return data


@pytest.mark.parametrize("name", AWKWARD + ["ref obj"])
def test_every_awkward_name_builds_a_type_builder(name: str) -> None:
    """One field alone (the old code raised BamlError for `ref`, `class`, `_x`, `1st`, `größe`, `env`...)."""
    compiled = compile_schema(
        {"type": "object", "properties": {name: {"type": "string"}}, "required": [name]}
    )
    build_type_builder(compiled)
    (f,) = compiled.root.fields
    text = render_baml(compiled)
    assert f.prop.isascii() and f.prop[:1].isalpha()
    if f.prop != name:
        assert f"@alias({json.dumps(name, ensure_ascii=False)})" in text


def test_all_of_them_together_keep_distinct_properties() -> None:
    compiled = compile_schema(schema())
    build_type_builder(compiled)
    build_type_builder(compiled, all_optional=True)
    for cls in compiled.classes():
        props = [f.prop for f in cls.fields]
        assert len(props) == len(set(props)), props
    by_name = {f.name: f.prop for f in compiled.root.fields}
    assert by_name["my_field"] == "my_field" and by_name["ref_"] == "ref_"  # plain names keep their own
    assert by_name["ref"] not in ("ref", "ref_") and by_name["my field"] != by_name["my-field"]


def test_names_differing_only_in_case_are_refused_with_both_named() -> None:
    """BAML's parser matches keys without case while it coerces: {"abc", "Abc"} lost or swapped a value."""
    from engine.errors import SchemaError

    nested = {"type": "object", "properties": {"inner": {"type": "object", "properties": {
        "abc": {"type": "string"}, "ABC": {"type": "string"}}}}}  # fmt: skip
    with pytest.raises(SchemaError) as err:
        compile_schema(nested)
    assert "#/properties/inner/properties" in str(err.value) and "'abc'" in str(err.value)
    assert "'ABC'" in str(err.value)


def one_page(path: Path, data: dict[str, Any]) -> Path:
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    y = 40
    for k, v in data.items():
        for line in [f"{k}: {v}"] if not isinstance(v, dict | list) else [json.dumps(v)]:
            page.insert_text((40, y), line.encode("ascii", "replace").decode(), fontsize=8)
            y += 12
    doc.save(path)
    return path


def test_extraction_answers_and_tables_use_the_schemas_own_names(tmp_path: Path) -> None:
    data = answer()
    pdf = one_page(tmp_path / "names.pdf", data)
    with ScriptedLLM([{"content": json.dumps(data)}]) as llm:
        s = Settings(llm_base_url=llm.base_url, llm_model="names")
        out = extract_document(
            pdf, schema(), settings=s, store=LocalStore(tmp_path / "store"), use_cache=False
        )
        (req,) = llm.requests
    prompt = llm.prompt_text(req)
    assert "ref_2" not in prompt and "class_" not in prompt  # the model is asked for the schema's own names
    assert all(f"  {n}: string" in prompt for n in ("ref", "class", "my field", "größe", "1st", "_x"))
    assert out.result["data"] == data  # every value back under its own name, none lost or swapped
    assert out.result["provenance"]["attempts"] == 1
    base = f"results/{out.result['provenance']['document_id']}/{out.cache_key[:16]}"
    store = LocalStore(tmp_path / "store")
    tables = {
        Path(k).stem: pq.read_table(io.BytesIO(store.get(k)))
        for k in store.list(f"{base}/tables/")
        if k.endswith(".parquet")
    }
    assert rebuild(tables, compile_schema(schema())) == data
    assert "ref" in tables["root"].column_names and "class" in tables["root"].column_names
    paths = {c["path"] for c in out.result["provenance"]["citations"]}
    assert {"$.ref", "$.class", "$.image[1].ref"} <= paths
