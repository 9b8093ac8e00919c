"""Is every printed row in the answer's array? Rows counted on the pages, not trusted from the model.

A model that stops early (an output limit, a lazy answer) returns a well-formed, fully grounded array that
is simply short; nothing else catches it. Here each array's *row anchor* is found from its own citations:
the field whose grounded values start at one x position (a column), and the shape of what is printed there
(`SKU-104` → `a-9`, `12.50` → `9.9`). Every word on the pages the calls saw that starts in that column with
one of those shapes is a printed row. Fewer rows answered than printed → `complete: false` with the coverage
ratio, and the document verdict says review.

Not measured (complete: null) when fewer than 3 of the array's values are grounded on a text layer (a scan
without OCR words, a list too short to tell a column from chance).
"""

from __future__ import annotations

import re
import statistics
from typing import Any

_ROW = re.compile(r"^(?P<array>.+)\[(?P<index>\d+)\]\.(?P<field>[^.\[\]]+)$")
MIN_ANCHORS = 3


def shape(text: str) -> str:
    """Letters → a, digits → 9, runs collapsed; punctuation kept: 'SKU-104' → 'a-9', '1,200.00' → '9,9.9'."""
    s = re.sub(r"[^\W\d_]+", "a", text.casefold())
    return re.sub(r"\d+", "9", s)


def array_coverage(
    data: dict[str, Any], citations: list[dict[str, Any]], layer: Any, pages: list[int]
) -> dict[str, dict[str, Any]]:
    """array path ($.items) → {rows, printed_rows, coverage, complete, anchor_field, pages_counted}."""
    by_array: dict[str, dict[str, list[dict[str, Any]]]] = {}
    indices: dict[str, set[int]] = {}
    for c in citations:
        m = _ROW.match(c["path"])
        if not m:
            continue
        arr = m["array"]
        indices.setdefault(arr, set()).add(int(m["index"]))
        if c.get("grounded") and c.get("bbox") and c.get("page"):
            by_array.setdefault(arr, {}).setdefault(m["field"], []).append(c)
    out: dict[str, dict[str, Any]] = {}
    text_pages = [p for p in pages if layer.has_text(p)]
    for arr in sorted(indices):
        rows = len(_values_at(data, arr))
        fields = by_array.get(arr, {})
        columns = []
        for name, cites in fields.items():
            if len(cites) < MIN_ANCHORS:
                continue
            xs = [c["bbox"][0] for c in cites]
            spread = statistics.pstdev(xs)
            shapes = {shape(w) for c in cites if (w := _first_word(layer, c["page"], c["bbox"])) is not None}
            columns.append((-len(cites), spread, name, statistics.median(xs), max(0.006, 3 * spread), shapes))
        if not columns:
            out[arr] = {"rows": rows, "printed_rows": None, "coverage": None, "complete": None,
                        "reason": "too few grounded values on a text layer to find the rows on the page"}  # fmt: skip
            continue
        columns.sort(key=lambda c: (c[0], c[1]))
        anchor, others = columns[0], columns[1:]
        need = (
            len(others) + 1
        ) // 2  # a printed row also has at least half of the other cells in their columns
        seen: set[tuple[int, int]] = set()
        for p in text_pages:
            words = layer.words(p)
            for w in words:
                if not _in_column(w, anchor):
                    continue
                line = [
                    o
                    for o in words
                    if abs((o.box[1] + o.box[3]) - (w.box[1] + w.box[3])) < (w.box[3] - w.box[1])
                ]
                if sum(any(_in_column(o, col) for o in line) for col in others) >= need:
                    seen.add((p, round(w.box[1] * 2000)))
        printed = len(seen)
        out[arr] = {
            "rows": rows, "printed_rows": printed, "coverage": round(min(1.0, rows / printed), 4) if printed else None,
            "complete": rows >= printed if printed else None, "anchor_field": anchor[2], "pages_counted": len(text_pages),
        }  # fmt: skip
    return out


def _in_column(w: Any, col: tuple) -> bool:
    _, _, _, x0, tol, shapes = col
    return abs(w.box[0] - x0) <= tol and shape(w.text) in shapes


def _first_word(layer: Any, page: int, box: list[float]) -> str | None:
    inside = [
        w
        for w in layer.words(page)
        if w.box[0] >= box[0] - 1e-3
        and w.box[2] <= box[2] + 1e-3
        and w.box[1] >= box[1] - 1e-3
        and w.box[3] <= box[3] + 1e-3
    ]
    if not inside:
        return None
    return str(min(inside, key=lambda w: (w.box[1], w.box[0])).text)


def _values_at(data: Any, path: str) -> list[Any]:
    """$.a.b → data['a']['b'] (a list); nested arrays ($.a[0].b) followed by index."""
    cur: Any = data
    for part in re.findall(r"\.([^.\[\]]+)|\[(\d+)\]", path):
        key, idx = part
        if key:
            cur = cur.get(key) if isinstance(cur, dict) else None
        else:
            cur = cur[int(idx)] if isinstance(cur, list) and int(idx) < len(cur) else None
    return cur if isinstance(cur, list) else []
