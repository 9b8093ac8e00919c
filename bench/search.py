"""Search benchmark: embedded backends on synthetic collections of realistic shape.

    python bench/search.py [--sizes 1000 10000] [--backends edge local] [--data structured unstructured]

Pages are 750 × 128 multivectors (744 patches in a 31×24 grid + 6 prompt tokens, as a letter page at
ColQwen2's default resolution) stored as float16. Two data sets (no trained model is available here):
`structured` — spatially coherent pages over a shared topic vocabulary, the properties of real ColPali
patch embeddings that row/column pooling relies on; `unstructured` — a worst case where every page's
tokens are private and scattered. For each data set, backend and size, in fresh processes: upsert
pages/s, optimize (HNSW build) time and the cost of keeping it current for one more document, reopen
time, p50/p95 of dense (one mean vector), exhaustive MaxSim, and prefetch (pooled rows/cols, HNSW) +
MaxSim rerank at several prefetch limits, recall@10 against exhaustive, disk and RSS per page.
Writes bench/results/search.json (after every run, so a cut-short run keeps what it measured).

    python bench/search.py --plans [--sizes 10000] [--reps 3]

compares the rerank plans on ONE built edge collection and the same queries: `today` (Qdrant's prefetch +
MaxSim rerank inside the shard) against `side` (the same prefetch, MaxSim by one BLAS GEMM over the float16
side store, engine/index/sidestore.py), each at several prefetch limits, alternated query by query, >= 3
repetitions of the query set; and reopen with the full multivector held in RAM (today's placement) against
read on demand + side store (the new one), alternated in fresh processes. Writes bench/results/<name>.json
(default search-<n>-plans).

    python bench/search.py --compare [--sizes 10000] [--reps 3] [--variants rows-cols:100 fde1:400:60 ...]

builds two edge collections of the same pages, one for the rows-cols plan (every collection built before the
FDE plan) and one for the fde1 plan (FDE vector -> MaxSim on 2x4 patch blocks -> full MaxSim), opens both
in one process and alternates `plan:prefetch_limit[:block_limit]` variants query by query, >= 3 repetitions;
reopen of each in fresh processes, alternated. Writes bench/results/search-<n>-fde.json.

    python bench/search.py --pool-factor 3 --sizes 2000 --variants today:100 today:200 today:200:k4

builds the same pages unpooled and hierarchically pooled at index time (DOCVISION_TOKEN_POOL_FACTOR) and
compares storage, and Qdrant's rerank on both (alternated), recall against exhaustive MaxSim over the
unpooled pages. Writes bench/results/search-<n>-pooling.json.

    python bench/search.py --scale [--sizes 10000 50000 100000] ...

is bench/search_scale.py: one edge collection grown in stages, memory-bounded (see there).
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
VOCAB = 400  # corpus-wide "topics" (what a text line, table or figure is about)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


_G = np.random.default_rng(12345)
TOPICS = _G.normal(size=(VOCAB, DIM))
BACKGROUND = _G.normal(size=DIM)  # blank paper: the same few patch embeddings on every page
PROMPT = _G.normal(size=(OFFSET, DIM))  # the processor's prompt tokens, identical on every page
POPULARITY = 1 / np.arange(1, VOCAB + 1) ** 0.8  # some topics (letterheads, "total") are everywhere
POPULARITY /= POPULARITY.sum()


def page_vectors_unstructured(i: int) -> np.ndarray:
    """Worst case: 8 topics private to the page, scattered over the grid with no spatial coherence."""
    rng = np.random.default_rng(i)
    topic = rng.normal(size=(8, DIM))
    return unit(topic[rng.integers(0, 8, TOKENS)] + 0.8 * rng.normal(size=(TOKENS, DIM)))


def page_layout(i: int) -> np.ndarray:
    """(rows, cols) topic ids of page i; -1 = blank. Bands of 2–5 patch rows (text blocks, tables, figures),
    a third of them split into two columns, a third blank; topics drawn from the corpus vocabulary."""
    rng = np.random.default_rng(i)
    own = rng.choice(VOCAB, size=6, replace=False, p=POPULARITY)
    layout = np.full(GRID, -1)
    r = 0
    while r < GRID[0]:
        h = int(rng.integers(2, 6))
        kind = rng.random()
        if kind < 0.33:
            pass  # blank band
        elif kind < 0.55:
            split = int(rng.integers(8, 17))
            layout[r : r + h, :split], layout[r : r + h, split:] = rng.choice(own, 2, replace=False)
        else:
            layout[r : r + h, :] = rng.choice(own)
        r += h
    return layout


def page_vectors_structured(i: int) -> np.ndarray:
    """Spatially coherent pages over a shared vocabulary: what real ColPali patch embeddings look like
    (neighbouring patches of one text line or table are alike; corpora repeat layouts and topics)."""
    rng = np.random.default_rng(i)
    layout = page_layout(i).reshape(-1)
    base = np.where(layout[:, None] >= 0, TOPICS[np.maximum(layout, 0)], BACKGROUND)
    noise = np.where(layout[:, None] >= 0, 0.8, 0.4)
    patches = base + noise * rng.normal(size=base.shape)
    prompt = PROMPT + 0.1 * rng.normal(size=PROMPT.shape)
    return unit(np.vstack([prompt, patches]))


DATASETS = {"structured": page_vectors_structured, "unstructured": page_vectors_unstructured}
page_vectors = page_vectors_structured


def queries(n: int, pages: int, data: str = "structured") -> list[np.ndarray]:
    """20-token queries about a random target page: tokens near 2 of its topics (structured), or its patches
    plus noise (unstructured)."""
    rng = np.random.default_rng(10_000_000)
    out = []
    for _ in range(n):
        target = int(rng.integers(0, pages))
        if data == "structured":
            present = np.unique(page_layout(target))
            present = present[present >= 0]
            about = rng.choice(present, size=min(2, len(present)), replace=False)
            toks = TOPICS[rng.choice(about, 20)] + 0.8 * rng.normal(size=(20, DIM))
        else:
            picked = page_vectors_unstructured(target)[rng.integers(OFFSET, TOKENS, 20)]
            toks = picked + 0.6 * rng.normal(size=picked.shape)
        out.append(unit(toks))
    return out


def open_backend(backend: str, path: Path):
    from engine.config import Settings
    from engine.index import open_index

    return open_index("bench-model", DIM, Settings(index_backend=backend, index_path=path))


def records(gen, start: int, stop: int, doc_prefix: str = "doc"):
    from engine.index import PageRecord

    return [
        PageRecord(f"{doc_prefix}{i // 20:06d}", i % 20 + 1, 20, gen(i), GRID, OFFSET, "bench-model")
        for i in range(start, stop)
    ]


def build(backend: str, path: Path, n: int, data: str, plan: str | None = None) -> dict:
    """Upsert n pages, then optimize. `plan` (edge only): build a collection for that rerank plan rather than
    the default one (the rows-cols plan is what collections built before the FDE plan hold)."""
    gen = DATASETS[data]
    if plan is not None:
        from engine.index.edge import EdgeIndex

        index = EdgeIndex(edge_path(path), model_id="bench-model", dim=DIM, plan=plan)
    else:
        index = open_backend(backend, path)
    t = time.perf_counter()
    for start in range(0, n, 64):
        index.upsert(records(gen, start, min(n, start + 64)))
    upsert = time.perf_counter() - t
    t = time.perf_counter()
    index.optimize()
    optimize = time.perf_counter() - t
    # one more 20-page document afterwards: what each later ingest pays for keeping the graphs current
    t = time.perf_counter()
    index.upsert(records(gen, n, n + 20, doc_prefix="late"))
    index.optimize()
    incremental = time.perf_counter() - t
    index.close()
    return {
        "upsert_seconds": round(upsert, 1),
        "upsert_pages_per_s": round(n / upsert, 1),
        "optimize_seconds": round(optimize, 1),
        "incremental_20_pages_upsert_and_optimize_seconds": round(incremental, 2),
        "build_peak_rss_mb": round(peak_rss_mb()),
    }


def timed_search(index, qs, **kw) -> tuple[list[list[str]], float, float]:
    index.search(qs[0], top_k=10, **kw)  # warm-up
    times, tops = [], []
    for q in qs:
        t = time.perf_counter()
        hits = index.search(q, top_k=10, **kw)
        times.append(time.perf_counter() - t)
        tops.append([h.point_id for h in hits])
    return tops, float(np.percentile(times, 50)) * 1000, float(np.percentile(times, 95)) * 1000


def alternate(variants: list, qs: list, reps: int, search, key, prepare=None) -> tuple[dict, dict]:
    """Warm each variant up once, then run every variant on every query in a rotating order, `reps` times over
    the query set. `search(v, q)` returns hits; `prepare(v)` (outside the timer) switches to a variant.
    Returns ({key(v): [[seconds per query] per repetition]}, {key(v): [top point ids per query]})."""
    for v in variants:  # warm-up: page in what each variant touches
        if prepare:
            prepare(v)
        search(v, qs[0])
    times: dict = {key(v): [[] for _ in range(reps)] for v in variants}
    tops: dict = {key(v): [None] * len(qs) for v in variants}
    for rep in range(reps):
        for i, q in enumerate(qs):
            k = (rep * len(qs) + i) % len(variants)
            for v in variants[k:] + variants[:k]:
                if prepare:
                    prepare(v)
                t = time.perf_counter()
                hits = search(v, q)
                times[key(v)][rep].append(time.perf_counter() - t)
                tops[key(v)][i] = [h.point_id for h in hits]
    return times, tops


def recall(got: list[list[str]], exact: list[list[str]]) -> float:
    return round(float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact, strict=True)])), 3)


def measure(backend: str, path: Path, n: int, n_queries: int, data: str, limits: list[int]) -> dict:
    rss0 = peak_rss_mb()
    t = time.perf_counter()
    index = open_backend(backend, path)
    reopen = time.perf_counter() - t
    rss_open = peak_rss_mb()
    qs = queries(n_queries, n, data)
    res: dict = {
        "reopen_seconds": round(reopen, 2),
        "rss_after_open_mb": round(rss_open),
        "rss_per_page_kb": round((rss_open - rss0) * 1024 / n, 1),
    }
    exact, res["exact_p50_ms"], res["exact_p95_ms"] = timed_search(index, qs, mode="exact")
    dense, res["dense_p50_ms"], res["dense_p95_ms"] = timed_search(index, qs, mode="dense")
    res["dense_recall_at_10"] = recall(dense, exact)
    res["rerank"] = []
    for limit in limits:
        got, p50, p95 = timed_search(index, qs, mode="rerank", prefetch_limit=limit)
        res["rerank"].append(
            {"prefetch_limit": limit, "p50_ms": round(p50, 1), "p95_ms": round(p95, 1), "recall_at_10": recall(got, exact)}
        )  # fmt: skip
    for k in ("exact_p50_ms", "exact_p95_ms", "dense_p50_ms", "dense_p95_ms"):
        res[k] = round(res[k], 1)
    res["segments_indexed_vectors"] = index.info().get("indexed_vectors")
    res["peak_rss_mb"] = round(peak_rss_mb())
    index.close()
    return res


def edge_path(path: Path) -> Path:
    return path / "pages" / "edge"  # where open_index puts the edge collection under index_path


def reopen_worker(path: Path, plan: str, n: int) -> dict:
    """Fresh process: set the full multivector's placement for `plan`, then time opening the index and its
    first query (what a cold Lambda pays before answering)."""
    import qdrant_edge as qe
    import torch  # noqa: F401  # already loaded in the search service (its query embedder); not part of reopen

    from engine.index.edge import EdgeIndex

    today = plan == "today"
    qe.EdgeShard.load(str(edge_path(path) / "shard"), EdgeIndex._config(DIM, True, full_in_ram=today)).close()
    rss0 = peak_rss_mb()
    t = time.perf_counter()
    index = EdgeIndex(
        edge_path(path), model_id="bench-model", dim=DIM, side_store=None if today else "float16"
    )
    reopen = time.perf_counter() - t
    q = queries(1, n)[0]
    t = time.perf_counter()
    index.search(q, top_k=10, prefetch_limit=100)
    first = time.perf_counter() - t
    out = {"plan": plan, "reopen_seconds": round(reopen, 3), "first_query_ms": round(first * 1000, 1),
           "rss_after_open_mb": round(peak_rss_mb()), "rss_open_delta_mb": round(peak_rss_mb() - rss0)}  # fmt: skip
    index.close()
    return out


PLAN_NAMES = ("rows-cols", "fde1")


def compare_worker(path: Path, n: int, n_queries: int, reps: int, specs: list[str]) -> dict:
    """One process, the rows-cols collection and the fde1 collection of the same pages, the same queries:
    exhaustive MaxSim once (ground truth; the full multivectors are the same in both), then every variant
    `plan:prefetch_limit[:block_limit]` on every query in turn (rotating the order), `reps` times."""
    from engine.index.edge import EdgeIndex

    idx = {p: EdgeIndex(edge_path(path / p), model_id="bench-model", dim=DIM) for p in PLAN_NAMES}
    assert {p: i.plan for p, i in idx.items()} == {p: p for p in PLAN_NAMES}
    qs = queries(n_queries, n)
    exact, exact_p50, exact_p95 = timed_search(idx["fde1"], qs, mode="exact")
    variants = []
    for spec in specs:
        plan, limit, *block = spec.split(":")
        if plan not in PLAN_NAMES or (block and plan != "fde1"):
            raise SystemExit(f"bad variant {spec!r}: plan:prefetch_limit[:block_limit], plan in {PLAN_NAMES}")
        variants.append({"spec": spec, "plan": plan, "kw": {"prefetch_limit": int(limit),
                         "block_limit": int(block[0]) if block else None}})  # fmt: skip
    times, tops = alternate(variants, qs, reps, lambda v, q: idx[v["plan"]].search(q, top_k=10, **v["kw"]),
                            key=lambda v: v["spec"])  # fmt: skip
    rows = []
    for v in variants:
        per_rep = times[v["spec"]]
        p50s = [float(np.percentile(r, 50)) * 1000 for r in per_rep]
        p95s = [float(np.percentile(r, 95)) * 1000 for r in per_rep]
        rows.append({
            "variant": v["spec"], "plan": v["plan"], **v["kw"],
            "p50_ms": round(float(np.median(p50s)), 1), "p95_ms": round(float(np.median(p95s)), 1),
            "p50_ms_per_rep": [round(x, 1) for x in p50s], "p95_ms_per_rep": [round(x, 1) for x in p95s],
            "p50_all_reps_ms": round(float(np.percentile(sum(per_rep, []), 50)) * 1000, 1),
            "recall_at_10": recall(tops[v["spec"]], exact),
        })  # fmt: skip
    out = {"exact_p50_ms": round(exact_p50, 1), "exact_p95_ms": round(exact_p95, 1), "variants": rows,
           "info": {p: i.info() for p, i in idx.items()}, "peak_rss_mb": round(peak_rss_mb())}  # fmt: skip
    for index in idx.values():
        index.close()
    return out


def reopen_plan_worker(path: Path, n: int) -> dict:
    """Fresh process: open one collection and answer its first query with its default plan."""
    import torch  # noqa: F401  # already loaded in the search service (its query embedder); not part of reopen

    from engine.index.edge import EdgeIndex

    rss0 = peak_rss_mb()
    t = time.perf_counter()
    index = EdgeIndex(edge_path(path), model_id="bench-model", dim=DIM)
    reopen = time.perf_counter() - t
    t = time.perf_counter()
    index.search(queries(1, n)[0], top_k=10)
    first = time.perf_counter() - t
    out = {"plan": index.plan, "reopen_seconds": round(reopen, 3), "first_query_ms": round(first * 1000, 1),
           "rss_open_delta_mb": round(peak_rss_mb() - rss0)}  # fmt: skip
    index.close()
    return out


def compare_main(args) -> None:
    n = args.sizes[0]
    size = f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)
    name = args.name if args.name != "search" else f"search-{size}-fde"
    path = ROOT / "bench" / "work" / "search" / f"compare-edge-{n}-structured"
    res: dict = {
        "pages": n, "data": "structured", "backend": "edge (qdrant-edge, the default embedded engine)",
        "queries": f"{args.queries} per repetition, top_k=10, recall@10 against exhaustive MaxSim (Qdrant, full "
                   "multivectors) on the same pages",
        "plans": {
            "rows-cols": "today's plan (and that of every collection built before fde1): HNSW prefetch on row- and "
                         "column-pooled multivectors (prefetch_limit each) -> MaxSim on the full multivector, "
                         "all inside the shard",
            "fde1": "one 2560-d FDE vector per page (MUVERA: 10 reps x 16 SimHash buckets x 16 dims; "
                    "engine/index/fde.py) scanned exactly (<= 20k pages; HNSW above), prefetch_limit candidates "
                    "-> MaxSim on the page's 2x4 patch blocks (96 + 6 vectors) keeps block_limit -> MaxSim on the "
                    "full multivector (Cold placement: read on demand); one nested Qdrant query inside the shard",
        },
        "alternation": f"both collections open in one process; each query runs every variant in a rotating order; "
                       f"{args.reps} repetitions of the query set",
        "loadavg_before": os.getloadavg(), "cpus": len(os.sched_getaffinity(0)), "builds": {}, "disk": {},
    }  # fmt: skip
    for plan in PLAN_NAMES:
        sub = path / plan
        if not (args.reuse and (edge_path(sub) / "docvision-collection.json").exists()):
            shutil.rmtree(sub, ignore_errors=True)
            res["builds"][plan] = run_worker(
                ["--worker", f"build-{plan}", "edge", str(sub), str(n), "structured"]
            )
            print(plan, res["builds"][plan], file=sys.stderr, flush=True)
        else:
            res["builds"][plan] = "reused an earlier build of the same code (--reuse)"
        shard = sum(x.stat().st_size for x in (edge_path(sub) / "shard").rglob("*") if x.is_file())
        res["disk"][plan] = {"shard_mb": round(shard / 2**20, 1), "kb_per_page": round(shard / 1024 / n, 1)}
    if args.build_only:
        print(write_result(name + "-build", res))
        return
    res["reopen"] = []
    for rep in range(args.reps):
        for plan in PLAN_NAMES if rep % 2 == 0 else PLAN_NAMES[::-1]:
            res["reopen"].append(
                run_worker(["--worker", "reopen-plan", "edge", str(path / plan), str(n), "structured"])
            )
            print(res["reopen"][-1], file=sys.stderr, flush=True)
    for plan in PLAN_NAMES:
        vals = [r["reopen_seconds"] for r in res["reopen"] if r["plan"] == plan]
        res[f"reopen_{plan}_median_s"], res[f"reopen_{plan}_spread_s"] = (
            round(float(np.median(vals)), 3), [min(vals), max(vals)])  # fmt: skip
    res.update(run_worker(["--worker", "compare", "edge", str(path), str(n), "structured", "--queries",
                           str(args.queries), "--reps", str(args.reps), "--variants", *args.variants]))  # fmt: skip
    res["loadavg_after"] = os.getloadavg()
    print(write_result(name, res))
    if not args.keep:
        shutil.rmtree(path, ignore_errors=True)


def parse_variant(spec: str) -> dict:
    """`plan:limit[:kN][:fpKxM]` - plan today|side16|side32, prefetch limit, prefetch query reduced to N token
    centroids, rerank first pass with K centroids keeping the M best for the full query."""
    plan, limit, *rest = spec.split(":")
    v = {"spec": spec, "plan": plan, "limit": int(limit), "k": None, "first_pass": None}
    for part in rest:
        if part.startswith("k"):
            v["k"] = int(part[1:])
        elif part.startswith("fp"):
            a, b = part[2:].split("x")
            v["first_pass"] = (int(a), int(b))
    if plan not in ("today", "side16", "side32") or (plan == "today" and v["first_pass"]):
        raise SystemExit(f"bad variant {spec!r}")
    return v


def plans_worker(path: Path, n: int, n_queries: int, reps: int, specs: list[str]) -> dict:
    """One process, one collection, the same queries: exhaustive MaxSim once (ground truth), then every
    variant on every query in turn (rotating the order), `reps` times over the query set."""
    from engine.index.edge import EdgeIndex
    from engine.index.sidestore import HEADER, SideStore

    index = EdgeIndex(edge_path(path), model_id="bench-model", dim=DIM, side_store="float16")
    stores = {"side16": index.side}
    variants = [parse_variant(x) for x in specs]
    if any(v["plan"] == "side32" for v in variants):
        # the float32 store of the same rows (same id and row numbers): what a DOCVISION_SIDE_STORE=float32
        # collection holds (float16-rounded values, as Qdrant's float16 storage scores them too)
        src = index.side
        assert src is not None
        f32 = src.path.with_suffix(".f32")
        with src.path.open("rb") as fin, f32.open("wb") as fout:
            head = bytearray(fin.read(HEADER))
            head[28] = 4
            fout.write(bytes(head))
            while chunk := fin.read(2 * DIM * 100_000):
                fout.write(np.frombuffer(chunk, dtype=np.float16).astype(np.float32).tobytes())
        stores["side32"] = SideStore(edge_path(path), DIM, "float32")
        assert stores["side32"].store_id == src.store_id
    qs = queries(n_queries, n)
    exact, exact_p50, exact_p95 = timed_search(index, qs, mode="exact")

    def use(v: dict) -> None:
        index.rerank_in_process = v["plan"] != "today"
        index.side = stores.get(v["plan"], index.side)
        index.prefetch_query_tokens = v["k"]
        index.rerank_first_pass = v["first_pass"]

    def search(v: dict, q: np.ndarray) -> list:
        hits = index.search(q, top_k=10, prefetch_limit=v["limit"])
        if index.last_plan != ("qdrant" if v["plan"] == "today" else "side"):
            raise RuntimeError(f"{v} was answered by the {index.last_plan} plan")
        return hits

    times, tops = alternate(variants, qs, reps, search, key=lambda v: v["spec"], prepare=use)
    rows = []
    for v in variants:
        plan, limit, spec, base = v["plan"], v["limit"], v["spec"], f"today:{v['limit']}"
        per_rep = times[spec]
        p50s = [float(np.percentile(r, 50)) * 1000 for r in per_rep]
        p95s = [float(np.percentile(r, 95)) * 1000 for r in per_rep]
        same = ([h == g for h, g in zip(tops[spec], tops[base], strict=True)]
                if base in tops else None)  # fmt: skip
        rows.append({
            "variant": spec, "plan": plan, "prefetch_limit": limit, "prefetch_query_tokens": v["k"] or "all",
            "rerank_first_pass_tokens_keep": v["first_pass"],
            "p50_ms": round(float(np.median(p50s)), 1), "p95_ms": round(float(np.median(p95s)), 1),
            "p50_ms_per_rep": [round(x, 1) for x in p50s], "p95_ms_per_rep": [round(x, 1) for x in p95s],
            "p50_spread_ms": round(max(p50s) - min(p50s), 1),
            "p50_all_reps_ms": round(float(np.percentile(sum(per_rep, []), 50)) * 1000, 1),
            "recall_at_10": recall(tops[spec], exact),
            "same_top10_as_today_same_limit": None if same is None else round(float(np.mean(same)), 3),
        })  # fmt: skip
    out = {"exact_p50_ms": round(exact_p50, 1), "exact_p95_ms": round(exact_p95, 1), "variants": rows,
           "info": index.info(), "peak_rss_mb": round(peak_rss_mb())}  # fmt: skip
    index.close()
    return out


def pooling_worker(path: Path, n: int, n_queries: int, reps: int, factor: int, specs: list[str]) -> dict:
    """One process, the unpooled and the pooled collection of the same pages, the same queries: recall of each
    against exhaustive MaxSim over the UNPOOLED pages, Qdrant's rerank plan alternated query by query."""
    from engine.index.edge import EdgeIndex

    idx = {f: EdgeIndex(edge_path(path / f"pool{f}"), model_id="bench-model", dim=DIM, token_pool_factor=f)
           for f in (1, factor)}  # fmt: skip
    qs = queries(n_queries, n)
    exact, exact_p50, _ = timed_search(idx[1], qs, mode="exact")
    pooled_exact, pooled_exact_p50, _ = timed_search(idx[factor], qs, mode="exact")
    variants = [(f, parse_variant(spec)) for f in (1, factor) for spec in specs]

    def prepare(fv: tuple) -> None:
        idx[fv[0]].prefetch_query_tokens = fv[1]["k"]

    times, tops = alternate(
        variants, qs, reps, lambda fv, q: idx[fv[0]].search(q, top_k=10, prefetch_limit=fv[1]["limit"]),
        key=lambda fv: (fv[0], fv[1]["spec"]), prepare=prepare,
    )  # fmt: skip
    rows = []
    for f, v in variants:
        p50s = [float(np.percentile(r, 50)) * 1000 for r in times[(f, v["spec"])]]
        rows.append({"token_pool_factor": f, "variant": v["spec"], "p50_ms": round(float(np.median(p50s)), 1),
                     "p50_ms_per_rep": [round(x, 1) for x in p50s],
                     "p95_ms": round(float(np.percentile(sum(times[(f, v["spec"])], []), 95)) * 1000, 1),
                     "recall_at_10_vs_unpooled_exhaustive": recall(tops[(f, v["spec"])], exact)})  # fmt: skip
    for index in idx.values():
        index.close()
    return {"exact_unpooled_p50_ms": round(exact_p50, 1), "exact_pooled_p50_ms": round(pooled_exact_p50, 1),
            "pooled_exhaustive_recall_at_10_vs_unpooled": recall(pooled_exact, exact), "variants": rows}  # fmt: skip


def pooling_main(args) -> None:
    n, factor = args.sizes[0], args.pool_factor
    size = f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)
    name = args.name if args.name != "search" else f"search-{size}-pooling"
    path = ROOT / "bench" / "work" / "search" / f"pooling-edge-{n}-structured"
    res: dict = {"pages": n, "data": "structured", "backend": "edge (Qdrant's rerank plan)", "token_pool_factor": factor,
                 "pooling": "colpali-engine HierarchicalTokenPooler at index time on the full multivector (Ward "
                            "clustering into n // factor clusters, normalised means); rows/cols/mean unpooled",
                 "queries": f"{args.queries} x {args.reps} repetitions, alternated query by query across both "
                            "collections; recall@10 against exhaustive MaxSim over the UNPOOLED pages",
                 "loadavg_before": os.getloadavg(), "cpus": len(os.sched_getaffinity(0)), "builds": {}, "disk": {}}  # fmt: skip
    for f in (1, factor):
        sub = path / f"pool{f}"
        if not (args.reuse and (edge_path(sub) / "docvision-collection.json").exists()):
            shutil.rmtree(sub, ignore_errors=True)
            res["builds"][f] = run_worker(
                ["--worker", "build", "edge", str(sub), str(n), "structured"],
                {"DOCVISION_TOKEN_POOL_FACTOR": str(f)},
            )
            print(f, res["builds"][f], file=sys.stderr, flush=True)
        shard = sum(x.stat().st_size for x in (edge_path(sub) / "shard").rglob("*") if x.is_file())
        res["disk"][f] = {"shard_mb": round(shard / 2**20, 1), "kb_per_page": round(shard / 1024 / n, 1)}
    res.update(run_worker(["--worker", "pooling", "edge", str(path), str(n), "structured", "--queries",
                           str(args.queries), "--reps", str(args.reps), "--pool-factor", str(factor),
                           "--variants", *args.variants]))  # fmt: skip
    res["loadavg_after"] = os.getloadavg()
    print(write_result(name, res))
    if not args.keep:
        shutil.rmtree(path, ignore_errors=True)


def run_worker(args: list[str], env: dict | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"worker {args[:3]} failed: {proc.stderr[-1500:]}")
    return json.loads(line[7:])


def plans_main(args) -> None:
    n = args.sizes[0]
    name = args.name if args.name != "search" else f"search-{n // 1000}k-plans"
    work = ROOT / "bench" / "work" / "search"
    path = work / f"plans-edge-{n}-structured"
    res: dict = {
        "pages": n, "data": "structured", "backend": "edge (qdrant-edge, the default embedded engine)",
        "queries": f"{args.queries} per repetition, top_k=10, recall@10 against exhaustive MaxSim (Qdrant, full "
                   "multivectors) on the same collection",
        "plans": {
            "today": "Qdrant query: HNSW prefetch on row- and column-pooled vectors (prefetch_limit each) -> "
                     "MaxSim rerank inside the shard on the full multivector",
            "side16": "the same two HNSW prefetches (one query_batch, ids + side-store pointers) -> MaxSim in "
                      "process: float16 side-store rows gathered, cast to float32 (torch), one GEMM (numpy/OpenBLAS), "
                      "per-page max (reduceat)",
            "side32": "as side16 over a float32 side store (no cast; twice the disk)",
            "prefetch_query_tokens": "k: the prefetch's query reduced to k token centroids; the rerank uses every "
                                     "query token",
        },
        "alternation": f"each query runs every variant in a rotating order; {args.reps} repetitions of the query set",
        "loadavg_before": os.getloadavg(), "cpus": len(os.sched_getaffinity(0)),
    }  # fmt: skip
    if not (edge_path(path) / "docvision-collection.json").exists() or not args.reuse:
        shutil.rmtree(path, ignore_errors=True)
        # the side store is off by default: this build writes it (float16) so that both plans can run
        res["build"] = run_worker(
            ["--worker", "build", "edge", str(path), str(n), "structured"],
            {"DOCVISION_SIDE_STORE": "float16"},
        )
        print("build", res["build"], file=sys.stderr, flush=True)
    else:
        res["build"] = "reused an earlier build of the same code (--reuse)"
    if args.build_only:
        print(write_result(name + "-build", res))
        return
    res["disk_mb"] = {
        "total": round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1),
        "side_store": round((edge_path(path) / "fullvec.f16").stat().st_size / 2**20, 1),
    }
    res["reopen"] = []
    for rep in range(args.reps):
        for plan in ("today", "side") if rep % 2 == 0 else ("side", "today"):
            res["reopen"].append(
                run_worker(["--worker", f"reopen-{plan}", "edge", str(path), str(n), "structured"])
            )
            print(res["reopen"][-1], file=sys.stderr, flush=True)
    for plan in ("today", "side"):
        vals = [r["reopen_seconds"] for r in res["reopen"] if r["plan"] == plan]
        res[f"reopen_{plan}_median_s"], res[f"reopen_{plan}_spread_s"] = (
            round(float(np.median(vals)), 3), [min(vals), max(vals)])  # fmt: skip
    write_result(name, res)
    res.update(run_worker(["--worker", "plans", "edge", str(path), str(n), "structured", "--queries",
                           str(args.queries), "--reps", str(args.reps), "--variants", *args.variants]))  # fmt: skip
    res["loadavg_after"] = os.getloadavg()
    print(write_result(name, res))
    if not args.keep:
        shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    if "--scale" in sys.argv[1:]:  # the staged scale benchmark (bench/search_scale.py), same arguments
        from bench.search_scale import main as scale_main

        scale_main([a for a in sys.argv[1:] if a != "--scale"])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--backends", nargs="+", default=["edge", "local"])
    ap.add_argument("--data", nargs="+", default=["structured", "unstructured"], choices=list(DATASETS))
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--limits", type=int, nargs="+", default=[50, 100, 200, 400])
    ap.add_argument(
        "--max-local", type=int, default=1000, help="largest size tried with qdrant-client local mode"
    )
    ap.add_argument("--name", default="search", help="result file name under bench/results/")
    ap.add_argument("--plans", action="store_true", help="compare today's rerank plan with the side store")
    ap.add_argument("--compare", action="store_true",
                    help="compare the rows-cols and fde1 rerank plans (two collections of the same pages); "
                         "--variants plan:prefetch_limit[:block_limit]")  # fmt: skip
    ap.add_argument("--variants", nargs="+", default=["today:100", "today:200", "side16:100", "side16:200",
                    "side32:100", "side32:200", "side32:200:k4", "side32:200:k4:fp4x60"],
                    help="--plans: plan:limit[:kN][:fpKxM] (see parse_variant)")  # fmt: skip
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--pool-factor", type=int, default=1, help="> 1: compare an unpooled and a pooled collection"
    )
    ap.add_argument(
        "--reuse", action="store_true", help="--plans: reuse a kept build (--keep) of the same code"
    )
    ap.add_argument("--keep", action="store_true", help="--plans: keep the built collection for --reuse")
    ap.add_argument("--build-only", action="store_true", help="--plans: build (and --keep) only")
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        phase, backend, path, n, data = args.worker
        if phase == "build":
            out = build(backend, Path(path), int(n), data)
        elif phase.startswith("build-"):
            out = build(backend, Path(path), int(n), data, plan=phase.split("-", 1)[1])
        elif phase == "reopen-plan":
            out = reopen_plan_worker(Path(path), int(n))
        elif phase == "compare":
            out = compare_worker(Path(path), int(n), args.queries, args.reps, args.variants)
        elif phase.startswith("reopen-"):
            out = reopen_worker(Path(path), phase.split("-", 1)[1], int(n))
        elif phase == "pooling":
            out = pooling_worker(Path(path), int(n), args.queries, args.reps, args.pool_factor, args.variants)
        elif phase == "plans":
            out = plans_worker(Path(path), int(n), args.queries, args.reps, args.variants)
        else:
            out = measure(backend, Path(path), int(n), args.queries, data, args.limits)
        print("RESULT " + json.dumps(out))
        return
    if args.compare:
        compare_main(args)
        return
    if args.plans:
        plans_main(args)
        return
    if args.pool_factor > 1:
        pooling_main(args)
        return
    work = ROOT / "bench" / "work" / "search"
    runs = []
    for data in args.data:
        for backend in args.backends:
            for n in args.sizes:
                row: dict = {"data": data, "backend": backend, "pages": n}
                if backend == "local" and n > args.max_local:
                    row["skipped"] = (
                        "qdrant-client local mode keeps every vector in Python objects and reloads them all on "
                        f"open; above {args.max_local} pages it exceeds this machine's time/memory budget "
                        f"(see the {args.max_local}-page row)"
                    )
                    runs.append(row)
                    continue
                path = work / f"{backend}-{n}-{data}"
                shutil.rmtree(path, ignore_errors=True)
                for phase in ("build", "measure"):
                    cmd = [sys.executable, __file__, "--worker", phase, backend, str(path), str(n), data,
                           "--queries", str(args.queries), "--limits", *map(str, args.limits)]  # fmt: skip
                    proc = subprocess.run(cmd, capture_output=True, text=True)
                    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
                    if line is None:
                        row["error"] = proc.stderr[-500:]
                        break
                    row.update(json.loads(line[7:]))
                row["disk_mb"] = round(
                    sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1
                )
                row["disk_kb_per_page"] = round(row["disk_mb"] * 1024 / n, 1)
                print(row, file=sys.stderr, flush=True)
                runs.append(row)
                shutil.rmtree(path, ignore_errors=True)
                write_result(args.name, payload(args, runs))
    print(write_result(args.name, payload(args, runs)))


def payload(args, runs: list[dict]) -> dict:
    return {
        "page_shape": f"{TOKENS} x {DIM} (grid {GRID[0]}x{GRID[1]} + {OFFSET} prompt tokens), float16 storage for the full multivector",
        "data": {
            "structured": "bands of 2-5 patch rows (some split in two columns, a third blank) over a 400-topic "
            "corpus vocabulary with Zipf popularity; blank-paper and prompt tokens shared by all pages; queries "
            "= 20 tokens near 2 topics of a random target page",
            "unstructured": "worst case: 8 topics private to each page, scattered with no spatial coherence; "
            "queries = 20 of the target page's patches plus noise",
        },
        "queries": f"{args.queries} per run; top_k=10; recall@10 against exhaustive MaxSim over full multivectors",
        "rerank_plan": "HNSW prefetch on row- and column-pooled vectors (prefetch_limit each) -> MaxSim on the "
        "full multivector",
        "cpus": len(os.sched_getaffinity(0)),
        "runs": runs,
    }  # fmt: skip


if __name__ == "__main__":
    main()
