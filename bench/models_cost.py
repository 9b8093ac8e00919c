"""Cost of each model family on CPUs (the ladder) and on a GPU, from full-size random-weight architectures.

    python bench/models_cost.py --prepare                       # build the full-size random models (all cores)
    python bench/models_cost.py --label here --cells 2          # this host: 2 cores, the auto compute path
    # the device host (16-core Xeon with AMX + H100), one call:
    python bench/models_cost.py --label device --cells 16,6,2,16:noamx,6:noamx,2:noamx,gpu

Device recipe (not run yet: no device machine was lent in the session that wrote this). The device has no
colpali-engine and no network: carry its wheel (``pip download --no-deps colpali-engine==0.3.18 -d .whl``) and
start the command with ``python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
export PYTHONPATH=/tmp/site``. One 600-s call cannot hold the whole ladder (building the random 4B model and
the fp32 references alone take minutes), so: call 1 ``--prepare`` then ``--cells 16,6,gpu``; call 2, on the
same warm machine (ignored build outputs under bench/work stay), ``--cells 2,16:noamx,6:noamx,2:noamx`` with
``--models "colqwen2@768,512,384"`` for the AMX-off rows. Check with ``--tiny`` here first.

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
# --tiny: the same cells on the tiny random builds (a dry run of the whole plan in seconds, before device time)
TINY = {"colqwen2": ("tiny-colqwen2", "colqwen2", (64, 32)), "colqwen3.5": ("tiny-colqwen3.5", "colqwen3.5", (64, 32)),
        "colqwen3": ("tiny-colqwen3", "colqwen3", (64, 32))}  # fmt: skip
if os.environ.get("MODELS_COST_TINY"):
    MODELS = {k: (TINY[k][0], TINY[k][1], v[2], 64, TINY[k][2]) for k, v in MODELS.items()}


def model_dir(name: str) -> Path:
    return WORK / MODELS[name][0]


def prepare(names: list[str]) -> None:
    import models.tiny as tiny

    for name in names:
        out = model_dir(name)
        if (out / "config.json").exists():
            continue
        builder = MODELS[name][1]
        t = time.perf_counter()
        (getattr(tiny, builder) if hasattr(tiny, builder) else tiny.BUILDERS[builder])(out)
        print(f"built {name} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)


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


def run_cell(models: dict[str, tuple[int, ...]], reps: int, gpu: bool, fidelity: bool) -> dict:
    """One pinned process: every model loaded once, (model, budget) variants alternated rep after rep."""
    import numpy as np
    import torch

    from engine.embedding import Embedder

    page = letter_pages(1)
    loaded, info = {}, {}
    for name in models:
        t = time.perf_counter()
        emb = Embedder(
            str(model_dir(name)), compute_mode="cuda" if gpu else "auto", speedups="none", verify=False
        )
        loaded[name] = emb
        info[name] = {"load_seconds": round(time.perf_counter() - t, 1), "compute": emb.plan.name,
                      "threads": emb.plan.threads, "reason": emb.plan.reason}  # fmt: skip
    variants = [(n, t) for n, budgets in models.items() for t in budgets]
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
        ref_file = reference_path(name, tokens)
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
    rows = []
    for (name, tokens), ts in times.items():
        med = statistics.median(ts)
        row = {
            "family": MODELS[name][2], "model": name, "tokens": tokens_seen[(name, tokens)], "budget": tokens,
            "backend": "torch-cuda-bf16" if gpu else "torch", "compute": info[name]["compute"],
            "reps": len(ts), "spread": round((max(ts) - min(ts)) / med, 3), "min_cosine": cosine[(name, tokens)],
        }  # fmt: skip
        if gpu:
            row |= {"batch": batch, "pages_per_s": round(batch / med, 2), "seconds_per_batch": ts}
        else:
            row |= {"median_s_per_page": round(med, 3), "seconds_per_page": ts}
        rows.append(row)
    return {
        "rows": rows, "models": info, "peak_rss_mb": round(peak_rss_mb()), "torch": torch.__version__,
        "loadavg_before": loadavg_before, "loadavg_after": os.getloadavg(),
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="colqwen2 colqwen3.5 colqwen3", help="space-separated name[@budgets]")
    ap.add_argument("--cells", default="2", help="comma list: <cores>[:noamx] or gpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--label", default="", help="suffix of the JSON names (written to $OUT on the device)")
    ap.add_argument("--prepare", action="store_true", help="only build the models and fp32 references")
    ap.add_argument("--no-fidelity", action="store_true")
    ap.add_argument("--note", default="")
    ap.add_argument("--tiny", action="store_true", help="dry run on the tiny builds (sets MODELS_COST_TINY)")
    ap.add_argument("--cell", help=argparse.SUPPRESS)  # a worker: one cell, JSON on stdout
    ap.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.tiny and not os.environ.get("MODELS_COST_TINY"):
        os.environ["MODELS_COST_TINY"] = "1"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    models = parse_models(args.models)
    if args.reference:
        run_reference(models)
        return
    if args.cell:
        _, cores, _, gpu = cell_env(args.cell)
        if cores:
            avail = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, set(avail[-cores:]))  # the highest CPUs: away from the parent's
        print(json.dumps(run_cell(models, args.reps, gpu, not args.no_fidelity)))
        return
    prepare(list(models))
    if not args.no_fidelity:
        env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"} | {
            "CUDA_VISIBLE_DEVICES": ""
        }
        subprocess.run(
            [sys.executable, __file__, "--reference", "--models", args.models], check=True, env=env
        )
    if args.prepare:
        return
    ladder, costs, cells = [], [], {}
    where = machine()
    for cell in [c.strip() for c in args.cells.split(",") if c.strip()]:
        env, cores, amx, gpu = cell_env(cell)
        if cores and cores > len(os.sched_getaffinity(0)):
            print(f"skip {cell}: {cores} cores asked, {len(os.sched_getaffinity(0))} here", file=sys.stderr)
            continue
        cmd = [sys.executable, __file__, "--cell", cell, "--models", args.models, "--reps", str(args.reps)]
        cmd += ["--no-fidelity"] if args.no_fidelity else []
        t = time.perf_counter()
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            cells[cell] = {"error": f"exit {proc.returncode}"}
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        cells[cell] = {k: v for k, v in result.items() if k != "rows"} | {
            "wall_s": round(time.perf_counter() - t)
        }
        for row in result["rows"]:
            on_amx = amx and bool(
                where["amx"]
            )  # AMX only where the CPU has it and the cell does not cap oneDNN
            row = {
                "cores": cores,
                "amx": None if gpu else on_amx,
                **row,
                "peak_rss_mb": result["peak_rss_mb"],
            }
            ladder.append(row)
            label = "GPU" if gpu else f"{cores} cores{', AMX' if on_amx else ', no AMX'}"
            costs.append({
                "family": row["family"], "model": row["model"], "tokens": row["tokens"],
                "where": f"({label}, {where['cpu']}{', ' + args.label if args.label else ''})",
                **({"pages_per_s": row["pages_per_s"]} if gpu else {"s_per_page": row["median_s_per_page"]}),
                "spread": row["spread"], "min_cosine": row["min_cosine"],
            })  # fmt: skip
        # after every cell: a cut-off run keeps what it measured
        suffix = f"-{args.label}" if args.label else ""
        common = {
            "method": "one pinned process per cell, every model loaded once, (model, budget) variants alternated "
            "rep after rep after one warm-up each; spread = (max - min) / median; min_cosine = the lowest "
            "per-token cosine of the page vectors vs fp32 of the same weights; random weights",
            "cells": cells, **({"note": args.note} if args.note else {}),
        }  # fmt: skip
        write_result(f"cpu-ladder{suffix}", {**common, "rows": ladder})
        write_result(f"models-cost{suffix}", {**common, "rows": costs})
    print(RESULTS)
    for row in ladder:
        print(json.dumps({k: row.get(k) for k in ("cores", "amx", "model", "tokens", "median_s_per_page",
                                                  "pages_per_s", "spread", "min_cosine", "peak_rss_mb")}))  # fmt: skip


if __name__ == "__main__":
    main()
