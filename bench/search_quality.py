"""Which FDE and which patch blocks, by rank quality alone (no engine, no timing): numpy on the structured set.

    python bench/search_quality.py [--pages 10000] [--queries 40]   → bench/results/search-10k-quality.json

For the same pages and queries as bench/search.py: exact MaxSim (float32) is the truth; each candidate scorer
ranks every page, and "recall at N" is the share of the exact top 10 that the exact rerank of its N best pages
finds (what a plan stage that keeps N passes on). Scorers: FDE encodings of several sizes (engine/index/fde.py)
and MaxSim over the page pooled into blocks of several shapes (rows x columns of patches). Then the fde1 plan's
two stages in numpy: FDE top N -> blocks keep M -> exact. This chose the plan's parameters; timing is
bench/search.py --compare's job.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import write_result  # noqa: E402
from bench.search import GRID, OFFSET, page_vectors_structured, queries  # noqa: E402
from engine.index.fde import FDE  # noqa: E402

FDES = {"fde 2560 (10x16x16, the plan's)": FDE(10, 4, 16), "fde 10240 (20x32x16)": FDE(20, 5, 16)}
BLOCKS = [(2, 2), (2, 4), (4, 2), (3, 3), (4, 4)]
NS = [20, 40, 60, 100, 200, 300, 400]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def blocks(page: np.ndarray, bh: int, bw: int) -> np.ndarray:
    r, c = GRID
    g = np.pad(page[OFFSET:].reshape(r, c, -1), ((0, -r % bh), (0, -c % bw), (0, 0)))
    h, w, d = g.shape
    return unit(
        np.vstack([page[:OFFSET], g.reshape(h // bh, bh, w // bw, bw, d).sum(axis=(1, 3)).reshape(-1, d)])
    )


def maxsim(qs: np.ndarray, pages: np.ndarray) -> np.ndarray:
    """(queries, pages) MaxSim scores; pages (n, tokens, dim) of equal token counts."""
    out = np.empty((len(qs), len(pages)), np.float32)
    for s in range(0, len(pages), 500):
        chunk = pages[s : s + 500]
        sims = qs.reshape(-1, qs.shape[-1]) @ chunk.reshape(-1, chunk.shape[-1]).T
        out[:, s : s + 500] = sims.reshape(len(qs), qs.shape[1], len(chunk), -1).max(axis=-1).sum(axis=1)
    return out


def recall_at(scores: np.ndarray, exact: np.ndarray, n: int) -> float:
    truth = np.argsort(-exact, axis=1)[:, :10]
    got = []
    for qi in range(len(exact)):
        cand = np.argsort(-scores[qi])[:n]
        top = cand[np.argsort(-exact[qi, cand])[:10]]
        got.append(len(set(top) & set(truth[qi])) / 10)
    return round(float(np.mean(got)), 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=10000)
    ap.add_argument("--queries", type=int, default=40)
    args = ap.parse_args()
    t0 = time.time()
    pages = np.stack([page_vectors_structured(i) for i in range(args.pages)]).astype(np.float32)
    qs = np.stack(queries(args.queries, args.pages)).astype(np.float32)
    exact = maxsim(qs, pages)
    res: dict = {"pages": args.pages, "queries": args.queries, "data": "structured (bench/search.py)",
                 "truth": "exact MaxSim, float32", "loadavg_before": os.getloadavg(), "scorers": {}}  # fmt: skip
    for name, fde in FDES.items():
        enc = np.stack([fde.encode(p, query=False) for p in pages])
        scores = np.stack([fde.encode(q, query=True) for q in qs]) @ enc.T
        res["scorers"][name] = {f"recall_at_{n}": recall_at(scores, exact, n) for n in NS}
        if fde == FDE(10, 4, 16):
            fde_scores = scores
        print(name, res["scorers"][name], flush=True)
    block_scores = {}
    for bh, bw in BLOCKS:
        pooled = np.stack([blocks(p, bh, bw) for p in pages])
        block_scores[(bh, bw)] = scores = maxsim(qs, pooled)
        res["scorers"][f"blocks {bh}x{bw} ({pooled.shape[1]} vectors)"] = {
            f"recall_at_{n}": recall_at(scores, exact, n) for n in NS
        }
        print(bh, bw, res["scorers"][f"blocks {bh}x{bw} ({pooled.shape[1]} vectors)"], flush=True)
    res["two_stages"] = []
    for first in (200, 300, 400):
        for (bh, bw), bs in block_scores.items():
            for keep in (40, 60):
                staged = np.full_like(exact, -np.inf)
                for qi in range(len(qs)):
                    cand = np.argsort(-fde_scores[qi])[:first]
                    staged[qi, cand] = bs[qi, cand]
                res["two_stages"].append({"fde_candidates": first, "blocks": f"{bh}x{bw}", "block_limit": keep,
                                          "recall_at_10": recall_at(staged, exact, keep)})  # fmt: skip
    res["seconds"] = round(time.time() - t0, 1)
    res["loadavg_after"] = os.getloadavg()
    print(write_result(f"search-{args.pages // 1000}k-quality", res))


if __name__ == "__main__":
    main()
