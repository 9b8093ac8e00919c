"""What `python -m engine models` lists: every family, its reference checkpoint and license, the vectors and
dims of a page, the storage plan that page gets, and its measured cost (bench/results/models-cost.json; the
rows say which machine measured them, and a family nobody measured says so). No torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.embedding.families import DEFAULT_FAMILY, FAMILIES
from engine.embedding.storage import PAGE_BUDGET_BYTES, plan_storage

COSTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "models-cost.json"


def measured_costs(path: Path = COSTS) -> dict[str, list[dict[str, Any]]]:
    """family -> its rows of models-cost.json ({} when the file is absent, as in the Lambda image)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for row in data.get("rows", []):
        out.setdefault(str(row.get("family")), []).append(row)
    return out


def catalog(budget_bytes: int = PAGE_BUDGET_BYTES, costs_path: Path = COSTS) -> list[dict[str, Any]]:
    costs = measured_costs(costs_path)
    rows = []
    for f in FAMILIES.values():
        plan = plan_storage(f.page_vectors, f.dim, budget_bytes=budget_bytes) if f.page_vectors else None
        rows.append(
            {
                "family": f.name,
                "default": f.name == DEFAULT_FAMILY,
                "reference": f.reference,
                "license": f.license,
                "vectors_per_page": f.page_vectors or None,
                "dim": f.dim,
                "pool_factor": plan.pool_factor if plan else None,
                "stored_vectors": plan.stored_vectors if plan else None,
                "bytes_per_page": plan.bytes_per_page if plan else None,
                "speed_patches_measured": f.tuned,
                "measured": costs.get(f.name, []),
            }
        )
    return rows


def _cost_cell(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "not measured"
    parts = []
    for r in rows:
        if r.get("s_per_page") is not None:
            parts.append(f"{r['s_per_page']} s/page {r.get('where', '')}".strip())
        elif r.get("pages_per_s") is not None:
            parts.append(f"{r['pages_per_s']} pages/s {r.get('where', '')}".strip())
    return "; ".join(parts) or "not measured"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "family",
        "reference checkpoint",
        "license",
        "vec/page",
        "dim",
        "pool",
        "KiB/page",
        "measured cost",
    )
    lines = []
    for r in rows:
        kib = f"{r['bytes_per_page']['total'] / 1024:.0f}" if r["bytes_per_page"] else "?"
        lines.append(
            (
                r["family"] + (" *" if r["default"] else ""), r["reference"], r["license"],
                str(r["vectors_per_page"] or "?"), str(r["dim"]), str(r["pool_factor"] or "?"), kib,
                _cost_cell(r["measured"]),
            )
        )  # fmt: skip
    widths = [max(len(h), *(len(x[i]) for x in lines)) for i, h in enumerate(head[:-1])]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    out = [fmt.format(*head), *(fmt.format(*x) for x in lines)]
    out.append(
        "* default. vec/page: a US-letter page at the reference checkpoint's default visual-token budget;"
    )
    out.append(
        "pool/KiB: the storage plan (full multivector pooled under the page budget, + blocks, FDE, mean)."
    )
    return "\n".join(out)
