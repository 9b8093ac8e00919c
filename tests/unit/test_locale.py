"""engine.extraction.locale: numbers and dates as documents print them (issue 22 item 1)."""

from __future__ import annotations

import datetime as dt

import pytest

from engine.extraction.locale import infer_locale, parse_date, parse_number, printed_forms, same_value


@pytest.mark.parametrize(
    ("text", "value", "currency"),
    [
        ("€ 4.904,94", 4904.94, "EUR"),
        ("5,39", 5.39, None),
        ("98 452", 98452.0, None),
        ("98\u202f452", 98452.0, None),  # narrow no-break space
        ("98\u2009452,10", 98452.1, None),  # thin space
        ("1.234,50", 1234.5, None),
        ("1'234.50", 1234.5, None),
        ("CHF 1’234.50", 1234.5, "CHF"),
        ("(1,234.50)", -1234.5, None),
        ("1.234,50-", -1234.5, None),
        ("USD -12.00", -12.0, "USD"),
        ("−5,00", -5.0, None),
        ("1 234,50 €", 1234.5, "EUR"),
        ("$1,200.00", 1200.0, "USD"),
        ("£0.99", 0.99, "GBP"),
        ("1.234.567", 1234567.0, None),
        ("0,125", 0.125, None),
        ("12,-", 12.0, None),
        ("4904.94", 4904.94, None),
        (4904.94, 4904.94, None),
    ],
)
def test_numbers_as_printed(text: object, value: float, currency: str | None) -> None:
    p = parse_number(text)
    assert p.value == pytest.approx(value) and not p.ambiguous
    assert p.currency == currency


def test_percent_keeps_the_printed_number() -> None:
    p = parse_number("19 %")
    assert p.value == 19.0 and p.percent


@pytest.mark.parametrize("text", ["1.234", "1,234", "18,870", "EUR 1.200"])
def test_a_lone_separator_before_three_digits_is_ambiguous_not_guessed(text: str) -> None:
    p = parse_number(text)
    assert p.value is None and p.ambiguous and len(p.readings) == 2 and p.problem


def test_the_document_locale_settles_ambiguity() -> None:
    assert parse_number("1.234", hint=",").value == 1234.0
    assert parse_number("1.234", hint=".").value == 1.234
    assert parse_number("1,234", hint="de").value == 1.234
    assert parse_number("1,234", hint="en-US").value == 1234.0
    # text that shows its own convention wins over the hint
    assert parse_number("1,234.50", hint=",").value == 1234.5


@pytest.mark.parametrize("text", ["abc", "1,2,3", "3 3", "12 34", "1.234,5.6", "", "9" * 70, "1,23,4", True])
def test_not_numbers(text: object) -> None:
    p = parse_number(text)
    assert p.value is None and not p.ambiguous and p.problem


def test_adjacent_cells_never_read_as_one_number() -> None:
    # "3" "3" in two neighbouring cells: a thousands group must be exactly 3 digits
    assert parse_number("3 3").value is None
    assert parse_number("12 5").value is None


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("7. Mai 2014", "2014-05-07"),
        ("Montag, 7. Mai 2014", "2014-05-07"),
        ("29 maart 2014", "2014-03-29"),
        ("3 de março de 2020", "2020-03-03"),
        ("1er janvier 2020", "2020-01-01"),
        ("15 agosto 2021", "2021-08-15"),
        ("2 dic 2019", "2019-12-02"),
        ("12 dicembre 2019", "2019-12-12"),
        ("5 décembre 2019", "2019-12-05"),
        ("3. März 2020", "2020-03-03"),
        ("March 3, 2020", "2020-03-03"),
        ("3rd March 2020", "2020-03-03"),
        ("07.05.2014", "2014-05-07"),
        ("13/04/2020", "2020-04-13"),
        ("2014-05-07", "2014-05-07"),
        ("2014-05-07T10:00:00Z", "2014-05-07"),
        ("20140507", "2014-05-07"),
    ],
)
def test_dates_as_printed(text: str, iso: str) -> None:
    assert parse_date(text).value == dt.date.fromisoformat(iso)


def test_ambiguous_numeric_date() -> None:
    p = parse_date("03/04/2020")
    assert p.value is None and p.ambiguous
    assert parse_date("03/04/2020", hint="dmy").value == dt.date(2020, 4, 3)
    assert parse_date("03/04/2020", hint="mdy").value == dt.date(2020, 3, 4)


@pytest.mark.parametrize("text", ["mars 2020", "29 maart", "31 febbraio 2020", "hello 2020", "2014-02-30"])
def test_not_full_dates(text: str) -> None:
    assert parse_date(text).value is None


def test_document_locale_from_its_numbers() -> None:
    ev = infer_locale(["Total 4.904,94", "MwSt 5,39", "1.234", "Datum 13.05.2014", "Version 1.2.3"])
    assert ev.decimal == "," and ev.date_order == "dmy"
    ev = infer_locale(["Total 4,904.94", "Tax 0.39", "Date 05/13/2014"])
    assert ev.decimal == "." and ev.date_order == "mdy"
    assert infer_locale(["1.234", "1,234", "Invoice 4711"]).decimal is None  # no evidence: no guess
    assert infer_locale(["5,39", "2.50"]).decimal is None  # conflicting evidence: no guess


def test_printed_forms_and_same_value() -> None:
    forms = printed_forms(4904.94)
    assert {"4904.94", "4,904.94", "4.904,94", "4 904,94", "4'904.94"} <= forms
    assert "(1,234.50)" in printed_forms(-1234.5)
    assert {"07.05.2014", "7. Mai 2014", "29 maart 2014"} & printed_forms("2014-05-07", "date") == {
        "07.05.2014",
        "7. Mai 2014",
    }
    assert same_value("€ 4.904,94", 4904.94, "number")
    assert same_value("1.234", 1234, "integer")  # either reading of an ambiguous print can be the value
    assert not same_value("1.234", 1234, "integer", hint=".")
    assert same_value("29 maart 2014", "2014-03-29", "date")
    assert not same_value("29 maart 2014", "2014-03-28", "date")
