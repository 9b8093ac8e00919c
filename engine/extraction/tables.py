"""Cell-level grounding: a value of an array row must be on that row's line, under the column its field maps to.

Table structure is read from the page's words (text layer or OCR) in the page's reading frame (the words turned
so that the page's dominant text direction runs left to right: a /Rotate 90 page or a table set sideways reads
like any other):

- columns: the header line is the line whose cells best match the array's field names (and abbreviations:
  Qty → quantity, Amt → amount; descriptions only where no name matches); on a row line with as many cells as
  the header, a value's column is its cell's rank, otherwise the header cell it overlaps most (else the
  nearest one);
- rows: each array row's anchor is the line that holds most of its values (a value found on many lines, like
  a quantity of 1, counts for less than one found once, like a description); a row's band runs to the next
  row's anchor line, so wrapped cells stay in their row.

A value found in its row and column is grounded. Found only in its row under another field's header:
`wrong_column`; found only on other rows: `wrong_row`; nowhere on the pages its call saw: `not_found`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# header abbreviations a field name does not spell out (folded: letters and digits only, lower case)
ABBREVIATIONS = {
    "qty": "quantity", "qnty": "quantity", "pcs": "quantity", "amt": "amount", "no": "number", "nr": "number",
    "num": "number", "desc": "description", "pos": "position", "art": "article", "vat": "tax", "uom": "unit",
}  # fmt: skip


@dataclass
class Column:
    field: str | None  # None: a header the array's fields do not name
    x0: float
    x1: float


def _parts(name: str) -> set[str]:
    """unit_price / unitPrice → {"unit", "price"}."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return {p.casefold() for p in re.split(r"[_\W]+", spaced) if p}


def _matches(word: str, part: str) -> bool:
    if not word or not part:
        return False
    if word == part or ABBREVIATIONS.get(word) == part:
        return True
    if min(len(word), len(part)) >= 3 and (part.startswith(word) or word.startswith(part)):
        return True
    # an abbreviation by consonants: qty ~ quantity (same first letter, letters in order)
    if 2 <= len(word) < len(part) and word[0] == part[0]:
        it = iter(part)
        return all(c in it for c in word)
    return False


WRAP_LINES = 2.5  # the last row's wrapped text runs at most this many line heights below its anchor
CELL_GAP = 0.6  # words further apart than this share of the line height (a few spaces) are different cells


def cells(line: list[Any]) -> list[list[Any]]:
    """A line's words (left to right) grouped into cells: a gap wider than a space starts a new cell."""
    out: list[list[Any]] = []
    for w in sorted(line, key=lambda w: w.rbox[0]):
        h = max(w.rbox[3] - w.rbox[1], 1e-6)
        if out and w.rbox[0] - out[-1][-1].rbox[2] <= CELL_GAP * h:
            out[-1].append(w)
        else:
            out.append([w])
    return out


def _field_of(cell: list[Any], fields: dict[str, str | None], fold: Callable[[str], str]) -> str | None:
    words = [fold(w.text) for w in cell]
    for n in fields:
        if any(_matches(f, p) for f in words for p in _parts(n)):
            return n
    for n, d in fields.items():
        if d and any(len(f) >= 4 and f in _parts(d) for f in words):
            return n
    return None


def _split_by_field(
    cell: list[Any], fields: dict[str, str | None], fold: Callable[[str], str]
) -> list[list[Any]]:
    """Header words set closer than a cell gap but naming different fields ("Qty Pack") are two columns."""
    runs: list[list[Any]] = []
    current: str | None = None
    for w in cell:
        f = _field_of([w], fields, fold)
        if runs and (f is None or f == current or current is None and f is None):
            runs[-1].append(w)
        else:
            runs.append([w])
            current = f
        current = current or f
    return runs


def header_columns(
    lines: list[list[Any]], fields: dict[str, str | None], fold: Callable[[str], str]
) -> list[Column]:
    """The cells of the line that names most of the fields (at least two) as columns, left to right; []
    when no line does."""
    best: tuple[int, list[Column]] = (1, [])
    for line in lines:
        cols = [
            Column(_field_of(c, fields, fold), min(w.rbox[0] for w in c), max(w.rbox[2] for w in c))
            for cell in cells(line)
            for c in _split_by_field(cell, fields, fold)
        ]
        named = {c.field for c in cols if c.field}
        if len(named) > best[0]:
            best = (len(named), cols)
    return best[1]


def column_of(span: list[Any], columns: list[Column], line: list[Any] | None = None) -> Column | None:
    """The column a span sits in. On a line with as many cells as the header has columns, the cell's rank
    decides (headers are often not aligned over their values); otherwise the column the span's cell overlaps
    most, else the nearest one."""
    if not columns:
        return None
    x0, x1 = min(w.rbox[0] for w in span), max(w.rbox[2] for w in span)
    if line:
        row = cells(line)
        for i, c in enumerate(row):
            if any(w is span[0] for w in c):
                if len(row) == len(columns):
                    return columns[i]
                break

    def key(c: Column) -> tuple[float, float]:
        overlap = min(x1, c.x1) - max(x0, c.x0)
        return (-overlap, 0.0) if overlap > 0 else (0.0, -overlap)

    return min(columns, key=key)


def center_y(span: list[Any]) -> float:
    w = span[0]
    return (w.rbox[1] + w.rbox[3]) / 2


def height(span: list[Any]) -> float:
    return max(span[0].rbox[3] - span[0].rbox[1], 1e-4)


def same_line(a: tuple[int, float, float], b: tuple[int, float, float]) -> bool:
    """(page, y centre, height) of two spans: one line when the centres are within half a line height."""
    return a[0] == b[0] and abs(a[1] - b[1]) < max(a[2], b[2]) / 2


Candidate = tuple[int, list[Any]]  # (page, span)


def judge_rows(
    rows: list[tuple[str, list[Any]]],
    spans: dict[str, list[Candidate]],
    columns: dict[int, list[Column]],
    lines: dict[int, list[list[Any]]] | None = None,
) -> dict[str, tuple[Candidate | None, str | None]]:
    """path → (chosen (page, span) or None, reason or None) for the leaves of one array's rows, in row order.

    rows: (row id, its leaves); spans: every place each leaf's value is printed on the pages its call saw;
    columns: each page's header columns ([] when no header line names the fields); lines: each page's lines.
    """
    page_lines = lines or {}

    def in_column(field: str, page: int, span: list[Any]) -> bool:
        """True when the page has no column for this field, or the span sits under it."""
        cols = columns.get(page, [])
        if not any(c.field == field for c in cols):
            return True
        line = next((ln for ln in page_lines.get(page, []) if any(w is span[0] for w in ln)), None)
        col = column_of(span, cols, line)
        return col is not None and col.field == field

    anchors: list[tuple[int, float, float] | None] = []
    previous: tuple[int, float, float] | None = None
    for _, leaves in rows:
        seen: list[tuple[int, float, float]] = []
        weights: list[float] = []
        for leaf in leaves:
            found = [
                (page, center_y(sp), height(sp))
                for page, sp in spans.get(leaf.path, [])
                if in_column(leaf.field, page, sp)
            ]
            distinct: list[tuple[int, float, float]] = []
            for ln in found:
                if not any(same_line(ln, d) for d in distinct):
                    distinct.append(ln)
            # a value printed once says more about the row's line than one printed on many lines (a quantity
            # of 1), and text more than a number
            share = (1.0 if leaf.kind == "string" else 0.9) / max(len(distinct), 1)
            for ln in distinct:
                for i, known in enumerate(seen):
                    if same_line(ln, known):
                        weights[i] += share
                        break
                else:
                    seen.append(ln)
                    weights.append(share)
        if not seen:
            anchors.append(None)
            continue

        def rank(
            i: int, prev: Any = previous, seen: list[Any] = seen, weights: list[float] = weights
        ) -> tuple[float, float, float]:
            ln = seen[i]
            after = prev is None or (ln[0], ln[1]) > (prev[0], prev[1] + prev[2] / 2)
            return (weights[i] + (0.01 if after else 0.0), -ln[0], -ln[1])

        best = seen[max(range(len(seen)), key=rank)]
        anchors.append(best)
        previous = best
    out: dict[str, tuple[Candidate | None, str | None]] = {}
    for r, (_, leaves) in enumerate(rows):
        anchor = anchors[r]
        nxt = next((a for a in anchors[r + 1 :] if a is not None and anchor and a[0] == anchor[0]), None)
        others = [a for i, a in enumerate(anchors) if a is not None and i != r]
        for leaf in leaves:
            cands = spans.get(leaf.path, [])
            if not cands:
                out[leaf.path] = (None, "not_found")
                continue
            if anchor is None:
                out[leaf.path] = (cands[0], "wrong_row")
                continue

            def in_row(
                c: Candidate,
                a: tuple[int, float, float] = anchor,
                n: Any = nxt,
                others: Any = others,
                wraps: bool = leaf.kind == "string",
            ) -> bool:
                ln = (c[0], center_y(c[1]), height(c[1]))
                if same_line(ln, a):
                    return True
                # a wrapped text cell: below the anchor, above the next row's anchor line (the last row: within
                # two lines), on no other row's line; numbers and dates sit on the row's line
                below_next = ln[1] < n[1] - n[2] / 2 if n is not None else ln[1] - a[1] < WRAP_LINES * a[2]
                return (
                    wraps
                    and ln[0] == a[0]
                    and ln[1] > a[1]
                    and below_next
                    and not any(same_line(ln, o) for o in others)
                )

            row_cands = [c for c in cands if in_row(c)]
            right = [c for c in row_cands if in_column(leaf.field, c[0], c[1])]
            if right:
                out[leaf.path] = (right[0], None)
            elif row_cands:
                out[leaf.path] = (row_cands[0], "wrong_column")
            else:
                out[leaf.path] = (cands[0], "wrong_row")
    return out
