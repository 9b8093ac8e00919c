"""Where one page's embedding time goes: torch.profiler over the full-size baked model, one letter page.

python bench/embed_profile.py [--compute auto]   → bench/results/embed-profile-<compute>.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import write_result  # noqa: E402
from bench.embed import WORK, letter_pages  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--compute", default="auto")
    args = ap.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from engine.embedding import Embedder

    emb = Embedder(str(WORK / "colqwen2-full-random-baked"), compute_mode=args.compute)
    page = letter_pages(1)
    t = time.perf_counter()
    batch = emb.processor.process_images(page)
    preprocess_s = time.perf_counter() - t
    emb.embed_images(page)  # warm-up
    vision_s = {}

    def timed(name):
        def pre(_m, _i):
            vision_s[name + "_start"] = time.perf_counter()

        def post(_m, _i, _o):
            vision_s[name] = time.perf_counter() - vision_s.pop(name + "_start")

        return pre, post

    for name, module in (("vision_tower", emb.model.visual), ("language_model", emb.model.language_model)):
        pre, post = timed(name)
        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        emb.embed_images(page)
        total = time.perf_counter() - t
    rows = []
    for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:15]:
        rows.append(
            {
                "op": e.key,
                "calls": e.count,
                "self_cpu_s": round(e.self_cpu_time_total / 1e6, 3),
                "share": round(e.self_cpu_time_total / 1e6 / total, 3),
            }
        )
    print(write_result(f"embed-profile-{emb.plan.name}", {
        "compute": emb.plan.name, "threads": torch.get_num_threads(), "seconds_total": round(total, 2),
        "seconds_preprocess": round(preprocess_s, 3), "seconds_by_part": {k: round(v, 2) for k, v in vision_s.items()},
        "visual_tokens": int(batch["image_grid_thw"][0].prod() // 4), "top_ops_by_self_cpu": rows,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
