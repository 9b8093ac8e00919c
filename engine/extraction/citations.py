"""Citations: where on which page each extracted value is, and whether the page really says it.

Words: the page's text layer (born-digital PDFs and everything LibreOffice converts; `method: "text"`) and,
where a page has none or places images (a scan, a logo with the vendor's name), Tesseract's words for it
(engine.documents.ocr; `method: "ocr"`, with `ocr_confidence`, the lowest confidence of the value's words).
Both are searched alike for the value — numbers by value whatever their printed form (1,200.00 / 1.200,00 /
1200; words join into one number only as a thousands group of exactly 3 digits, closer than a column gap, so
cells "3" "3" never read as 33), dates whatever their format (2026-11-02 / 02.11.2026 / Nov 2, 2026), strings
by letters and digits ignoring case, spaces and punctuation, across line breaks. A value inside an array row
must sit in that row and under its field's column (engine.extraction.tables).

Each citation: `grounded` true (found) / false (with `reason`: not_found, wrong_row, wrong_column) / null (not
checkable), `reason` also `low_ocr_confidence` for a value found only in OCR words read with low confidence.
Nothing to read (no text layer, no OCR): the value is embedded as a query and the highest-scoring patch
region of the late-interaction similarity map is cited (`method: "similarity"`, `grounded: null`: an estimate of
where, not a check of what). Booleans cannot be looked up (`method: "none"`).

Boxes are [x0, y0, x1, y1] as fractions of the displayed page's width and height (origin top-left).
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.extraction import tables
from engine.extraction.schema import CompiledSchema, TypeNode

MAX_SPAN_WORDS = 40  # a value is matched over at most this many consecutive words
LOW_OCR_CONFIDENCE = 0.6  # Tesseract's word confidence below which a found value is still worth a look
JOIN_GAP = 0.6  # words join into one number only when closer than this share of the line height (a space)


# ----------------------------------------------------------------------------------------------- leaves
@dataclass
class Leaf:
    path: str  # JSON path: $.lines[1].amount
    row: str  # _row_id of the table row holding it: $ or $.lines[1]
    field: str  # field name
    kind: str
    value: Any
    description: str | None = None  # the field's schema description (matched against table headers)

    @property
    def array(self) -> str:
        """The array the row belongs to ($.lines for $.lines[1]); "" outside arrays."""
        return re.sub(r"\[\d+\]$", "", self.row) if self.row != "$" else ""


def leaves(data: Any, compiled: CompiledSchema) -> list[Leaf]:
    """Every non-null scalar leaf (the model-reported x-confidence field excluded: it is not on the page)."""
    skip = compiled.schema.get("x-confidence")
    out: list[Leaf] = []

    def walk(
        value: Any, node: TypeNode, path: str, row: str, field: str, plain: str, desc: str | None = None
    ) -> None:
        if node.kind == "object":
            for f in node.fields:
                sub = f"{plain}.{f.name}" if plain else f.name
                walk((value or {}).get(f.name), f.type, f"{path}.{f.name}", row, f.name, sub, f.description)
        elif node.kind == "array":
            assert node.item
            for i, item in enumerate(value or []):
                p = f"{path}[{i}]"
                walk(item, node.item, p, p, field, f"{plain}[]", desc)
        elif value is not None and plain != skip:
            out.append(Leaf(path, row, field, node.kind, value, desc or node.description))

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
Box = tuple[float, float, float, float]


@dataclass
class Word:
    text: str
    fold: str
    box: Box  # fractions of the displayed page
    source: str = "text"  # "text" (the PDF's text layer) | "ocr"
    conf: float | None = None  # OCR confidence 0-1
    rbox: Box = (0.0, 0.0, 0.0, 0.0)  # the box in the page's reading frame, in points (see _turn)


def _turn(box: Box, angle: int, width: float = 1.0, height: float = 1.0) -> Box:
    """A display box (fractions) in the reading frame of text running at `angle` (turned so that the text
    runs left to right), in the units of width × height (points: gaps and line heights compare)."""
    x0, y0, x1, y1 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
    if angle == 90:  # text runs upwards: reading x grows as display y falls, lines step rightwards
        return (height - y1, x0, height - y0, x1)
    if angle == 270:  # downwards
        return (y0, width - x1, y1, width - x0)
    if angle == 180:
        return (width - x1, height - y1, width - x0, height - y0)
    return (x0, y0, x1, y1)


def _same_line(a: Word, b: Word) -> bool:
    return abs((a.rbox[1] + a.rbox[3]) - (b.rbox[1] + b.rbox[3])) / 2 < max(a.rbox[3] - a.rbox[1], 1e-6) / 2


def _word(raw: list[Any], source: str) -> Word:
    x0, y0, x1, y1, t = raw[:5]
    conf = float(raw[6]) if source == "ocr" and len(raw) > 6 else None
    return Word(str(t), _fold(str(t)), (float(x0), float(y0), float(x1), float(y1)), source, conf)


def _overlap(a: Box, b: Box) -> float:
    """Share of a's area that b covers."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    area = max((a[2] - a[0]) * (a[3] - a[1]), 1e-9)
    return max(w, 0) * max(h, 0) / area


class TextLayer:
    """The words of the pages the calls saw (engine.extraction.textlayer: page → {"words", "images"}, or the
    older page → [[x0, y0, x1, y1, text], …]), plus OCR words added per page (`add_ocr`)."""

    def __init__(self, pages: dict[int, Any]) -> None:
        self._stream: dict[int, list[Word]] = {}
        self._images: dict[int, list[list[float]]] = {}
        self._angle: dict[int, int] = {}
        self._size: dict[int, tuple[float, float]] = {}  # displayed page size in points
        self._pages: dict[int, list[Word]] = {}
        self._index: dict[tuple[int, int], WordIndex] = {}  # (page, order) → its index, built on first use
        self._position: dict[int, dict[int, int]] = {}  # page → id(word) → its place in reading order
        self._lines: dict[int, list[list[Word]]] = {}
        self._second: dict[int, list[Word]] = {}
        # page → OCR words of a second reading (engine.extraction.textlayer.PageOcr.second_reading), asked only
        # for a value the first reading does not show
        self.second_reader: Callable[[int], list[list[Any]]] | None = None
        for n, page in pages.items():
            raw = page["words"] if isinstance(page, dict) else page
            self._images[n] = page.get("images", []) if isinstance(page, dict) else []
            if isinstance(page, dict) and page.get("size"):
                self._size[n] = (float(page["size"][0]), float(page["size"][1]))
            angles = [int(w[5]) for w in raw if len(w) > 5]
            self._angle[n] = max(set(angles), key=angles.count) if angles else 0
            self._stream[n] = [_word(w, "text") for w in raw]
            self._reorder(n)

    def _reorder(self, n: int) -> None:
        width, height = self._size.get(n, (612.0, 792.0))
        text = any(
            w.source == "text" for w in self._stream[n]
        )  # OCR of a text page's images reads them upright
        for w in self._stream[n]:
            angle = self._angle.get(n, 0) if w.source == "text" or not text else 0
            w.rbox = _turn(w.box, angle, width, height)
        self._pages[n] = sorted(self._stream[n], key=lambda w: (round(w.rbox[3] * 2), w.rbox[0]))
        for k in [k for k in self._index if k[0] == n]:
            del self._index[k]
        self._position.pop(n, None)
        self._lines.pop(n, None)

    def index(self, page_number: int, order: int = 0) -> WordIndex:
        """The page's words indexed for finding values (order 0: reading order, 1: content stream)."""
        key = (page_number, order)
        if key not in self._index:
            self._index[key] = WordIndex(self.orders(page_number)[order])
        return self._index[key]

    def position(self, page_number: int, word: Word) -> int | None:
        """Where a word stands in the page's reading order (None: not one of its words)."""
        if page_number not in self._position:
            self._position[page_number] = {id(w): i for i, w in enumerate(self.words(page_number))}
        return self._position[page_number].get(id(word))

    def has_ocr(self, page_number: int) -> bool:
        return any(w.source == "ocr" for w in self._stream.get(page_number, []))

    def second_words(self, page_number: int) -> list[Word]:
        """A second OCR reading of the page's OCR'd images, in reading order; [] without one."""
        n = page_number
        if self.second_reader is None or not self.has_ocr(n):
            return []
        if n not in self._second:
            width, height = self._size.get(n, (612.0, 792.0))
            have = [w.box for w in self._stream.get(n, []) if w.source == "text"]
            new = [_word(w, "ocr") for w in self.second_reader(n)]
            new = [w for w in new if w.fold and not any(_overlap(w.box, b) > 0.5 for b in have)]
            for w in new:
                w.rbox = _turn(w.box, 0 if have else self._angle.get(n, 0), width, height)
            self._second[n] = sorted(new, key=lambda w: (round(w.rbox[3] * 2), w.rbox[0]))
        return self._second[n]

    def add_ocr(self, n: int, words: list[list[Any]], size: tuple[float, float] | None = None) -> int:
        """OCR words of page n (all of it, or an image region); those the text layer already has are dropped.
        size: the displayed page in points, where the text layer did not say."""
        if size and n not in self._size:
            self._size[n] = size
        have = [w.box for w in self._stream.get(n, []) if w.source == "text"]
        new = [_word(w, "ocr") for w in words]
        new = [w for w in new if w.fold and not any(_overlap(w.box, b) > 0.5 for b in have)]
        if not have:  # the page reads in the direction most OCR words run
            angles = [int(w[5]) for w in words if len(w) > 5]
            self._angle[n] = max(set(angles), key=angles.count) if angles else 0
        self._stream.setdefault(n, []).extend(new)
        self._reorder(n)
        return len(new)

    def words(self, page_number: int) -> list[Word]:
        """The page's words in reading order (top to bottom, left to right, in the page's reading frame)."""
        return self._pages.get(page_number, [])

    def orders(self, page_number: int) -> list[list[Word]]:
        """Reading order and the content stream's order (which keeps a cell's wrapped lines together)."""
        return [self.words(page_number), self._stream.get(page_number, [])]

    def lines(self, page_number: int) -> list[list[Word]]:
        """The page's words grouped into lines (reading frame)."""
        if page_number not in self._lines:
            out: list[list[Word]] = []
            for w in self.words(page_number):
                if out and _same_line(out[-1][0], w):
                    out[-1].append(w)
                else:
                    out.append([w])
            self._lines[page_number] = out
        return self._lines[page_number]

    def has_text(self, page_number: int) -> bool:
        """Words to check values against: the text layer's or OCR's."""
        return any(w.fold for w in self.words(page_number))

    def has_text_layer(self, page_number: int) -> bool:
        return any(w.fold and w.source == "text" for w in self._stream.get(page_number, []))

    def text_words_in(self, page_number: int, region: list[float]) -> int:
        """How many text-layer words have their centre inside region (page fractions)."""
        x0, y0, x1, y1 = region
        return sum(
            1
            for w in self._stream.get(page_number, [])
            if w.source == "text"
            and w.fold
            and x0 <= (w.box[0] + w.box[2]) / 2 <= x1
            and y0 <= (w.box[1] + w.box[3]) / 2 <= y1
        )

    def images(self, page_number: int) -> list[list[float]]:
        """Where the page places images (fractions of the displayed page)."""
        return self._images.get(page_number, [])


def _union(words: list[Word]) -> list[float]:
    return [
        round(min(w.box[0] for w in words), 4),
        round(min(w.box[1] for w in words), 4),
        round(max(w.box[2] for w in words), 4),
        round(max(w.box[3] for w in words), 4),
    ]


def _joinable(a: Word, b: Word) -> bool:
    """May b continue the number a starts ("1 200,00", "€ 1,200", "98 452")? Never across a column gap, and a
    digit group after a digit group is a thousands group: exactly 3 digits ("3" "3" are two cells, not 33)."""
    h = max(a.rbox[3] - a.rbox[1], b.rbox[3] - b.rbox[1], 1e-6)
    if not _same_line(a, b) or b.rbox[0] - a.rbox[2] > JOIN_GAP * h:
        return False
    if a.text[-1:].isdigit() and b.text[:1].isdigit():
        tail = re.search(r"\d+$", a.text)
        return bool(tail and len(tail.group()) <= 3 and re.match(r"\d{3}(?!\d)", b.text))
    return True


def find(leaf: Leaf, words: list[Word]) -> list[list[Word]]:
    """Every span of consecutive words that says the leaf's value."""
    return WordIndex(words).find(leaf)


class WordIndex:
    """One word list (a page in reading or content-stream order) indexed once, so that finding a value costs
    about the number of places it is printed, not the page's length: printed numbers by value (sorted), dates
    by date, words by their folded text, by each prefix a value may start with, and by trigram (a value inside
    a longer word). The spans found are exactly those a scan of every start word would find, in page order."""

    def __init__(self, words: list[Word]) -> None:
        self.words = words
        self._numbers: tuple[list[float], list[tuple[int, int]]] | None = None
        self._dates: dict[dt.date, list[tuple[int, int]]] | None = None
        self._folds: dict[str, list[int]] | None = None
        self._grams: dict[str, list[int]] | None = None

    # numbers: every (start, length) of 1-3 words that reads as a number, by each number it can mean
    def _number_index(self) -> tuple[list[float], list[tuple[int, int]]]:
        if self._numbers is None:
            entries: list[tuple[float, int, int]] = []
            words = self.words
            for i in range(len(words)):
                for n in (1, 2, 3):  # "1 200,00" and "€ 1,200" print one number as several words
                    span = words[i : i + n]
                    if len(span) < n or (n > 1 and not _joinable(span[-2], span[-1])):
                        break
                    text = " ".join(x.text for x in span).strip("()[]:;,*")
                    if n > 1 and not _NUMBER_WORDS.match(text):
                        continue
                    if _NUMBER_TOKEN.match(text):
                        entries += [(v, i, n) for v in number_readings(text)]
            entries.sort()
            self._numbers = ([e[0] for e in entries], [(e[1], e[2]) for e in entries])
        return self._numbers

    def _date_index(self) -> dict[dt.date, list[tuple[int, int]]]:
        if self._dates is None:
            self._dates = {}
            words = self.words
            for i in range(len(words)):
                for n in (1, 2, 3, 4):
                    span = words[i : i + n]
                    if len(span) < n:
                        break
                    for d in date_readings(" ".join(x.text for x in span)):
                        self._dates.setdefault(d, []).append((i, n))
        return self._dates

    def _fold_index(self) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        if self._folds is None or self._grams is None:
            self._folds, self._grams = {}, {}
            for i, w in enumerate(self.words):
                if not w.fold:
                    continue
                self._folds.setdefault(w.fold, []).append(i)
                for g in {w.fold[k : k + 3] for k in range(len(w.fold) - 2)}:
                    self._grams.setdefault(g, []).append(i)
        return self._folds, self._grams

    @staticmethod
    def _first_per_start(hits: list[tuple[int, int]]) -> dict[int, int]:
        """start → the shortest span starting there (a scan stops at the first length that matches)."""
        out: dict[int, int] = {}
        for i, n in hits:
            if i not in out or n < out[i]:
                out[i] = n
        return out

    def find(self, leaf: Leaf) -> list[list[Word]]:
        words = self.words
        if leaf.kind in ("integer", "number"):
            target = float(leaf.value)
            values, where = self._number_index()
            tol = max(1e-6, 1e-9 * abs(target)) * 1.01
            lo, hi = bisect.bisect_left(values, target - tol), bisect.bisect_right(values, target + tol)
            hits = [where[k] for k in range(lo, hi) if _same_number(values[k], target)]
            starts = self._first_per_start(hits)
            return [words[i : i + starts[i]] for i in sorted(starts)]
        if leaf.kind in ("date", "datetime"):
            try:
                target_d = dt.date.fromisoformat(str(leaf.value)[:10])
            except ValueError:
                return []
            starts = self._first_per_start(self._date_index().get(target_d, []))
            if starts:
                return [words[i : i + starts[i]] for i in sorted(starts)]
            # a date printed in a form we cannot parse still matches as text (e.g. 20261102)
        text_target = _fold(leaf.value)
        if not text_target:
            return []
        folds, grams = self._fold_index()
        candidates: set[int] = set()
        for k in range(1, len(text_target) + 1):  # words the value starts with (or is)
            candidates.update(folds.get(text_target[:k], ()))
        if len(text_target) >= 3:  # words holding the value inside them
            candidates.update(grams.get(text_target[:3], ()))
        spans: list[list[Word]] = []
        for i in sorted(candidates):
            w = words[i]
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
def _label_near(span: list[Word], layer: TextLayer, page: int, field: str) -> bool:
    """A word of the field's name printed just before the value on its line (Total: 2,500.00)."""
    names = {_fold(p) for p in re.split(r"[_\W]+", field) if len(p) >= 3}
    first = layer.position(page, span[0])
    if not names or first is None:
        return False
    words = layer.words(page)
    before = [w for w in words[max(0, first - 6) : first] if _same_line(w, span[0])]
    return any(any(n in w.fold or w.fold in n for n in names if w.fold) for w in before)


def cite_text_layer(
    found: list[Leaf], layer: TextLayer, pages_of: dict[str, list[int]]
) -> dict[str, dict[str, Any]]:
    """path → citation for every leaf, found on the pages the call that produced it saw: values outside arrays
    anywhere on those pages (preferring one labelled with the field's name), array values in their row's cell."""
    out: dict[str, dict[str, Any]] = {}
    spans: dict[str, list[tuple[int, list[Word]]]] = {}
    # leaves printing the same value on the same pages share one list of places (a table's quantity of 1
    # is looked up once, and tables.judge_rows weighs its places once)
    looked_up: dict[tuple[str, str, tuple[int, ...]], list[tuple[int, list[Word]]]] = {}
    for leaf in found:
        if leaf.kind == "boolean":
            out[leaf.path] = {"method": "none", "page": None, "bbox": None, "grounded": None, "reason": None,
                              "ocr_confidence": None}  # fmt: skip
            continue
        leaf_pages = tuple(pages_of.get(leaf.path, []))
        key = (leaf.kind, repr(leaf.value), leaf_pages)
        if key not in looked_up:
            got_all: list[tuple[int, list[Word]]] = []
            for page in leaf_pages:
                got = layer.index(page).find(leaf)
                if leaf.kind == "string" and not any(len(sp) > 1 for sp in got):
                    got += [sp for sp in layer.index(page, 1).find(leaf) if len(sp) > 1]
                got_all += [(page, sp) for sp in got]
            if not got_all or all(_low_confidence(sp) for _, sp in got_all):
                # OCR misreads depend on the pixels: a second reading of the page may show the value (or show
                # it read with confidence, where the first reading only guessed it)
                for page in leaf_pages:
                    got_all += [(page, sp) for sp in find(leaf, layer.second_words(page))]
            looked_up[key] = got_all
        spans[leaf.path] = looked_up[key]
    by_array: dict[str, dict[str, list[Leaf]]] = {}
    by_path = {leaf.path: leaf for leaf in found}
    for leaf in found:
        if leaf.path not in spans:
            continue
        if not leaf.array:
            best = max(
                spans[leaf.path],
                key=lambda c: (_label_near(c[1], layer, c[0], leaf.field), not _low_confidence(c[1])),
                default=None,
            )
            out[leaf.path] = _citation(leaf, layer, best, None if best else "not_found")
        else:
            by_array.setdefault(leaf.array, {}).setdefault(leaf.row, []).append(leaf)
    for rows in by_array.values():
        fields = {lf.field: lf.description for ls in rows.values() for lf in ls}
        pages = sorted({p for ls in rows.values() for lf in ls for p in pages_of.get(lf.path, [])})
        lines = {p: layer.lines(p) for p in pages}
        columns = {p: tables.header_columns(lines[p], fields, _fold) for p in pages}
        ordered = sorted(rows.items(), key=lambda kv: [int(i) for i in re.findall(r"\[(\d+)\]", kv[0])])
        for path, (cand, reason) in tables.judge_rows(ordered, spans, columns, lines).items():
            out[path] = _citation(by_path[path], layer, cand, reason)
    for path, c in out.items():
        if c["grounded"] is False and c["page"] is None:
            c["method"] = not_found_method(layer, pages_of.get(path, []))
    return out


def _low_confidence(span: list[Word]) -> bool:
    return any(w.source == "ocr" and w.conf is not None and w.conf < LOW_OCR_CONFIDENCE for w in span)


def _citation(
    leaf: Leaf, layer: TextLayer, cand: tuple[int, list[Word]] | None, reason: str | None
) -> dict[str, Any]:
    """The citation of a leaf: where it was found (or, with a reason, where it was found instead)."""
    if cand is None:
        return {"method": "text", "page": None, "bbox": None, "grounded": False, "reason": reason or "not_found",
                "ocr_confidence": None}  # fmt: skip
    page, span = cand
    ocr = [w.conf for w in span if w.source == "ocr" and w.conf is not None]
    conf = round(min(ocr), 3) if ocr else None
    if reason is None and conf is not None and conf < LOW_OCR_CONFIDENCE:
        reason = "low_ocr_confidence"
    return {
        "method": "ocr" if any(w.source == "ocr" for w in span) else "text",
        "page": page, "bbox": _union(span), "grounded": reason in (None, "low_ocr_confidence"),
        "reason": reason, "ocr_confidence": conf,
    }  # fmt: skip


def not_found_method(layer: TextLayer, pages: list[int]) -> str:
    """A value not found was looked for in OCR words when none of its pages has a text layer."""
    return "ocr" if pages and not any(layer.has_text_layer(p) for p in pages) else "text"


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
            out[lf.path] = {
                "method": "none",
                "page": None,
                "bbox": None,
                "grounded": None,
                "reason": None,
                "ocr_confidence": None,
            }
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
            out[lf.path] = {
                "method": "none",
                "page": None,
                "bbox": None,
                "grounded": None,
                "reason": None,
                "ocr_confidence": None,
            }
            continue
        _, page, (vectors, grid, offset) = best
        box = patch_region(np.asarray(q), vectors, tuple(grid), int(offset))
        out[lf.path] = {
            "method": "similarity",
            "page": page,
            "bbox": box,
            "grounded": None,
            "reason": "no_text",
            "ocr_confidence": None,
        }
    return out


def grounding(citations: list[dict[str, Any]]) -> dict[str, Any]:
    checked = [c for c in citations if c["method"] in ("text", "ocr")]
    grounded = sum(1 for c in checked if c["grounded"])
    return {
        "ratio": round(grounded / len(checked), 4) if checked else None,
        "grounded": grounded,
        "checked": len(checked),
        "checked_by_ocr": sum(1 for c in checked if c["method"] == "ocr"),
        "estimated": sum(1 for c in citations if c["method"] == "similarity"),
        "ungrounded_paths": [c["path"] for c in checked if not c["grounded"]],
        "reasons": {r: sum(1 for c in checked if c.get("reason") == r) for r in REASONS
                    if any(c.get("reason") == r for c in checked)},
    }  # fmt: skip


REASONS = ("not_found", "wrong_row", "wrong_column", "low_ocr_confidence")


def citations_table(citations: list[dict[str, Any]], document_id: str) -> Any:
    """1NF: one row per citation, lineage columns tying it to the data row holding the value."""
    import pyarrow as pa

    rows = []
    for i, c in enumerate(citations):
        box = c["bbox"] or [None] * 4
        rows.append({
            "_document_id": document_id, "_row_id": f"$.citations[{i}]", "_parent_row_id": c["row"], "_path": "$.citations",
            "_index": i, "field_path": c["path"], "page": c["page"], "x0": box[0], "y0": box[1], "x1": box[2], "y1": box[3],
            "method": c["method"], "grounded": c["grounded"], "reason": c.get("reason"), "ocr_confidence": c.get("ocr_confidence"),
        })  # fmt: skip
    schema = pa.schema([
        ("_document_id", pa.string()), ("_row_id", pa.string()), ("_parent_row_id", pa.string()), ("_path", pa.string()),
        ("_index", pa.int32()), ("field_path", pa.string()), ("page", pa.int32()), ("x0", pa.float64()), ("y0", pa.float64()),
        ("x1", pa.float64()), ("y1", pa.float64()), ("method", pa.string()), ("grounded", pa.bool_()),
        ("reason", pa.string()), ("ocr_confidence", pa.float64()),
    ])  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schema)
