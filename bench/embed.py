"""Embedding benchmark: stock colpali-engine fp32 (the reference) vs our path, side by side on the same input.

    python bench/embed.py [--label default] [--pages 8] [--skip-stock]

Full-size ColQwen2 architecture (Qwen2-VL-2B) with random weights (timing does not need trained ones),
one US-letter page at the processor's default resolution (744 visual tokens) and a batch of 8 different
pages. Each variant runs in its own process (clean peak RSS). Writes bench/results/embed-<label>.json.

Variants: `stock` = ColQwen2.from_pretrained(fp32) + processor, exactly the colpali-engine README path;
`ours` = baked int8 directory loaded by engine.embedding.Embedder on the auto-selected compute path.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import peak_rss_mb, write_result  # noqa: E402

# BENCH_WORK: where full-size builds live (the device keeps /tmp between calls, not a carried folder)
WORK = Path(os.environ["BENCH_WORK"]) if os.environ.get("BENCH_WORK") else ROOT / "bench" / "work"
QUERIES = [
    "total weight of the shipment", "consignee address", "container number", "invoice total due",
    "port of loading", "line items with quantities", "date of departure", "carrier name",
    "payment terms", "tax amount",
]  # fmt: skip


def letter_pages(n: int):
    """n different US-letter pages at 300 DPI: rendered through engine.documents, or drawn with PIL where
    pymupdf is not installed (the device machine); both are 2550×3300 → 744 visual tokens."""
    import tempfile

    try:
        from engine.documents import render_pages
        from tests.fixtures import documents as d
    except ImportError:
        from bench.embed_gpu import page

        return [page(i) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        return [f.image for f in render_pages(d.long_pdf(Path(tmp) / "p.pdf", n))]


def pin(cpus: str | None) -> None:
    """Restrict a worker to the given CPUs (the device host has 16; the Lambda-like budget is 2)."""
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})


def run_stock(model_dir: Path, n_pages: int, out: Path) -> dict:
    import torch
    from colpali_engine.models import ColQwen2, ColQwen2Processor

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    t = time.perf_counter()
    model = ColQwen2.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = ColQwen2Processor.from_pretrained(model_dir)
    load_s = time.perf_counter() - t
    pages = letter_pages(n_pages)

    def embed(imgs):
        batch = processor.process_images(imgs)
        with torch.no_grad():
            return model(**batch), batch

    embed(pages[:1])  # warm-up
    t = time.perf_counter()
    one, b1 = embed(pages[:1])
    single = time.perf_counter() - t
    t = time.perf_counter()
    many, batch = embed(pages)
    batch_s = time.perf_counter() - t
    qb = processor.process_queries(QUERIES[:1])
    with torch.no_grad():
        model(**qb)
        t = time.perf_counter()
        model(**qb)
        query_s = time.perf_counter() - t
        qall = processor.process_queries(QUERIES)
        q = model(**qall)
    mask = batch["attention_mask"].bool()
    np.savez(out, *[many[i][mask[i]].float().numpy() for i in range(n_pages)])
    qmask = qall["attention_mask"].bool()
    np.savez(
        str(out).replace(".npz", "-q.npz"), *[q[i][qmask[i]].float().numpy() for i in range(len(QUERIES))]
    )
    return {
        "variant": "stock colpali-engine fp32",
        "load_seconds": round(load_s, 2),
        "visual_tokens_per_page": int(b1["image_grid_thw"][0].prod() // 4),
        "seconds_per_page_batch1": round(single, 2),
        "seconds_per_page_batch8": round(batch_s / n_pages, 2),
        "query_encode_ms": round(query_s * 1000, 1),
        "peak_rss_mb": round(peak_rss_mb(), 0),
    }


def run_ours(baked_dir: Path, n_pages: int, out: Path, compute_mode: str) -> dict:
    from engine.embedding import Embedder

    t = time.perf_counter()
    emb = Embedder(str(baked_dir), compute_mode=compute_mode)
    load_s = time.perf_counter() - t
    pages = letter_pages(n_pages)
    emb.embed_images(pages[:1])  # warm-up
    t = time.perf_counter()
    emb.embed_images(pages[:1])
    single = time.perf_counter() - t
    t = time.perf_counter()
    many = emb.embed_images(pages)
    batch_s = time.perf_counter() - t
    emb.embed_queries(QUERIES[:1])
    t = time.perf_counter()
    emb.embed_queries(QUERIES[:1])
    query_s = time.perf_counter() - t
    q = emb.embed_queries(QUERIES)
    np.savez(out, *[p.vectors for p in many])
    np.savez(str(out).replace(".npz", "-q.npz"), *q)
    return {
        "variant": f"ours ({emb.plan.name}, baked int8)",
        **emb.describe(),
        "load_seconds": round(load_s, 2),
        "seconds_per_page_batch1": round(single, 2),
        "seconds_per_page_batch8": round(batch_s / n_pages, 2),
        "query_encode_ms": round(query_s * 1000, 1),
        "peak_rss_mb": round(peak_rss_mb(), 0),
    }


def fidelity(ref: Path, ours: Path) -> dict:
    from engine.embedding import score_multi_vector

    r = list(np.load(ref).values())
    o = list(np.load(ours).values())
    rq = list(np.load(str(ref).replace(".npz", "-q.npz")).values())
    oq = list(np.load(str(ours).replace(".npz", "-q.npz")).values())
    cos = [float((a * b).sum(-1).mean()) for a, b in zip(r, o, strict=True)]
    s_ref, s_ours = score_multi_vector(rq, r), score_multi_vector(oq, o)
    k = min(10, len(r))
    same_topk = [
        list(np.argsort(-a)[:k]) == list(np.argsort(-b)[:k]) for a, b in zip(s_ref, s_ours, strict=True)
    ]
    return {
        "mean_token_cosine_pages": round(float(np.mean(cos)), 5),
        "min_page_cosine": round(float(np.min(cos)), 5),
        "mean_token_cosine_queries": round(
            float(np.mean([(a * b).sum(-1).mean() for a, b in zip(rq, oq, strict=True)])), 5
        ),
        "top_k": k,
        "queries_with_identical_top_k": f"{sum(same_topk)}/{len(same_topk)}",
        "max_abs_score_diff": round(float(np.abs(s_ref - s_ours).max()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--label", default="default")
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--compute", default="auto")
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument("--cpus", help="pin workers to these CPUs, e.g. 0,1")
    parser.add_argument(
        "--stock-from",
        help="with --skip-stock: label of an earlier run whose stock outputs (same model, same pages) "
        "serve as the fidelity reference",
    )
    parser.add_argument("--worker", choices=["stock", "ours"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    full, baked = WORK / "colqwen2-full-random", WORK / "colqwen2-full-random-baked"
    if args.worker:
        pin(args.cpus)
        out = WORK / f"{args.label}-{args.worker}.npz"
        fn = (
            run_stock(full, args.pages, out)
            if args.worker == "stock"
            else run_ours(baked, args.pages, out, args.compute)
        )
        print("RESULT " + json.dumps(fn))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    prep = {}
    if not (full / "config.json").exists():
        from models.tiny import build_fullsize_random

        t = time.perf_counter()
        build_fullsize_random(full)
        prep["build_random_seconds"] = round(time.perf_counter() - t, 1)
    if not (baked / "manifest.json").exists():
        from models.bake import bake

        t = time.perf_counter()
        manifest = bake(str(full), baked)
        prep["bake_seconds"] = round(time.perf_counter() - t, 1)
        prep["baked_bytes"] = sum(f["bytes"] for f in manifest["files"].values())
    results = {}
    for variant in ([] if args.skip_stock else ["stock"]) + ["ours"]:
        print(f"running {variant} ({args.label})...", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", variant, "--label", args.label, "--pages", str(args.pages), "--compute", args.compute]
            + (["--cpus", args.cpus] if args.cpus else []),
            capture_output=True, text=True, env=os.environ,
        )  # fmt: skip
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
        results[variant] = json.loads(line[7:])
        print(results[variant], file=sys.stderr, flush=True)
    payload = {
        "label": args.label,
        "env": {
            k: v
            for k, v in os.environ.items()
            if k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "DOCVISION_COMPUTE")
        },
        "model": "ColQwen2 architecture (Qwen2-VL-2B, random weights), models/configs/colqwen2-2b.json",
        "input": f"US-letter pages at 300 DPI → processor default max_pixels=602112; batch of {args.pages}",
        "prep": prep,
        **results,
    }
    stock_label = args.stock_from if "stock" not in results else args.label
    if stock_label and (WORK / f"{stock_label}-stock.npz").exists():
        payload["fidelity_vs_stock_fp32"] = fidelity(
            WORK / f"{stock_label}-stock.npz", WORK / f"{args.label}-ours.npz"
        )
        payload["fidelity_reference"] = f"stock fp32 outputs of run {stock_label!r}"
    if "stock" in results:
        payload["speedup_batch8"] = round(
            results["stock"]["seconds_per_page_batch8"] / results["ours"]["seconds_per_page_batch8"], 2
        )
    print(write_result(f"embed-{args.label}", payload))


if __name__ == "__main__":
    main()
