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

import bisect
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


def column_of(
    span: list[Any], columns: list[Column], line: list[Any] | None = None, row: list[list[Any]] | None = None
) -> Column | None:
    """The column a span sits in. On a line with as many cells as the header has columns, the cell's rank
    decides (headers are often not aligned over their values); otherwise the column the span's cell overlaps
    most, else the nearest one. row: cells(line), when the caller has them already."""
    if not columns:
        return None
    x0, x1 = min(w.rbox[0] for w in span), max(w.rbox[2] for w in span)
    if line:
        row = row if row is not None else cells(line)
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
Line = tuple[int, float, float]  # (page, y centre, height) of a span


class LineSet:
    """Lines (page, y, height) kept in insertion order, found again by `same_line` in about constant time:
    bucketed by page and y in steps of the tallest line, so only neighbouring buckets are compared (a dedup
    over a table's 1,250 rows no longer compares every line with every other)."""

    def __init__(self, tallest: float) -> None:
        self.step = max(tallest, 1e-6)
        self.items: list[Line] = []
        self.tags: list[Any] = []
        self._buckets: dict[tuple[int, int], list[int]] = {}

    def _near(self, ln: Line) -> list[int]:
        b, reach = int(ln[1] // self.step), 1 + int(ln[2] // (2 * self.step))  # a taller ln reaches further
        return sorted(
            i
            for k in range(b - reach, b + reach + 1)
            for i in self._buckets.get((ln[0], k), ())
            if same_line(ln, self.items[i])
        )

    def first(self, ln: Line) -> int | None:
        """The earliest added line that is the same line as ln (None: none)."""
        near = self._near(ln)
        return near[0] if near else None

    def tags_on(self, ln: Line) -> list[Any]:
        return [self.tags[i] for i in self._near(ln)]

    def add(self, ln: Line, tag: Any = None) -> int:
        if ln[2] > self.step:  # a taller line than the buckets allow for: rebuild them wider
            self.step = ln[2]
            self._buckets = {}
            for i, old in enumerate(self.items):
                self._buckets.setdefault((old[0], int(old[1] // self.step)), []).append(i)
        self.items.append(ln)
        self.tags.append(tag)
        self._buckets.setdefault((ln[0], int(ln[1] // self.step)), []).append(len(self.items) - 1)
        return len(self.items) - 1


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
    line_of: dict[int, dict[int, list[Any]]] = {}  # page → id(word) → its line
    row_cells: dict[int, list[list[Any]]] = {}  # id(line) → cells(line)
    judged: dict[tuple[str, int, int, int], bool] = {}

    def in_column(field: str, page: int, span: list[Any]) -> bool:
        """True when the page has no column for this field, or the span sits under it."""
        cols = columns.get(page, [])
        if not any(c.field == field for c in cols):
            return True
        key = (field, page, id(span[0]), len(span))
        if key not in judged:
            if page not in line_of:
                line_of[page] = {id(w): ln for ln in page_lines.get(page, []) for w in ln}
            line = line_of[page].get(id(span[0]))
            if line is not None and id(line) not in row_cells:
                row_cells[id(line)] = cells(line)
            col = column_of(span, cols, line, row_cells.get(id(line)) if line is not None else None)
            judged[key] = col is not None and col.field == field
        return judged[key]

    unique_places = {id(ls): ls for ls in spans.values()}.values()  # leaves of one value share their list
    tallest = max((height(sp) for ls in unique_places for _, sp in ls), default=1.0)
    distinct_of: dict[tuple[str, int], list[Line]] = {}  # (field, id(places)) → the lines they sit on

    def distinct_lines(field: str, places: list[Candidate]) -> list[Line]:
        key = (field, id(places))
        if key not in distinct_of:
            found = [(page, center_y(sp), height(sp)) for page, sp in places if in_column(field, page, sp)]
            kept = LineSet(tallest)
            for ln in found:
                if kept.first(ln) is None:
                    kept.add(ln)
            distinct_of[key] = kept.items
        return distinct_of[key]

    # every line a value sits on, named once (lines that are the same line share an id), and each list of
    # places as the ids of its lines: a row's weights then add up in numpy, however many rows print a
    # quantity of 1 (a Python loop over them made a 3,200-row table quadratic)
    import numpy as np

    canon = LineSet(tallest)
    line_id: dict[Line, int] = {}
    ids_of: dict[int, Any] = {}  # id(distinct lines) → their line ids (numpy)

    def ids(distinct: list[Line]) -> Any:
        if id(distinct) not in ids_of:
            out = []
            for ln in distinct:
                if ln not in line_id:
                    first = canon.first(ln)
                    line_id[ln] = first if first is not None else canon.add(ln)
                out.append(line_id[ln])
            ids_of[id(distinct)] = np.asarray(out, dtype=np.int64)
        return ids_of[id(distinct)]

    per_row = []
    for _, leaves in rows:
        row = []
        for leaf in leaves:
            distinct = distinct_lines(leaf.field, spans.get(leaf.path, []))
            # a value printed once says more about the row's line than one printed on many lines (a quantity
            # of 1), and text more than a number
            row.append(
                (distinct, ids(distinct), (1.0 if leaf.kind == "string" else 0.9) / max(len(distinct), 1))
            )
        per_row.append(row)
    n_lines = len(canon.items)
    page_arr = np.asarray([ln[0] for ln in canon.items], dtype=np.float64)
    y_arr = np.asarray([ln[1] for ln in canon.items], dtype=np.float64)

    anchors: list[Line | None] = []
    previous: Line | None = None
    for row in per_row:
        if not any(len(distinct) for distinct, _, _ in row):
            anchors.append(None)
            continue
        weights = np.zeros(n_lines)
        seen = np.zeros(n_lines, dtype=bool)
        for _, lids, share in row:
            np.add.at(weights, lids, share)
            seen[lids] = True
        if previous is None:
            after = np.ones(n_lines, dtype=bool)
        else:
            py = previous[1] + previous[2] / 2
            after = (page_arr > previous[0]) | ((page_arr == previous[0]) & (y_arr > py))
        # the heaviest line (a line after the previous row's anchor by a hair more), the earliest on a tie
        score = np.where(seen, weights + np.where(after, 0.01, 0.0), -np.inf)
        top = np.flatnonzero(score == score.max())
        best_id = int(top[np.lexsort((y_arr[top], page_arr[top]))[0]])
        # the anchor is the row's own first line with that id (as found, not as first named)
        best = next(
            ln for distinct, lids, _ in row for ln, i in zip(distinct, lids, strict=True) if i == best_id
        )
        anchors.append(best)
        previous = best
    # each row's next anchor on its page, and every anchor findable by line
    following: list[Line | None] = [None] * len(anchors)
    last_on_page: dict[int, Line] = {}
    for r in range(len(anchors) - 1, -1, -1):
        a = anchors[r]
        if a is not None:
            following[r] = last_on_page.get(a[0])
            last_on_page[a[0]] = a
    anchor_set = LineSet(max((a[2] for a in anchors if a is not None), default=1.0))
    for r, a in enumerate(anchors):
        if a is not None:
            anchor_set.add(a, r)
    # each list of places sorted by (page, y) once: a row looks only at the places near its line
    by_height: dict[int, tuple[list[tuple[int, float]], list[int]]] = {}

    def near(places: list[Candidate], a: Line, n: Line | None) -> list[Candidate]:
        """The places that may be in the row anchored at a (next row's anchor n), in their original order."""
        if id(places) not in by_height:
            order = sorted(range(len(places)), key=lambda k: (places[k][0], center_y(places[k][1])))
            by_height[id(places)] = ([(places[k][0], center_y(places[k][1])) for k in order], order)
        keys, order = by_height[id(places)]
        reach = max(tallest, (n[1] - a[1]) if n is not None else WRAP_LINES * a[2]) + tallest
        lo = bisect.bisect_left(keys, (a[0], a[1] - tallest))
        hi = bisect.bisect_right(keys, (a[0], a[1] + reach))
        return [places[k] for k in sorted(order[lo:hi])]

    out: dict[str, tuple[Candidate | None, str | None]] = {}
    for r, (_, leaves) in enumerate(rows):
        anchor = anchors[r]
        nxt = following[r]
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
                a: Line = anchor,
                n: Any = nxt,
                r: int = r,
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
                    and not any(o != r for o in anchor_set.tags_on(ln))
                )

            row_cands = [c for c in near(cands, anchor, nxt) if in_row(c)]
            right = [c for c in row_cands if in_column(leaf.field, c[0], c[1])]
            if right:
                out[leaf.path] = (right[0], None)
            elif row_cands:
                out[leaf.path] = (row_cands[0], "wrong_column")
            else:
                out[leaf.path] = (cands[0], "wrong_row")
    return out
