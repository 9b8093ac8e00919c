"""Profiles that do less work per page, timed against each other in one process, alternating, with the spread.

    python bench/profile_ab.py --label cpu-avx2 --cpus 0,1                    # default variants, 3 reps
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI python bench/profile_ab.py --label cpu-no-amx-2cores --cpus 4,5

A variant is ``<family>[@<tokens>][/<compute>]``: ``colqwen2`` = full-size ColQwen2 (Qwen2-VL-2B architecture),
``colsmol`` = full-size ColSmol-256M (Idefics3: SigLIP base-patch16-512 + SmolLM2-135M decoder,
models/configs/colsmol-256m.json); both with random weights, baked int8 (models/bake.py), loaded through the
Embedder on the compute path it picks on this CPU, CPU-default speed patches (none). ``@N`` is
DOCVISION_MAX_VISUAL_TOKENS=N: ColQwen2 max_pixels = N × 28², ColSmol k tiles of 512 px on the longest edge
with (k² + 1) × 64 ≤ N. Each family is loaded once; the budget is swapped in place and the variants run in
turn, rep after rep, on the same US-letter page (300 DPI), so the drift of a shared host hits all alike.
``/fp32`` (or ``/bf16``, ``/int8``) loads that family a second time on that compute path instead of the
Embedder's pick (``auto``): how a plan default is checked for a family in the same run.

Per variant: s/page of each repetition (median, range, spread), visual tokens, vectors stored per page (all
tokens the index keeps: prompt, tile tags, image tokens) and their bytes as float16, fidelity of the int8 path
against fp32 with the same weights (families in ``--fidelity``: a second, fp32 Embedder in this process,
computed once in the warm-up), and with ``--rss`` each variant's peak RSS alone (a fresh process that loads
that one family and embeds one page at that budget, after the timing). Random weights: speed and numerics
only, never retrieval quality. Writes bench/results/profile-ab-<label>.json after every repetition.
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

FAMILIES = {
    "colqwen2": ("colqwen2-full-random", "build_fullsize_random", "ColQwen2 (Qwen2-VL-2B arch.)"),
    "colsmol": ("colsmol-full-random", "build_colsmol_fullsize_random", "ColSmol-256M (Idefics3 arch.)"),
}
DEFAULT_VARIANTS = "colqwen2@256,colqwen2@128,colsmol,colsmol@640,colsmol@320,colsmol@64"


def baked_dir(family: str) -> Path:
    return WORK / (FAMILIES[family][0] + "-baked")


def prepare(family: str) -> Path:
    baked = baked_dir(family)
    if (baked / "manifest.json").exists():
        return baked
    full = WORK / FAMILIES[family][0]
    if not (full / "config.json").exists():
        import models.tiny as tiny

        getattr(tiny, FAMILIES[family][1])(full)
    from models.bake import bake

    bake(str(full), baked)
    return baked


def parse_variant(name: str) -> tuple[str, int | None, str]:
    """<family>[@<tokens>][/<compute>] → (family, tokens or None, compute mode; auto = the Embedder's pick)."""
    rest, _, compute = name.partition("/")
    family, _, tokens = rest.partition("@")
    if family not in FAMILIES or compute not in ("", "auto", "fp32", "bf16", "int8"):
        raise SystemExit(
            f"unknown variant {name!r}: {' or '.join(FAMILIES)}, optionally @<tokens> and /fp32|bf16|int8"
        )
    return family, int(tokens) if tokens else None, compute or "auto"


class Budgets:
    """Swap an Embedder's visual-token budget in place (None = the processor's own default)."""

    def __init__(self, emb) -> None:
        ip = emb.processor.image_processor
        self.emb, self.ip = emb, ip
        self.longest_edge = ip.size["longest_edge"]  # what both budgets change (and Qwen's max_pixels)
        self.max_pixels = getattr(ip, "max_pixels", None)
        self.model_id = emb.model_id

    def set(self, tokens: int | None) -> None:
        self.ip.size["longest_edge"] = self.longest_edge
        if self.max_pixels is not None:
            self.ip.max_pixels = self.max_pixels
        self.emb.model_id, self.emb.visual_token_budget = self.model_id, None
        if tokens:
            self.emb._set_token_budget(tokens)


def cosine(a, b) -> float:
    """Mean per-token cosine, renormalised in float64 (bf16 rows are unit only to ~1e-3, which made the
    earlier plain dot product read 1.0001)."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    a /= np.linalg.norm(a, axis=-1, keepdims=True)
    b /= np.linalg.norm(b, axis=-1, keepdims=True)
    return float(np.mean((a * b).sum(-1)))


def probe(family: str, tokens: int | None, compute: str) -> None:
    """One family alone, one page at one budget: this process's peak RSS (printed as JSON)."""
    from engine.embedding import Embedder

    emb = Embedder(
        str(baked_dir(family)), compute_mode=compute, speedups="none", verify=False, max_visual_tokens=tokens
    )
    emb.embed_images(letter_pages(1))
    emb.embed_queries(QUERIES[:1])
    # VmHWM, not ru_maxrss: Linux carries a parent's maxrss into a child across fork + exec
    hwm_kb = next(
        int(line.split()[1])
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmHWM")
    )
    print(json.dumps({"peak_rss_mb": round(hwm_kb / 1024)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--label", default="cpu-avx2")
    ap.add_argument("--cpus", help="pin to these CPUs, e.g. 0,1 (before torch starts its threads)")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument("--fidelity", default="colsmol", help="families compared with fp32 (comma list, or none)")
    ap.add_argument("--rss", action="store_true", help="after the timing, each variant's peak RSS alone")
    ap.add_argument("--prepare", action="store_true", help="only build and bake the models (all cores)")
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        probe(*parse_variant(args.probe))
        return
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    parsed = {v: parse_variant(v) for v in variants}
    families = sorted({f for f, _, _ in parsed.values()})
    models = sorted({(f, c) for f, _, c in parsed.values()})  # one Embedder per (family, compute)
    for family in families:
        prepare(family)
    if args.prepare:
        return
    pin(args.cpus)
    load_before = os.getloadavg()

    import numpy as np
    import torch

    from engine.embedding import Embedder

    loaded, budgets, load_s, references = {}, {}, {}, {}
    for family, compute in models:
        t0 = time.perf_counter()
        loaded[family, compute] = Embedder(
            str(baked_dir(family)), compute_mode=compute, speedups="none", verify=False
        )
        load_s[f"{family}/{compute}"] = round(time.perf_counter() - t0, 2)
        budgets[family, compute] = Budgets(loaded[family, compute])
    for family in families:
        if family in args.fidelity.split(","):
            references[family] = Budgets(Embedder(str(baked_dir(family)), compute_mode="fp32", speedups="none", verify=False))  # fmt: skip
    plans = {f"{f}/{c}": e.plan for (f, c), e in loaded.items()}
    auto = next(iter(plans.values()))
    page = letter_pages(1)
    fidelity: dict[str, dict] = {}
    shape: dict[str, dict] = {}
    for v, (family, tokens, compute) in parsed.items():  # warm-up (oneDNN/fbgemm kernels) and fidelity
        budgets[family, compute].set(tokens)
        emb = loaded[family, compute]
        out = emb.embed_images(page)[0]
        n = len(out.vectors)
        shape[v] = {
            "visual_tokens": emb.visual_tokens(*page[0].size),
            "vectors_per_page": n,
            "kb_per_page_fp16": round(n * emb.dim * 2 / 1024, 1),
            "model_id": emb.model_id,
            "compute": emb.plan.name,
        }
        if family in references:
            ref = references[family]
            ref.set(tokens)
            ref_page = ref.emb.embed_images(page)[0].vectors
            qs, ref_qs = emb.embed_queries(QUERIES[:4]), ref.emb.embed_queries(QUERIES[:4])
            fidelity[v] = {
                "page_token_cosine_vs_fp32": round(cosine(ref_page, out.vectors), 5),
                "query_token_cosine_vs_fp32": round(float(np.mean([cosine(a, b) for a, b in zip(ref_qs, qs, strict=True)])), 5),
            }  # fmt: skip
        print(v, shape[v], fidelity.get(v), file=sys.stderr, flush=True)
    references.clear()  # the fp32 copies stay out of the timed repetitions' memory

    times: dict[str, list[float]] = {v: [] for v in variants}
    rss_alone: dict[str, float] = {}

    def summary() -> dict:
        stats = {
            v: {
                "family": parsed[v][0],
                "budget": parsed[v][1],
                "compute_mode": parsed[v][2],
                "seconds_per_page": ts,
                "median": round(statistics.median(ts), 2),
                "min": min(ts),
                "max": max(ts),
                "spread_pct": round(100 * (max(ts) - min(ts)) / statistics.median(ts), 1),
                **shape[v],
                "fidelity": fidelity.get(v),
                "peak_rss_mb_alone": rss_alone.get(v),
            }
            for v, ts in times.items()
            if ts
        }
        return {
            "models": {f: FAMILIES[f][2] + ", random weights, baked int8" for f in families},
            "host_note": "auto = the compute path the Embedder picks on this CPU; /fp32 = fp32 weights and activations",
            "page": "one US-letter page at 300 DPI (2550 × 3300), batch 1",
            "compute": {k: p.name for k, p in plans.items()},
            "reason": auto.reason,
            "threads": auto.threads,
            "pinned_cpus": args.cpus,
            "reps_planned": args.reps,
            "env": {
                k: v for k, v in os.environ.items() if k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
            },
            "torch": torch.__version__,
            "method": "one process, each family loaded once, budgets swapped in place, variants run in turn each "
            "repetition after one warm-up pass each; spread = (max - min) / median. Shared host: other jobs ran "
            "beside this one, hence the alternation and the spread.",
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "load_seconds": load_s,
            "results": stats,
            "process_peak_rss_mb": round(peak_rss_mb()),
        }

    path = None
    for rep in range(args.reps):
        for v in variants:
            family, tokens, compute = parsed[v]
            budgets[family, compute].set(tokens)
            t = time.perf_counter()
            loaded[family, compute].embed_images(page)
            times[v].append(round(time.perf_counter() - t, 2))
        print(rep, {v: ts[-1] for v, ts in times.items()}, file=sys.stderr, flush=True)
        path = write_result(f"profile-ab-{args.label}", summary())
    if args.rss:
        loaded.clear()
        for v in variants:
            cmd = [sys.executable, __file__, "--probe", v]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            rss_alone[v] = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]
            print(v, "peak RSS alone", rss_alone[v], file=sys.stderr, flush=True)
        path = write_result(f"profile-ab-{args.label}", summary())
    print(path)
    print(json.dumps({v: s["median"] for v, s in summary()["results"].items()}))


if __name__ == "__main__":
    main()
