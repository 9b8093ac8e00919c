"""Citing long tables: seconds to cite every cell of an N-row invoice table, old code against new, alternated.

    python bench/cite_tables.py [--rows 100,200,1250,3200] [--reps 3] [--old REF] [--limit 300]
        → bench/results/cite-tables.json

The document: N line-item rows (description, qty, unit price, tax %, amount) over pages of 45 rows, values
repeating as on real invoices (60 products, quantities 1-5, tax 7 or 20 %), made with pymupdf; its text layer
read in process. Timed: engine.extraction.citations.cite_text_layer over every leaf of the faithful answer,
one call seeing all pages (what a whole-document extraction cites). Each (variant, rows, rep) runs in its own
process: "old" imports the engine of git REF (exported to a temporary directory), "new" this working tree;
variants alternate rep by rep. A run past --limit seconds is stopped and reported as not finished. Every
finished run's citations are hashed: old and new must agree where both finish.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PRODUCTS = [f"{a} {b}" for a in ("Pump", "Valve", "Flange", "Gasket", "Hose", "Filter") for b in
            ("DN25", "DN32", "DN40", "DN50", "DN65", "DN80", "steel", "brass", "PVC", "PTFE")]  # fmt: skip
ROWS_PER_PAGE = 45
SCHEMA = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": "string"},
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "description": {"type": "string"},
                    "quantity": {"type": "number"},
                    "unit_price": {"type": "number"},
                    "tax_rate": {"type": "number", "description": "VAT percent"},
                    "amount": {"type": "number"},
                },
            },
        },
    },
}


def rows(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        qty = 1 + (i * 7) % 5
        price = round(5 + (i * 37) % 60 * 1.25, 2)
        out.append({"description": PRODUCTS[(i * 11) % len(PRODUCTS)], "quantity": qty, "unit_price": price,
                    "tax_rate": 20 if i % 3 else 7, "amount": round(qty * price, 2)})  # fmt: skip
    return out


def table_pdf(path: Path, lines: list[dict[str, Any]]) -> Path:
    import pymupdf

    doc = pymupdf.open()
    xs = [50, 260, 330, 420, 490]
    header = ["Description", "Qty", "Unit price", "Tax %", "Amount"]
    for start in range(0, len(lines), ROWS_PER_PAGE):
        page = doc.new_page(width=595, height=842)
        if start == 0:
            page.insert_text((50, 40), "INVOICE INV-2026-0042", fontsize=11)
        for x, h in zip(xs, header, strict=True):
            page.insert_text((x, 70), h, fontsize=9)
        for r, line in enumerate(lines[start : start + ROWS_PER_PAGE]):
            y = 90 + 16 * r
            cells = [line["description"], str(line["quantity"]), f"{line['unit_price']:,.2f}",
                     str(line["tax_rate"]), f"{line['amount']:,.2f}"]  # fmt: skip
            for x, c in zip(xs, cells, strict=True):
                page.insert_text((x, y), c, fontsize=9)
    doc.save(path)
    return path


def worker(engine_root: str, pdf: str, n: int) -> None:
    """Runs in a child: cite the table with the engine at engine_root; JSON {seconds, digest} on stdout."""
    sys.path.insert(0, engine_root)
    import pymupdf

    from engine.extraction import citations as cite
    from engine.extraction.schema import compile_schema
    from engine.extraction.textlayer import read_layer

    data = {"invoice_number": "INV-2026-0042", "lines": rows(n)}
    compiled = compile_schema(SCHEMA)
    with pymupdf.open(pdf) as doc:
        pages = list(range(1, doc.page_count + 1))
        raw = read_layer(doc, pages)
    t0 = time.perf_counter()
    layer = cite.TextLayer(raw)
    found = cite.leaves(data, compiled)
    out = cite.cite_text_layer(found, layer, {lf.path: pages for lf in found})
    secs = time.perf_counter() - t0
    canon = json.dumps(
        {p: [c["page"], c["bbox"], c["grounded"], c["reason"]] for p, c in sorted(out.items())}
    )
    grounded = sum(1 for c in out.values() if c["grounded"])
    print(json.dumps({"seconds": secs, "digest": hashlib.sha256(canon.encode()).hexdigest()[:16],
                      "leaves": len(out), "grounded": grounded}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="100,200,1250,3200")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--old", default=None, help="git ref of the old code (default: none, new only)")
    ap.add_argument("--limit", type=float, default=300.0)
    ap.add_argument("--out", default="cite-tables")
    ap.add_argument("--worker", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return
    sys.path.insert(0, str(ROOT))
    from bench.common import write_result

    sizes = [int(x) for x in args.rows.split(",")]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        variants = {"new": str(ROOT)}
        commit = {"new": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                        text=True).stdout.strip() + " + working tree"}  # fmt: skip
        if args.old:
            old_root = Path(tmp) / "old"
            old_root.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.old, "engine"], capture_output=True,
                                     check=True).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", str(old_root)], input=archive, check=True)
            variants = {"old": str(old_root), "new": str(ROOT)}
            commit["old"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", args.old], capture_output=True,
                                           text=True).stdout.strip()  # fmt: skip
        for n in sizes:
            pdf = table_pdf(Path(tmp) / f"table-{n}.pdf", rows(n))
            for name in variants:
                results.setdefault(name, {})[str(n)] = {"seconds": [], "not_finished": 0}
            for rep in range(args.reps):
                order = list(variants) if rep % 2 == 0 else list(reversed(variants))
                for name in order:
                    cell = results[name][str(n)]
                    if cell["not_finished"]:  # it ran past the limit once: not again
                        continue
                    cmd = [sys.executable, __file__, "--worker", variants[name], str(pdf), str(n)]
                    try:
                        done = subprocess.run(
                            cmd, capture_output=True, text=True, timeout=args.limit, check=True
                        )
                    except subprocess.TimeoutExpired:
                        cell["not_finished"] += 1
                        print(f"{name} {n} rows: past {args.limit:.0f} s", file=sys.stderr)
                        continue
                    got = json.loads(done.stdout.strip().splitlines()[-1])
                    cell["seconds"].append(round(got["seconds"], 3))
                    cell.update(digest=got["digest"], leaves=got["leaves"], grounded=got["grounded"])
                    print(f"{name} {n} rows rep {rep}: {got['seconds']:.2f} s", file=sys.stderr)
    for cells in results.values():
        for cell in cells.values():
            s = cell["seconds"]
            if s:
                cell.update(median=round(statistics.median(s), 3), min=min(s), max=max(s))
    same = {n: results["old"][n].get("digest") == results["new"][n].get("digest")
            for n in results.get("old", {}) if results["old"][n].get("digest")}  # fmt: skip
    write_result(args.out, {
        "what": "seconds to cite every leaf of an N-row table (cite_text_layer, one call seeing all pages)",
        "rows_per_page": ROWS_PER_PAGE, "reps": args.reps, "limit_s": args.limit, "commits": commit,
        "results": results, "same_citations_where_both_finished": same,
    })  # fmt: skip


if __name__ == "__main__":
    main()
