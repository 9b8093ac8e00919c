"""Hostile requests (issue 23): every body here is answered 4xx within 1 s of the handler's CPU, with its peak
RSS bounded — size, depth, encoding, base64, schema and token bombs, forbidden document keys — plus a seeded
mutation fuzzer over the valid sample bodies (its seed and count fixed; failures found are kept as cases).

The CPU bound is the issue's requirement for a refusal (time.process_time around the handler, after one warm
request loaded the model), not a speed claim; speed is measured in bench/api_precheck.py.
"""

# ruff: noqa: F811  (pytest fixtures imported from test_handlers)
from __future__ import annotations

import base64
import copy
import json
import random
import resource
import time

import pytest

from tests.integration.test_handlers import BUCKET, aws, event, moto_url  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration
CPU_LIMIT_S = 1.0
RSS_GROWTH_LIMIT_MB = 256  # over the process's earlier peak (ru_maxrss only grows)


def _chain(n: int, hidden: bool) -> dict:
    """$defs c0 → c1 → … → cn; `hidden`: each link is a property *named* "$ref"."""
    name = "$ref" if hidden else "next"
    defs = {
        f"c{i}": {"type": "object", "properties": {name: {"$ref": f"#/$defs/c{i + 1}"}}} for i in range(n)
    }
    defs[f"c{n}"] = {"type": "string"}
    return {"type": "object", "properties": {"root": {"$ref": "#/$defs/c0"}}, "$defs": defs}


def _doubling(n: int, hidden: bool) -> dict:
    """2^n leaf paths from n $defs of two properties each referring to the next (a 'billion laughs')."""
    first = "$ref" if hidden else "x"
    defs = {
        f"a{i}": {
            "type": "object",
            "properties": {first: {"$ref": f"#/$defs/a{i + 1}"}, "y": {"$ref": f"#/$defs/a{i + 1}"}},
        }
        for i in range(n)
    }
    defs[f"a{n}"] = {"type": "string"}
    return {"type": "object", "properties": {"root": {"$ref": "#/$defs/a0"}}, "$defs": defs}


def _extract(schema: dict | None = None, key: str = "raw/k.pdf") -> str:
    body: dict = {"document": {"key": key}}
    body.update({"schema": schema} if schema is not None else {"schema_name": "shipping_manifest"})
    return json.dumps(body)


def _b64(data: bytes) -> tuple[str, bool]:
    return base64.b64encode(data).decode(), True


# (name, route event, body, isBase64Encoded, accepted statuses)
CASES: list[tuple[str, str, str, bool, tuple[int, ...]]] = [
    # item 1: the quadratic string scan (an unterminated string of escaped quotes)
    ("escaped-quotes-32k", "search.json", '{"query": "' + '\\"' * 16_000, False, (400,)),
    ("escaped-quotes-200k", "search.json", '{"query": "' + '\\"' * 100_000, False, (400,)),
    ("escaped-quotes-5m", "search.json", '{"query": "' + '\\"' * 2_500_000, False, (400,)),
    ("backslashes-then-quote-1m", "search.json", '{"query": "' + "\\" * 1_000_001 + '"}', False, (400,)),
    # depth, breadth, balance
    ("open-brackets-100k", "search.json", "[" * 100_000, False, (400,)),
    ("nested-objects-5000", "search.json", '{"a":' * 5000 + "1" + "}" * 5000, False, (400,)),
    ("many-containers", "search.json", "[" + "[]," * 60_000 + "[]]", False, (400,)),
    ("mismatched", "search.json", '{"query": "q"]', False, (400,)),
    ("closes-first", "search.json", "]" * 1000 + "[" * 1000, False, (400,)),
    ("brackets-in-strings-are-fine", "search.json", json.dumps({"query": "[" * 500 + "{" * 500}), False, (200,)),
    # scalars Python refuses or the models do
    ("int-10000-digits", "search.json", '{"query": "q", "top_k": ' + "9" * 10_000 + "}", False, (400,)),
    ("float-overflow", "search.json", '{"query": "q", "top_k": 1e999999}', False, (400,)),
    ("not-json", "search.json", "hello", False, (400,)),
    ("nul-bytes", "search.json", "\x00" * 1000, False, (400,)),
    ("json-string-body", "search.json", '"a string"', False, (400,)),
    ("empty-object", "search.json", "{}", False, (400,)),
    ("huge-body-9mb", "search.json", json.dumps({"query": "q", "pad": "x" * 9_000_000}), False, (200, 400)),
    # encoding
    ("invalid-utf8", "search.json", *_b64(b'{"query": "\xff\xfe\xfd"}'), (400,)),
    ("utf16-le", "search.json", *_b64('{"query": "q"}'.encode("utf-16-le")), (400,)),
    ("utf16-with-bom", "search.json", *_b64('{"query": "q"}'.encode("utf-16")), (400,)),
    ("utf32", "search.json", *_b64('{"query": "q"}'.encode("utf-32")), (400,)),
    ("utf8-bom-is-ignored", "search.json", *_b64(b'\xef\xbb\xbf{"query": "q"}'), (200,)),
    ("lone-surrogate-escape", "search.json", '{"query": "\\ud800"}', False, (400,)),
    ("lone-low-surrogate-key", "search.json", '{"query": "q", "\\udc00": 1}', False, (400,)),
    ("raw-lone-surrogate", "search.json", '{"query": "\ud800"}', False, (400,)),
    ("surrogate-pair-is-fine", "search.json", '{"query": "\\ud83d\\ude00"}', False, (200,)),
    ("overlong-utf8", "search.json", *_b64(b'{"query": "\xc0\xaf"}'), (400,)),
    # item 15: base64 bodies
    ("base64-junk", "search.json", "!!! not base64 !!!", True, (400,)),
    ("base64-truncated", "search.json", base64.b64encode(b'{"query": "q"}').decode()[:-3], True, (400,)),
    ("base64-5000-deep", "search.json", *_b64(b"[" * 5000 + b"]" * 5000), (400,)),
    ("base64-binary", "search.json", *_b64(bytes(range(256)) * 40), (400,)),
    ("base64-valid", "search.json", *_b64(b'{"query": "q"}'), (200,)),
    # item 7: schema bombs, the $ref check by key name no longer bypassable
    ("ref-bomb-2^16", "extract.json", _extract(_doubling(15, hidden=False)), False, (413,)),
    ("hidden-ref-bomb-2^25", "extract.json", _extract(_doubling(25, hidden=True)), False, (413,)),
    ("hidden-ref-chain-1500", "extract.json", _extract(_chain(1500, hidden=True)), False, (413,)),
    ("ref-chain-1500", "extract.json", _extract(_chain(1500, hidden=False)), False, (413,)),
    ("hidden-ref-chain-300", "extract.json", _extract(_chain(300, hidden=True)), False, (400,)),
    ("many-fields-2000", "extract.json", _extract({"type": "object", "properties": {f"f{i}": {"type": "string"} for i in range(2000)}}), False, (413,)),
    ("recursive-ref", "extract.json", _extract({"type": "object", "properties": {"me": {"$ref": "#"}}}), False, (400,)),
    # item 12: characters are not tokens
    ("emoji-query-2000", "search.json", json.dumps({"query": "\U0001f600" * 2000}), False, (413,)),
    ("emoji-texts-32x2000", "embed.json", json.dumps({"texts": ["\U0001f600" * 2000] * 32}), False, (413,)),
    ("emoji-queries-score", "score.json", json.dumps({"queries": ["\U0001f600" * 2000], "pages": [{"document_id": "0" * 64, "page_number": 1}]}), False, (413,)),
    # item 16: document keys a caller may not name
    ("key-derived-failures", "extract.json", _extract(key="derived/failures/doc/call-0.json"), False, (400,)),
    ("key-derived-pages", "extract.json", _extract(key="derived/pages/abc/1.png"), False, (400,)),
    ("key-dotdot", "extract.json", _extract(key="raw/../derived/failures/x.json"), False, (400,)),
    ("key-outside-prefixes", "extract.json", _extract(key="other/x.pdf"), False, (400,)),
    ("key-double-slash", "extract.json", _extract(key="raw//x.pdf"), False, (400,)),
]  # fmt: skip


def _call(name: str, body: str | None, b64: bool) -> tuple[int, dict, float, float]:
    """(status, body, handler CPU seconds, growth of the process's peak RSS in MB)."""
    import handlers.api
    from handlers.invoke import LocalContext

    ev = copy.deepcopy(event(name))
    ev["body"], ev["isBase64Encoded"] = body, b64
    before_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.process_time()
    out = handlers.api.handler(ev, LocalContext())
    cpu = time.process_time() - t
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_rss) / 1024
    return out["statusCode"], json.loads(out["body"]), cpu, growth


@pytest.fixture
def warm_api(aws):  # noqa: ANN001, ANN201
    """One ordinary request first: imports and the model load are not what a refusal costs."""
    status, out, _, _ = _call("search.json", json.dumps({"query": "warm up"}), False)
    assert status == 200, out
    return aws


@pytest.mark.slow
def test_hostile_bodies_are_refused_fast(warm_api) -> None:  # noqa: ANN001
    failures = []
    for case, route, body, b64, accepted in CASES:
        status, out, cpu, growth = _call(route, body, b64)
        ok = status in accepted and cpu < CPU_LIMIT_S and growth < RSS_GROWTH_LIMIT_MB
        if status >= 400:
            ok = ok and isinstance(out.get("error", {}).get("code"), str)
        if not ok:
            failures.append((case, status, round(cpu, 3), round(growth), json.dumps(out)[:300]))
    assert not failures, "\n".join(map(str, failures))


def test_the_emoji_answer_size_is_refused_before_the_work(warm_api, monkeypatch) -> None:  # noqa: ANN001
    """32 texts under the token cap whose multivectors cannot fit 6 MB: 413 before anything is embedded."""
    import handlers.common

    embedder = handlers.common.service().embedder
    text = "hello world " * 40
    while len(embedder.processor.tokenizer([text], add_special_tokens=False)["input_ids"][0]) < 800:
        text += "hello world "
    calls = []
    monkeypatch.setattr(type(embedder), "embed_queries", lambda self, texts: calls.append(texts) or [])
    status, out, cpu, _ = _call("embed.json", json.dumps({"texts": [text[:2000]] * 32}), False)
    assert (
        status == 413 and out["error"]["code"] == "input_too_large" and "6 MB" in out["error"]["message"]
    ), out
    assert calls == [] and cpu < CPU_LIMIT_S


# ------------------------------------------------------------------------------------------- fuzzing
SEED, COUNT = 20261207, 120
VALID = {
    "search.json": {"query": "total weight", "top_k": 3, "mode": "dense"},
    "extract.json": {"document": {"key": "raw/none.pdf"}, "schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
    "score.json": {"queries": ["q"], "pages": [{"document_id": "a" * 64, "page_number": 1}]},
    "embed.json": {"texts": ["container number"], "encoding": "json"},
}  # fmt: skip
SPICE = [
    '"',
    "\\",
    "[",
    "{",
    "]",
    "}",
    "\\u",
    "\\ud800",
    "\x00",
    "\U0001f600",
    ",",
    ":",
    "1e400",
    "-",
    "$ref",
    "\ufeff",
]


def mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 6)):
        i = rng.randrange(len(text) + 1)
        kind = rng.choice(["insert", "delete", "repeat", "truncate", "replace"])
        if kind == "insert":
            text = text[:i] + rng.choice(SPICE) * rng.choice([1, 2, 3, 100, 5000]) + text[i:]
        elif kind == "delete":
            text = text[:i] + text[i + rng.randint(1, 8) :]
        elif kind == "repeat":
            j = min(len(text), i + rng.randint(1, 20))
            text = text[:i] + text[i:j] * rng.choice([2, 50, 2000]) + text[j:]
        elif kind == "truncate":
            text = text[:i]
        else:
            text = text[:i] + rng.choice(SPICE) + text[i + 1 :]
    return text


@pytest.mark.slow
def test_seeded_mutation_fuzz(warm_api) -> None:  # noqa: ANN001
    """Mutated valid bodies end as answers or typed 4xx, never 5xx, each within the CPU bound."""
    rng = random.Random(SEED)
    failures = []
    for n in range(COUNT):
        route = rng.choice(sorted(VALID))
        body = mutate(json.dumps(VALID[route]), rng)
        b64 = rng.random() < 0.2
        sent = base64.b64encode(body.encode("utf-8", "surrogatepass")).decode() if b64 else body
        status, out, cpu, growth = _call(route, sent, b64)
        if status >= 500 or cpu >= CPU_LIMIT_S or growth >= RSS_GROWTH_LIMIT_MB:
            failures.append((n, route, status, round(cpu, 3), body[:200], json.dumps(out)[:200]))
    assert not failures, "\n".join(map(str, failures))
