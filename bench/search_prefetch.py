"""Recall/latency trade-off of the prefetch limit (prefetch on pooled rows/cols → MaxSim rerank), qdrant-edge.

    python bench/search_prefetch.py [--sizes 1000 10000] [--limits 100 300 600 1000] [--queries 20]

Same synthetic pages and queries as bench/search.py; recall@10 against exhaustive MaxSim.
Writes bench/results/search-prefetch.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import write_result  # noqa: E402
from bench.search import build, open_backend, queries  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--limits", type=int, nargs="+", default=[100, 300, 600, 1000])
    ap.add_argument("--queries", type=int, default=20)
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        path = ROOT / "bench" / "work" / f"prefetch-{n}"
        shutil.rmtree(path, ignore_errors=True)
        build("edge", path, n)
        index = open_backend("edge", path)
        qs = queries(args.queries, n)
        exact = [[h.point_id for h in index.search(q, top_k=10, mode="exact")] for q in qs]
        for limit in args.limits:
            t = time.perf_counter()
            got = [
                [h.point_id for h in index.search(q, top_k=10, mode="rerank", prefetch_limit=limit)]
                for q in qs
            ]
            ms = (time.perf_counter() - t) / len(qs) * 1000
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact, strict=True)]))
            rows.append(
                {
                    "pages": n,
                    "prefetch_limit": limit,
                    "recall_at_10": round(recall, 3),
                    "mean_ms": round(ms, 1),
                }
            )
            print(rows[-1], file=sys.stderr, flush=True)
        index.close()
        shutil.rmtree(path, ignore_errors=True)
    print(write_result("search-prefetch", {"backend": "qdrant-edge", "queries": args.queries, "runs": rows}))


if __name__ == "__main__":
    main()
