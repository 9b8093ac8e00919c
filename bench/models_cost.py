"""Cost of each model family on CPUs (the ladder) and on a GPU, from full-size random-weight architectures.

    python bench/models_cost.py --prepare                       # build the full-size random models (all cores)
    python bench/models_cost.py --label here --cells 2          # this host: 2 cores, the auto compute path
    # the device host (16-core Xeon with AMX + H100), one call:
    python bench/models_cost.py --label device --cells 16,6,2,16:noamx,6:noamx,2:noamx,gpu

Device recipe: ``bench/device/sync.sh`` copies this tree and the wheels it needs (openvino trimmed to its CPU
plugin, nncf, pydot, openvino-telemetry, colpali-engine; ``.whl/``, not committed) into the ignored folder
``.cpu-device`` of the checkout the device tool sends; ``bash .cpu-device/bench/device/run.sh info prepare2 l16 l6n``
(carry ``.cpu-device``) builds and exports there (builds live in ``$BENCH_WORK``, /tmp on the device: a carried
folder is replaced at every call) and runs the cells. Not run yet: no device machine could be started in the
session that wrote this (7 tries). Check with ``--tiny`` here first.

``--backends torch,openvino`` adds the OpenVINO backend (ColQwen2 only; exported at ``--prepare`` into the model
directory, as ``models.bake --backend openvino`` does); ``--cells "6+2+2:noamx,16"``: cells joined by ``+`` run at
the same time on disjoint CPUs (one per physical core first; ``concurrent_with`` in each row says so);
``--profile-cells``: those cells also profile one page (top kernels by self time: torch profiler / OpenVINO
per-node counters, with the GFLOP arithmetic of the page and the achieved rate).

Models (``--models``): ``colqwen2`` (Qwen2-VL-2B architecture, models/configs/colqwen2-2b.json),
``colqwen3.5`` (Qwen3.5-0.8B, models/configs/colqwen3.5-0.8b.json), ``colqwen3`` (Qwen3-VL-4B,
models/configs/colqwen3-4b.json); random weights, bf16 on disk, loaded through the Embedder on the compute
path it picks for the CPU (bf16 on AMX, fp32 activations + int8 weights otherwise; the int8 weights come
from torch's dynamic quantization of the same weights, the kernels a baked model runs), CPU-default speed
patches (none). A model is ``name[@tokens,tokens…]``: the visual-token budgets it runs at (default: its
reference budget; ColQwen2 744/512/384).

A cell is ``<cores>[:noamx]`` or ``gpu``. Each CPU cell is one process pinned to that many cores
(sched_setaffinity, threads = cores, CUDA hidden; ``noamx`` sets ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI); it
loads every model once, warms each (model, budget) up once, then runs them in turn, rep after rep, on the
same US-letter page at 300 DPI, so a shared host's drift hits every variant alike. ``gpu``: bf16 on CUDA,
stock forward (no compile: the same path for every family), batch 16, pages/s per rep.

Per row: median s/page (or pages/s), spread (max-min over median), min per-token cosine of the page vectors
against an fp32 reference of the same weights on the same page (computed once per model and budget in a
subprocess on all cores, ``--no-fidelity`` skips it), and peak RSS of the cell's process (every model it
loaded). Writes bench/results/cpu-ladder.json (a ``rows`` list: cores, amx, backend, tokens,
median_s_per_page, spread, min_cosine, peak_rss_mb, ...) and bench/results/models-cost.json (per family,
what `python -m engine models` lists), or to $OUT with --label. Random weights: speed and numerics only,
never retrieval quality.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, machine, peak_rss_mb, write_result  # noqa: E402
from bench.embed import WORK, letter_pages  # noqa: E402

# name → (work dir, builder, family, reference budget, default budgets)
MODELS = {
    "colqwen2": ("colqwen2-full-random", "build_fullsize_random", "colqwen2", 768, (768, 512, 384)),
    "colqwen3.5": ("colqwen3.5-0.8b-full-random", "colqwen3.5-0.8b-fullsize-random", "colqwen3.5", 1792, (1792,)),
    "colqwen3": ("colqwen3-4b-full-random", "colqwen3-4b-fullsize-random", "colqwen3", 1280, (1280,)),
}  # fmt: skip
NO_AMX = "AVX512_CORE_VNNI"
OV_FAMILIES = ("colqwen2",)  # what engine/embedding/openvino_backend.py exports
# --tiny: the same cells on the tiny random builds (a dry run of the whole plan in seconds, before device time)
TINY = {"colqwen2": ("tiny-colqwen2", "colqwen2", (64, 32)), "colqwen3.5": ("tiny-colqwen3.5", "colqwen3.5", (64, 32)),
        "colqwen3": ("tiny-colqwen3", "colqwen3", (64, 32))}  # fmt: skip
if os.environ.get("MODELS_COST_TINY"):
    MODELS = {k: (TINY[k][0], TINY[k][1], v[2], 64, TINY[k][2]) for k, v in MODELS.items()}


def model_dir(name: str) -> Path:
    return WORK / MODELS[name][0]


def prepare(names: list[str], backends: tuple[str, ...] = ("torch",)) -> dict:
    import models.tiny as tiny

    info: dict = {}
    for name in names:
        out = model_dir(name)
        if not (out / "config.json").exists():
            builder = MODELS[name][1]
            t = time.perf_counter()
            (getattr(tiny, builder) if hasattr(tiny, builder) else tiny.BUILDERS[builder])(out)
            print(f"built {name} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        if "openvino" in backends and MODELS[name][2] in OV_FAMILIES:
            done = out / "openvino" / "openvino.json"
            if not done.exists():  # the bake-time export (models.bake --backend openvino does the same)
                import torch

                from engine.embedding import openvino_backend as ovb
                from engine.embedding.loader import load_source

                model, proc, _, _ = load_source(str(out), dtype=torch.float32)
                ovb.export(model, proc, out)
                del model
            info[name] = json.loads(done.read_text())
            print(f"openvino export {name}: {info[name]}", file=sys.stderr, flush=True)
    return info


def parse_models(spec: str) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for item in spec.split(";") if ";" in spec else spec.split(" "):
        if not item.strip():
            continue
        name, _, budgets = item.strip().partition("@")
        if name not in MODELS:
            raise SystemExit(f"unknown model {name!r}: {', '.join(MODELS)}")
        out[name] = tuple(int(b) for b in budgets.split(",")) if budgets else MODELS[name][4]
    return out


def set_budget(emb, tokens: int) -> None:
    """The visual-token budget in place (the Embedder's own arithmetic: max_pixels = tokens × side²)."""
    side = emb._token_side()
    ip = emb.processor.image_processor
    ip.max_pixels = tokens * side * side
    ip.size["longest_edge"] = tokens * side * side


def reference_path(name: str, tokens: int) -> Path:
    return WORK / f"cost-reference-fp32-{MODELS[name][0]}-{tokens}.npy"


def run_reference(models: dict[str, tuple[int, ...]]) -> None:
    """fp32 page vectors of each model at each budget (all cores): what every cell is compared with."""
    import numpy as np

    from engine.embedding import Embedder

    page = letter_pages(1)
    for name, budgets in models.items():
        todo = [t for t in budgets if not reference_path(name, t).exists()]
        if not todo:
            continue
        emb = Embedder(str(model_dir(name)), compute_mode="fp32", speedups="none", verify=False)
        for tokens in todo:
            set_budget(emb, tokens)
            np.save(reference_path(name, tokens), emb.embed_images(page)[0].vectors)
        del emb


def run_cell(
    models: dict[str, tuple[int, ...]],
    reps: int,
    gpu: bool,
    fidelity: bool,
    backends: tuple[str, ...] = ("torch",),
    profile: bool = False,
) -> dict:
    """One pinned process: every (model, backend) loaded once, (model, backend, budget) variants alternated rep
    after rep."""
    import numpy as np
    import torch

    from engine.embedding import Embedder

    page = letter_pages(1)
    loaded, info = {}, {}
    for name in models:
        for backend in backends if not gpu else ("torch",):
            if backend == "openvino" and MODELS[name][2] not in OV_FAMILIES:
                continue
            t = time.perf_counter()
            emb = Embedder(
                str(model_dir(name)), compute_mode="cuda" if gpu else "auto", speedups="none", verify=False,
                backend=backend if not gpu else "auto",
            )  # fmt: skip
            key = f"{name}/{backend}"
            loaded[key] = emb
            d = emb.describe()
            info[key] = {"load_seconds": round(time.perf_counter() - t, 1), "compute": d["compute"],
                         "threads": emb.plan.threads, "reason": emb.plan.reason}  # fmt: skip
            if backend == "openvino":
                from engine.embedding.openvino_backend import runtime_isas

                info[key]["openvino_kernels"] = runtime_isas(emb.model.text)
                info[key]["openvino_precision"] = emb.model.precision
    variants = [(f"{n}/{b}", t) for n, budgets in models.items() for b in backends for t in budgets
                if f"{n}/{b}" in loaded]  # fmt: skip
    batch = 16 if gpu else 1
    pages = page * batch
    times: dict[tuple[str, int], list[float]] = {v: [] for v in variants}
    cosine: dict[tuple[str, int], float | None] = {}
    tokens_seen: dict[tuple[str, int], int] = {}

    def once(name: str, tokens: int) -> float:
        emb = loaded[name]
        set_budget(emb, tokens)
        if gpu:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = emb.embed_images(pages)
        if gpu:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t
        once.last = out  # type: ignore[attr-defined]
        return elapsed

    for name, tokens in variants:  # warm-up (oneDNN / cuBLAS build their kernels) and fidelity
        once(name, tokens)
        out = once.last[0]  # type: ignore[attr-defined]
        tokens_seen[(name, tokens)] = loaded[name].visual_tokens(*page[0].size)
        ref_file = reference_path(name.split("/")[0], tokens)
        if fidelity and ref_file.exists():
            ref = np.load(ref_file)
            same = ref.shape == out.vectors.shape
            cosine[(name, tokens)] = round(float((ref * out.vectors).sum(-1).min()), 5) if same else None
        else:
            cosine[(name, tokens)] = None
        print("warm", name, tokens, cosine[(name, tokens)], file=sys.stderr, flush=True)
    loadavg_before = os.getloadavg()
    for rep in range(reps):
        for v in variants:
            times[v].append(round(once(*v), 3))
        print("rep", rep, {f"{n}@{t}": ts[-1] for (n, t), ts in times.items()}, file=sys.stderr, flush=True)
    profiles = {}
    if profile and not gpu:
        for key in loaded:
            budget = max(models[key.split("/")[0]])
            try:
                profiles[key] = profile_once(loaded[key], page, budget)
            except Exception as exc:  # a profile is evidence, not the measurement: the cell keeps its rows
                profiles[key] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
            print("profile", key, json.dumps(profiles[key])[:600], file=sys.stderr, flush=True)
    rows = []
    for (key, tokens), ts in times.items():
        name, backend = key.split("/")
        med = statistics.median(ts)
        row = {
            "family": MODELS[name][2], "model": name, "tokens": tokens_seen[(key, tokens)], "budget": tokens,
            "backend": "torch-cuda-bf16" if gpu else backend, "compute": info[key]["compute"],
            "reps": len(ts), "spread": round((max(ts) - min(ts)) / med, 3), "min_cosine": cosine[(key, tokens)],
        }  # fmt: skip
        if gpu:
            row |= {"batch": batch, "pages_per_s": round(batch / med, 2), "seconds_per_batch": ts}
        else:
            row |= {"median_s_per_page": round(med, 3), "seconds_per_page": ts}
        rows.append(row)
    return {
        "rows": rows, "models": info, "peak_rss_mb": round(peak_rss_mb()), "torch": torch.__version__,
        "profiles": profiles, "cpus": sorted(os.sched_getaffinity(0)),
        "gpu": torch.cuda.get_device_name(0) if gpu else None,
        "loadavg_before": loadavg_before, "loadavg_after": os.getloadavg(),
    }  # fmt: skip


def page_gflop(config, n_patches: int, n_text: int) -> dict[str, float]:
    """GFLOP of one page's forward from the config (matrix products + attention; Qwen2-VL-style towers)."""
    v = getattr(config, "vision_config", None)
    t = getattr(config, "text_config", config)
    out: dict[str, float] = {}
    if v is not None and getattr(v, "embed_dim", None):
        e, depth = int(v.embed_dim), int(v.depth)
        mlp = int(e * float(getattr(v, "mlp_ratio", 4)))
        lin = 2 * n_patches * (3 * e * e + e * e + 2 * e * mlp) * depth
        attn = 4 * n_patches * n_patches * e * depth
        merge = int(getattr(v, "spatial_merge_size", 2)) ** 2
        merger = 2 * (n_patches // merge) * (e * merge) * (e * merge + int(v.hidden_size))
        out |= {"vision_linear": lin / 1e9, "vision_attention": attn / 1e9, "merger": merger / 1e9}
    h, inter, layers = int(t.hidden_size), int(t.intermediate_size), int(t.num_hidden_layers)
    heads, kv = int(t.num_attention_heads), int(getattr(t, "num_key_value_heads", t.num_attention_heads))
    hd = h // heads
    lin = 2 * n_text * (h * heads * hd + 2 * h * kv * hd + heads * hd * h + 3 * h * inter) * layers
    out |= {"text_linear": lin / 1e9, "text_attention": 4 * n_text * n_text * heads * hd * layers / 2 / 1e9}
    out["total"] = sum(out.values())
    return {k: round(x, 1) for k, x in out.items()}


def profile_once(emb, page, budget: int) -> dict:
    """Where one page's seconds go: the top kernels (torch profiler / OpenVINO per-node counters) and the FLOP
    arithmetic (GFLOP per page over seconds = achieved rate)."""
    set_budget(emb, budget)
    batch = emb.processor.process_images(page)
    grid = batch["image_grid_thw"][0]
    n_patches, n_text = int(grid.prod()), int(batch["attention_mask"][0].sum())
    gflop = page_gflop(emb.model.config, n_patches, n_text)
    t = time.perf_counter()
    top: list[dict] = []
    if emb.backend == "openvino":
        import openvino as ov

        m = emb.model
        core = ov.Core()
        props = {"INFERENCE_NUM_THREADS": emb.plan.threads, "PERFORMANCE_HINT": "LATENCY",
                 "INFERENCE_PRECISION_HINT": m.precision, "PERF_COUNT": True}  # fmt: skip
        root = Path(emb.source) / "openvino"
        saved = m.vision_request, m.text_request
        m.vision_request = core.compile_model(str(root / "vision.xml"), "CPU", props).create_infer_request()
        m.text_request = core.compile_model(str(root / "text.xml"), "CPU", props).create_infer_request()
        emb.embed_images(page)  # warm
        t = time.perf_counter()
        emb.embed_images(page)
        wall = time.perf_counter() - t
        agg: dict[str, float] = {}
        for part, req in (("vision", m.vision_request), ("text", m.text_request)):
            for p in req.get_profiling_info():
                if str(p.status).endswith("EXECUTED"):
                    k = f"{part}:{p.node_type}:{p.exec_type}"
                    agg[k] = agg.get(k, 0.0) + p.real_time.total_seconds()
        m.vision_request, m.text_request = saved
        total = sum(agg.values()) or 1.0
        top = [{"kernel": k, "s": round(v, 3), "share": round(v / total, 3)}
               for k, v in sorted(agg.items(), key=lambda kv: -kv[1])[:14]]  # fmt: skip
    else:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as tprofile

        emb.embed_images(page)
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            t = time.perf_counter()
            emb.embed_images(page)
            wall = time.perf_counter() - t
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events) or 1.0
        top = [{"kernel": e.key[:70], "s": round(e.self_cpu_time_total / 1e6, 3),
                "share": round(e.self_cpu_time_total / total, 3), "calls": e.count} for e in events[:14]]  # fmt: skip
    return {
        "budget": budget, "patches": n_patches, "text_tokens": n_text, "gflop_per_page": gflop,
        "wall_s_profiled": round(wall, 3), "achieved_tflops": round(gflop["total"] / wall / 1e3, 2),
        "top": top,
    }  # fmt: skip


def cell_env(cell: str) -> tuple[dict[str, str], int | None, bool, bool]:
    """(environment, cores or None for gpu, amx, gpu) of a cell spec."""
    env = dict(os.environ)
    if cell == "gpu":
        return env, None, True, True
    cores, _, flag = cell.partition(":")
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if flag == "noamx":
        env["ONEDNN_MAX_CPU_ISA"] = NO_AMX
    return env, int(cores), flag != "noamx", False


def cpu_order() -> list[int]:
    """This process's CPUs, one per physical core first, then their hyperthread siblings: a cell of n CPUs gets n
    cores where the host has them."""
    cpus = sorted(os.sched_getaffinity(0))
    first, rest, seen = [], [], set()
    for c in cpus:
        try:
            sib = Path(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list").read_text().strip()
        except OSError:
            sib = str(c)
        (rest if sib in seen else first).append(c)
        seen.add(sib)
    return first + rest


def topology() -> dict:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    keep = (
        "Model name",
        "Thread(s) per core",
        "Core(s) per socket",
        "Socket(s)",
        "CPU(s)",
        "L3 cache",
        "NUMA",
    )
    return {
        k.strip(): v.strip()
        for k, _, v in (line.partition(":") for line in out.splitlines())
        if k.strip().startswith(keep)
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="colqwen2 colqwen3.5 colqwen3", help="space-separated name[@budgets]")
    ap.add_argument(
        "--cells",
        default="2",
        help="comma list of <cores>[:noamx] or gpu; a+b+c run at once on disjoint cores",
    )
    ap.add_argument("--backends", default="torch", help="comma list: torch, openvino (ColQwen2 only)")
    ap.add_argument("--profile-cells", default="", help="cells that also profile one page (kernel time)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--label", default="", help="suffix of the JSON names (written to $OUT on the device)")
    ap.add_argument(
        "--prepare", action="store_true", help="only build the models, exports and fp32 references"
    )
    ap.add_argument("--no-fidelity", action="store_true")
    ap.add_argument("--note", default="")
    ap.add_argument("--tiny", action="store_true", help="dry run on the tiny builds (sets MODELS_COST_TINY)")
    ap.add_argument("--cell", help=argparse.SUPPRESS)  # a worker: one cell, JSON on stdout
    ap.add_argument("--cpus", help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.tiny and not os.environ.get("MODELS_COST_TINY"):
        os.environ["MODELS_COST_TINY"] = "1"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    models = parse_models(args.models)
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    if args.reference:
        run_reference(models)
        return
    if args.cell:
        _, cores, _, gpu = cell_env(args.cell)
        if cores:
            os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
        print(json.dumps(run_cell(models, args.reps, gpu, not args.no_fidelity, backends, args.profile)))
        return
    t0 = time.perf_counter()
    exports = prepare(list(models), backends)
    prepare_s = round(time.perf_counter() - t0)
    if not args.no_fidelity:
        env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"} | {
            "CUDA_VISIBLE_DEVICES": ""
        }
        subprocess.run(
            [sys.executable, __file__, "--reference", "--models", args.models], check=True, env=env
        )
    if args.prepare:
        print(json.dumps({"prepare_s": prepare_s, "exports": exports}))
        return
    ladder, costs, cells = [], [], {}
    where = machine()
    order = cpu_order()
    profile_cells = {c.strip() for c in args.profile_cells.split(",") if c.strip()}
    for group in [g.strip() for g in args.cells.split(",") if g.strip()]:
        members = [c.strip() for c in group.split("+") if c.strip()]
        procs, free = [], list(order)
        for cell in members:
            env, cores, amx, gpu = cell_env(cell)
            if cores and cores > len(free):
                print(f"skip {cell}: {cores} cores asked, {len(free)} free here", file=sys.stderr)
                continue
            cpus = [free.pop(0) for _ in range(cores or 0)]
            cmd = [sys.executable, __file__, "--cell", cell, "--models", args.models, "--reps", str(args.reps),
                   "--backends", args.backends, "--cpus", ",".join(map(str, cpus))]  # fmt: skip
            cmd += ["--no-fidelity"] if args.no_fidelity else []
            cmd += ["--profile"] if cell in profile_cells else []
            procs.append((cell, cores, amx, gpu, cpus, time.perf_counter(),
                          subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)))  # fmt: skip
        for cell, cores, amx, gpu, _cpus, t, proc in procs:
            stdout, _ = proc.communicate()
            if proc.returncode != 0:
                cells[cell] = {"error": f"exit {proc.returncode}"}
                continue
            result = json.loads(stdout.strip().splitlines()[-1])
            cells[cell] = {k: v for k, v in result.items() if k != "rows"} | {
                "wall_s": round(time.perf_counter() - t), "concurrent_with": [m for m in members if m != cell],
            }  # fmt: skip
            for row in result["rows"]:
                # AMX only where the CPU has it and the cell does not cap oneDNN
                on_amx = amx and bool(where["amx"])
                row = {"cores": cores, "amx": None if gpu else on_amx, **row, "peak_rss_mb": result["peak_rss_mb"],
                       "concurrent_with": [m for m in members if m != cell]}  # fmt: skip
                ladder.append(row)
                label = "GPU" if gpu else f"{cores} cores{', AMX' if on_amx else ', no AMX'}"
                backend = "" if gpu or row["backend"] == "torch" else f", {row['backend']}"
                costs.append({
                    "family": row["family"], "model": row["model"], "tokens": row["tokens"], "backend": row["backend"],
                    "where": f"({label}{backend}, {where['cpu'] if not gpu else result.get('gpu', 'GPU')}"
                             f"{', ' + args.label if args.label else ''})",
                    **({"pages_per_s": row["pages_per_s"]} if gpu else {"s_per_page": row["median_s_per_page"]}),
                    "spread": row["spread"], "min_cosine": row["min_cosine"],
                })  # fmt: skip
            # after every cell: a cut-off run keeps what it measured
            suffix = f"-{args.label}" if args.label else ""
            common = {
                "method": "one pinned process per cell, every (model, backend) loaded once, variants alternated rep "
                "after rep after one warm-up each; cells joined by + ran at the same time on disjoint CPUs "
                "(concurrent_with: they share memory bandwidth and L3); spread = (max - min) / median; "
                "min_cosine = the lowest per-token cosine of the page vectors vs fp32 of the same weights; "
                "random weights",
                "cells": cells, "topology": topology(), "cpu_order": order, "exports": exports,
                "prepare_s": prepare_s, **({"note": args.note} if args.note else {}),
            }  # fmt: skip
            write_result(f"cpu-ladder{suffix}", {**common, "rows": ladder})
            write_result(f"models-cost{suffix}", {**common, "rows": costs})
    print(RESULTS)
    for row in ladder:
        print(json.dumps({k: row.get(k) for k in ("cores", "amx", "backend", "model", "tokens", "median_s_per_page",
                                                  "pages_per_s", "spread", "min_cosine", "peak_rss_mb")}))  # fmt: skip


if __name__ == "__main__":
    main()
