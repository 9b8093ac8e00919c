"""Search benchmark: embedded backends on synthetic collections of realistic shape.

    python bench/search.py [--sizes 1000 10000] [--backends edge local] [--queries 50]

Pages are 750 × 128 multivectors (744 patches in a 31×24 grid + 6 prompt tokens, as a letter page at
ColQwen2's default resolution) stored as float16. Queries are 20 tokens taken from a random target
page's patches plus noise, so every query has pages that truly match (random queries against random
pages would make recall meaningless). For each backend and size, in fresh processes: upsert pages/s,
reopen time, search p50/p95 for dense (one mean vector), prefetch+rerank (pooled rows/cols → MaxSim)
and exhaustive MaxSim, recall@10 of dense and rerank against exhaustive, disk and RSS per page.
Writes bench/results/search.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import peak_rss_mb, write_result  # noqa: E402

GRID, OFFSET, DIM = (31, 24), 6, 128
TOKENS = OFFSET + GRID[0] * GRID[1]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def page_vectors(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    topic = rng.normal(size=(8, DIM))  # a page is a mixture of a few "topics" plus token noise
    mix = topic[rng.integers(0, 8, TOKENS)] + 0.8 * rng.normal(size=(TOKENS, DIM))
    return unit(mix)


def queries(n: int, pages: int) -> list[np.ndarray]:
    rng = np.random.default_rng(10_000_000)
    out = []
    for _ in range(n):
        target = page_vectors(int(rng.integers(0, pages)))
        picked = target[rng.integers(OFFSET, TOKENS, 20)]
        out.append(unit(picked + 0.6 * rng.normal(size=picked.shape)))
    return out


def open_backend(backend: str, path: Path):
    from engine.config import Settings
    from engine.index import open_index

    return open_index("bench-model", DIM, Settings(index_backend=backend, index_path=path))


def build(backend: str, path: Path, n: int) -> dict:
    from engine.index import PageRecord

    index = open_backend(backend, path)
    t = time.perf_counter()
    for start in range(0, n, 64):
        index.upsert(
            [
                PageRecord(f"doc{i // 20:06d}", i % 20 + 1, 20, page_vectors(i), GRID, OFFSET, "bench-model")
                for i in range(start, min(n, start + 64))
            ]
        )
    elapsed = time.perf_counter() - t
    index.close()
    return {
        "upsert_seconds": round(elapsed, 1),
        "upsert_pages_per_s": round(n / elapsed, 1),
        "build_peak_rss_mb": round(peak_rss_mb()),
    }


def measure(backend: str, path: Path, n: int, n_queries: int) -> dict:
    rss0 = peak_rss_mb()
    t = time.perf_counter()
    index = open_backend(backend, path)
    reopen = time.perf_counter() - t
    rss_open = peak_rss_mb()
    qs = queries(n_queries, n)
    res: dict = {
        "reopen_seconds": round(reopen, 2),
        "rss_after_open_mb": round(rss_open),
        "rss_per_page_kb": round((rss_open - rss0) * 1024 / n, 1),
    }
    tops: dict[str, list[list[str]]] = {}
    for mode in ("exact", "rerank", "dense"):
        index.search(qs[0], top_k=10, mode=mode)  # warm-up
        times, tops[mode] = [], []
        for q in qs:
            t = time.perf_counter()
            hits = index.search(q, top_k=10, mode=mode, prefetch_limit=100)
            times.append(time.perf_counter() - t)
            tops[mode].append([h.point_id for h in hits])
        res[f"{mode}_p50_ms"] = round(float(np.percentile(times, 50)) * 1000, 1)
        res[f"{mode}_p95_ms"] = round(float(np.percentile(times, 95)) * 1000, 1)
    for mode in ("rerank", "dense"):
        res[f"{mode}_recall_at_10"] = round(
            float(
                np.mean([len(set(a) & set(b)) / 10 for a, b in zip(tops[mode], tops["exact"], strict=True)])
            ),
            3,
        )
    res["peak_rss_mb"] = round(peak_rss_mb())
    index.close()
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--backends", nargs="+", default=["edge", "local"])
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument(
        "--max-local", type=int, default=1000, help="largest size tried with qdrant-client local mode"
    )
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        phase, backend, path, n = args.worker
        out = (
            build(backend, Path(path), int(n))
            if phase == "build"
            else measure(backend, Path(path), int(n), args.queries)
        )
        print("RESULT " + json.dumps(out))
        return
    work = ROOT / "bench" / "work" / "search"
    runs = []
    for backend in args.backends:
        for n in args.sizes:
            if backend == "local" and n > args.max_local:
                runs.append(
                    {
                        "backend": backend,
                        "pages": n,
                        "skipped": f"qdrant-client local mode keeps every vector in Python objects and reloads them all on open; above {args.max_local} pages it exceeds this machine's time/memory budget (see the {args.max_local}-page row)",
                    }
                )
                continue
            path = work / f"{backend}-{n}"
            shutil.rmtree(path, ignore_errors=True)
            row = {"backend": backend, "pages": n}
            for phase in ("build", "measure"):
                proc = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        phase,
                        backend,
                        str(path),
                        str(n),
                        "--queries",
                        str(args.queries),
                    ],
                    capture_output=True,
                    text=True,
                )
                line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
                if line is None:
                    row["error"] = proc.stderr[-500:]
                    break
                row.update(json.loads(line[7:]))
            row["disk_mb"] = round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)
            row["disk_kb_per_page"] = round(row["disk_mb"] * 1024 / n, 1)
            print(row, file=sys.stderr, flush=True)
            runs.append(row)
            shutil.rmtree(path, ignore_errors=True)
    path = write_result("search", {
        "page_shape": f"{TOKENS} x {DIM} (grid {GRID[0]}x{GRID[1]} + {OFFSET} prompt tokens), float16 storage for the full multivector",
        "queries": f"{args.queries} queries of 20 tokens drawn from a target page + noise; top_k=10; prefetch_limit=100 per pooled vector",
        "cpus": len(os.sched_getaffinity(0)),
        "runs": runs,
    })  # fmt: skip
    print(path)


if __name__ == "__main__":
    main()
