"""Which speed patch helps where: full-size ColQwen2 (random weights), one patch added at a time.

    python bench/embed_variants.py --device cuda --batch 32            # GPU (device machine)
    python bench/embed_variants.py --device cpu --cpus 0,1 --batch 1   # CPU pinned to 2 cores

Every variant is the stock colpali-engine model plus the patches named (engine/embedding/fast.py), run
on the same preprocessed pages. Per variant: seconds per forward, pages/s, and the mean per-token cosine
of the output against an fp32 reference of the same pages. A torch.profiler table of the baseline says
where the time goes. Writes embed-variants-<device>.json after every variant (a run cut short still
leaves what it measured) to $OUT or bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.embed_gpu import Pages, build  # noqa: E402
from engine.embedding import fast  # noqa: E402

CUDA_VARIANTS = [
    ("stock", []),
    ("+linear_patch_embed", ["linear_patch_embed"]),
    ("+batched_attention", ["linear_patch_embed", "batched_attention"]),
    ("+fp8", ["linear_patch_embed", "batched_attention", "fp8"]),
    ("+compile", ["linear_patch_embed", "batched_attention", "compile"]),
    ("+fp8+compile", ["linear_patch_embed", "batched_attention", "fp8", "compile"]),
]
CPU_VARIANTS = [
    ("stock", []),
    ("+linear_patch_embed", ["linear_patch_embed"]),
    ("+batched_attention", ["linear_patch_embed", "batched_attention"]),
    ("+prepacked_linear", ["linear_patch_embed", "batched_attention", "prepacked_linear"]),
    ("+compile", ["linear_patch_embed", "batched_attention", "compile"]),
]


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).mean())


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(model, batch, device: str, reps: int) -> tuple[float, float, torch.Tensor]:
    """(first call seconds, steady seconds per call, output)."""
    with torch.inference_mode():
        t = time.perf_counter()
        out = model(**batch)
        sync(device)
        first = time.perf_counter() - t
        if device == "cuda":
            model(**batch)  # compile variants settle on the second call
            sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            out = model(**batch)
        sync(device)
    return first, (time.perf_counter() - t) / reps, out


def profile_table(model, batch, device: str, rows: int = 18) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch.inference_mode(), profile(activities=acts) as prof:
        model(**batch)
        sync(device)
    key = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events) or 1
    return [
        {"op": e.key[:90], "self_ms": round(getattr(e, key) / 1e3, 1), "share": round(getattr(e, key) / total, 3),
         "calls": e.count}
        for e in events[:rows]
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cpus", default=None, help="pin timing to these CPUs, e.g. 0,1")
    ap.add_argument("--variants", nargs="*", default=None)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--spec", type=Path, default=None, help="model config JSON (default: full-size ColQwen2)")
    args = ap.parse_args()
    dev = args.device
    out_dir = Path(os.environ.get("OUT", ROOT / "bench" / "results"))
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / f"embed-variants-{dev}.json"

    _, proc = build("meta", args.spec)
    pages = [Pages(args.batch)[i] for i in range(args.batch)]
    batch = proc.process_images(pages)
    visual_tokens = int(batch["image_grid_thw"][0].prod()) // 4
    batch = {k: v.to(dev) for k, v in batch.items()}

    # fp32 reference of the same pages, on every core before pinning
    ref_model, _ = build(dev, args.spec)
    ref_model.float()
    ref_batch = {**batch, "pixel_values": batch["pixel_values"].float()}
    with torch.inference_mode():
        ref = ref_model(**ref_batch).float().cpu()
    del ref_model
    if dev == "cuda":
        torch.cuda.empty_cache()

    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)

    payload: dict = {
        "benchmark": "embed-variants",
        "device": torch.cuda.get_device_name(0) if dev == "cuda" else platform.processor() or "cpu",
        "cpu_flags_amx": "amx_bf16" in Path("/proc/cpuinfo").read_text(),
        "threads": torch.get_num_threads(),
        "cpus": args.cpus,
        "torch": torch.__version__,
        "model": "ColQwen2 architecture (Qwen2-VL-2B), random weights, bf16 compute",
        "batch": args.batch,
        "visual_tokens_per_page": visual_tokens,
        "reference": "fp32 forward of the same pages (stock model)",
        "variants": [],
    }
    wanted = CUDA_VARIANTS if dev == "cuda" else CPU_VARIANTS
    if args.variants:
        wanted = [v for v in wanted if v[0] in args.variants]
    for name, patches in wanted:
        model, _ = build(dev, args.spec)
        applied = fast.apply(model, patches)
        if set(applied) != set(patches):
            payload["variants"].append({"variant": name, "skipped": f"applied only {applied}"})
            continue
        if name == "stock" and not args.no_profile:
            with torch.inference_mode():
                model(**batch)
            payload["profile_stock"] = profile_table(model, batch, dev)
        first, steady, out = timed(model, batch, dev, args.reps)
        row = {
            "variant": name,
            "patches": patches,
            "first_call_s": round(first, 2),
            "seconds_per_forward": round(steady, 4),
            "pages_per_s": round(args.batch / steady, 2),
            "seconds_per_page": round(steady / args.batch, 3),
            "cosine_vs_fp32": round(cosine(out.float().cpu(), ref), 5),
        }
        if dev == "cuda":
            row["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
        payload["variants"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        out_file.write_text(json.dumps(payload, indent=2) + "\n")
        del model, out
        if dev == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        torch._dynamo.reset()
    base = next((v for v in payload["variants"] if v["variant"] == "stock"), None)
    if base:
        for v in payload["variants"]:
            if "pages_per_s" in v:
                v["speedup_vs_stock"] = round(v["pages_per_s"] / base["pages_per_s"], 2)
    out_file.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
