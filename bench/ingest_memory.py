"""Peak RSS of ingesting a 10- vs a 100-page document (render → PNG → embed in bounded batches → upsert).

    python bench/ingest_memory.py [--model models/tiny-colqwen2-baked]

Each size runs in its own process; the streaming pipeline must keep peak RSS flat in page count.
The tiny model keeps this affordable on 2 CPUs; the pipeline code is the same for the full-size model,
whose per-batch activation memory is bounded by the same batch size. Writes bench/results/ingest-memory.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import peak_rss_mb, write_result  # noqa: E402


def worker(model: str, pages: int) -> dict:
    from engine.config import Settings
    from engine.service import DocVision
    from tests.fixtures import documents as d

    with tempfile.TemporaryDirectory() as tmp:
        pdf = d.long_pdf(Path(tmp) / "doc.pdf", pages)
        dv = DocVision(Settings(model=model, index_path=Path(tmp) / "q", store=str(Path(tmp) / "store")))
        _ = dv.embedder  # load first: the model's memory is not what is measured
        base = peak_rss_mb()
        t = time.perf_counter()
        r = dv.ingest(pdf)
        return {
            "pages": pages,
            "embedded": r.pages_embedded,
            "seconds": round(time.perf_counter() - t, 1),
            "peak_rss_after_model_load_mb": round(base),
            "peak_rss_mb": round(peak_rss_mb()),
            "batch_size": dv.embedder.batch_size_for(dv.embedder.visual_tokens(2550, 3300)),
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models" / "tiny-colqwen2-baked"))
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.model, args.worker)))
        return
    rows = []
    for n in (10, 100):
        out = subprocess.run(
            [sys.executable, __file__, "--model", args.model, "--worker", str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))[7:]))
        print(rows[-1], file=sys.stderr)
    print(
        write_result(
            "ingest-memory",
            {
                "model": args.model,
                "runs": rows,
                "peak_rss_ratio_100_vs_10": round(rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"], 3),
            },
        )
    )


if __name__ == "__main__":
    main()
