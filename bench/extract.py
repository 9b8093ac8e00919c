"""Extraction overhead per page, LLM time excluded: rendering, image encoding, schema compile, BAML
request/parse, validation, shaping and writing, measured against a local instant-answer server.

    python bench/extract.py [--pages 8]

Also reports image bytes and estimated prompt tokens per page at the configured LLM resolution
(Anthropic's published estimate w*h/750; OpenAI high-detail 85 + 170 per 512-px tile). Writes
bench/results/extract.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=8)
    args = ap.parse_args()
    from engine.config import Settings
    from engine.documents import render_pages
    from engine.extraction import compile_schema, extract_document
    from engine.extraction.runner import _page_image
    from engine.storage import LocalStore
    from tests.fixtures import documents as d
    from tests.fixtures.llm_server import ScriptedLLM
    from tests.integration.test_extraction import SCHEMA, manifest

    with tempfile.TemporaryDirectory() as tmp:
        pdf = d.long_pdf(Path(tmp) / "doc.pdf", args.pages)
        settings = Settings(page_budget=args.pages, pages_per_call=args.pages)
        t = time.perf_counter()
        frames = list(render_pages(pdf, settings=settings))
        render_s = (time.perf_counter() - t) / args.pages
        t = time.perf_counter()
        images = [_page_image(f, settings.llm_image_max_side) for f in frames]
        encode_s = (time.perf_counter() - t) / args.pages
        sizes = [len(base64.b64decode(i.as_base64()[0])) if hasattr(i, "as_base64") else 0 for i in images]
        w, h = frames[0].image.size
        scale = min(1.0, settings.llm_image_max_side / max(w, h))
        lw, lh = round(w * scale), round(h * scale)
        t = time.perf_counter()
        for _ in range(20):
            compile_schema(SCHEMA)
        compile_s = (time.perf_counter() - t) / 20
        answer = json.dumps(manifest())
        runs = []
        with ScriptedLLM([{"content": answer}]) as llm:
            s = Settings(
                llm_base_url=llm.base_url,
                llm_model="bench",
                page_budget=args.pages,
                pages_per_call=args.pages,
            )
            for i in range(3):
                store = LocalStore(Path(tmp) / f"store{i}")
                t = time.perf_counter()
                extract_document(pdf, SCHEMA, settings=s, store=store, csv=True, use_cache=False)
                runs.append(time.perf_counter() - t)
            request_bytes = len(json.dumps(llm.requests[-1]))
    total = min(runs)
    payload = {
        "pages": args.pages,
        "llm_image_size": [lw, lh],
        "seconds_per_page": {
            "render_300dpi": round(render_s, 4),
            "downscale_and_png_encode": round(encode_s, 4),
            "end_to_end_excluding_llm": round(total / args.pages, 4),
        },
        "schema_compile_ms": round(compile_s * 1000, 2),
        "end_to_end_seconds_runs": [round(r, 2) for r in runs],
        "image_bytes_per_page": int(sum(sizes) / len(sizes)) if any(sizes) else None,
        "request_bytes_per_page": request_bytes // args.pages,
        "estimated_prompt_tokens_per_page": {
            "anthropic (w*h/750)": round(lw * lh / 750),
            "openai high detail": 85
            + 170 * math.ceil(min(lw, lh * 768 / max(lw, lh)) / 512) * math.ceil(768 / 512),
        },
        "note": "the local server answers instantly, so the end-to-end figure is the service's own overhead",
    }
    print(write_result("extract", payload))


if __name__ == "__main__":
    main()
