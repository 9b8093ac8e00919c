"""A/B of the CPU speed patches inside one process, alternating, on a host whose speed drifts.

    python bench/embed_ab.py [--reps 3]

Loads the baked full-size model once (bench/work, built by bench/embed.py), then embeds the same letter
page with the patches off and on in turn (patches are swapped in place: patch embedding module and the
vision attention forward). Alternating cancels the slow drift seen on shared hosts, where the same
configuration measured 33–49 s/page within an hour. Writes bench/results/embed-ab-<label>.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import write_result  # noqa: E402
from bench.embed import WORK, letter_pages  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--label", default="cpu-avx2")
    args = ap.parse_args()
    from engine.embedding import Embedder, fast

    emb = Embedder(str(WORK / "colqwen2-full-random-baked"), speedups="none")
    vis = emb.model.visual
    conv = vis.patch_embed.proj
    patches = fast.default_speedups("cpu")
    fast.apply(emb.model, patches)
    lin, forwards = vis.patch_embed.proj, [blk.attn.forward for blk in vis.blocks]

    def patched(on: bool) -> None:
        vis.patch_embed.proj = lin if on else conv
        for blk, fwd in zip(vis.blocks, forwards, strict=True):
            if on:
                blk.attn.forward = fwd
            else:
                blk.attn.__dict__.pop("forward", None)

    page = letter_pages(1)
    patched(False)
    emb.embed_images(page)  # warm-up
    times: dict[str, list[float]] = {"none": [], "patched": []}
    for _ in range(args.reps):
        for on in (False, True):
            patched(on)
            t = time.perf_counter()
            emb.embed_images(page)
            times["patched" if on else "none"].append(round(time.perf_counter() - t, 2))
            print(times, file=sys.stderr, flush=True)
    print(write_result(f"embed-ab-{args.label}", {
        "model": "ColQwen2 architecture, random weights, baked int8, one US-letter page (744 visual tokens)",
        "compute": emb.plan.name, "threads": emb.plan.threads, "patches": list(patches),
        "seconds_per_page": times,
        "mean": {k: round(statistics.mean(v), 2) for k, v in times.items()},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
