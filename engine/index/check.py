"""Recall that measures itself: the production search plan against exhaustive MaxSim on the collection's own pages.

Every plan parameter (FDE candidates, block candidates) was tuned on synthetic vectors; real embeddings of a
user's documents may behave otherwise. ``check_index`` samples pseudo-queries from the collection itself — a
few patch tokens of stored pages, each moved by noise so that the query is not a copy of one page — runs the
production plan and exhaustive MaxSim (mode ``exact``) on the same queries, and reports recall@10 (the share
of the exhaustive top 10 the plan returns, a page scoring as high as the exhaustive 10th counting as found:
near-duplicate pages tie; the strict share of the same pages is reported beside it) and p50/p95 latency. With ``search=True`` it then tries candidate
limits from small to large (FDE_GRID x BLOCK_GRID, cheapest first by candidates scored) and reports the
smallest that reaches the target; the last candidate scores every page (recall 1 by construction), so a target
is always reachable, at a cost the report shows. ``apply`` records those limits in the collection; later
searches use them when no DOCVISION_PREFETCH_LIMIT / DOCVISION_BLOCK_LIMIT setting overrides them.

The queries come from the pages, not from real users: they say whether the plan's approximations hold on this
collection's vectors, not how relevant the answers are.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from engine.index.base import BLOCK_CANDIDATES, FDE_CANDIDATES, FDE_PLAN, ROWS_COLS_CANDIDATES, _unit

QUERY_TOKENS = 12  # tokens per pseudo-query (user queries embed to ~10-30 tokens)
NOISE = 0.5  # each token moved by Gaussian noise of this norm relative to the unit token, then renormalised
TOP_K = 10
FDE_GRID = (100, 200, 300, 500, 800, 1200, 2000, 4000)
BLOCK_GRID = (20, 40, 60, 120, 240, 480)


TIE = 1e-3  # relative: a hit whose MaxSim is within this of the exhaustive 10th score ties with the top 10


@dataclass
class PlanMeasure:
    prefetch_limit: int
    block_limit: int | None
    recall_at_10: float  # tie-aware: what the target is checked against
    p50_ms: float
    p95_ms: float
    id_recall_at_10: float = (
        0.0  # the exhaustive top 10's own pages found (pessimistic among near-duplicates)
    )


@dataclass
class CheckResult:
    backend: str
    collection: str
    pages: int
    queries: int
    target: float
    plan: str
    current: PlanMeasure
    exhaustive_p50_ms: float
    meets_target: bool
    recommended: PlanMeasure | None = None  # the smallest limits reaching the target (search=True)
    tried: list[PlanMeasure] = field(default_factory=list)
    applied: bool = False
    checked_at: float = field(default_factory=time.time)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pseudo_queries(pages: list[tuple[dict[str, Any], np.ndarray]], n: int, seed: int) -> list[np.ndarray]:
    """n queries of QUERY_TOKENS tokens, each from the patch tokens of one sampled page, moved by noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        payload, v = pages[i % len(pages)]
        rows, cols = payload.get("grid_rows"), payload.get("grid_cols")
        start = int(payload.get("patch_offset") or 0)
        stop = start + rows * cols if rows and cols else len(v)
        patches = v[start:stop] if stop > start else v
        picked = patches[rng.integers(0, len(patches), QUERY_TOKENS)]
        noise = rng.normal(size=picked.shape) / np.sqrt(picked.shape[1])
        out.append(_unit(picked + NOISE * noise))
    return out


def _measure(index: Any, qs: list[np.ndarray], exact: list[tuple[list[str], float]], prefetch: int,
             block: int | None, reps: int = 1) -> PlanMeasure:  # fmt: skip
    """Recall of the plan's top 10 against the exhaustive one. Tie-aware: the plan's last stage is MaxSim on the
    same stored multivectors as the exhaustive search, so a hit scoring at least the exhaustive 10th score
    (within TIE) is as good as the page it displaced; collections of near-duplicate pages (forms, templates,
    re-scans) otherwise count a different copy of the same page as a miss."""
    times, recalls, id_recalls = [], [], []
    for q, (want, tenth) in zip(qs, exact, strict=True):
        for _ in range(reps):
            t = time.perf_counter()
            got = index.search(q, top_k=TOP_K, mode="rerank", prefetch_limit=prefetch, block_limit=block)
            times.append(time.perf_counter() - t)
        n = max(1, len(want))
        id_recalls.append(len({h.point_id for h in got} & set(want)) / n)
        floor = tenth - TIE * max(abs(tenth), 1e-9)
        recalls.append(min(n, sum(1 for h in got if h.point_id in want or h.score >= floor)) / n)
    return PlanMeasure(prefetch, block, round(float(np.mean(recalls)), 4),
                       round(float(np.percentile(times, 50)) * 1000, 2),
                       round(float(np.percentile(times, 95)) * 1000, 2),
                       round(float(np.mean(id_recalls)), 4))  # fmt: skip


def candidates(plan: str, pages: int) -> list[tuple[int, int | None]]:
    """Limits to try, cheapest first (candidates scored by the expensive stages), ending with every page."""
    if plan != FDE_PLAN:
        grid: list[tuple[int, int | None]] = [(p, None) for p in FDE_GRID if p < pages]
        return [*grid, (max(pages, 1), None)]
    pairs = [(p, b) for p in FDE_GRID for b in BLOCK_GRID if b <= p and p < pages]
    pairs.sort(key=lambda pb: (pb[1] * 8 + pb[0], pb[0]))  # a block rerank costs ~8x an FDE candidate
    return [*pairs, (max(pages, 1), max(pages, 1))]


def check_index(index: Any, *, queries: int = 50, target: float = 0.95, search: bool = True,
                apply: bool = False, seed: int = 0, collection: str = "") -> CheckResult:  # fmt: skip
    """Measure the collection's plan (the limits searches use now) against exhaustive MaxSim; see the module."""
    started = time.monotonic()
    pages = index.count()
    if pages == 0:
        from engine.errors import NotFound

        raise NotFound("the collection holds no pages: ingest documents before checking its recall")
    sampled = index.sample_pages(min(queries, pages), seed=seed)
    qs = pseudo_queries(sampled, queries, seed)
    exact, exact_times = [], []
    for q in qs:
        t = time.perf_counter()
        hits = index.search(q, top_k=TOP_K, mode="exact")
        exact.append(([h.point_id for h in hits], hits[-1].score if hits else float("inf")))
        exact_times.append(time.perf_counter() - t)
    limits = index.search_limits()
    default = (FDE_CANDIDATES, BLOCK_CANDIDATES) if index.plan == FDE_PLAN else (ROWS_COLS_CANDIDATES, None)
    prefetch = limits.get("prefetch_limit") or default[0]
    block = limits.get("block_limit") or default[1]
    current = _measure(index, qs, exact, prefetch, block)
    result = CheckResult(
        backend=index.backend, collection=collection, pages=pages, queries=len(qs), target=target,
        plan=index.plan, current=current, meets_target=current.recall_at_10 >= target,
        exhaustive_p50_ms=round(float(np.percentile(exact_times, 50)) * 1000, 2),
    )  # fmt: skip
    if search:
        for p, b in candidates(index.plan, pages):
            m = _measure(index, qs, exact, p, b)
            result.tried.append(m)
            if m.recall_at_10 >= target:
                result.recommended = m
                break
    if apply and result.recommended is not None:
        index.set_search_limits(result.recommended.prefetch_limit, result.recommended.block_limit)
        result.applied = True
    result.seconds = round(time.monotonic() - started, 2)
    index.record_check(result.to_dict())
    return result
