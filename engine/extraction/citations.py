"""Citations: where on which page each extracted value is, and whether the page really says it.

Text layer (born-digital PDFs and everything LibreOffice converts): the page's words (pymupdf) are searched
for the value — numbers by value whatever their printed form (1,200.00 / 1.200,00 / 1200), dates whatever
their format (2026-11-02 / 02.11.2026 / Nov 2, 2026), strings by letters and digits ignoring case, spaces and
punctuation, across line breaks. A value found is `grounded: true` with its box; not found on any page its
call saw is `grounded: false` (a value the page does not say: misread or invented).

No text layer (scans, photos): the value is embedded as a query and the highest-scoring patch region of the
late-interaction similarity map is cited (`method: "similarity_map"`, `grounded: null`: an estimate of where,
not a check of what). Booleans cannot be looked up (`method: "none"`).

Boxes are [x0, y0, x1, y1] as fractions of the displayed page's width and height (origin top-left).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from engine.extraction.schema import CompiledSchema, TypeNode

MAX_SPAN_WORDS = 40  # a value is matched over at most this many consecutive words


# ----------------------------------------------------------------------------------------------- leaves
@dataclass
class Leaf:
    path: str  # JSON path: $.lines[1].amount
    row: str  # _row_id of the table row holding it: $ or $.lines[1]
    field: str  # field name
    kind: str
    value: Any


def leaves(data: Any, compiled: CompiledSchema) -> list[Leaf]:
    """Every non-null scalar leaf (the model-reported x-confidence field excluded: it is not on the page)."""
    skip = compiled.schema.get("x-confidence")
    out: list[Leaf] = []

    def walk(value: Any, node: TypeNode, path: str, row: str, field: str, plain: str) -> None:
        if node.kind == "object":
            for f in node.fields:
                sub = f"{plain}.{f.name}" if plain else f.name
                walk((value or {}).get(f.name), f.type, f"{path}.{f.name}", row, f.name, sub)
        elif node.kind == "array":
            assert node.item
            for i, item in enumerate(value or []):
                p = f"{path}[{i}]"
                walk(item, node.item, p, p, field, f"{plain}[]")
        elif value is not None and plain != skip:
            out.append(Leaf(path, row, field, node.kind, value))

    walk(data, compiled.root, "$", "$", "", "")
    return out


# ------------------------------------------------------------------------------------------ normalizing
def _fold(text: str) -> str:
    """Letters and digits only, case-folded, accents kept as their base letters."""
    text = unicodedata.normalize("NFKD", str(text))
    return "".join(c for c in text if c.isalnum()).casefold()


_NUM = re.compile(r"[-+−(]?[$€£¥]?\d[\d.,' \u00a0\u202f]*")


def number_readings(token: str) -> set[float]:
    """Every number a printed token can mean: 1,200.50 → 1200.5; 1.200,50 → 1200.5; 1.200 → 1.2 and 1200."""
    out: set[float] = set()
    for m in _NUM.finditer(token):
        raw = m.group().strip().replace("−", "-")
        neg = raw.startswith(("-", "("))
        digits = re.sub(r"[^\d.,]", "", raw).strip(".,")
        if not digits:
            continue
        candidates = set()
        if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?|\d+(\.\d+)?", digits):  # , thousands / . decimal
            candidates.add(digits.replace(",", ""))
        if re.fullmatch(r"\d{1,3}(\.\d{3})+(,\d+)?|\d+(,\d+)?", digits):  # . thousands / , decimal
            candidates.add(digits.replace(".", "").replace(",", "."))
        for c in candidates:
            if c.count(".") > 1:
                continue
            try:
                v = float(c)
            except ValueError:
                continue
            out.add(-v if neg else v)
            if neg and raw.startswith("("):
                out.add(v)  # (45.00): an accounting negative, or just brackets
    return out


# a printed amount: optional currency code/symbol, the number, optional unit or % ("EUR 1,200.00", "340.5kg", "12")
_NUMBER_TOKEN = re.compile(
    r"^[-+−(]?(?:[A-Z]{3}\s?|[$€£¥]\s?)?[-+−]?\d[\d.,'\u00a0\u202f ]*(?:\s?[A-Za-z]{1,4}|%)?\)?$"
)
_NUMBER_WORDS = re.compile(r"^[-+−(]?(?:[A-Z]{3}|[$€£¥])?[\s\d.,'\u00a0\u202f]*\)?$")


def _same_number(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


_MONTHS = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"


def date_readings(text: str) -> set[dt.date]:
    """Dates a short span of words can mean (day-first and month-first both tried); a year must be printed."""
    from dateutil import parser

    t = text.strip(" ,;:()[]")
    from engine.extraction.locale import parse_date

    if (
        named := parse_date(t)
    ).month_name and named.value:  # month names in de/fr/nl/es/it/pt ("7. Mai 2014")
        return {named.value}
    if not re.search(r"\d", t) or not (
        re.search(r"\d{4}", t) or re.search(r"\d{1,2}[./-]\d{1,2}[./-]\d{2}\b", t)
    ):
        return set()
    if len(t) > 40 or (not re.search(r"\d{1,4}[./-]\d{1,2}", t) and not re.search(_MONTHS, t, re.I)):
        return set()
    if iso := re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})(T.*)?", t):
        try:
            return {dt.date(int(iso[1]), int(iso[2]), int(iso[3]))}
        except ValueError:
            return set()
    out = set()
    for dayfirst in (True, False):
        try:
            d1 = parser.parse(t, dayfirst=dayfirst, default=dt.datetime(1900, 1, 1))
            d2 = parser.parse(t, dayfirst=dayfirst, default=dt.datetime(1904, 2, 2))
        except (ValueError, OverflowError, parser.ParserError):
            continue
        if d1.date() == d2.date():  # day, month and year all printed
            out.add(d1.date())
    return out


# -------------------------------------------------------------------------------------------- text layer
@dataclass
class Word:
    text: str
    fold: str
    box: tuple[float, float, float, float]  # fractions of the displayed page


def _same_line(a: Word, b: Word) -> bool:
    return abs((a.box[1] + a.box[3]) - (b.box[1] + b.box[3])) / 2 < max(a.box[3] - a.box[1], 1e-6) / 2


class TextLayer:
    """The words of the pages the calls saw, read once (engine.extraction.textlayer: page → [[x0,y0,x1,y1,text]])."""

    def __init__(self, pages: dict[int, list[list[Any]]]) -> None:
        self._stream = {
            n: [
                Word(str(t), _fold(str(t)), (float(x0), float(y0), float(x1), float(y1)))
                for x0, y0, x1, y1, t in ws
            ]
            for n, ws in pages.items()
        }
        self._pages = {
            n: sorted(ws, key=lambda w: (round(w.box[3] * 300), w.box[0])) for n, ws in self._stream.items()
        }

    def words(self, page_number: int) -> list[Word]:
        """The page's words in reading order (top to bottom, left to right)."""
        return self._pages.get(page_number, [])

    def orders(self, page_number: int) -> list[list[Word]]:
        """Reading order and the content stream's order (which keeps a cell's wrapped lines together)."""
        return [self.words(page_number), self._stream.get(page_number, [])]

    def has_text(self, page_number: int) -> bool:
        return any(w.fold for w in self.words(page_number))


def _union(words: list[Word]) -> list[float]:
    return [
        round(min(w.box[0] for w in words), 4),
        round(min(w.box[1] for w in words), 4),
        round(max(w.box[2] for w in words), 4),
        round(max(w.box[3] for w in words), 4),
    ]


def find(leaf: Leaf, words: list[Word]) -> list[list[Word]]:
    """Every span of consecutive words that says the leaf's value."""
    spans: list[list[Word]] = []
    if leaf.kind in ("integer", "number"):
        target = float(leaf.value)
        for i in range(len(words)):
            for n in (1, 2, 3):  # "1 200,00" and "€ 1,200" print one number as several words
                span = words[i : i + n]
                if len(span) < n:
                    break
                text = " ".join(x.text for x in span).strip("()[]:;,*")
                if n > 1 and not _NUMBER_WORDS.match(text):
                    continue
                if _NUMBER_TOKEN.match(text) and any(_same_number(v, target) for v in number_readings(text)):
                    spans.append(span)
                    break
        return spans
    if leaf.kind in ("date", "datetime"):
        try:
            target_d = dt.date.fromisoformat(str(leaf.value)[:10])
        except ValueError:
            return spans
        for i in range(len(words)):
            for n in (1, 2, 3, 4):
                span = words[i : i + n]
                if len(span) < n:
                    break
                if target_d in date_readings(" ".join(x.text for x in span)):
                    spans.append(span)
                    break
        if spans:
            return spans
        # a date printed in a form we cannot parse still matches as text (e.g. 20261102)
    text_target = _fold(leaf.value)
    if not text_target:
        return spans
    for i, w in enumerate(words):
        if not w.fold:
            continue
        if w.fold == text_target or (
            len(text_target) >= 3
            and text_target in w.fold
            and _boundary(w.fold, w.fold.index(text_target), len(text_target))
        ):
            spans.append([w])
            continue
        if not text_target.startswith(w.fold):
            continue
        acc, j = w.fold, i + 1
        while len(acc) < len(text_target) and j < len(words) and j - i < MAX_SPAN_WORDS:
            acc += words[j].fold
            j += 1
            if not text_target.startswith(acc):
                break
        if acc == text_target:
            spans.append(words[i:j])
    return spans


def _boundary(text: str, start: int, length: int) -> bool:
    """A value inside a longer word counts only at a letter/digit boundary: 'No4711' has 4711, '14711' has not."""
    before = text[start - 1] if start > 0 else ""
    after = text[start + length] if start + length < len(text) else ""
    first, last = text[start], text[start + length - 1]
    ok_before = not before or before.isdigit() != first.isdigit()
    ok_after = not after or after.isdigit() != last.isdigit()
    return ok_before and ok_after


# -------------------------------------------------------------------------------------- choosing a match
def _label_near(span: list[Word], words: list[Word], field: str) -> bool:
    """A word of the field's name printed just before the value on its line (Total: 2,500.00)."""
    names = {_fold(p) for p in re.split(r"[_\W]+", field) if len(p) >= 3}
    if not names:
        return False
    first = words.index(span[0])
    before = [w for w in words[max(0, first - 6) : first] if _same_line(w, span[0])]
    return any(any(n in w.fold or w.fold in n for n in names if w.fold) for w in before)


def cite_text_layer(
    found: list[Leaf], layer: TextLayer, pages_of: dict[str, list[int]]
) -> dict[str, dict[str, Any]]:
    """path → citation for every leaf, found on the pages the call that produced it saw."""
    out: dict[str, dict[str, Any]] = {}
    anchors: dict[str, tuple[int, float]] = {}  # row → (page, y) of its first located value
    order = sorted(found, key=lambda lf: (lf.row, -len(str(lf.value)) if lf.kind == "string" else 0))
    for leaf in order:
        if leaf.kind == "boolean":
            out[leaf.path] = {"method": "none", "page": None, "bbox": None, "grounded": None}
            continue
        best: tuple[float, int, list[Word]] | None = None
        for page in pages_of.get(leaf.path, []):
            words = layer.words(page)
            spans = find(leaf, words)
            if leaf.kind == "string" and not any(len(sp) > 1 for sp in spans):
                spans += [sp for sp in find(leaf, layer.orders(page)[1]) if len(sp) > 1]
            for span in spans:
                score = 0.0
                if (
                    leaf.row in anchors and leaf.row != "$"
                ):  # the other values of its table row: same page, same line
                    a_page, a_y = anchors[leaf.row]
                    score += 2 - min(abs(a_y - span[0].box[1]) * 10, 2) if a_page == page else -2
                if _label_near(span, words, leaf.field):
                    score += 1.0
                if best is None or score > best[0]:
                    best = (score, page, span)
        if best is None:
            out[leaf.path] = {"method": "text_layer", "page": None, "bbox": None, "grounded": False}
            continue
        _, page, span = best
        anchors.setdefault(leaf.row, (page, span[0].box[1]))
        out[leaf.path] = {"method": "text_layer", "page": page, "bbox": _union(span), "grounded": True}
    return out


# -------------------------------------------------------------------------------------- similarity map
def patch_region(query_vecs: Any, vectors: Any, grid: tuple[int, int], offset: int) -> list[float]:
    """The highest-scoring patch, grown along its row over neighbours that score nearly as high (a text line)."""
    import numpy as np

    rows, cols = grid
    patches = vectors[offset : offset + rows * cols]
    score = (query_vecs @ patches.T).max(axis=0).reshape(rows, cols)
    r, c = divmod(int(score.argmax()), cols)
    lo, hi = float(score.min()), float(score.max())
    keep = lo + 0.85 * (hi - lo)
    c0 = c1 = c
    while c0 > 0 and score[r, c0 - 1] >= keep:
        c0 -= 1
    while c1 < cols - 1 and score[r, c1 + 1] >= keep:
        c1 += 1
    del np
    return [round(c0 / cols, 4), round(r / rows, 4), round((c1 + 1) / cols, 4), round((r + 1) / rows, 4)]


def cite_similarity_map(
    found: list[Leaf], page_vectors: Any, embedder: Any, pages_of: dict[str, list[int]]
) -> dict[str, dict[str, Any]]:
    """path → citation from the late-interaction similarity map; page_vectors(page) → (vectors, grid, offset)."""
    import numpy as np

    out: dict[str, dict[str, Any]] = {}
    todo = [lf for lf in found if lf.kind != "boolean"]
    for lf in found:
        if lf.kind == "boolean":
            out[lf.path] = {"method": "none", "page": None, "bbox": None, "grounded": None}
    if not todo:
        return out
    queries = embedder.embed_queries([f"{lf.field.replace('_', ' ')}: {lf.value}" for lf in todo])
    for lf, q in zip(todo, queries, strict=True):
        best: tuple[float, int, Any] | None = None
        for page in pages_of.get(lf.path, []):
            got = page_vectors(page)
            if got is None:
                continue
            vectors, grid, offset = got
            s = float((q @ vectors.T).max(axis=1).sum())
            if best is None or s > best[0]:
                best = (s, page, got)
        if best is None or not best[2][1]:
            out[lf.path] = {"method": "none", "page": None, "bbox": None, "grounded": None}
            continue
        _, page, (vectors, grid, offset) = best
        box = patch_region(np.asarray(q), vectors, tuple(grid), int(offset))
        out[lf.path] = {"method": "similarity_map", "page": page, "bbox": box, "grounded": None}
    return out


def grounding(citations: list[dict[str, Any]]) -> dict[str, Any]:
    checked = [c for c in citations if c["method"] == "text_layer"]
    grounded = sum(1 for c in checked if c["grounded"])
    return {
        "ratio": round(grounded / len(checked), 4) if checked else None,
        "grounded": grounded,
        "checked": len(checked),
        "estimated": sum(1 for c in citations if c["method"] == "similarity_map"),
        "ungrounded_paths": [c["path"] for c in checked if not c["grounded"]],
    }


def citations_table(citations: list[dict[str, Any]], document_id: str) -> Any:
    """1NF: one row per citation, lineage columns tying it to the data row holding the value."""
    import pyarrow as pa

    rows = []
    for i, c in enumerate(citations):
        box = c["bbox"] or [None] * 4
        rows.append({
            "_document_id": document_id, "_row_id": f"$.citations[{i}]", "_parent_row_id": c["row"], "_path": "$.citations",
            "_index": i, "field_path": c["path"], "page": c["page"], "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3],
            "method": c["method"], "grounded": c["grounded"],
        })  # fmt: skip
    schema = pa.schema([
        ("_document_id", pa.string()), ("_row_id", pa.string()), ("_parent_row_id", pa.string()), ("_path", pa.string()),
        ("_index", pa.int32()), ("field_path", pa.string()), ("page", pa.int32()), ("x0", pa.float64()), ("y0", pa.float64()),
        ("x1", pa.float64()), ("y1", pa.float64()), ("method", pa.string()), ("grounded", pa.bool_()),
    ])  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schema)
