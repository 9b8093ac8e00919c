"""engine index check on a built edge collection, written as a benchmark result (issue 24 items 3 and 4).

    python bench/index_check.py PATH_TO_EDGE_COLLECTION --model-id ID --dim D [--queries 50] [--name NAME]

Runs engine/index/check.py's check_index (pseudo-queries from the collection's own pages; the plan in use vs
exhaustive MaxSim; the smallest limits reaching the target, nothing applied) --reps times with different
seeds and writes every run to bench/results/<name>.json. bench/search_hybrid.py leaves its padded 10k-page
collection (tiny-model vectors of rendered real pages + noisy copies) for this.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--model-id", required=True)
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--data", default="", help="what the collection holds (recorded)")
    ap.add_argument("--name", default="index-check")
    args = ap.parse_args()
    from engine.index.check import NOISE, QUERY_TOKENS, check_index
    from engine.index.edge import EdgeIndex

    index = EdgeIndex(args.path, model_id=args.model_id, dim=args.dim)
    runs = []
    for seed in range(args.reps):
        r = check_index(index, queries=args.queries, target=args.target, seed=seed)
        runs.append(r.to_dict())
        print(r.current, r.recommended, file=sys.stderr, flush=True)
        write_result(args.name, {"data": args.data, "pseudo_queries": f"{QUERY_TOKENS} patch tokens of a sampled page "
                                 f"+ noise {NOISE}", "nice": os.nice(0), "runs": runs})  # fmt: skip
    index.close()


if __name__ == "__main__":
    main()
