"""Kernel-time levers on today's CUDA default, one run, same pages: compile modes and CUDA graphs.

    python bench/embed_gpu_tune.py --rounds 5 [--e2e --pages 320 --workers 8] [--variants default,graphs]

Today's CUDA default (engine/embedding/fast.py default_speedups): linear patch embed, batched attention,
static_pages, rowwise fp8 on vision_fc1, every vision block and decoder layer compiled by Inductor in its
default mode. Each variant below is the same model and math; only how the blocks are compiled changes:

default               Inductor default mode (cuBLAS GEMMs; pointwise/norm kernels fused by Inductor)
graphs                mode="reduce-overhead": each compiled block replays as a CUDA graph (graph trees)
autotune_vision       vision blocks mode="max-autotune-no-cudagraphs": GEMMs autotuned against Triton
                      templates, which can take the bias + QuickGELU (and other pointwise work) as a GEMM
                      epilogue; decoder layers default
autotune_all          the same for the decoder layers too (SiLU x up can become the up GEMM's epilogue)
autotune_all_graphs   mode="max-autotune" everywhere (autotune + CUDA graphs)

Per variant: page cosine to fp32 (stock model upcast, CPU preprocessing, same 32 pages), model-only pages/s
(CUDA events, 5 forwards of one 32-page batch) over ``--rounds`` alternating rounds, and with ``--e2e``
end-to-end pages/s (PIL pages in, embeddings on the host out, presize workers, pipelined) alternating too.
A profile of each variant gives kernel milliseconds per page by kind (attention, GEMM, the rest).
Writes $OUT/embed-gpu-tune.json (bench/results/ without OUT) after every stage. Random weights: timing and
numerical fidelity only.

Run once (H100, bench/results/embed-gpu-h100-compile-modes.json, 4 rounds model only; the call's time limit cut
round 5, the profiles and autotune_all_graphs): default 67.9 [67.79-67.97] pages/s, graphs 67.56 [67.33-68.22],
autotune_vision 69.23 [69.21-69.29] (+1.9%, same cosine, but ~200 s more compile per process), autotune_all
69.09. Autotune kept cuBLAS for every vision GEMM, so no GEMM epilogue fusion happened. Allow ~230 s per
max-autotune variant on a fresh machine (its GEMM autotuning) and set --deadline accordingly.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.embed_gpu import Pages, batches, build, forward, token_cosine  # noqa: E402

MODES = {  # (vision blocks, decoder layers): torch.compile mode (None = Inductor's default)
    "default": (None, None),
    "graphs": ("reduce-overhead", "reduce-overhead"),
    "autotune_vision": ("max-autotune-no-cudagraphs", None),
    "autotune_all": ("max-autotune-no-cudagraphs", "max-autotune-no-cudagraphs"),
    "autotune_all_graphs": ("max-autotune", "max-autotune"),
}


def uses_graphs(name: str) -> bool:
    return any(m in ("reduce-overhead", "max-autotune") for m in MODES[name])


def make(name: str):
    """Today's CUDA default model, its blocks compiled in the variant's modes."""
    from engine.embedding import fast

    model, _ = build("cuda")
    fast.swap_fp8(model, fast.FP8_DEFAULT_LAYERS)
    fast.apply(model, ("linear_patch_embed", "batched_attention", "static_pages"))
    vision_mode, text_mode = MODES[name]
    for blk in fast._vision(model).blocks:
        blk.compile(dynamic=False, mode=vision_mode)
    for layer in fast._submodule(model, "language_model").layers:
        layer.compile(dynamic=False, mode=text_mode)
    return model


def run(model, b: dict, graphs: bool) -> torch.Tensor:
    if graphs:
        torch.compiler.cudagraph_mark_step_begin()
    return forward(model, b, True)


def model_only(model, b: dict, graphs: bool, reps: int = 5) -> float:
    with torch.inference_mode():
        run(model, b, graphs)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            run(model, b, graphs)
        end.record()
        torch.cuda.synchronize()
    return round(b["input_ids"].shape[0] * reps / (start.elapsed_time(end) / 1000), 2)


def end_to_end(model, proc, graphs: bool, n_pages: int, batch: int, workers: int) -> float:
    """embed_gpu's pipelined end-to-end loop (presize workers, GPU normalize, next batch queued before the
    last one's read-back); the first batch is the warm-up."""
    done, started, pending = 0, None, None
    with torch.inference_mode():
        for b in batches(proc, n_pages + batch, batch, "presize", workers):
            out = run(model, b, graphs).float()
            host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            host.copy_(out, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            if pending is not None:
                pending[1].synchronize()
                if started is None:
                    started = time.perf_counter()
                else:
                    done += pending[0].shape[0]
            pending = (host, event)
        pending[1].synchronize()
        done += pending[0].shape[0]
    return round(done / (time.perf_counter() - started), 2)


def kind(kernel: str) -> str:
    k = kernel.lower()
    if "sdpa" in k or "flash" in k or "fmha" in k or "attention" in k and "triton" not in k:
        return "attention"
    if "nvjet" in k or "gemm" in k or "cutlass" in k or "triton_tem" in k or "mm" in k.split("_")[:3]:
        return "gemm"
    return "other"


def profile(model, b: dict, graphs: bool) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof_ctx

    with torch.inference_mode():
        run(model, b, graphs)
        torch.cuda.synchronize()
        t = time.perf_counter()
        with prof_ctx(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(2):
                run(model, b, graphs).float().cpu()
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    pages = 2 * b["input_ids"].shape[0]
    by_kind: dict[str, float] = {}
    for e in events:
        by_kind[kind(e.key)] = by_kind.get(kind(e.key), 0.0) + e.self_device_time_total
    gpu_us = sum(by_kind.values())
    top = sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[:16]
    return {
        "gpu_kernel_ms_per_page": round(gpu_us / 1e3 / pages, 2),
        "ms_per_page_by_kind": {k: round(v / 1e3 / pages, 2) for k, v in sorted(by_kind.items())},
        "gpu_busy_share_under_profiler": round(gpu_us / 1e6 / wall, 3),
        "top_kernels": [{"kernel": e.key[:90], "ms_per_page": round(e.self_device_time_total / 1e3 / pages, 3),
                         "calls": e.count} for e in top],
    }  # fmt: skip


def sdpa_head_dims(batch: int, tokens: int) -> dict:
    """cuDNN attention on the vision shape at head dim 80 (the model's) and zero-padded to 96 / 128 (same
    result: zero columns add nothing to q.k, and v's zero columns are dropped), FLOPs counted at 80."""
    import triton
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(3)
    q, k, v = (torch.randn(batch, 16, tokens, 80, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flop = 4 * batch * 16 * tokens * tokens * 80
    ref = None
    res: dict = {}
    for d in (80, 96, 128):
        qp, kp, vp = (torch.nn.functional.pad(t, (0, d - 80)) for t in (q, k, v))
        for backend in ("CUDNN_ATTENTION", "FLASH_ATTENTION"):
            try:
                with sdpa_kernel(getattr(SDPBackend, backend)):
                    f = functools.partial(
                        torch.nn.functional.scaled_dot_product_attention, qp, kp, vp, scale=80**-0.5
                    )
                    out = f()[..., :80]
                    ms = triton.testing.do_bench(f, return_mode="median")
                if ref is None:
                    ref = out.float()
                err = float((out.float() - ref).norm() / ref.norm())
                res[f"{backend.lower()}_d{d}"] = {"ms": round(ms, 3), "tflops_at_d80": round(flop / ms / 1e9, 1),
                                                  "rel_diff_vs_first": round(err, 5)}  # fmt: skip
            except Exception as exc:
                res[f"{backend.lower()}_d{d}"] = f"{type(exc).__name__}: {exc}"[:200]
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default=",".join(MODES))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--e2e", action="store_true", help="also end-to-end rounds (DataLoader workers)")
    ap.add_argument("--pages", type=int, default=320)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--deadline", type=float, default=480, help="seconds: build no variant after this")
    ap.add_argument("--no-micro", action="store_true")
    args = ap.parse_args()
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODES]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(MODES)}")
    import torch._dynamo
    import transformers

    from engine.embedding.gpu_preprocess import presize, process_pages

    torch._dynamo.config.recompile_limit = 64  # variants share the blocks' code objects (embed_gpu.py)
    torch._dynamo.config.accumulated_recompile_limit = 4096
    t0 = time.perf_counter()
    out_dir = Path(os.environ.get("OUT", ROOT / "bench" / "results"))
    out_dir.mkdir(parents=True, exist_ok=True)
    payload: dict = {
        "benchmark": "embed-gpu-tune",
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "loadavg_before": os.getloadavg(),
        "model": "ColQwen2 architecture (Qwen2-VL-2B), random weights; today's CUDA default "
        "(static_pages, fp8 vision_fc1, linear patch embed, batched attention, compiled blocks)",
        "input": "synthetic US-letter pages 2550x3300 -> 744 visual tokens, presized, GPU-normalized",
        "batch": args.batch,
        "rounds": args.rounds,
        "method": "one process, one model per variant, variants alternated round after round; model-only = "
        "5 forwards of one batch timed with CUDA events; median and [min, max] over rounds",
        "target_pages_per_s": 85,
        "variants": {},
        "errors": {},
    }

    def save() -> None:
        (out_dir / "embed-gpu-tune.json").write_text(json.dumps(payload, indent=2) + "\n")

    def log(*a) -> None:
        print(f"[{time.perf_counter() - t0:5.0f}s]", *a, file=sys.stderr, flush=True)

    if not args.no_micro:
        try:
            payload["sdpa_head_dims"] = sdpa_head_dims(args.batch, 2976)
        except Exception as exc:
            payload["errors"]["sdpa_head_dims"] = f"{type(exc).__name__}: {exc}"[:500]
        log("sdpa", payload.get("sdpa_head_dims"))
        save()

    ref_model, proc = build("cuda")
    pages = [Pages(args.batch)[i] for i in range(args.batch)]
    cpu_batch = proc.process_images(pages)
    batch = process_pages(proc, [presize(proc, p) for p in pages], "cuda")
    ref_model.float()
    with torch.inference_mode():
        ref = ref_model(**{k: v.to("cuda") for k, v in cpu_batch.items()}).float().cpu()
    del ref_model
    torch.cuda.empty_cache()
    log("fp32 reference done")

    models: dict = {}
    for name in names:
        entry: dict = {"compile_modes": {"vision": MODES[name][0], "text": MODES[name][1]},
                       "model_only": [], "end_to_end": []}  # fmt: skip
        payload["variants"][name] = entry
        if time.perf_counter() - t0 > args.deadline:
            payload["errors"][name] = f"not built: past the {args.deadline:.0f} s deadline"
            continue
        try:
            model = make(name)
            t = time.perf_counter()
            with torch.inference_mode():
                out = run(model, batch, uses_graphs(name)).float().cpu()
            entry["first_call_s"] = round(time.perf_counter() - t, 1)  # compile (and autotune) included
            cos = token_cosine(out, ref)
            entry["cosine_vs_fp32_min_page"] = round(min(cos), 5)
            entry["cosine_vs_fp32_min_page_first8"] = round(min(cos[:8]), 5)
            entry["cosine_vs_fp32_mean"] = round(sum(cos) / len(cos), 5)
            entry["static_path_used"] = model._docvision_static.hits > 0
            models[name] = model
        except Exception as exc:
            payload["errors"][name] = f"{type(exc).__name__}: {exc}"[:800]
        log(name, {k: v for k, v in entry.items() if k not in ("model_only", "end_to_end")})
        save()

    live = list(models)
    for rnd in range(args.rounds):
        for name in live:
            try:
                payload["variants"][name]["model_only"].append(
                    model_only(models[name], batch, uses_graphs(name))
                )
            except Exception as exc:
                payload["errors"][f"{name}/model_only{rnd}"] = f"{type(exc).__name__}: {exc}"[:800]
        log("round", rnd, {n: payload["variants"][n]["model_only"][-1:] for n in live})
        save()
    if args.e2e:
        for rnd in range(args.rounds):
            for name in live:
                try:
                    rate = end_to_end(
                        models[name], proc, uses_graphs(name), args.pages, args.batch, args.workers
                    )
                    payload["variants"][name]["end_to_end"].append(rate)
                except Exception as exc:
                    payload["errors"][f"{name}/e2e{rnd}"] = f"{type(exc).__name__}: {exc}"[:800]
            log("e2e round", rnd, {n: payload["variants"][n]["end_to_end"][-1:] for n in live})
            save()
    for name in live:
        entry = payload["variants"][name]
        for k in ("model_only", "end_to_end"):
            if entry[k]:
                entry[f"{k}_median"] = round(statistics.median(entry[k]), 2)
                entry[f"{k}_spread"] = [min(entry[k]), max(entry[k])]
    for name in live:
        try:
            payload["variants"][name]["profile"] = profile(models[name], batch, uses_graphs(name))
        except Exception as exc:
            payload["errors"][f"{name}/profile"] = f"{type(exc).__name__}: {exc}"[:800]
        save()
    base = payload["variants"].get("default", {})
    if "model_only_spread" in base:
        for name in live:
            e = payload["variants"][name]
            if name != "default" and "model_only_spread" in e:
                e["model_only_wins_beyond_spread"] = e["model_only_spread"][0] > base["model_only_spread"][1]
                if "end_to_end_spread" in e and "end_to_end_spread" in base:
                    e["end_to_end_wins_beyond_spread"] = (
                        e["end_to_end_spread"][0] > base["end_to_end_spread"][1]
                    )
    payload["loadavg_after"] = os.getloadavg()
    payload["wall_s"] = round(time.perf_counter() - t0, 1)
    save()
    print(
        "\nvariant              first_s  cos_min  model-only median [spread]   e2e median [spread]   kernel ms/page"
    )
    for name in names:
        e = payload["variants"][name]
        p = e.get("profile", {})
        print(f"{name:20s} {e.get('first_call_s', '-')!s:>7} {e.get('cosine_vs_fp32_min_page', '-')!s:>8} "
              f"{e.get('model_only_median', '-')!s:>7} {e.get('model_only_spread', '')!s:18s} "
              f"{e.get('end_to_end_median', '-')!s:>7} {e.get('end_to_end_spread', '')!s:16s} "
              f"{p.get('gpu_kernel_ms_per_page', '-')} {p.get('ms_per_page_by_kind', '')}")  # fmt: skip
    print("errors", json.dumps(payload["errors"])[:2000])


if __name__ == "__main__":
    main()
