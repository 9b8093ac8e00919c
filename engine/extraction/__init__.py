"""Schema-driven extraction with BAML: JSON Schema → typed vision-LLM call(s) → canonical JSON + 1NF tables."""

from engine.extraction.runner import ExtractionOutput, extract_document
from engine.extraction.schema import CompiledSchema, compile_schema, render_baml

__all__ = ["CompiledSchema", "ExtractionOutput", "compile_schema", "extract_document", "render_baml"]
