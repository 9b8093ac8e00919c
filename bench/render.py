"""Rendering benchmark: pages/s and peak RSS for 10/100/500-page PDFs per backend, Office conversion time.

    python bench/render.py [--sizes 10 100 500] [--backends pymupdf pdf2image]

Each (backend, size) runs in its own process so peak RSS is that run's alone. Writes bench/results/render.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import peak_rss_mb, tool_version, write_result  # noqa: E402


def worker(backend: str, path: str, encode_png: bool) -> dict:
    from engine.config import Settings
    from engine.documents import open_document

    rss_before = peak_rss_mb()
    started = time.perf_counter()
    pages = png_bytes = 0
    with open_document(path, settings=Settings(pdf_backend=backend)) as doc:
        for frame in doc.pages():
            if encode_png:
                png_bytes += len(frame.png_bytes())
            pages += 1
    elapsed = time.perf_counter() - started
    return {
        "pages": pages,
        "seconds": round(elapsed, 2),
        "pages_per_s": round(pages / elapsed, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_after_imports_mb": round(rss_before, 1),
        "png_mb_per_page": round(png_bytes / max(pages, 1) / 2**20, 2) if encode_png else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--backends", nargs="+", default=["pymupdf", "pdf2image"])
    parser.add_argument("--worker", nargs=3, metavar=("BACKEND", "PATH", "PNG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.worker[2] == "1")))
        return

    from tests.fixtures import documents as d

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            pdf = d.long_pdf(Path(tmp) / f"{n}.pdf", n)
            for backend in args.backends:
                for png in ("0", "1") if backend == "pymupdf" else ("0",):
                    out = subprocess.run(
                        [sys.executable, __file__, "--worker", backend, str(pdf), png],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    row = {
                        "backend": backend,
                        "page_count": n,
                        "png_encode": png == "1",
                        **json.loads(out.stdout),
                    }
                    print(row, file=sys.stderr)
                    runs.append(row)
        office = {}
        from engine.documents import open_document

        samples = {
            "docx": d.docx(Path(tmp) / "a.docx"),
            "xlsx": d.xlsx(Path(tmp) / "a.xlsx"),
            "pptx": d.pptx(Path(tmp) / "a.pptx"),
            "html": d.html(Path(tmp) / "a.html"),
        }
        for kind, path in samples.items():
            times = []
            for _ in range(3):
                t = time.perf_counter()
                with open_document(path) as doc:
                    pages = doc.page_count
                times.append(time.perf_counter() - t)
            office[kind] = {
                "pages": pages,
                "conversion_seconds_median": round(statistics.median(times), 2),
                "runs": [round(x, 2) for x in times],
            }
            print(kind, office[kind], file=sys.stderr)

    def rss(backend: str, n: int) -> float | None:
        return next(
            (
                r["peak_rss_mb"]
                for r in runs
                if r["backend"] == backend and r["page_count"] == n and not r["png_encode"]
            ),
            None,
        )

    ratios = {
        b: round(rss(b, max(args.sizes)) / rss(b, min(args.sizes)), 3)
        for b in args.backends
        if rss(b, min(args.sizes))
    }
    path = write_result(
        "render",
        {
            "dpi": 300,
            "page": "US letter, text + filled rectangle (bench/render.py long_pdf)",
            "versions": {
                "pymupdf": __import__("pymupdf").VersionBind,
                "pdftoppm": tool_version(["pdftoppm", "-v"]) or "",
                "libreoffice": tool_version(["soffice", "--version"]),
            },
            "runs": runs,
            "peak_rss_ratio_largest_vs_smallest": ratios,
            "office_conversion": office,
        },
    )
    print(path)


if __name__ == "__main__":
    main()
