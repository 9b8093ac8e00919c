"""Merge the per-call JSONs of bench/models_cost.py into bench/results/cpu-ladder.json and models-cost.json.

    python bench/merge_results.py bench/results/raw/cpu-ladder-device-16.json bench/results/raw/cpu-ladder-device-small.json ...

Each input is one run (one device call or one run here); every row keeps the run it came from (``run``, the
input's file name, and ``host``, its machine) so rows of different hosts are never mistaken for one another.
A models-cost-*.json input goes to models-cost.json, a cpu-ladder-*.json one to cpu-ladder.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main(paths: list[str]) -> None:
    merged: dict[str, dict] = {}
    for p in map(Path, paths):
        data = json.loads(p.read_text())
        kind = "models-cost" if p.name.startswith("models-cost") else "cpu-ladder"
        out = merged.setdefault(kind, {"benchmark": kind, "runs": {}, "rows": []})
        host = data.get("machine", {}).get("cpu", "?")
        out["runs"][p.stem] = {k: data.get(k) for k in ("created", "machine", "method", "topology", "cells", "exports",
                                                        "note", "prepare_s")}  # fmt: skip
        out["rows"] += [{**r, "run": p.stem, "host": host} for r in data.get("rows", [])]
    for kind, data in merged.items():
        (RESULTS / f"{kind}.json").write_text(json.dumps(data, indent=2) + "\n")
        print(kind, len(data["rows"]), "rows")


if __name__ == "__main__":
    main(sys.argv[1:])
