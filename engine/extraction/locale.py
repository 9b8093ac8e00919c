"""Numbers and dates as documents print them, parsed deterministically (issue 22 item 1).

A model reading a European invoice answers `€ 4.904,94`, `5,39`, `98 452` or `7. Mai 2014`; this module turns
such text into the schema's value without guessing:

    parse_number("€ 4.904,94")        → 4904.94, decimal ",", currency EUR
    parse_number("1'234.50")          → 1234.5 (Swiss apostrophe thousands)
    parse_number("(1,234.50)")        → -1234.5 (accounting negative); "1.234,50-" → -1234.5 (trailing minus)
    parse_number("1.234")             → ambiguous (1.234 or 1234): readings (1.234, 1234.0), value None
    parse_number("1.234", hint=",")   → 1234.0 (the document writes decimals with a comma)
    parse_date("7. Mai 2014")         → 2014-05-07; "29 maart 2014", "3 de março de 2020", "March 3, 2020"
    parse_date("03/04/2020")          → ambiguous (3 April or 4 March) unless a hint ("dmy" / "mdy") says

An ambiguous value is never resolved silently: `infer_locale` reads the document's other numbers and dates
(the text layer's words, the answer's other values) for evidence, and what stays ambiguous is reported.

`printed_forms(value, kind)` lists the ways a value may be printed (for grounding against the page) and
`same_value(text, value, kind)` checks one printed text against a value.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

# ------------------------------------------------------------------------------------------------ numbers
CURRENCY_SYMBOLS = {
    "€": "EUR", "$": "USD", "£": "GBP", "¥": "JPY", "₹": "INR", "₽": "RUB", "₩": "KRW", "₺": "TRY", "₪": "ILS",
    "us$": "USD", "r$": "BRL", "a$": "AUD", "c$": "CAD", "fr.": "CHF", "sfr.": "CHF", "kr.": "DKK", "kr": "SEK",
    "zł": "PLN", "kč": "CZK", "ft": "HUF",
}  # fmt: skip
CURRENCY_CODES = frozenset(
    [
        "EUR",
        "USD",
        "GBP",
        "CHF",
        "JPY",
        "CNY",
        "INR",
        "SEK",
        "NOK",
        "DKK",
        "PLN",
        "CZK",
        "HUF",
        "RON",
        "BGN",
        "CAD",
        "AUD",
        "NZD",
        "BRL",
        "MXN",
        "ZAR",
        "TRY",
        "RUB",
        "KRW",
        "SGD",
        "HKD",
        "ILS",
        "AED",
        "SAR",
        "ISK",
    ]
)
_SPACES = "\u00a0\u2009\u202f\u2007\u2008\u200a "  # nbsp, thin, narrow nbsp, figure, punctuation, hair, space
_APOSTROPHES = "'’ʼ`´"
_MINUS = "-−–‒"


@dataclass(frozen=True)
class NumberParse:
    """What a printed number says. `value` is None when the text is not a number or is ambiguous."""

    text: str
    value: float | None
    readings: tuple[float, ...] = ()  # every value the text can mean (2 when ambiguous)
    decimal: str | None = None  # "," or "." when the text shows which separator is the decimal one
    grouping: str | None = None  # the thousands separator printed ("," "." " " "'")
    currency: str | None = None  # ISO code when a symbol or code was printed
    percent: bool = False
    negative: bool = False
    ambiguous: bool = False
    problem: str | None = None  # why value is None, in words a model (or a user) can act on

    @property
    def ok(self) -> bool:
        return self.value is not None


def _strip_currency(s: str) -> tuple[str, str | None]:
    """Remove one currency symbol or code at either end (or just inside a sign)."""
    low = s.lower()
    for sym in sorted(CURRENCY_SYMBOLS, key=len, reverse=True):
        # a symbol ending in a letter (kr, Fr.) only when no letter follows or precedes it: "krona" is not "kr"
        if low.startswith(sym) and not (sym[-1].isalpha() and low[len(sym) : len(sym) + 1].isalpha()):
            return s[len(sym) :].strip(_SPACES), CURRENCY_SYMBOLS[sym]
        if low.endswith(sym) and not (sym[0].isalpha() and low[-len(sym) - 1 : -len(sym)].isalpha()):
            return s[: -len(sym)].strip(_SPACES), CURRENCY_SYMBOLS[sym]
    m = re.match(r"^([A-Za-z]{3})(?![A-Za-z])", s)
    if m and m.group(1).upper() in CURRENCY_CODES:
        return s[3:].strip(_SPACES), m.group(1).upper()
    m = re.search(r"(?<![A-Za-z])([A-Za-z]{3})$", s)
    if m and m.group(1).upper() in CURRENCY_CODES:
        return s[:-3].strip(_SPACES), m.group(1).upper()
    return s, None


def _decimal_hint(hint: str | None) -> str | None:
    if hint in (",", "."):
        return hint
    if hint is None:
        return None
    lang = hint.replace("_", "-").split("-")[0].lower()
    if hint.replace("_", "-").lower() in ("de-ch", "fr-ch", "it-ch", "en-in"):
        return "."
    return {"en": ".", "ja": ".", "zh": ".", "ko": ".", "he": "."}.get(lang, "," if lang else None)


def _groups_ok(int_part: str, sep: str) -> bool:
    """1,234,567: a first group of 1-3 digits, then groups of exactly 3 (Indian 12,34,567 also accepted)."""
    parts = int_part.split(sep)
    if len(parts) == 1:
        return True
    if not (1 <= len(parts[0]) <= 3) or not all(p.isdigit() for p in parts):
        return False
    if all(len(p) == 3 for p in parts[1:]):
        return True
    # Indian lakh/crore grouping: 2-digit groups, the last one of 3
    return sep == "," and len(parts[-1]) == 3 and all(len(p) == 2 for p in parts[1:-1])


def parse_number(text: object, hint: str | None = None) -> NumberParse:
    """Parse a printed number. hint: the document's decimal separator ("," or ".") or a locale ("de", "en-US").

    Text the number carries itself (both separators, a decimal group of other than 3 digits, apostrophes or
    spaces as thousands) wins over the hint; the hint only settles a lone separator before exactly 3 digits.
    """
    raw = str(text)
    if isinstance(text, bool):
        return NumberParse(raw, None, problem="a boolean, not a number")
    if isinstance(text, int | float):
        if isinstance(text, float) and not math.isfinite(text):
            return NumberParse(raw, None, problem="not a finite number")
        return NumberParse(raw, float(text), (float(text),))
    s = unicodedata.normalize("NFC", raw).strip(_SPACES + "\t\n")
    if not s or len(s) > 64:
        return NumberParse(raw, None, problem="empty" if not s else "too long to be one number")
    negative = False
    if s.startswith("(") and s.endswith(")"):
        negative, s = True, s[1:-1].strip(_SPACES)
    if s and s[0] in _MINUS + "+":
        negative, s = s[0] != "+", s[1:].strip(_SPACES)
    s, currency = _strip_currency(s)
    if s and s[0] in _MINUS + "+":  # € -12,00
        negative, s = negative or s[0] != "+", s[1:].strip(_SPACES)
    s = re.sub(r"[.,][-–]{1,2}$", "", s)  # 12,-  /  12.--: a whole amount, not a negative one
    if s and s[-1] in _MINUS:  # 1.234,50- (trailing minus, SAP and many ERP print-outs)
        negative, s = True, s[:-1].strip(_SPACES)
    percent = False
    if s.endswith("%"):
        percent, s = True, s[:-1].strip(_SPACES)
    if currency is None:
        s, currency = _strip_currency(s)
    if not s or not re.fullmatch(rf"\d[\d.,{_SPACES}{_APOSTROPHES}]*", s) or not s[-1].isdigit():
        return NumberParse(raw, None, currency=currency, problem="not a number")

    # thousands printed as spaces or apostrophes: only digit groups of 3 may follow them
    grouping = None
    for seps in (_SPACES, _APOSTROPHES):
        if any(c in s for c in seps):
            head = re.split(r"[.,](?=\d*$)", s)[0] if re.search(r"[.,]\d+$", s) else s
            g = re.sub(f"[{seps}]", "\x00", head)
            if not _groups_ok(re.sub(r"[.,]", "", g), "\x00") or re.search(r"[.,]", g):
                return NumberParse(raw, None, currency=currency, problem="digit groups are not groups of 3")
            grouping = "'" if seps == _APOSTROPHES else " "
            s = re.sub(f"[{seps}]", "", s)

    def result(value: float, decimal: str | None, grp: str | None, readings: tuple[float, ...] | None = None) -> NumberParse:  # fmt: skip
        v = -value if negative else value
        return NumberParse(raw, v, readings or (v,), decimal, grp, currency, percent, negative)

    dots, commas = s.count("."), s.count(",")
    if dots and commas:
        dec = "." if s.rfind(".") > s.rfind(",") else ","
        grp = "," if dec == "." else "."
        int_part, frac = s.rsplit(dec, 1)
        if grp in frac or not _groups_ok(int_part, grp) or s.count(dec) > 1:
            return NumberParse(raw, None, currency=currency, problem="mixes ',' and '.' in no locale's way")
        return result(float(int_part.replace(grp, "") + "." + frac), dec, grp)
    if not dots and not commas:
        return result(float(s), None, grouping)
    sep = "." if dots else ","
    other = "," if sep == "." else "."
    parts = s.split(sep)
    if len(parts) > 2:  # 1.234.567: can only be grouping
        if not _groups_ok(s, sep):
            return NumberParse(raw, None, currency=currency, problem="digit groups are not groups of 3")
        return result(float(s.replace(sep, "")), None, sep)
    int_part, frac = parts
    as_decimal = float(f"{int_part}.{frac}")
    if grouping is not None:  # 1 234,50 / 1'234.50: a space or apostrophe groups, so the separator is decimal
        return result(as_decimal, sep, grouping)
    if len(frac) != 3 or int_part in ("0", "") or int_part.startswith("0") or len(int_part) > 3:
        return result(as_decimal, sep, None)  # 5,39 / 0.125 / 12345.678: only a decimal reading
    as_group = float(int_part + frac)
    want = _decimal_hint(hint)
    if want == sep:
        return result(as_decimal, sep, None)
    if want == other:
        return result(as_group, other, sep)
    v1, v2 = (-as_decimal, -as_group) if negative else (as_decimal, as_group)
    return NumberParse(raw, None, (v1, v2), None, None, currency, percent, negative, ambiguous=True,
                       problem=f"'{sep}' before 3 digits may be a decimal or a thousands separator")  # fmt: skip


# ------------------------------------------------------------------------------------------------- dates
_MONTH_NAMES: dict[int, tuple[str, ...]] = {
    1: ("january", "jan", "januar", "jänner", "janner", "janvier", "janv", "januari", "enero", "ene", "gennaio", "gen", "janeiro"),
    2: ("february", "feb", "febr", "februar", "février", "fevrier", "févr", "fevr", "fév", "fev", "februari", "febrero", "febbraio", "fevereiro"),
    3: ("march", "mar", "märz", "maerz", "marz", "mrz", "mars", "maart", "mrt", "marzo", "março", "marco"),
    4: ("april", "apr", "avril", "avr", "abril", "abr", "aprile"),
    5: ("may", "mai", "mei", "mayo", "may", "maggio", "mag", "maio"),
    6: ("june", "jun", "juni", "juin", "junio", "giugno", "giu", "junho"),
    7: ("july", "jul", "juli", "juillet", "juil", "julio", "luglio", "lug", "julho"),
    8: ("august", "aug", "août", "aout", "augustus", "agosto", "ago"),
    9: ("september", "sep", "sept", "septembre", "septiembre", "setiembre", "settembre", "set", "setembro"),
    10: ("october", "oct", "oktober", "okt", "octobre", "octubre", "ottobre", "ott", "outubro", "out"),
    11: ("november", "nov", "novembre", "noviembre", "novembro"),
    12: ("december", "dec", "dezember", "dez", "décembre", "decembre", "déc", "diciembre", "dic", "dicembre", "dezembro"),
}  # fmt: skip


def _fold(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", word.casefold()) if not unicodedata.combining(c))


MONTHS = {_fold(n): m for m, names in _MONTH_NAMES.items() for n in names}
# words a date may carry besides day, month and year: weekdays and fillers in the same languages
_FILLERS = {
    _fold(w)
    for w in [
        "de",
        "del",
        "of",
        "the",
        "le",
        "den",
        "der",
        "am",
        "on",
        "el",
        "il",
        "em",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
        "sat",
        "sun",
        "montag",
        "dienstag",
        "mittwoch",
        "donnerstag",
        "freitag",
        "samstag",
        "sonntag",
        "lundi",
        "mardi",
        "mercredi",
        "jeudi",
        "vendredi",
        "samedi",
        "dimanche",
        "maandag",
        "dinsdag",
        "woensdag",
        "donderdag",
        "vrijdag",
        "zaterdag",
        "zondag",
        "lunes",
        "martes",
        "miércoles",
        "jueves",
        "viernes",
        "sábado",
        "domingo",
        "lunedì",
        "martedì",
        "mercoledì",
        "giovedì",
        "venerdì",
        "sabato",
        "domenica",
        "segunda",
        "terça",
        "quarta",
        "quinta",
        "sexta",
        "sábado",
        "domingo",
        "feira",
    ]
}
_ORDINAL = re.compile(r"^(\d{1,2})(?:st|nd|rd|th|er|e|re|ème|eme|º|ª|o|a|\.)?$", re.I)


@dataclass(frozen=True)
class DateParse:
    text: str
    value: dt.date | None
    readings: tuple[dt.date, ...] = ()
    order: str | None = None  # "dmy" | "mdy" | "ymd" when the text shows it
    month_name: bool = False
    ambiguous: bool = False
    problem: str | None = None
    time: str | None = None  # the time part of an ISO timestamp, kept as printed

    @property
    def ok(self) -> bool:
        return self.value is not None


def _year(y: str) -> int:
    n = int(y)
    return n if len(y) == 4 else (2000 + n if n < 70 else 1900 + n)


def _mk(y: int, m: int, d: int) -> dt.date | None:
    try:
        return dt.date(y, m, d)
    except ValueError:
        return None


def parse_date(text: object, hint: str | None = None) -> DateParse:
    """Parse a printed date. hint: "dmy" or "mdy" (the document's order for all-numeric dates) or a locale."""
    raw = str(text)
    s = unicodedata.normalize("NFC", raw).strip(_SPACES + "\t\n,;")
    if not s or len(s) > 60:
        return DateParse(raw, None, problem="empty" if not s else "too long to be one date")
    if m := re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:([T ])(\d{1,2}:\d{2}.*))?", s):
        d = _mk(int(m[1]), int(m[2]), int(m[3]))
        if d is None:
            return DateParse(raw, None, problem="no such day")
        return DateParse(raw, d, (d,), "ymd", time=m[5])
    if m := re.fullmatch(r"(\d{4})(\d{2})(\d{2})", s):  # 20140507
        d = _mk(int(m[1]), int(m[2]), int(m[3]))
        return DateParse(raw, d, (d,), "ymd") if d else DateParse(raw, None, problem="no such day")
    if m := re.fullmatch(r"(\d{4})[./](\d{1,2})[./](\d{1,2})", s):  # 2014/05/07, 2014.05.07
        d = _mk(int(m[1]), int(m[2]), int(m[3]))
        return DateParse(raw, d, (d,), "ymd") if d else DateParse(raw, None, problem="no such day")
    if m := re.fullmatch(r"(\d{1,2})\s?([./-])\s?(\d{1,2})\s?\2\s?(\d{4}|\d{2})", s):
        a, b, y = int(m[1]), int(m[3]), _year(m[4])
        dmy, mdy = _mk(y, b, a), _mk(y, a, b)
        want = (
            hint if hint in ("dmy", "mdy") else ("mdy" if hint and hint.lower() in ("en-us", "us") else None)
        )
        if m[2] == "." and want is None:
            want = "dmy"  # dotted dates are day-first wherever they are printed
        if dmy and mdy and dmy != mdy:
            if want:
                d = dmy if want == "dmy" else mdy
                return DateParse(raw, d, (d,), want)
            return DateParse(raw, None, (dmy, mdy), ambiguous=True,
                             problem="day and month could be either way round (day-first or month-first)")  # fmt: skip
        d = dmy or mdy
        if d is None:
            return DateParse(raw, None, problem="no such day")
        return DateParse(raw, d, (d,), "dmy" if d == dmy and a != b else ("mdy" if a != b else None))
    # month names: tokens of digits and letters; fillers and weekdays dropped
    tokens = [t for t in re.split(r"[\s,/\-]+", s) if t]
    day = month = year = None
    order = []
    for t in tokens:
        word = t.strip(".")
        fw = _fold(word)
        if not word:
            continue
        if fw in MONTHS and month is None:
            month = MONTHS[fw]
            order.append("m")
        elif re.fullmatch(r"\d{4}", word) and year is None:
            year = int(word)
            order.append("y")
        elif (o := _ORDINAL.match(t)) and day is None and 1 <= int(o[1]) <= 31:
            day = int(o[1])
            order.append("d")
        elif re.fullmatch(r"'?\d{2}", word) and year is None and day is not None and month is not None:
            year = _year(word.lstrip("'"))
            order.append("y")
        elif fw in _FILLERS:
            continue
        else:
            return DateParse(raw, None, problem="not a date")
    if month is None:
        return DateParse(raw, None, problem="not a date")
    if day is None or year is None:
        return DateParse(raw, None, month_name=True, problem="day, month and year are not all printed")
    d = _mk(year, month, day)
    if d is None:
        return DateParse(raw, None, month_name=True, problem="no such day")
    return DateParse(raw, d, (d,), "".join(order), month_name=True)


# -------------------------------------------------------------------------------------- document locale
@dataclass
class LocaleEvidence:
    """What a document's unambiguous numbers and dates say about its conventions."""

    decimal_comma: int = 0
    decimal_point: int = 0
    day_first: int = 0
    month_first: int = 0
    samples: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def decimal(self) -> str | None:
        """The decimal separator when the evidence is one-sided; None when there is none or it conflicts."""
        if self.decimal_comma and not self.decimal_point:
            return ","
        if self.decimal_point and not self.decimal_comma:
            return "."
        # both seen (a reference number or an odd cell): a clear majority still decides
        if self.decimal_comma >= 4 * self.decimal_point > 0:
            return ","
        if self.decimal_point >= 4 * self.decimal_comma > 0:
            return "."
        return None

    @property
    def date_order(self) -> str | None:
        if self.day_first and not self.month_first:
            return "dmy"
        if self.month_first and not self.day_first:
            return "mdy"
        return None

    def as_dict(self) -> dict[str, object]:
        return {"decimal": self.decimal, "decimal_comma": self.decimal_comma, "decimal_point": self.decimal_point,
                "date_order": self.date_order, "day_first": self.day_first, "month_first": self.month_first}  # fmt: skip


_NUMBERISH = re.compile(r"\d[\d.,'\u00a0\u202f ]*\d")
_DATEISH = re.compile(r"\b(\d{1,2})([/.-])(\d{1,2})\2(\d{4})\b")


def infer_locale(texts: Iterable[str], limit: int = 20000) -> LocaleEvidence:
    """Count the decimal separators (and date orders) that numbers printed in the texts show unambiguously."""
    ev = LocaleEvidence()
    for i, text in enumerate(texts):
        if i >= limit:
            break
        t = str(text)
        for m in _DATEISH.finditer(t):
            a, b = int(m[1]), int(m[3])
            if a > 12 >= b:
                ev.day_first += 1
            elif b > 12 >= a:
                ev.month_first += 1
        t = _DATEISH.sub(" ", t)
        for m in _NUMBERISH.finditer(t):
            tok = m.group()
            if re.search(r"\d\.\d{1,2}\.\d", tok):  # 1.2.3 (a section or a version), not an amount
                continue
            p = parse_number(tok)
            ev.samples += 1
            if p.decimal == ",":
                ev.decimal_comma += 1
            elif p.decimal == ".":
                ev.decimal_point += 1
    return ev


# ---------------------------------------------------------------------------------------- printed forms
def _group(int_digits: str, sep: str) -> str:
    out: list[str] = []
    while len(int_digits) > 3:
        out.insert(0, int_digits[-3:])
        int_digits = int_digits[:-3]
    out.insert(0, int_digits)
    return sep.join(out)


def printed_forms(value: object, kind: str = "number") -> set[str]:
    """Ways a document may print the value: 4904.94 → 4904.94, 4,904.94, 4.904,94, 4 904,94, 4'904.94, …;
    a date → ISO, dd.mm.yyyy, dd/mm/yyyy, mm/dd/yyyy and day-month-year with month names in every language."""
    forms: set[str] = set()
    if kind in ("number", "integer"):
        p = parse_number(value)
        if p.value is None:
            return forms
        v = abs(p.value)
        text = f"{v:.10f}".rstrip("0").rstrip(".")
        int_digits, _, frac = text.partition(".")
        fracs = {frac} if frac else {"", "00"}
        if frac and len(frac) == 1:
            fracs.add(frac + "0")
        for f in fracs:
            for dec, grps in (
                (".", ("", ",", " ", "'", "\u202f", "\u00a0")),
                (",", ("", ".", " ", "\u202f", "\u00a0")),
            ):
                for g in grps:
                    body = _group(int_digits, g) if g else int_digits
                    forms.add(f"{body}{dec}{f}" if f else body)
        if p.value < 0:
            forms |= {f"-{f}" for f in forms} | {f"({f})" for f in forms} | {f"{f}-" for f in forms}
        return forms
    if kind in ("date", "datetime"):
        d = parse_date(str(value)[:10]).value
        if d is None:
            return forms
        forms |= {d.isoformat(), f"{d.day:02d}.{d.month:02d}.{d.year}", f"{d.day}.{d.month}.{d.year}",
                  f"{d.day:02d}/{d.month:02d}/{d.year}", f"{d.month:02d}/{d.day:02d}/{d.year}",
                  f"{d.day:02d}-{d.month:02d}-{d.year}", f"{d.year}/{d.month:02d}/{d.day:02d}"}  # fmt: skip
        for name in {n for n0 in _MONTH_NAMES[d.month] for n in (n0, n0.capitalize())}:
            forms |= {f"{d.day} {name} {d.year}", f"{d.day}. {name} {d.year}", f"{d.day} de {name} de {d.year}",
                      f"{name} {d.day}, {d.year}", f"{d.day:02d} {name} {d.year}"}  # fmt: skip
        return forms
    return {str(value)}


def same_value(text: str, value: object, kind: str, hint: str | None = None) -> bool:
    """Does the printed text say this value? An ambiguous number matches when either reading is the value."""
    if kind in ("number", "integer"):
        target = parse_number(value).value
        if target is None:
            return False
        p = parse_number(text, hint)
        readings = p.readings if p.ambiguous else ((p.value,) if p.value is not None else ())
        return any(math.isclose(r, target, rel_tol=1e-9, abs_tol=1e-6) for r in readings)
    if kind in ("date", "datetime"):
        target_d = parse_date(str(value)[:10]).value
        pd = parse_date(text, hint)
        return target_d is not None and target_d in (pd.readings if pd.ambiguous else (pd.value,))
    return False
