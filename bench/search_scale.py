"""Scale benchmark: the fde1 plan on one edge collection grown in stages towards 100k pages (issue 24 item 4).

    python bench/search.py --scale [--sizes 10000 25000 50000 100000] [--queries 30] [--reps 3]
    (= python bench/search_scale.py ...)

One collection, the production fde1 schema (engine/index/edge.py: _config) plus two extra copies of each page's
full multivector stored in Qdrant's TurboQuant types (`colqwen_t8`: 8 bits per value, `colqwen_t4`: 4 bits), so
the last rerank stage can run on float16, 8-bit or 4-bit vectors of the SAME pages and queries, alternated.
Pages are bench/search.py's `structured` synthetic pages (750 x 128); the collection grows stage by stage, and
after each stage (optimize(), then the queries) the result file is rewritten: a run cut short keeps every stage
it finished. Exhaustive MaxSim (float32 numpy over the generated vectors) is accumulated while the pages are
generated, so the ground truth costs no second pass over the collection.

Per stage: build time (upsert + optimize), peak RSS, on-disk bytes per page of each named vector (Qdrant's
segment folders, measured) and of the whole shard, and for each variant p50/p95 latency and recall@10 against
exhaustive. Writes bench/results/<name>.json (default search-scale).
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

from bench.common import peak_rss_mb, write_result  # noqa: E402
from bench.search import (  # noqa: E402
    DIM,
    GRID,
    OFFSET,
    page_vectors_structured,
    queries,
)

T8, T4 = "colqwen_t8", "colqwen_t4"


def open_shard(path: Path):
    import qdrant_edge as qe

    from engine.index.edge import EdgeIndex

    base = EdgeIndex._config(DIM, True, None, full_in_ram=False, plan="fde1")
    vectors = dict(base.vectors)
    maxsim = qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim)
    no_graph = qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=1000)
    for name, dtype in ((T8, qe.VectorStorageDatatype.Turbo8), (T4, qe.VectorStorageDatatype.Turbo4)):
        vectors[name] = qe.EdgeVectorParams(DIM, qe.Distance.Cosine, multivector_config=maxsim, datatype=dtype,
                                            hnsw_config=no_graph, memory=qe.Memory.Cold)  # fmt: skip
    config = qe.EdgeConfig(vectors=vectors, hnsw_config=base.hnsw_config, optimizers=base.optimizers)
    path.mkdir(parents=True, exist_ok=True)
    return qe.EdgeShard.create(str(path / "shard"), config)


def upsert(shard, start: int, stop: int, qs: np.ndarray, best: np.ndarray) -> None:
    """Pages [start, stop) into the shard; exhaustive MaxSim of every query against them into `best`
    (queries x pages so far)."""
    import qdrant_edge as qe

    from engine.index.base import FULL, PageRecord, point_id

    points = []
    for i in range(start, stop):
        v = page_vectors_structured(i)
        best[:, i] = np.einsum("qtd,pd->qtp", qs, v).max(axis=2).sum(axis=1)
        r = PageRecord(f"doc{i // 20:06d}", i % 20 + 1, 20, v, GRID, OFFSET, "bench-model")
        named = r.named_vectors()
        named[T8] = named[T4] = named[FULL]
        points.append(qe.Point(point_id(r.document_id, r.page_number, r.model_id), named, r.payload()))
    shard.update(qe.UpdateOperation.upsert_points(points))


def search(shard, q: np.ndarray, using: str, pages: int, fde_limit: int, block_limit: int) -> list[str]:
    """The production fde1 plan (engine/index/base.py: query_plan, edge's prefetch params), last stage on
    `using`."""
    import qdrant_edge as qe

    from engine.index.base import query_plan
    from engine.index.edge import _prefetch

    top = query_plan(q, "rerank", top_k=10, prefetch_limit=fde_limit, block_limit=block_limit, pages=pages)
    req = qe.QueryRequest(limit=10, query=qe.Query.Nearest(top.vector, using=using),
                          prefetches=[_prefetch(s, None) for s in top.inner], with_payload=False)  # fmt: skip
    return [str(p.id) for p in shard.query(req)]


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())  # allocated, not apparent


def vector_bytes(shard_path: Path) -> dict[str, int]:
    """Allocated bytes per named vector's storage (segment folders `vector_storage-<name>`, summed)."""
    out: dict[str, int] = {}
    for d in shard_path.rglob("vector_storage-*"):
        if d.is_dir():
            name = d.name.removeprefix("vector_storage-")
            out[name] = out.get(name, 0) + dir_bytes(d)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 25_000, 50_000, 100_000])
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--name", default="search-scale")
    ap.add_argument("--variants", nargs="+", default=["colqwen:300:60", f"{T8}:300:60", f"{T4}:300:60",
                                                      "colqwen:600:120", f"{T4}:600:120"])  # fmt: skip
    ap.add_argument("--work", default=str(ROOT / "bench" / "work" / "search-scale"))
    args = ap.parse_args(argv)
    from engine.index.base import point_id

    work = Path(args.work)
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    shard = open_shard(work)
    qs = np.stack(queries(args.queries, args.sizes[0], "structured"))
    best = np.full((len(qs), max(args.sizes)), -np.inf, dtype=np.float32)
    ids = [point_id(f"doc{i // 20:06d}", i % 20 + 1, "bench-model") for i in range(max(args.sizes))]
    variants = [(u, int(a), int(b)) for u, a, b in (v.split(":") for v in args.variants)]
    res: dict = {
        "backend": "edge (qdrant-edge, the default embedded engine), one collection grown in stages",
        "data": "bench/search.py structured synthetic pages, 750 x 128 (31x24 grid + 6 prompt tokens); "
        f"{args.queries} queries of 20 tokens about target pages among the first {args.sizes[0]}",
        "plan": "fde1 (engine/index/base.py query_plan): FDE vector (scanned <= 20k pages, HNSW above) -> MaxSim "
        "on 2x4 blocks (float16) -> MaxSim on the full multivector in the variant's storage type",
        "variants": "using:fde_candidates:block_candidates; colqwen = float16, colqwen_t8 / colqwen_t4 = the same "
        "vectors in Qdrant's TurboQuant storage (VectorStorageDatatype.Turbo8 / Turbo4), no float copy",
        "exhaustive": "float32 numpy MaxSim over every generated page, accumulated during the build",
        "alternation": f"each query runs every variant in a rotating order, {args.reps} repetitions",
        "nice": os.nice(0),
        "cpus": len(os.sched_getaffinity(0)),
        "stages": [],
    }
    done, build_s = 0, 0.0
    for n in args.sizes:
        t = time.perf_counter()
        for start in range(done, n, 64):
            upsert(shard, start, min(n, start + 64), qs, best)
        upsert_s = time.perf_counter() - t
        t = time.perf_counter()
        shard.flush()
        shard.optimize()
        shard.flush()
        optimize_s = time.perf_counter() - t
        build_s += upsert_s + optimize_s
        done = n
        exact = [[ids[j] for j in np.argsort(-best[k, :n])[:10]] for k in range(len(qs))]
        times: dict = {v: [] for v in variants}
        tops: dict = {v: [None] * len(qs) for v in variants}
        for v in variants:
            search(shard, qs[0], v[0], n, v[1], v[2])  # warm-up
        for rep in range(args.reps):
            for i, q in enumerate(qs):
                k = (rep * len(qs) + i) % len(variants)
                for v in variants[k:] + variants[:k]:
                    t = time.perf_counter()
                    tops[v][i] = search(shard, q, v[0], n, v[1], v[2])
                    times[v].append(time.perf_counter() - t)
        vb = vector_bytes(work / "shard")
        stage = {
            "pages": n,
            "upsert_seconds_this_stage": round(upsert_s, 1),
            "optimize_seconds_this_stage": round(optimize_s, 1),
            "build_seconds_total": round(build_s, 1),
            "upsert_pages_per_s_this_stage": round((n - (res["stages"][-1]["pages"] if res["stages"] else 0)) / upsert_s, 1),
            "peak_rss_mb": round(peak_rss_mb()),
            "loadavg": os.getloadavg(),
            "shard_bytes_per_page": round(dir_bytes(work / "shard") / n),
            "vector_bytes_per_page": {k: round(b / n) for k, b in sorted(vb.items())},
            "results": [
                {
                    "variant": f"{u}:{a}:{b}",
                    "recall_at_10": round(float(np.mean([len(set(g) & set(e)) / 10
                                                         for g, e in zip(tops[(u, a, b)], exact, strict=True)])), 3),
                    "p50_ms": round(float(np.percentile(times[(u, a, b)], 50)) * 1000, 1),
                    "p95_ms": round(float(np.percentile(times[(u, a, b)], 95)) * 1000, 1),
                    "per_rep_p50_ms": [round(float(np.percentile(times[(u, a, b)][r * len(qs) : (r + 1) * len(qs)], 50)) * 1000, 1)
                                       for r in range(args.reps)],
                }
                for u, a, b in variants
            ],
        }  # fmt: skip
        res["stages"].append(stage)
        print(stage, file=sys.stderr, flush=True)
        write_result(args.name, res)
    shard.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
