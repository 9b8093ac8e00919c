"""OCR cost per page: Tesseract through the render worker's "ocr" op (engine.documents.ocr.OcrWorker), as
extraction runs it, on generated 300-DPI scans of a dense invoice page.

    python bench/ocr.py [--pages 3] [--reps 3]

Variants alternate within each repetition: the default language set (all 7 installed packs) against English
only and English + German, on whole scanned pages, and a logo-sized image region of a text page (what a text page with images
costs). Each repetition uses a fresh worker, so its first image also pays the worker's start (reported apart).
Writes bench/results/ocr.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import tool_version, write_result  # noqa: E402


def scanned_page(seed: int):  # type: ignore[no-untyped-def]
    from PIL import Image, ImageDraw

    from tests.fixtures.documents import _font

    img = Image.new("L", (2480, 3508), 250)  # A4 at 300 DPI
    draw = ImageDraw.Draw(img)
    draw.text((200, 180), f"RECHNUNG / INVOICE No. 2026-{seed:04d}", fill=10, font=_font(70))
    for i in range(45):
        draw.text((200, 400 + i * 66), f"Pos {i + 1}  Kugelventil DN{20 + i}  {i + 2} Stk  {(i + 1) * 13.7:,.2f} EUR",
                  fill=30, font=_font(40))  # fmt: skip
    return img.convert("RGB")


def main() -> None:
    from engine.config import Settings
    from engine.documents.ocr import DEFAULT_LANGUAGES, OcrWorker, usable_languages

    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    pages = [scanned_page(i) for i in range(args.pages)]
    variants = {"page-all-languages": usable_languages(DEFAULT_LANGUAGES), "page-eng": "eng", "page-eng-deu": "eng+deu",
                "logo-region-all-languages": usable_languages(DEFAULT_LANGUAGES)}  # fmt: skip
    per_page: dict[str, list[float]] = {v: [] for v in variants}
    starts: list[float] = []
    words: dict[str, int] = {}
    for rep in range(args.reps):
        order = list(variants) if rep % 2 == 0 else list(reversed(variants))
        for name in order:
            with OcrWorker(Settings(), variants[name]) as w:
                t0 = time.perf_counter()
                w.words(pages[0].crop((0, 0, 64, 64)), 300)  # the worker's start, measured apart
                starts.append(time.perf_counter() - t0)
                for img in pages:
                    region = [0.08, 0.04, 0.6, 0.08] if name.startswith("logo") else None
                    t0 = time.perf_counter()
                    got = w.words(img, 300, region)
                    per_page[name].append(time.perf_counter() - t0)
                    words[name] = len(got or [])
    summary = {
        name: {"median_s": round(statistics.median(v), 3), "min_s": round(min(v), 3), "max_s": round(max(v), 3),
               "n": len(v), "languages": variants[name], "words_last_page": words[name]}
        for name, v in per_page.items()
    }  # fmt: skip
    path = write_result(
        "ocr",
        {
            "tesseract": tool_version(["tesseract", "--version"]),
            "pages": args.pages,
            "reps": args.reps,
            "image": "A4 at 300 DPI, 46 text lines (generated)",
            "seconds_per_page": summary,
            "worker_start_s": {
                "median": round(statistics.median(starts), 3),
                "min": round(min(starts), 3),
                "max": round(max(starts), 3),
            },
            "note": "wall seconds per OcrWorker.words call (PNG write + Tesseract TSV in the render worker, one "
            "thread: OMP_THREAD_LIMIT=1); variants alternate per repetition; the shared host runs other jobs",
        },  # fmt: skip
    )
    print(path)


if __name__ == "__main__":
    main()
