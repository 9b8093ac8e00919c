"""Cell-level citations on generated PDFs: a value of an array row is grounded only in its row and under its
field's column; adjacent cells never merge into one number; rotated pages read like upright ones.

The words come from the real text-layer reader (pymupdf, in process) and the real matcher; no LLM is needed
to test where a given answer's values are printed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pymupdf
import pytest

from engine.extraction import citations as cite
from engine.extraction.schema import compile_schema
from engine.extraction.textlayer import read_layer

pytestmark = pytest.mark.integration

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
                    "pack": {"type": "number", "description": "units per pack"},
                    "unit_price": {"type": "number"},
                    "tax_rate": {"type": "number", "description": "VAT percent"},
                    "amount": {"type": "number"},
                },
            },
        },
    },
}
HEADER = ["Description", "Qty", "Pack", "Unit price", "Tax %", "Amount"]
XS = [60, 250, 272, 330, 420, 490]  # Qty and Pack are narrow neighbouring columns
ROWS = [
    ["Centrifugal pump", "3", "3", "600.00", "20", "1,800.00"],
    ["Ball valve DN50", "20", "1", "35.50", "20", "710.00"],
    ["Stainless flange", "4", "2", "11.25", "7", "45.00"],
]


def faithful() -> dict[str, Any]:
    return {
        "invoice_number": "INV-9",
        "lines": [
            {"description": "Centrifugal pump", "quantity": 3, "pack": 3, "unit_price": 600.0, "tax_rate": 20, "amount": 1800.0},
            {"description": "Ball valve DN50", "quantity": 20, "pack": 1, "unit_price": 35.5, "tax_rate": 20, "amount": 710.0},
            {"description": "Stainless flange", "quantity": 4, "pack": 2, "unit_price": 11.25, "tax_rate": 7, "amount": 45.0},
        ],
    }  # fmt: skip


def table_pdf(path: Path, rotate: int = 0, sideways: bool = False) -> Path:
    """One invoice page with the table; rotate: the page's /Rotate; sideways: the text is set at 90 degrees
    in the page's own space (a landscape table on a portrait page, shown upright by /Rotate 90)."""
    doc = pymupdf.open()
    page = doc.new_page(width=842, height=595) if not sideways else doc.new_page(width=595, height=842)

    def put(x: float, y: float, text: str) -> None:
        if sideways:  # text runs upwards: landscape (x, y) → portrait (y, 842 - x)
            page.insert_text((y, 842 - x), text, fontsize=10, rotate=90)
        else:
            page.insert_text((x, y), text, fontsize=10)

    put(60, 60, "INVOICE INV-9")
    for x, h in zip(XS, HEADER, strict=True):
        put(x, 100, h)
    for i, row in enumerate(ROWS):
        for x, v in zip(XS, row, strict=True):
            put(x, 125 + 22 * i, v)
    if rotate:
        page.set_rotation(rotate)
    doc.save(path)
    return path


def cited(pdf: Path, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    compiled = compile_schema(SCHEMA)
    with pymupdf.open(pdf) as doc:
        layer = cite.TextLayer(read_layer(doc, [1]))
    found = cite.leaves(data, compiled)
    return cite.cite_text_layer(found, layer, {lf.path: [1] for lf in found})


def center(box: list[float]) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


@pytest.fixture(
    params=[(0, False), (90, False), (270, False), (90, True)],
    ids=["upright", "rotate90", "rotate270", "sideways-rotate90"],
)
def pdf(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    rotate, sideways = request.param
    return table_pdf(tmp_path / "table.pdf", rotate=rotate, sideways=sideways)


def test_faithful_rows_are_grounded_in_their_own_cells(pdf: Path) -> None:
    cites = cited(pdf, faithful())
    assert all(c["grounded"] and c["reason"] is None and c["method"] == "text" for c in cites.values()), {
        p: c["reason"] for p, c in cites.items() if not c["grounded"]
    }
    # each row's values share one line and each column's values share one column (in the reading frame:
    # on the rotated pages both are measured along the displayed axes the text runs on)
    with pymupdf.open(pdf) as doc:
        angle = cite.TextLayer(read_layer(doc, [1]))._angle[1]
    frame = {p: cite._turn(tuple(c["bbox"]), angle) for p, c in cites.items()}
    for i in range(3):
        ys = [
            center(list(frame[f"$.lines[{i}].{f}"]))[1]
            for f in ("quantity", "pack", "unit_price", "tax_rate", "amount")
        ]
        assert max(ys) - min(ys) < 0.01, (i, ys)
    for f in ("quantity", "pack", "tax_rate"):
        xs = [frame[f"$.lines[{i}].{f}"][0] for i in range(3)]
        assert max(xs) - min(xs) < 0.01, (f, xs)


def test_the_same_value_under_two_headers_is_cited_under_each_fields_header(pdf: Path) -> None:
    cites = cited(pdf, faithful())
    # row 0 prints 3 under Qty and 3 under Pack; row 1 prints 20 under Qty and 20 under Tax %
    for row, a, b in ((0, "quantity", "pack"), (1, "quantity", "tax_rate")):
        box_a, box_b = cites[f"$.lines[{row}].{a}"]["bbox"], cites[f"$.lines[{row}].{b}"]["bbox"]
        assert box_a != box_b, (row, a, b)


def test_adjacent_single_digit_cells_never_read_as_one_number(pdf: Path) -> None:
    data = faithful()
    data["lines"][0]["quantity"] = 33  # "3" "3" printed in neighbouring cells
    cites = cited(pdf, data)
    assert cites["$.lines[0].quantity"]["grounded"] is False
    assert cites["$.lines[0].quantity"]["reason"] == "not_found"
    assert cites["$.lines[0].pack"]["grounded"] is True


def test_a_value_moved_to_another_row_is_wrong_row(pdf: Path) -> None:
    data = faithful()
    data["lines"][0]["amount"] = 710.0  # row 1's amount given for row 0
    cites = cited(pdf, data)
    c = cites["$.lines[0].amount"]
    assert c["grounded"] is False and c["reason"] == "wrong_row", c
    assert cites["$.lines[1].amount"]["grounded"] is True  # the row it belongs to is unaffected
    assert all(cites[f"$.lines[0].{f}"]["grounded"] for f in ("description", "quantity", "unit_price"))


def test_a_value_from_another_column_of_its_row_is_wrong_column(pdf: Path) -> None:
    data = faithful()
    data["lines"][2]["quantity"] = 7  # row 2 prints 7 only under Tax %
    cites = cited(pdf, data)
    c = cites["$.lines[2].quantity"]
    assert c["grounded"] is False and c["reason"] == "wrong_column", c


def test_thousands_groups_still_join(tmp_path: Path) -> None:
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 80), "Invoice INV-9", fontsize=10)
    page.insert_text((72, 100), "Total due: EUR 1 250,00", fontsize=10)  # one number printed as three words
    doc.save(tmp_path / "t.pdf")
    compiled = compile_schema({"type": "object", "properties": {"total_due": {"type": "number"}}})
    with pymupdf.open(tmp_path / "t.pdf") as d:
        layer = cite.TextLayer(read_layer(d, [1]))
    for value, grounded in ((1250.0, True), (1.25, False)):
        found = cite.leaves({"total_due": value}, compiled)
        got = cite.cite_text_layer(found, layer, {"$.total_due": [1]})["$.total_due"]
        assert got["grounded"] is grounded, (value, got)


def test_words_carry_their_direction_on_the_displayed_page(tmp_path: Path) -> None:
    with pymupdf.open(table_pdf(tmp_path / "a.pdf", rotate=90)) as doc:
        rotated = read_layer(doc, [1])[1]["words"]
    with pymupdf.open(table_pdf(tmp_path / "b.pdf", sideways=True, rotate=90)) as doc:
        upright = read_layer(doc, [1])[1]["words"]
    assert {w[5] for w in rotated} == {270}  # horizontal text on a /Rotate 90 page runs downwards
    assert {w[5] for w in upright} == {0}


# ------------------------------------------------------------------------------------------ long tables
LONG_SCHEMA = {
    "type": "object",
    "properties": {
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
        }
    },
}


def long_rows(n: int) -> list[dict[str, Any]]:
    """Values repeating as on real invoices: 60 products, quantities 1-5, tax 7 or 20 (bench/cite_tables.py)."""
    products = [f"{a} {b}" for a in ("Pump", "Valve", "Flange", "Gasket", "Hose", "Filter")
                for b in ("DN25", "DN32", "DN40", "DN50", "DN65", "DN80", "steel", "brass", "PVC", "PTFE")]  # fmt: skip
    out = []
    for i in range(n):
        qty, price = 1 + (i * 7) % 5, round(5 + (i * 37) % 60 * 1.25, 2)
        out.append({"description": products[(i * 11) % 60], "quantity": qty, "unit_price": price,
                    "tax_rate": 20 if i % 3 else 7, "amount": round(qty * price, 2)})  # fmt: skip
    return out


@pytest.mark.slow
def test_a_1300_row_table_is_cited_cell_by_cell(tmp_path: Path) -> None:
    """1,300 rows over 29 pages, every cell cited in its own row (the old find()-per-value scan and the
    quadratic line dedup did not finish 1,250 rows in 10 minutes; bench/results/cite-tables.json)."""
    rows = long_rows(1300)
    doc = pymupdf.open()
    xs = [50, 260, 330, 420, 490]
    where: dict[int, tuple[int, float]] = {}  # row → (page, baseline y)
    for start in range(0, len(rows), 45):
        page = doc.new_page(width=595, height=842)
        for x, h in zip(xs, ["Description", "Qty", "Unit price", "Tax %", "Amount"], strict=True):
            page.insert_text((x, 70), h, fontsize=9)
        for r, line in enumerate(rows[start : start + 45]):
            y = 90 + 16 * r
            where[start + r] = (doc.page_count, y)
            cells = [line["description"], str(line["quantity"]), f"{line['unit_price']:,.2f}",
                     str(line["tax_rate"]), f"{line['amount']:,.2f}"]  # fmt: skip
            for x, c in zip(xs, cells, strict=True):
                page.insert_text((x, y), c, fontsize=9)
    doc.save(tmp_path / "long.pdf")
    moved = dict(rows[700], amount=rows[701]["amount"])  # a value taken from the next row
    assert moved["amount"] != rows[700]["amount"]
    data = {"lines": rows[:700] + [moved] + rows[701:]}
    with pymupdf.open(tmp_path / "long.pdf") as d:
        pages = list(range(1, d.page_count + 1))
        layer = cite.TextLayer(read_layer(d, pages))
    found = cite.leaves(data, compile_schema(LONG_SCHEMA))
    cites = cite.cite_text_layer(found, layer, {lf.path: pages for lf in found})
    assert len(cites) == 1300 * 5
    bad = {p: c["reason"] for p, c in cites.items() if not c["grounded"]}
    assert bad == {"$.lines[700].amount": "wrong_row"}
    for i, (page, y) in where.items():  # each cell on its row's line of its row's page
        for f in ("description", "quantity", "unit_price", "tax_rate", "amount"):
            c = cites[f"$.lines[{i}].{f}"]
            if i == 700 and f == "amount":
                continue
            assert c["page"] == page, (i, f)
            assert c["bbox"][1] * 842 < y < c["bbox"][3] * 842 + 3, (i, f, c["bbox"], y)
