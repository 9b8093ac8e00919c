"""Rendering benchmark: pages/s and peak RSS, in-process against the isolated render worker, same run.

    python bench/render.py [--sizes 10 100] [--backends pymupdf] [--reps 3]

Each (backend, size, isolation, repetition) runs in its own process so peak RSS is that run's alone; the
isolated variant's peak RSS is the caller's plus the worker's (the largest child). Variants alternate within
each repetition (the host drifts). Each run renders the document twice: the first pass pays the worker's
start (cold), the second uses the spare worker started ahead of need (steady state, as in a warm Lambda).
Writes bench/results/render.json.
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


def worker(backend: str, path: str, encode_png: bool, isolation: str = "none") -> dict:
    import resource

    from engine.config import Settings
    from engine.documents import open_document

    rss_before = peak_rss_mb()
    settings = Settings(pdf_backend=backend, render_isolation=isolation)
    passes = []
    for _ in range(2):
        started = time.perf_counter()
        pages = png_bytes = 0
        with open_document(path, settings=settings) as doc:
            for frame in doc.pages():
                if encode_png:
                    png_bytes += len(frame.png_bytes())
                pages += 1
        passes.append(time.perf_counter() - started)
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    elapsed = passes[1]
    return {
        "pages": pages,
        "seconds": round(elapsed, 2),
        "pages_per_s": round(pages / elapsed, 2),
        "cold_pages_per_s": round(pages / passes[0], 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "worker_peak_rss_mb": round(children_mb, 1) if isolation == "process" else None,
        "total_peak_rss_mb": round(peak_rss_mb() + (children_mb if isolation == "process" else 0), 1),
        "rss_after_imports_mb": round(rss_before, 1),
        "png_mb_per_page": round(png_bytes / max(pages, 1) / 2**20, 2) if encode_png else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--backends", nargs="+", default=["pymupdf"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--worker", nargs=4, metavar=("BACKEND", "PATH", "PNG", "ISO"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.worker[2] == "1", args.worker[3])))
        return

    from tests.fixtures import documents as d

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            pdf = d.long_pdf(Path(tmp) / f"{n}.pdf", n)
            for backend in args.backends:
                for rep in range(args.reps):
                    order = ("none", "process") if rep % 2 == 0 else ("process", "none")
                    for isolation in order:
                        out = subprocess.run(
                            [sys.executable, __file__, "--worker", backend, str(pdf), "0", isolation],
                            capture_output=True,
                            text=True,
                            check=True,
                        )
                        row = {
                            "backend": backend,
                            "page_count": n,
                            "isolation": isolation,
                            "rep": rep,
                            "png_encode": False,
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
            for _ in range(args.reps):
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

    def pick(backend: str, n: int, isolation: str, key: str) -> list[float]:
        return [
            r[key]
            for r in runs
            if r["backend"] == backend and r["page_count"] == n and r["isolation"] == isolation
        ]

    def spread(values: list[float]) -> dict:
        return {"median": round(statistics.median(values), 2), "min": min(values), "max": max(values)}

    isolation_cost = []
    for b in args.backends:
        for n in args.sizes:
            inproc, iso = pick(b, n, "none", "pages_per_s"), pick(b, n, "process", "pages_per_s")
            isolation_cost.append(
                {
                    "backend": b,
                    "page_count": n,
                    "in_process_pages_per_s": spread(inproc),
                    "isolated_pages_per_s": spread(iso),
                    "isolated_cold_pages_per_s": spread(pick(b, n, "process", "cold_pages_per_s")),
                    "slowdown_pct_median": round(
                        100 * (1 - statistics.median(iso) / statistics.median(inproc)), 1
                    ),
                    "in_process_peak_rss_mb": spread(pick(b, n, "none", "total_peak_rss_mb")),
                    "isolated_total_peak_rss_mb": spread(pick(b, n, "process", "total_peak_rss_mb")),
                    "isolated_caller_peak_rss_mb": spread(pick(b, n, "process", "peak_rss_mb")),
                    "isolated_worker_peak_rss_mb": spread(pick(b, n, "process", "worker_peak_rss_mb")),
                }
            )
            print(isolation_cost[-1], file=sys.stderr)
    ratios = {
        f"{b}/{iso}": round(
            statistics.median(pick(b, max(args.sizes), iso, "total_peak_rss_mb"))
            / statistics.median(pick(b, min(args.sizes), iso, "total_peak_rss_mb")),
            3,
        )
        for b in args.backends
        for iso in ("none", "process")
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
            "target": "isolated slowdown < 10 % (steady state: second document, spare worker ready)",
            "load_average_at_end": [round(x, 1) for x in __import__("os").getloadavg()],
            "isolation_cost": isolation_cost,
            "runs": runs,
            "peak_rss_ratio_largest_vs_smallest": ratios,
            "office_conversion": office,
        },
    )
    print(path)


if __name__ == "__main__":
    main()
