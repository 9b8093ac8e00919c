"""API input limits: every image, text, body and schema the API takes is bounded; nothing ends in a 502."""

from __future__ import annotations

import base64
import importlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.llm_server import ScriptedLLM
from tests.integration.test_handlers import BUCKET, api, aws, event, moto_url  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration


def _png(w: int, h: int) -> str:
    buf = io.BytesIO()
    Image.new("1", (w, h), 1).save(buf, "PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode()


def _post(name: str, body: object) -> tuple[int, dict]:
    ev = event(name)
    ev["body"] = body if isinstance(body, str) else json.dumps(body)
    return api(ev)


def test_image_bombs_are_refused_from_the_header(aws) -> None:  # noqa: F811
    bomb = _png(13_000, 13_000)  # ~40 KB of PNG, 169 megapixels
    assert len(bomb) < 400_000
    for name, body in (
        ("embed.json", {"images": [bomb]}),
        ("score.json", {"queries": ["q"], "images": [bomb]}),
    ):
        status, out = _post(name, body)
        assert status == 413 and out["error"]["code"] == "image_too_large", out
    status, out = _post("embed.json", {"images": [base64.b64encode(b"not an image at all").decode()]})
    assert status == 415 and out["error"]["code"] == "unsupported_type"
    status, out = _post("embed.json", {"images": ["%%% not base64"]})
    assert status == 400
    # PIL's process-global bomb limit is never switched off (by the API or by ingest).
    from engine.documents.images import ImageDocument

    ImageDocument(base64.b64decode(_png(10, 10)), "x.png", "png", max_pages=1, max_image_pixels=10**9).close()
    assert Image.MAX_IMAGE_PIXELS is not None


def test_request_pixel_budget(aws, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("DOCVISION_API_MAX_REQUEST_PIXELS", "1000000")
    importlib.reload(importlib.import_module("handlers.api"))
    status, out = _post("score.json", {"queries": ["q"], "images": [_png(800, 800), _png(800, 800)]})
    assert (
        status == 413 and out["error"]["code"] == "input_too_large" and "images[1]" in out["error"]["message"]
    )


def test_long_texts_and_too_many_items_are_400s(aws) -> None:  # noqa: F811
    huge = "word " * 200_000  # 1 MB
    for name, body in (
        ("embed.json", {"texts": [huge]}),
        ("score.json", {"queries": [huge], "images": [_png(8, 8)]}),
        ("search.json", {"query": huge}),
        ("embed.json", {"texts": ["a"] * 33}),
    ):
        status, out = _post(name, body)
        assert status == 400 and out["error"]["code"] == "bad_request", (name, out)


def test_deep_json_and_ref_bombs(aws) -> None:  # noqa: F811
    status, out = _post("search.json", "[" * 100_000 + "]" * 100_000)
    assert status == 400 and "nested deeper" in out["error"]["message"]
    status, out = _post("search.json", {"query": "q", "document_ids": [json.dumps([[[[1]]]])] * 3})
    assert status == 200  # brackets inside strings do not count
    defs = {f"a{i}": {"type": "object", "properties": {"x": {"$ref": f"#/$defs/a{i + 1}"},
                                                        "y": {"$ref": f"#/$defs/a{i + 1}"}}} for i in range(15)}  # fmt: skip
    defs["a15"] = {"type": "string"}
    bomb = {"type": "object", "properties": {"root": {"$ref": "#/$defs/a0"}}, "$defs": defs}
    status, out = _post("extract.json", {"document": {"key": "raw/k.pdf"}, "schema": bomb})
    assert status == 413 and "$ref" in out["error"]["message"], out
    deep: dict = {"type": "string"}
    for _ in range(60):
        deep = {"type": "object", "properties": {"a": deep}}
    status, out = _post("extract.json", {"document": {"key": "raw/k.pdf"}, "schema": deep})
    assert status == 400 and "nested deeper" in out["error"]["message"], out


def test_bad_bucket_and_version_ids(aws) -> None:  # noqa: F811
    for ref in (
        {"key": "raw/a.pdf", "bucket": "Bad_Bucket!"},
        {"key": "raw/a.pdf", "version_id": "../../etc"},
    ):
        status, out = _post("extract.json", {"document": ref, "schema_name": "shipping_manifest"})
        assert status == 400 and out["error"]["code"] == "bad_request", out
    status, out = _post("extract.json", {"document": {"key": "raw/a.pdf", "bucket": "no-such-bucket-12"},
                                         "schema_name": "shipping_manifest"})  # fmt: skip
    assert status == 404 and out["error"]["code"] == "not_found", out
    aws["s3"].put_object(Bucket=BUCKET, Key="raw/a.pdf", Body=b"%PDF-1.4")
    status, out = _post("extract.json", {"document": {"key": "raw/a.pdf", "version_id": "nosuchversion"},
                                         "schema_name": "shipping_manifest"})  # fmt: skip
    assert 400 <= status < 500 and out["error"]["code"] in ("bad_request", "not_found"), out


def test_unexpected_errors_are_json_500s_with_a_correlation_id(aws, monkeypatch, caplog) -> None:  # noqa: F811
    import handlers.api

    def boom(*a: object, **k: object) -> None:
        raise KeyError("SECRET DOCUMENT TEXT")

    monkeypatch.setattr(handlers.api, "warm_model", boom)
    ev = event("search.json")
    out = handlers.api.handler(ev, __import__("handlers.invoke").invoke.LocalContext())
    body = json.loads(out["body"])
    assert out["statusCode"] == 500 and body["error"]["code"] == "internal_error"
    assert body["error"]["correlation_id"] == ev["requestContext"]["requestId"]
    assert "SECRET" not in out["body"] and "SECRET" not in caplog.text


def test_llm_failure_in_sync_mode_is_a_json_error(aws, tmp_path, monkeypatch) -> None:  # noqa: F811
    from tests.fixtures import documents as d

    aws["s3"].put_object(
        Bucket=BUCKET, Key="raw/m.pdf", Body=d.multipage_pdf(tmp_path / "m.pdf").read_bytes()
    )
    with ScriptedLLM([{"status": 500}] * 20) as llm:
        monkeypatch.setenv("DOCVISION_LLM_BASE_URL", llm.base_url)
        monkeypatch.setenv("DOCVISION_LLM_MODEL", "test-vlm")
        monkeypatch.setenv("DOCVISION_EXTRACT_ATTEMPTS", "1")
        status, out = _post("extract.json", {"document": {"key": "raw/m.pdf"}, "schema_name": "shipping_manifest",
                                             "mode": "sync", "no_cache": True})  # fmt: skip
    assert 400 <= status < 600 and status != 502 and "error" in out and out["error"]["code"], out


def test_embed_answers_are_compact_float16(aws) -> None:  # noqa: F811
    status, as_json = _post(
        "embed.json", {"texts": ["a query"], "images": [_png(600, 800)], "encoding": "json"}
    )
    assert status == 200
    status, compact = _post("embed.json", {"texts": ["a query"], "images": [_png(600, 800)]})
    assert status == 200
    for part in ("queries", "images"):
        a, b = as_json[part][0], compact[part][0]
        assert b["dtype"] == "float16" and b["encoding"] == "base64" and a["shape"] == b["shape"]
        decoded = np.frombuffer(base64.b64decode(b["data"]), dtype="<f2").reshape(b["shape"])
        assert np.allclose(decoded, np.asarray(a["data"]), atol=2e-3, rtol=2e-3)
    assert len(json.dumps(compact)) * 3 < len(json.dumps(as_json))
