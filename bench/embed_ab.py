"""In-process A/B of the CPU compute options, alternating, with the spread of the repetitions.

    python bench/embed_ab.py --label cpu-avx2 --cpus 0,1 [--reps 3]
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI python bench/embed_ab.py --label cpu-no-amx-2cores --cpus 2,3

Full-size ColQwen2 (Qwen2-VL-2B architecture, random weights; bench/work, built by ``--prepare`` or
bench/embed.py) on the compute path the Embedder picks on this CPU (bf16 with AMX/AVX512-BF16, else fp32
activations with fbgemm int8 weights). The model is loaded once; each variant is swapped in place and the
variants run in turn, rep after rep, on the same US-letter page, so the slow drift of a shared host hits
every variant alike. Variants (comma list, ``--variants``):

    none                     the plan as loaded, no patch
    patched                  + linear_patch_embed + batched_attention (engine/embedding/fast.py)
    int8                     + int8_onednn: per-token int8 activations, per-channel int8 weights, oneDNN
    <variant>@<tokens>       the same at a visual-token budget (processor max_pixels = tokens × 28 × 28);
                             without @ the processor's default (768 → 744 tokens on a US-letter page)

Fidelity: mean per-token cosine of each variant's page and query vectors against an fp32 reference of the
same weights on the same inputs (computed once, unpinned, in a subprocess: ``--reference``). A patch is a
default on a CPU class only if its slowest repetition beats the reference variant's fastest one
(``decision`` in the JSON). Writes bench/results/embed-ab-<label>.json (or $OUT) after every repetition.
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

from bench.common import peak_rss_mb, write_result  # noqa: E402
from bench.embed import QUERIES, WORK, letter_pages, pin  # noqa: E402

FULL, BAKED = WORK / "colqwen2-full-random", WORK / "colqwen2-full-random-baked"
DEFAULT_VARIANTS = "none,patched,int8,int8@512,int8@384,int8@256,patched@256"
PIXELS_PER_TOKEN = 28 * 28
DEFAULT_BUDGET = 768  # ColQwen2's processor default, max_pixels 602112


def prepare() -> None:
    if (BAKED / "manifest.json").exists():
        return
    if not (FULL / "config.json").exists():
        from models.tiny import build_fullsize_random

        build_fullsize_random(FULL)
    from models.bake import bake

    bake(str(FULL), BAKED)


def reference_path(model: Path, tokens: int) -> Path:
    return WORK / f"ab-reference-fp32-{model.name}-{tokens}.npz"


def run_reference(model: Path, budgets: list[int]) -> None:
    """fp32 outputs of the baked weights (all of this machine's cores): what every variant is compared with."""
    WORK.mkdir(parents=True, exist_ok=True)
    import numpy as np

    from engine.embedding import Embedder

    emb = Embedder(str(model), compute_mode="fp32", speedups="none", verify=False)
    page = letter_pages(1)
    q = emb.embed_queries(QUERIES[:4])
    for tokens in budgets:
        set_budget(emb, tokens)
        np.savez(reference_path(model, tokens), emb.embed_images(page)[0].vectors, *q)


def set_budget(emb, tokens: int) -> None:
    ip = emb.processor.image_processor
    ip.max_pixels = tokens * PIXELS_PER_TOKEN
    ip.size["longest_edge"] = tokens * PIXELS_PER_TOKEN


def parse_variant(name: str) -> tuple[str, int]:
    base, _, tokens = name.partition("@")
    if base not in ("none", "patched", "int8"):
        raise SystemExit(f"unknown variant {name!r}: none, patched or int8, optionally @<tokens>")
    return base, int(tokens) if tokens else DEFAULT_BUDGET


def cosine(a, b) -> float:
    import numpy as np

    return float(np.mean((a * b).sum(-1)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--label", default="cpu-avx2")
    ap.add_argument("--cpus", help="pin to these CPUs, e.g. 0,1 (before torch starts its threads)")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument(
        "--model", type=Path, default=BAKED, help="baked model directory (default: full-size random)"
    )
    ap.add_argument(
        "--prepare", action="store_true", help="only build the model and fp32 references (all cores)"
    )
    ap.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-fidelity", action="store_true", help="skip the fp32 reference (needs ~9 GB)")
    ap.add_argument("--note", default="", help="free text recorded in the JSON (how and where it ran)")
    args = ap.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    parsed = {v: parse_variant(v) for v in variants}
    budgets = sorted({t for _, t in parsed.values()}, reverse=True)
    if args.reference:
        run_reference(args.model, budgets)
        return
    if args.model == BAKED:
        prepare()
    if not args.no_fidelity and not all(reference_path(args.model, t).exists() for t in budgets):
        env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
        cmd = [
            sys.executable,
            __file__,
            "--reference",
            "--variants",
            args.variants,
            "--model",
            str(args.model),
        ]
        subprocess.run(cmd, check=True, env=env)
    if args.prepare:
        return
    pin(args.cpus)
    loadavg_before = os.getloadavg()

    import numpy as np
    import torch

    from engine.embedding import Embedder, fast

    t0 = time.perf_counter()
    emb = Embedder(str(args.model), speedups="none", verify=False)
    load_s = time.perf_counter() - t0
    vis = emb.model.visual
    conv = vis.patch_embed.proj
    patches = ("linear_patch_embed", "batched_attention")
    fast.apply(emb.model, patches)
    lin, forwards = vis.patch_embed.proj, [blk.attn.forward for blk in vis.blocks]
    t0 = time.perf_counter()
    swaps = fast.int8_swaps(emb.model) if any(b == "int8" for b, _ in parsed.values()) else []
    int8_prep_s = time.perf_counter() - t0

    def configure(base: str, tokens: int) -> None:
        on = base in ("patched", "int8")
        vis.patch_embed.proj = lin if on else conv
        for blk, fwd in zip(vis.blocks, forwards, strict=True):
            if on:
                blk.attn.forward = fwd
            else:
                blk.attn.__dict__.pop("forward", None)
        for parent, name, old, new in swaps:
            setattr(parent, name, new if base == "int8" else old)
        set_budget(emb, tokens)

    page = letter_pages(1)
    times: dict[str, list[float]] = {v: [] for v in variants}
    fidelity: dict[str, dict] = {}
    tokens_seen: dict[str, int] = {}
    for v in variants:  # warm-up and fidelity: one pass of each variant (oneDNN builds its primitives here)
        configure(*parsed[v])
        out = emb.embed_images(page)[0]
        tokens_seen[v] = emb.visual_tokens(*page[0].size)
        if args.no_fidelity:
            continue
        ref = list(np.load(reference_path(args.model, parsed[v][1])).values())
        qs = emb.embed_queries(QUERIES[:4])
        fidelity[v] = {
            "page_token_cosine_vs_fp32": round(cosine(ref[0], out.vectors), 5),
            "query_token_cosine_vs_fp32": round(float(np.mean([cosine(a, b) for a, b in zip(ref[1:], qs, strict=True)])), 5),
        }  # fmt: skip
        print(v, fidelity[v], file=sys.stderr, flush=True)

    def summary() -> dict:
        stats = {
            v: {
                "seconds_per_page": ts,
                "median": round(statistics.median(ts), 2),
                "min": min(ts),
                "max": max(ts),
                "spread_pct": round(100 * (max(ts) - min(ts)) / statistics.median(ts), 1),
            }
            for v, ts in times.items()
            if ts
        }
        decision = {}
        for v, (base, tokens) in parsed.items():
            ref_name = "none" if base == "patched" else "patched" if base == "int8" else None
            if tokens != DEFAULT_BUDGET or ref_name not in times or not times[v] or not times[ref_name]:
                continue
            wins = max(times[v]) < min(times[ref_name])
            decision[v] = {
                "against": ref_name,
                "wins_beyond_spread": wins,
                "speedup_median": round(statistics.median(times[ref_name]) / statistics.median(times[v]), 3),
            }
        return {
            "model": "ColQwen2 architecture (Qwen2-VL-2B), random weights, baked int8; one US-letter page at 300 DPI",
            "compute": emb.plan.name,
            "reason": emb.plan.reason,
            "threads": emb.plan.threads,
            "pinned_cpus": args.cpus,
            "reps_planned": args.reps,
            "env": {
                k: v for k, v in os.environ.items() if k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
            },
            "torch": torch.__version__,
            "method": "one process, model loaded once, variants swapped in place and run in turn each repetition "
            "(after one warm-up pass each); a variant wins only if its slowest rep beats the other's fastest. "
            "The alternation keeps a shared host's drift from favouring one variant.",
            "load_seconds": round(load_s, 2),
            "int8_prepack_seconds": round(int8_prep_s, 2),
            "visual_tokens": tokens_seen,
            "fidelity": fidelity,
            "results": stats,
            "decision": decision,
            "peak_rss_mb": round(peak_rss_mb()),
            "loadavg_before": loadavg_before,
            "loadavg_at_write": os.getloadavg(),
            **({"note": args.note} if args.note else {}),
        }

    for rep in range(args.reps):
        for v in variants:
            configure(*parsed[v])
            t = time.perf_counter()
            emb.embed_images(page)
            times[v].append(round(time.perf_counter() - t, 2))
        print(rep, {v: ts[-1] for v, ts in times.items()}, file=sys.stderr, flush=True)
        path = write_result(f"embed-ab-{args.label}", summary())
    print(path)
    print(json.dumps({v: s["median"] for v, s in summary()["results"].items()}))


if __name__ == "__main__":
    main()
