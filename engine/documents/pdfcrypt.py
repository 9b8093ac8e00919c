"""Opening a PDF as every viewer does: the pages of a file whose attachments alone are encrypted.

No engine imports: the text-layer child (engine.extraction.textlayer, run as a plain script) loads this file
by its path.
"""

from __future__ import annotations

import logging
import re

import pymupdf

log = logging.getLogger(__name__)

# A trailer's (or cross-reference stream's) /Encrypt entry: an indirect reference or a direct dictionary.
ENCRYPT_REF = re.compile(rb"/Encrypt\s*(?:\d+\s+\d+\s+R|<<)")


def open_pdf(data: bytes, name: str = "") -> pymupdf.Document:
    """MuPDF's document for ``data``, authenticated with the empty password where that opens it.

    A PDF whose crypt filters leave streams and strings in the clear (``/StmF`` and ``/StrF`` Identity) and
    encrypt only its embedded files (``/EFF``, ISO 32000 7.6.5) asks for a password to open the attachments,
    not the pages: every viewer shows its pages without one. MuPDF asks for it up front, so such a file is
    opened again with its trailer's ``/Encrypt`` entry blanked (same length, offsets unchanged): the pages
    are the bytes they always were, and the attachments stay unread ciphertext.
    """
    doc = pymupdf.open(stream=data, filetype="pdf")
    if not doc.needs_pass or doc.authenticate(""):
        return doc
    plain = _pages_in_the_clear(doc, data)
    if plain is None:
        return doc
    clear = pymupdf.open(stream=plain, filetype="pdf")
    if clear.needs_pass or clear.page_count != doc.page_count:
        clear.close()
        return doc
    doc.close()
    log.info("%s: only its attachments are encrypted; its pages are rendered without a password", name)
    return clear


def _pages_in_the_clear(doc: pymupdf.Document, data: bytes) -> bytes | None:
    """``data`` with its /Encrypt trailer entry blanked when only embedded files are encrypted, else None."""

    def key(k: str) -> tuple[str, str]:
        kind, value = doc.xref_get_key(-1, f"Encrypt/{k}")
        return str(kind), str(value)

    kind, ref = doc.xref_get_key(-1, "Encrypt")
    version = key("V")
    if version[0] != "int" or int(version[1]) < 4:
        return None  # before crypt filters (V < 4) every stream and string is encrypted
    for selector in ("StmF", "StrF"):  # both default to Identity (table 20)
        sel_kind, sel = key(selector)
        if sel_kind != "null" and sel != "/Identity":
            return None
    spans: list[tuple[int, int] | None]
    if kind == "xref":
        num, gen = ref.split()[:2]
        pattern = re.compile(rb"/Encrypt\s*" + num.encode() + rb"\s+" + gen.encode() + rb"\s+R\b")
        spans = [m.span() for m in pattern.finditer(data)]
    elif kind == "dict":
        spans = [_dict_span(data, m.start(), m.end()) for m in re.finditer(rb"/Encrypt\s*<<", data)]
    else:
        return None
    if not spans:
        return None
    out = bytearray(data)
    for span in spans:
        if span is None:
            return None
        out[span[0] : span[1]] = b" " * (span[1] - span[0])
    return bytes(out)


def _dict_span(data: bytes, start: int, opened: int) -> tuple[int, int] | None:
    """(start, end) of ``/Encrypt << ... >>`` whose ``<<`` ends at ``opened``; None when it never closes."""
    depth, i = 1, opened
    while depth and i < min(len(data), opened + 65536):
        two = data[i : i + 2]
        if two == b"<<":
            depth, i = depth + 1, i + 2
        elif two == b">>":
            depth, i = depth - 1, i + 2
        else:
            i += 1
    return (start, i) if depth == 0 else None
