"""Extraction overhead per page, LLM time excluded: rendering, image encoding, schema compile, BAML
request/parse, validation, shaping and writing, measured against a local instant-answer server.

    python bench/extract.py [--pages 8]
    python bench/extract.py --citations [--repeats 5]   → bench/results/extract-citations.json

--citations measures what citations and grounding add per page: extractions with and without them, alternated
in one run on the same documents (a faithful 3-page invoice; an 8-page document where the values are not
printed, the worst case: every page is searched for every value), >= 3 repetitions each, median and spread.

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


def citations_ab(repeats: int) -> None:
    import statistics

    from engine.config import Settings
    from engine.extraction import extract_document
    from engine.storage import LocalStore
    from tests.fixtures import documents as d
    from tests.fixtures.llm_server import ScriptedLLM
    from tests.integration import test_extraction as manifest_case
    from tests.integration import test_extraction_trust as invoice_case

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        cases = {
            "invoice_3_pages_faithful": (invoice_case.invoice_pdf(Path(tmp) / "inv.pdf"), invoice_case.SCHEMA,
                                         json.dumps(invoice_case.faithful())),
            "long_8_pages_values_absent": (d.long_pdf(Path(tmp) / "long.pdf", 8), manifest_case.SCHEMA,
                                           json.dumps(manifest_case.manifest())),
        }  # fmt: skip
        for case, (pdf, schema, answer) in cases.items():
            runs: dict[str, list[float]] = {"with": [], "without": []}
            parts: dict[str, list[float]] = {"text_layer_s": [], "citations_s": []}
            pages = 0
            with ScriptedLLM([{"content": answer}]) as llm:
                s = Settings(
                    llm_base_url=llm.base_url,
                    llm_model="bench",
                    page_budget=8,
                    pages_per_call=8,
                    list_mode="whole",
                )
                for i in range(repeats + 1):  # the first round warms up (imports, worker start), not counted
                    for variant in (
                        ("with", "without") if i % 2 else ("without", "with")
                    ):  # alternate the order
                        timings: dict[str, float] = {}
                        t = time.perf_counter()
                        extract_document(pdf, schema, settings=s, store=LocalStore(Path(tmp) / f"{case}{i}{variant}"),
                                         use_cache=False, timings=timings, cite_values=variant == "with")  # fmt: skip
                        if i:
                            runs[variant].append(time.perf_counter() - t)
                            if variant == "with":
                                parts["text_layer_s"].append(timings["text_layer_s"])
                                parts["citations_s"].append(timings["citations_s"])
                        pages = int(timings.get("pages", 0))
            med = {k: statistics.median(v) for k, v in runs.items()}
            results[case] = {
                "pages": pages,
                "seconds_per_extraction": {k: [round(x, 3) for x in v] for k, v in runs.items()},
                "median_seconds": {k: round(v, 3) for k, v in med.items()},
                "added_seconds_per_page_median": round((med["with"] - med["without"]) / pages, 4),
                "added_seconds_per_page_spread": [
                    round((min(runs["with"]) - max(runs["without"])) / pages, 4),
                    round((max(runs["with"]) - min(runs["without"])) / pages, 4),
                ],
                "measured_inside_with_runs_per_page": {
                    k: {
                        "median": round(statistics.median(v) / pages, 4),
                        "min": round(min(v) / pages, 4),
                        "max": round(max(v) / pages, 4),
                    }
                    for k, v in parts.items()
                },  # fmt: skip
            }
    print(write_result("extract-citations", {"repeats": repeats, "cases": results,
          "note": "local instant-answer server; text_layer_s is the isolated child reading the words, citations_s the "
                  "matching; added = median(with) - median(without), spread = (min-max, max-min) over the runs"}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=8)
    ap.add_argument("--citations", action="store_true", help="A/B of citations + grounding")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.citations:
        citations_ab(max(3, args.repeats))
        return
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
