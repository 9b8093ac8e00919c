"""Scale benchmark: the fde1 plan on one edge collection grown in stages towards 100k pages (issue 24 item 4).

    python bench/search_scale.py [--sizes 10000 50000 100000] [--queries 30] [--reps 3]
    python bench/search.py --scale ...                                   (the same)
    python bench/search_scale.py --data vectors:bench/work/real-pages.npz --sizes 500 1000 --name ...

One collection, the production fde1 schema (engine/index/edge.py: _config) plus two extra copies of each page's
full multivector stored in Qdrant's TurboQuant types (`colqwen_t8`: 8 bits per value, `colqwen_t4`: 4 bits), so
the last rerank stage can run on float16, 8-bit or 4-bit vectors of the SAME pages and queries, alternated.

Pages: `structured` = bench/search.py's synthetic structured pages (750 x 128), generated one chunk at a time;
`vectors:FILE.npz` = page multivectors computed elsewhere (bench/search_hybrid.py writes the tiny model's
vectors of rendered real pages, with its queries), read lazily page by page.

Memory is bounded by construction: pages are generated (in --workers forked processes, BLAS single-threaded:
set OPENBLAS_NUM_THREADS=1) and upserted in chunks of 64, at most two chunks per worker waiting, the shard is flushed every --flush-every pages so dirty mmap pages go to disk, every
named vector is stored Memory.Cold (mmap, read on demand) and, with --segment-kb, the optimizer keeps
segments below that size (each merge then holds at most one segment's worth). Exhaustive MaxSim (float32
numpy over the generated vectors) is accumulated while the pages are generated, so the ground truth costs no
second pass and only queries x pages floats. A sampler thread reads /proc/self/status every 0.5 s: peak RssAnon
(the process's own memory, what can run the host out of memory) and peak RssFile (mmap'd shard pages the
kernel may drop at any time) are reported apart, with the kernel's VmHWM (their sum's peak, = ru_maxrss).

After each stage (optimize(), then the queries) the result file is rewritten: a run cut short keeps every
stage it finished. Per stage: build time (upsert + optimize), memory peaks, on-disk bytes per page of each named
vector (Qdrant's segment folders, measured) and of the whole shard, the bytes a page would take with only one
rerank copy (fde1 + blocks + mean + that copy, graphs and payload included per page), and for each variant p50/p95
latency and recall@10 against exhaustive. The 1M extrapolation (written with the method) fits each variant's
p95 and recall linearly in log10(pages) over the measured stages, and scales bytes per page and build time
linearly. Writes bench/results/<name>.json (default search-scale).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import peak_rss_mb, write_result  # noqa: E402
from bench.search import DIM, GRID, OFFSET, page_vectors_structured, queries  # noqa: E402

T8, T4 = "colqwen_t8", "colqwen_t4"
CHUNK = 64


class MemorySampler(threading.Thread):
    """Peaks of RssAnon / RssFile / VmHWM (MB) of this process, sampled every `every` seconds."""

    def __init__(self, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every, self.peak = every, {"RssAnon": 0, "RssFile": 0, "VmHWM": 0}
        self._halt = threading.Event()

    @staticmethod
    def read(pid: int | str = "self") -> dict[str, int]:
        out = {}
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    key = line.split(":", 1)[0]
                    if key in ("RssAnon", "RssFile", "VmHWM"):
                        out[key] = int(line.split()[1]) // 1024
        except OSError:  # a child that just ended
            pass
        return out

    def sample(self) -> None:
        for k, v in self.read().items():
            self.peak[k] = max(self.peak[k], v)
        try:  # the generator processes' own memory, summed
            kids = Path(f"/proc/self/task/{os.getpid()}/children").read_text().split()
        except OSError:
            kids = []
        anon = sum(self.read(k).get("RssAnon", 0) for k in kids)
        self.peak["children_RssAnon"] = max(self.peak.get("children_RssAnon", 0), anon)

    def run(self) -> None:
        while not self._halt.wait(self.every):
            self.sample()

    def reset(self) -> dict[str, int]:
        """The peaks since the last reset (the kernel's VmHWM never resets: it is the whole run's)."""
        self.sample()
        got, self.peak = dict(self.peak), {"RssAnon": 0, "RssFile": 0, "VmHWM": 0}
        return got


def open_shard(path: Path, segment_kb: int | None, dim: int = DIM, copies: tuple[str, ...] = (T8, T4)):
    import qdrant_edge as qe

    from engine.index.edge import EdgeIndex

    base = EdgeIndex._config(dim, True, None, full_in_ram=False, plan="fde1")
    vectors = dict(base.vectors)
    maxsim = qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim)
    no_graph = qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=1000)
    types = {T8: qe.VectorStorageDatatype.Turbo8, T4: qe.VectorStorageDatatype.Turbo4}
    for name in copies:
        dtype = types[name]
        vectors[name] = qe.EdgeVectorParams(dim, qe.Distance.Cosine, multivector_config=maxsim, datatype=dtype,
                                            hnsw_config=no_graph, memory=qe.Memory.Cold)  # fmt: skip
    optimizers = qe.EdgeOptimizersConfig(max_segment_size=segment_kb) if segment_kb else base.optimizers
    config = qe.EdgeConfig(vectors=vectors, hnsw_config=base.hnsw_config, optimizers=optimizers,
                           payload_memory=qe.Memory.Cold)  # fmt: skip
    path.mkdir(parents=True, exist_ok=True)
    return qe.EdgeShard.create(str(path / "shard"), config)


def prepare(
    pages: Callable[[int], np.ndarray], start: int, stop: int, qs: np.ndarray
) -> tuple[np.ndarray, list]:
    """Pages [start, stop): (exhaustive MaxSim of every query against each, queries x pages; each page's named
    vectors as numpy arrays, as PageRecord.named_vectors computes them). Runs in a generator process."""
    from engine.index.base import BLOCKS, FDE1, FDES, FULL, MEAN, PageRecord, _unit

    best = np.empty((len(qs), stop - start), dtype=np.float32)
    flat = qs.reshape(-1, qs.shape[-1])
    out = []
    for i in range(start, stop):
        v = pages(i)
        # one GEMM (queries*tokens x page tokens), the best page token per query token, summed per query
        best[:, i - start] = (flat @ v.T).max(axis=1).reshape(qs.shape[:2]).sum(axis=1)
        grid = GRID if len(v) == OFFSET + GRID[0] * GRID[1] else None
        r = PageRecord(f"doc{i // 20:06d}", i % 20 + 1, 20, v, grid, OFFSET if grid else 0, "bench-model")
        named = {FULL: v, BLOCKS: r.blocks(), FDE1: FDES[FDE1].encode(_unit(v), query=False),
                 MEAN: _unit(v.mean(axis=0)[None])[0]}  # fmt: skip
        out.append((r.document_id, r.page_number, named))
    return best, out


_JOB: dict[str, Any] = {}  # what forked generator processes read (set before the pool starts)


def _prepare_job(span: tuple[int, int]) -> tuple[int, int, np.ndarray, list]:
    best, named = prepare(_JOB["pages"], span[0], span[1], _JOB["qs"])
    return span[0], span[1], best, named


def upsert(shard, chunk: list, copies: tuple[str, ...]) -> None:
    """One prepared chunk into the shard (full multivector also stored as each quantized copy)."""
    import qdrant_edge as qe

    from engine.index.base import FULL, PageRecord, point_id

    points = []
    for doc, page, named in chunk:
        for c in copies:
            named[c] = named[FULL]
        payload = PageRecord(doc, page, 20, named[FULL], GRID, OFFSET, "bench-model").payload()
        points.append(qe.Point(point_id(doc, page, "bench-model"), named, payload))
    shard.update(qe.UpdateOperation.upsert_points(points))


def chunks(starts: list[tuple[int, int]], workers: int):
    """Prepared chunks in order, from `workers` forked processes, at most 2 per worker waiting (memory bound)."""
    if workers <= 0:
        for a, b in starts:
            yield _prepare_job((a, b))
        return
    import multiprocessing as mp

    with mp.get_context("fork").Pool(workers) as pool:
        pending = []
        for span in starts:
            pending.append(pool.apply_async(_prepare_job, (span,)))
            if len(pending) >= 2 * workers:
                yield pending.pop(0).get()
        for p in pending:
            yield p.get()


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
    """Allocated bytes per named vector's storage (segment folders `vector_storage-<name>`, summed) and of the
    HNSW graphs (`vector_index-<name>`)."""
    out: dict[str, int] = {}
    for d in shard_path.rglob("vector_*-*"):
        if d.is_dir() and d.name.startswith(("vector_storage-", "vector_index-")):
            kind, name = d.name.split("-", 1)
            key = name if kind == "vector_storage" else f"{name} (graph)"
            out[key] = out.get(key, 0) + dir_bytes(d)
    return out


def page_data(
    spec: str, n_queries: int, first: int
) -> tuple[Callable[[int], np.ndarray], np.ndarray, str, int]:
    """(page i -> multivector, queries, description, pages available)."""
    if spec == "structured":
        desc = (f"bench/search.py structured synthetic pages, 750 x 128 (31x24 grid + 6 prompt tokens); {n_queries} "
                f"queries of 20 tokens about target pages among the first {first}")  # fmt: skip
        return page_vectors_structured, np.stack(queries(n_queries, first, "structured")), desc, 10**9
    path = Path(spec.removeprefix("vectors:"))
    data = np.load(path, allow_pickle=False)
    offsets = data["offsets"]  # page i's rows are vectors[offsets[i]:offsets[i + 1]]
    vectors = data["vectors"]  # memory-mapped only in npy; npz arrays load once (float16 keeps them small)
    qs = data["queries"].astype(np.float32)[:n_queries]
    desc = f"page multivectors from {path.name}: {data['description']}; {len(qs)} of its queries"

    def page(i: int) -> np.ndarray:
        return vectors[offsets[i] : offsets[i + 1]].astype(np.float32)

    return page, qs, desc, len(offsets) - 1


def extrapolate(stages: list[dict], target: int = 1_000_000) -> dict[str, Any]:
    """Each variant's p95 and recall fitted linearly in log10(pages) over the stages; bytes/page and build
    seconds/page from the largest stage, scaled linearly."""
    if len(stages) < 2:
        return {"note": "needs two stages"}
    x = np.log10([s["pages"] for s in stages])
    out: dict[str, Any] = {
        "method": "p95 and recall@10 of each variant fitted as a + b*log10(pages) by least squares over the measured "
        "stages and evaluated at the target (HNSW search cost grows ~log n; candidate counts are fixed); "
        "bytes per page and build seconds per page taken from the largest stage and scaled linearly (upsert "
        "is linear; HNSW build is n log n, so build time is a lower bound). Not measured: a real 1M run.",
        "pages": target,
        "largest_measured": stages[-1]["pages"],
        "variants": {},
    }
    for i, r in enumerate(stages[-1]["results"]):
        p95 = [s["results"][i]["p95_ms"] for s in stages]
        rec = [s["results"][i]["recall_at_10"] for s in stages]
        b95, a95 = np.polyfit(x, p95, 1)
        brec, arec = np.polyfit(x, rec, 1)
        out["variants"][r["variant"]] = {
            "p95_ms": round(float(a95 + b95 * np.log10(target)), 1),
            "recall_at_10": round(float(min(1.0, arec + brec * np.log10(target))), 3),
        }
    last = stages[-1]
    out["shard_gb"] = round(last["shard_bytes_per_page"] * target / 1e9, 1)
    out["page_bytes_one_copy_gb"] = {
        k: round(v * target / 1e9, 1) for k, v in last["page_bytes_one_copy"].items()
    }
    out["build_hours_lower_bound"] = round(last["build_seconds_total"] / last["pages"] * target / 3600, 1)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--name", default="search-scale")
    ap.add_argument("--data", default="structured", help="structured, or vectors:FILE.npz")
    ap.add_argument(
        "--segment-kb", type=int, default=None, help="optimizer max_segment_size (KB); unset: edge's"
    )
    ap.add_argument("--flush-every", type=int, default=4096)
    ap.add_argument("--workers", type=int, default=2, help="page generator processes (0: in this process)")
    ap.add_argument(
        "--copies",
        nargs="*",
        default=[T8, T4],
        choices=[T8, T4],
        help="quantized copies of the full multivector stored beside the float16 one",
    )
    ap.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="using:fde:blocks (default: each copy at 300:60, colqwen and the 4-bit copy at 600:120)",
    )
    ap.add_argument("--work", default=str(ROOT / "bench" / "work" / "search-scale"))
    args = ap.parse_args(argv)
    from engine.index.base import BLOCKS, FDE1, FULL, MEAN, point_id

    pages, qs, desc, available = page_data(args.data, args.queries, args.sizes[0])
    _JOB.update(pages=pages, qs=qs)
    sizes = [n for n in args.sizes if n <= available]
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    dim = int(qs.shape[-1])
    copies = tuple(args.copies)
    shard = open_shard(work, args.segment_kb, dim, copies)
    sampler = MemorySampler()
    sampler.start()
    best = np.full((len(qs), max(sizes)), -np.inf, dtype=np.float32)
    ids = [point_id(f"doc{i // 20:06d}", i % 20 + 1, "bench-model") for i in range(max(sizes))]
    chosen = args.variants or (["colqwen:300:60", *(f"{c}:300:60" for c in copies), "colqwen:600:120"]
                               + ([f"{T4}:600:120"] if T4 in copies else []))  # fmt: skip
    variants = [(u, int(a), int(b)) for u, a, b in (v.split(":") for v in chosen)]
    res: dict = {
        "backend": "edge (qdrant-edge, the default embedded engine), one collection grown in stages",
        "data": desc,
        "plan": "fde1 (engine/index/base.py query_plan): FDE vector (scanned <= 20k pages, HNSW above) -> MaxSim "
        "on 2x4 blocks (float16) -> MaxSim on the full multivector in the variant's storage type",
        "variants": "using:fde_candidates:block_candidates; colqwen = float16, colqwen_t8 / colqwen_t4 = the same "
        "vectors in Qdrant's TurboQuant storage (VectorStorageDatatype.Turbo8 / Turbo4), no float copy",
        "exhaustive": "float32 numpy MaxSim over every generated page, accumulated during the build",
        "alternation": f"each query runs every variant in a rotating order, {args.reps} repetitions",
        "memory": f"chunks of {CHUNK} pages from {args.workers} generator processes (<= 2 waiting each), flush every {args.flush_every} pages, all vectors Memory.Cold, optimizer "
        f"max_segment_size {f'{args.segment_kb} KB' if args.segment_kb else 'edge default'}; peaks sampled every "
        "0.5 s (RssAnon = the process's own memory; RssFile = mmap'd shard pages, reclaimable)",
        "nice": os.nice(0),
        "cpus": len(os.sched_getaffinity(0)),
        "stages": [],
    }
    done, build_s = 0, 0.0
    for n in sizes:
        sampler.reset()
        t = time.perf_counter()
        spans = [(a, min(n, a + CHUNK)) for a in range(done, n, CHUNK)]
        for k, (a, b, cols, chunk) in enumerate(chunks(spans, args.workers)):
            best[:, a:b] = cols
            upsert(shard, chunk, copies)
            del chunk
            if k % max(1, args.flush_every // CHUNK) == 0:
                shard.flush()
        upsert_s = time.perf_counter() - t
        upsert_mem = sampler.reset()
        t = time.perf_counter()
        shard.flush()
        shard.optimize()
        shard.flush()
        optimize_s = time.perf_counter() - t
        optimize_mem = sampler.reset()
        build_s += upsert_s + optimize_s
        added, done = n - done, n
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
        query_mem = sampler.reset()
        vb = vector_bytes(work / "shard")
        shard_bytes = dir_bytes(work / "shard")
        per_page = {k: round(b / n) for k, b in sorted(vb.items())}
        shared = sum(b for k, b in vb.items() if k not in (FULL, T8, T4))  # fde1, blocks, mean, graphs
        other = shard_bytes - sum(vb.values())  # payload, id tracker, WAL
        info = shard.info()
        stage = {
            "pages": n,
            "segments": info.segments_count,
            "upsert_seconds_this_stage": round(upsert_s, 1),
            "optimize_seconds_this_stage": round(optimize_s, 1),
            "build_seconds_total": round(build_s, 1),
            "upsert_pages_per_s_this_stage": round(added / upsert_s, 1),
            "memory_mb": {"upsert": upsert_mem, "optimize": optimize_mem, "queries": query_mem},
            "peak_rss_mb_ru_maxrss": round(peak_rss_mb()),
            "loadavg": os.getloadavg(),
            "shard_bytes_per_page": round(shard_bytes / n),
            "vector_bytes_per_page": per_page,
            "page_bytes_one_copy": {c: round((shared + other + vb.get(c, 0)) / n) for c in (FULL, *copies)},
            "page_bytes_one_copy_note": f"{FDE1} + {BLOCKS} + {MEAN} (+ graphs) + payload/WAL + that rerank copy only",
            "results": [
                {
                    "variant": f"{u}:{a}:{b}",
                    "recall_at_10": round(float(np.mean([len(set(g) & set(e)) / 10
                                                         for g, e in zip(tops[(u, a, b)], exact, strict=True)])), 3),
                    "p50_ms": round(float(np.percentile(times[(u, a, b)], 50)) * 1000, 1),
                    "p95_ms": round(float(np.percentile(times[(u, a, b)], 95)) * 1000, 1),
                    "per_rep_p50_ms": [round(float(np.percentile(times[(u, a, b)][r * len(qs) : (r + 1) * len(qs)], 50)) * 1000, 1)
                                       for r in range(args.reps)],
                    "per_rep_p95_ms": [round(float(np.percentile(times[(u, a, b)][r * len(qs) : (r + 1) * len(qs)], 95)) * 1000, 1)
                                       for r in range(args.reps)],
                }
                for u, a, b in variants
            ],
        }  # fmt: skip
        res["stages"].append(stage)
        res["extrapolation_1m"] = extrapolate(res["stages"])
        print(stage, file=sys.stderr, flush=True)
        write_result(args.name, res)
    shard.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
