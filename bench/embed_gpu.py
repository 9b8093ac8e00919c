"""GPU embedding throughput, one run, same pages: stock colpali-engine vs today's path vs the new one.

    python bench/embed_gpu.py --pages 320 --batch 32 --workers 12 --rounds 3   (--smoke: a short check)

Full-size ColQwen2 architecture (Qwen2-VL-2B, random weights: no weights can be downloaded here), synthetic
US-letter pages rendered once at 300 DPI (2550x3300, 744 visual tokens); rendering is not what is measured.

stock        the colpali-engine README loop: ``processor.process_images`` in the main process, bf16 model
today        speed patches (linear patch embed, batched attention, torch.compile per block) and CPU
             preprocessing in DataLoader worker processes; one batch at a time
new          today's patches + ``static_pages`` (per-shape rotary/M-RoPE/cu_seqlens constants, no host sync
             inside the forward); workers resize pages to the model's input size (PIL bicubic,
             gpu_preprocess.presize) and hand over uint8 pixels (pinned); rescale/normalize/patchify run on
             the GPU (the processor's own code); the next batch is queued before the last one's embeddings
             are read back (pinned, non-blocking)
new+fp8sel   new, rowwise fp8 (per-token x per-channel, torch._scaled_mm) only on the Linear classes chosen
             in this run: per-class sensitivity on the fidelity pages, then a greedy set (least cosine lost
             per FLOP first) that keeps the min page cosine to fp32 >= --select-threshold
new+fp8all   new, rowwise fp8 on every Linear class (the speed fp8 could give, whatever its fidelity)

Per variant: end-to-end pages/s (PIL pages in, embeddings on the host out; first batch = warm-up) and
model-only pages/s (one preprocessed batch, CUDA events), both over ``--rounds`` alternating rounds (median
and spread), and the per-token cosine of 8 pages against an fp32 reference (stock model, CPU preprocessing),
plus MaxSim scores of 8 queries (fp32 query embeddings, as the API computes them) against those pages.
Micro-benchmarks: the vision MLP's GEMM in bf16 vs fp8 rowwise, SDPA backends on the vision attention
shape. A profile of the new paths says how busy the GPU is. Writes $OUT/embed-gpu.json (bench/results/
without OUT) after every stage.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def page(i: int) -> Image.Image:
    img = Image.new("RGB", (2550, 3300), "white")
    d = ImageDraw.Draw(img)
    for line in range(60):
        d.text(
            (150, 150 + line * 50),
            f"Page {i} line {line}: container MSKU{i:04d}{line:03d} weight {line * 7.5} kg",
            fill="black",
        )
    d.rectangle((1800, 2800, 2300, 3100), fill=(20, 40, 200))
    return img


class Pages(torch.utils.data.Dataset):
    """n pages cycling over pre-rendered images (rendering is not what is being measured)."""

    images: list[Image.Image] = []

    def __init__(self, n: int) -> None:
        self.n = n
        if not Pages.images:
            Pages.images = [page(i) for i in range(32)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Image.Image:
        return Pages.images[i % len(Pages.images)]


def build(device: str, spec_path: Path | None = None):
    from colpali_engine.models import ColQwen2, ColQwen2Processor
    from transformers import Qwen2TokenizerFast, Qwen2VLConfig
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    from models.tiny import QWEN_SPECIALS, _train_bpe

    spec = json.loads((spec_path or ROOT / "models/configs/colqwen2-2b.json").read_text())
    tok = Qwen2TokenizerFast(
        tokenizer_object=_train_bpe(QWEN_SPECIALS),
        unk_token=None,
        bos_token=None,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    cfg = Qwen2VLConfig(
        text_config={**spec["text_config"], "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|endoftext|>"], "pad_token_id": ids["<|endoftext|>"]},
        vision_config=spec["vision_config"], image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = ColQwen2(cfg).to(torch.bfloat16).eval()
    try:  # transformers 4.x-5.early: the torch (GPU-capable) processor is the "Fast" class
        from transformers.models.qwen2_vl import Qwen2VLImageProcessorFast as image_processor_cls
    except ImportError:  # later 5.x: the plain class is the torch one
        image_processor_cls = Qwen2VLImageProcessor
    proc = ColQwen2Processor(
        image_processor=image_processor_cls(**spec["processor"]),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(),
    )
    return model, proc


# ----------------------------------------------------------------------------------------------- loaders
def _uint8_batch(images: list[Image.Image], proc=None) -> torch.Tensor:
    """DataLoader collate for the GPU path: raw pixels only, (N, 3, H, W) uint8 (pages of one size);
    with ``proc``, each page first resized to the model's input size on the worker's CPU."""
    from engine.embedding.gpu_preprocess import page_tensor, presize

    return torch.stack([page_tensor(presize(proc, im) if proc is not None else im) for im in images])


def loader(proc, n_pages: int, batch: int, how: str, workers: int):
    collate = proc.process_images if how == "cpu-workers" else functools.partial(_uint8_batch, proc=proc)
    return torch.utils.data.DataLoader(
        Pages(n_pages), batch_size=batch, num_workers=workers, collate_fn=collate, pin_memory=True,
        prefetch_factor=4,
    )  # fmt: skip


def batches(proc, n_pages: int, batch: int, how: str, workers: int):
    """Model inputs, batch by batch, prepared the way variant ``how`` prepares them."""
    from engine.embedding.gpu_preprocess import process_pages

    ds = Pages(n_pages)
    if how == "cpu-main":
        for i in range(0, n_pages, batch):
            yield proc.process_images([ds[j] for j in range(i, min(i + batch, n_pages))])
        return
    for b in loader(proc, n_pages, batch, how, workers):
        if how == "cpu-workers":
            yield b
        else:  # presized uint8 pages: rescale/normalize/patchify on the GPU; ids, masks, grids stay on the CPU
            yield process_pages(proc, list(b.to("cuda", non_blocking=True)), "cuda")


def forward(model, b: dict, static: bool) -> torch.Tensor:
    """One forward. ``static``: ids/masks/grids stay on the CPU (static_pages decides without a GPU sync)."""
    b = {k: v if (static and k != "pixel_values") else v.to("cuda", non_blocking=True) for k, v in b.items()}
    b["pixel_values"] = b["pixel_values"].to(torch.bfloat16)
    return model(**b)


def end_to_end(model, proc, v: dict, n_pages: int, batch: int, workers: int) -> dict:
    """Pages/s from PIL pages to embeddings on the host. ``pipelined``: batch i+1 is queued on the GPU before
    batch i's embeddings are read back (pinned buffer, non-blocking copy, event)."""
    done, started, pending = 0, None, None

    def finish(item: tuple) -> None:
        nonlocal done, started
        if item[1] is not None:
            item[1].synchronize()
        if started is None:  # first batch = warm-up (workers starting)
            started = time.perf_counter()
        else:
            done += item[0].shape[0]

    with torch.inference_mode():
        for b in batches(proc, n_pages + batch, batch, v["prep"], workers):
            out = forward(model, b, v["static"]).float()
            if not v["pipelined"]:
                finish((out.cpu(), None))
                continue
            host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            host.copy_(out, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            if pending is not None:
                finish(pending)
            pending = (host, event)
        if pending is not None:
            finish(pending)
    elapsed = time.perf_counter() - started
    return {"pages": done, "seconds": round(elapsed, 3), "pages_per_s": round(done / elapsed, 2)}


def model_only(model, b: dict, static: bool, reps: int = 5) -> dict:
    with torch.inference_mode():
        forward(model, b, static)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            forward(model, b, static)
        end.record()
        torch.cuda.synchronize()
    n = b["input_ids"].shape[0] * reps
    return {"pages_per_s": round(n / (start.elapsed_time(end) / 1000), 2)}


def token_cosine(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Mean per-token cosine, one value per page."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).mean(dim=1).tolist()


def maxsim(queries: list[torch.Tensor], pages: torch.Tensor) -> torch.Tensor:
    """(n_queries, n_pages) late-interaction scores (pages unpadded: one prompt, no padding)."""
    return torch.stack([(pages.float() @ q.float().T).amax(dim=1).sum(dim=1) for q in queries])


def fidelity(out: torch.Tensor, ref: torch.Tensor, queries: list[torch.Tensor]) -> dict:
    cos = token_cosine(out, ref)
    s, s_ref = maxsim(queries, out), maxsim(queries, ref)
    return {
        "cosine_vs_fp32_mean": round(sum(cos) / len(cos), 5),
        "cosine_vs_fp32_min_page": round(min(cos), 5),
        "maxsim_max_rel_err": round(float(((s - s_ref).abs() / s_ref.abs()).max()), 5),
        "maxsim_same_top_page": bool((s.argmax(1) == s_ref.argmax(1)).all()),
    }


# ----------------------------------------------------------------------------------------------- checks
def micro(batch: int, tokens: int) -> dict:
    """The vision MLP's fc1 GEMM (batch x tokens rows) in bf16 vs rowwise fp8, and SDPA backends on the vision
    attention shape, with fresh random data (median of triton's do_bench)."""
    import triton
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from engine.embedding.fast import Fp8Linear

    torch.manual_seed(2)
    res: dict = {}
    m, k, n = batch * tokens, 1280, 5120
    lin = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    f8 = Fp8Linear(lin)
    xs = (x.abs().amax(dim=1, keepdim=True).float() / 448.0).clamp(min=1e-12)
    x8 = (x / xs).to(torch.float8_e4m3fn)
    flop = 2 * m * k * n
    ms = triton.testing.do_bench(lambda: lin(x), return_mode="median")
    res["gemm_bf16"] = {"ms": round(ms, 3), "tflops": round(flop / ms / 1e9, 1)}
    mm = lambda: torch._scaled_mm(x8, f8.w8.t(), scale_a=xs, scale_b=f8.w_scale, out_dtype=torch.bfloat16)  # noqa: E731
    ms = triton.testing.do_bench(mm, return_mode="median")
    res["gemm_fp8_rowwise"] = {"ms": round(ms, 3), "tflops": round(flop / ms / 1e9, 1)}
    compiled = torch.compile(f8)
    with torch.inference_mode():
        ms = triton.testing.do_bench(lambda: compiled(x), return_mode="median")
    res["fp8_linear_compiled_with_quantization"] = {"ms": round(ms, 3), "tflops": round(flop / ms / 1e9, 1)}
    ref = x.double() @ lin.weight.double().t()
    res["rel_err_fp8_rowwise"] = float((f8(x[:4096]).double() - ref[:4096]).norm() / ref[:4096].norm())
    res["rel_err_bf16"] = float((lin(x[:4096]).double() - ref[:4096]).norm() / ref[:4096].norm())
    q, kk, v = (torch.randn(batch, 16, tokens, 80, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flop = 4 * batch * 16 * tokens * tokens * 80
    for backend in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"):
        try:
            with sdpa_kernel(getattr(SDPBackend, backend)):
                f = lambda: torch.nn.functional.scaled_dot_product_attention(q, kk, v)  # noqa: E731
                ms = triton.testing.do_bench(f, return_mode="median")
            res[f"sdpa_{backend.lower()}"] = {"ms": round(ms, 3), "tflops": round(flop / ms / 1e9, 1)}
        except Exception as exc:
            res[f"sdpa_{backend.lower()}"] = f"{type(exc).__name__}: {exc}"[:200]
    return res


def class_flops(model, n_vision: int, n_text: int) -> dict[str, float]:
    """GFLOP per page of each fp8 layer class."""
    from engine.embedding.fast import layer_class

    merge = 4
    flops: dict[str, float] = {}
    for name, mod in model.named_modules():
        c = layer_class(name)
        if c is None or not isinstance(mod, torch.nn.Linear):
            continue
        rows = n_text if c.startswith("text") else n_vision // merge if c == "merger" else n_vision
        flops[c] = flops.get(c, 0.0) + 2 * rows * mod.in_features * mod.out_features / 1e9
    return {c: round(f, 1) for c, f in flops.items()}


def select_fp8(fid: dict, ref: torch.Tensor, threshold: float) -> dict:
    """Per-class fp8 sensitivity (eager model, fidelity pages), then the greedy set kept at ``threshold``."""
    from engine.embedding import fast

    model, _ = build("cuda")
    fast.apply(model, ["linear_patch_embed", "batched_attention", "static_pages"])
    gflop = class_flops(model, fid["pixel_values"].shape[1], fid["input_ids"].shape[1])

    def min_cos(classes: list[str]) -> float:
        swaps = fast.swap_fp8(model, classes)
        with torch.inference_mode():
            out = forward(model, fid, True).float().cpu()
        fast.unswap(swaps)
        return round(min(token_cosine(out, ref)), 5)

    base = min_cos([])
    single = {c: min_cos([c]) for c in fast.FP8_CLASSES}
    order = sorted(fast.FP8_CLASSES, key=lambda c: max(base - single[c], 1e-6) / gflop[c])
    chosen: list[str] = []
    trail = []
    for c in order:
        cos = min_cos([*chosen, c])
        trail.append({"add": c, "min_cosine": cos, "kept": cos >= threshold})
        if cos >= threshold:
            chosen.append(c)
    result = {
        "threshold": threshold,
        "gflop_per_page": gflop,
        "bf16_min_cosine": base,
        "single_class_min_cosine": single,
        "all_classes_min_cosine": min_cos(list(fast.FP8_CLASSES)),
        "greedy": trail,
        "selected": chosen,
        "selected_gflop_share": round(sum(gflop[c] for c in chosen) / sum(gflop.values()), 3),
    }
    return result


def profile(model, b: dict, static: bool) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        forward(model, b, static)
        torch.cuda.synchronize()
        t = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(2):
                forward(model, b, static).float().cpu()
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    gpu_us = sum(e.self_device_time_total for e in events)
    pages = 2 * b["input_ids"].shape[0]
    top = sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[:15]
    return {
        "wall_s_two_forwards_under_profiler": round(wall, 3),
        "gpu_kernel_s": round(gpu_us / 1e6, 3),
        "gpu_kernel_ms_per_page": round(gpu_us / 1e3 / pages, 2),
        "pages_per_s_if_gpu_always_busy": round(pages / (gpu_us / 1e6), 1),
        "gpu_busy_share_under_profiler": round(gpu_us / 1e6 / wall, 3),
        "top_kernels": [{"kernel": e.key[:80], "ms": round(e.self_device_time_total / 1e3, 1), "calls": e.count} for e in top],
    }  # fmt: skip


BASE = ("linear_patch_embed", "batched_attention")
NEW = (*BASE, "static_pages", "compile")
VARIANTS = {  # patches (fp8 classes are swapped in before compile), preprocessing, static inputs, pipelined
    "stock": {"patches": (), "prep": "cpu-main", "static": False, "pipelined": False, "fp8": None},
    "today": {"patches": (*BASE, "compile"), "prep": "cpu-workers", "static": False, "pipelined": False, "fp8": None},
    "new": {"patches": NEW, "prep": "presize", "static": True, "pipelined": True, "fp8": None},
    "new+fp8sel": {"patches": NEW, "prep": "presize", "static": True, "pipelined": True, "fp8": "selected"},
    "new+fp8all": {"patches": NEW, "prep": "presize", "static": True, "pipelined": True, "fp8": "all"},
}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=320)
    ap.add_argument("--stock-pages", type=int, default=64, help="stock is ~16 pages/s end to end")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--select-threshold", type=float, default=0.996, help="fidelity target 0.995 + margin")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--smoke", action="store_true", help="few pages, one round: does every path run?")
    args = ap.parse_args()
    if args.smoke:
        args.pages, args.stock_pages, args.rounds = 64, 32, 1
    import statistics

    import torch._dynamo
    import transformers

    from engine.embedding import fast

    # every variant's compiled blocks share transformers' layer __call__ code object: without a higher limit,
    # the later variants would run eagerly once 8 (variant, shape) entries exist
    torch._dynamo.config.recompile_limit = 64
    from engine.embedding.gpu_preprocess import presize, process_pages

    out_dir = Path(os.environ.get("OUT", ROOT / "bench" / "results"))
    out_dir.mkdir(parents=True, exist_ok=True)
    payload: dict = {
        "benchmark": "embed-gpu",
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_cores": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
        "python": platform.python_version(),
        "model": "ColQwen2 architecture (Qwen2-VL-2B), random weights, bf16 unless named",
        "input": "synthetic US-letter pages 2550x3300 (pre-rendered PIL images) -> 744 visual tokens",
        "batch": args.batch,
        "workers": args.workers,
        "rounds": args.rounds,
        "smoke": args.smoke,
        "target_pages_per_s": 85,
        "image_processor": type(build("meta")[1].image_processor).__name__,
        "variants": {},
        "errors": {},
    }

    def save() -> None:
        (out_dir / "embed-gpu.json").write_text(json.dumps(_public(payload), indent=2) + "\n")

    t0 = time.perf_counter()
    try:
        payload["micro"] = micro(args.batch, 2976)
    except Exception as exc:
        payload["errors"]["micro"] = f"{type(exc).__name__}: {exc}"[:500]
    print("micro", payload.get("micro"), f"{time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    save()

    # fp32 reference: the stock model upcast, CPU preprocessing, 8 fixed pages; queries embedded in fp32 too
    ref_model, proc = build("cuda")
    fid_pages = [Pages(8)[i] for i in range(8)]
    fid_cpu = proc.process_images(fid_pages)
    fid_new = process_pages(proc, [presize(proc, p) for p in fid_pages], "cuda")
    texts = ["container MSKU0007012 weight", "Page 3 line 40", "blue rectangle", "invoice total",
             "weight 300.0 kg", "bill of lading", "line 59", "MSKU0031"]  # fmt: skip
    q = proc.process_queries(texts)
    ref_model.float()
    with torch.inference_mode():
        ref = ref_model(**{k: v.to("cuda") for k, v in fid_cpu.items()}).float().cpu()
        q_out = ref_model(**{k: v.to("cuda") for k, v in q.items()}).float().cpu()
    queries = [q_out[i][q["attention_mask"][i].bool()] for i in range(len(texts))]
    del ref_model
    torch.cuda.empty_cache()

    selected: list[str] = []
    if any(VARIANTS[n]["fp8"] == "selected" for n in args.variants):
        try:
            payload["fp8_selection"] = select_fp8(fid_new, ref, args.select_threshold)
            selected = payload["fp8_selection"]["selected"]
            torch.cuda.empty_cache()  # the selection's model is gone with its frame
        except Exception as exc:
            payload["errors"]["fp8_selection"] = f"{type(exc).__name__}: {exc}"[:800]
        print("selection", payload.get("fp8_selection"), f"{time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)  # fmt: skip
        save()

    models: dict = {}
    for name in args.variants:
        v = VARIANTS[name]
        classes = {"selected": selected, "all": list(fast.FP8_CLASSES), None: []}[v["fp8"]]
        entry: dict = {"patches": list(v["patches"]), "fp8_classes": classes, "preprocessing": v["prep"],
                       "pipelined": v["pipelined"], "end_to_end": [], "model_only": []}  # fmt: skip
        payload["variants"][name] = entry
        try:
            if v["fp8"] == "selected" and not selected:
                raise RuntimeError("no fp8 class kept the fidelity target")
            model, _ = build("cuda")
            swaps = fast.swap_fp8(model, classes)
            entry["fp8_layers_swapped"] = len(swaps)
            entry["applied"] = fast.apply(model, v["patches"])
            models[name] = model
            t = time.perf_counter()
            with torch.inference_mode():
                fid = fid_new if v["prep"] == "presize" else fid_cpu
                out = forward(model, fid, v["static"]).float().cpu()
            entry["first_call_s"] = round(time.perf_counter() - t, 2)
            entry.update(fidelity(out, ref, queries))
            pages = [Pages(args.batch)[i] for i in range(args.batch)]
            entry["_batch"] = (
                process_pages(proc, [presize(proc, p) for p in pages], "cuda")
                if v["prep"] == "presize"
                else proc.process_images(pages)
            )
            model_only(model, entry["_batch"], v["static"], reps=1)  # compile this batch shape
            if v["static"]:
                entry["static_path_used"] = model._docvision_static.hits > 0
        except Exception as exc:
            payload["errors"][name] = f"{type(exc).__name__}: {exc}"[:800]
            entry["failed"] = True
        print(name, _public({"variants": {name: entry}})["variants"][name], f"{time.perf_counter() - t0:.0f}s",
              file=sys.stderr, flush=True)  # fmt: skip
        save()

    live = [n for n in args.variants if not payload["variants"][n].get("failed")]
    for rnd in range(args.rounds):  # alternate the variants, round after round (the host drifts)
        for name in live:
            v, entry = VARIANTS[name], payload["variants"][name]
            try:
                entry["model_only"].append(model_only(models[name], entry["_batch"], v["static"]))
                n = args.stock_pages if name == "stock" else args.pages
                entry["end_to_end"].append(end_to_end(models[name], proc, v, n, args.batch, args.workers))
            except Exception as exc:
                payload["errors"][f"{name}/round{rnd}"] = f"{type(exc).__name__}: {exc}"[:800]
            print(rnd, name, entry["model_only"][-1:], entry["end_to_end"][-1:], f"{time.perf_counter() - t0:.0f}s",
                  file=sys.stderr, flush=True)  # fmt: skip
        save()

    for name in live:
        entry = payload["variants"][name]
        for kind in ("end_to_end", "model_only"):
            rates = [r["pages_per_s"] for r in entry[kind]]
            if rates:
                entry[f"{kind}_median"] = round(statistics.median(rates), 2)
                entry[f"{kind}_spread"] = [min(rates), max(rates)]
    for name in ("new", "new+fp8sel"):
        if name in live:
            try:
                payload[f"profile_{name}"] = profile(models[name], payload["variants"][name]["_batch"], True)
            except Exception as exc:
                payload["errors"][f"profile_{name}"] = f"{type(exc).__name__}: {exc}"[:800]
    ok = [n for n in live if "end_to_end_median" in payload["variants"][n]
          and payload["variants"][n]["cosine_vs_fp32_min_page"] >= 0.995]  # fmt: skip
    if ok:
        best = max(ok, key=lambda n: payload["variants"][n]["end_to_end_median"])
        payload["best_at_fidelity_target"] = {"variant": best, **{
            k: payload["variants"][best][k] for k in ("end_to_end_median", "end_to_end_spread",
                                                      "model_only_median", "cosine_vs_fp32_min_page")}}  # fmt: skip
    payload["loadavg_after"] = os.getloadavg()
    payload["wall_s"] = round(time.perf_counter() - t0, 1)
    save()
    print(json.dumps({k: payload[k] for k in ("micro", "fp8_selection", "errors") if k in payload}, indent=1))
    print(
        "\nvariant        e2e pages/s (spread)        model-only (spread)        cosine min/mean   maxsim err"
    )
    for name in args.variants:
        e = payload["variants"][name]
        print(f"{name:13s} {e.get('end_to_end_median', '-')!s:>7} {e.get('end_to_end_spread', '')!s:18s} "
              f"{e.get('model_only_median', '-')!s:>7} {e.get('model_only_spread', '')!s:18s} "
              f"{e.get('cosine_vs_fp32_min_page', '-')}/{e.get('cosine_vs_fp32_mean', '-')}  {e.get('maxsim_max_rel_err', '-')}")  # fmt: skip


def _public(payload: dict) -> dict:
    return {**payload, "variants": {n: {k: v for k, v in e.items() if not k.startswith("_")}
                                    for n, e in payload["variants"].items()}}  # fmt: skip


if __name__ == "__main__":
    main()
