"""The real-world corpus (tests/corpus): every file ends as expected.json says; plus repaired-PDF, CJK and XFA cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pymupdf
import pytest

from engine.config import Settings
from engine.documents import open_document
from engine.errors import DocVisionError

pytestmark = pytest.mark.integration
CORPUS = Path(__file__).resolve().parents[1] / "corpus"
EXPECTED: dict[str, dict] = json.loads((CORPUS / "expected.json").read_text())
SETTINGS = Settings(dpi=72, conversion_timeout_s=120)


def outcome(data_or_path: Path | bytes, name: str | None = None) -> tuple[str, int | None]:
    try:
        with open_document(data_or_path, name=name, settings=SETTINGS) as doc:
            frames = list(doc.pages())
            assert [f.page_number for f in frames] == list(range(1, doc.page_count + 1))
            assert all(f.image.mode == "RGB" and f.width > 0 and f.height > 0 for f in frames)
            return "ok", doc.page_count
    except DocVisionError as exc:
        label = name or Path(str(data_or_path)).name
        assert label in str(exc), f"the error does not name the document: {exc}"
        return exc.code, None


def test_corpus_is_complete_and_documented() -> None:
    files = {p.name for p in (CORPUS / "files").iterdir()}
    assert files == set(EXPECTED), "every file needs an expected outcome, and every outcome a file"
    readme = (CORPUS / "README.md").read_text()
    assert all(f"`{name.split('-', 1)[0]}-*`" in readme for name in files), "README names each source"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file(name: str) -> None:
    want = EXPECTED[name]
    code, pages = outcome(CORPUS / "files" / name)
    # A list names every acceptable outcome: a decoder bug that corrupts the heap (JPX in MuPDF) aborts on some
    # runs and not on others; what must hold is a typed result and a surviving parent (this process).
    allowed = want["outcome"] if isinstance(want["outcome"], list) else [want["outcome"]]
    assert code in allowed, f"{name}: {code} (expected {' or '.join(allowed)})"
    if code == "ok" and "pages" in want:
        assert pages == want["pages"]


def test_repaired_pdfs_render_instead_of_being_called_truncated() -> None:
    data = (CORPUS / "files" / "pdfjs-Embedded_font.pdf").read_bytes()
    assert b"%%EOF" in data[-64:]
    junk_after_eof = data + b"\n<html>junk appended by a mail gateway</html>\n" * 20
    end = data.rstrip().rfind(b"%%EOF")
    no_eof_line = data[:end]
    for variant, label in ((junk_after_eof, "junk.pdf"), (no_eof_line, "noeof.pdf")):
        assert outcome(variant, label) == ("ok", 1), label


def _glyphs_differ(chars: str) -> bool:
    """Two different CJK characters render to different pixels (no tofu boxes)."""
    images = []
    for ch in chars:
        html = f'<!DOCTYPE html><html><body><p style="font-size:72pt">{ch}</p></body></html>'.encode("utf-16")
        with open_document(html, name=f"cjk-{ord(ch):x}.html", settings=SETTINGS) as doc:
            images.append(np.asarray(next(doc.pages()).image.convert("L")))
    ink = [(a < 128).sum() for a in images]
    return all(i > 50 for i in ink) and not np.array_equal(images[0], images[1])


def test_cjk_text_renders_with_real_glyphs() -> None:
    assert _glyphs_differ("中語"), "CJK characters render as identical boxes: install fonts-noto-cjk"


def test_xfa_only_form_is_flagged(tmp_path: Path) -> None:
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "Please wait...")
    page.insert_text(
        (72, 100), "If this message is not eventually replaced by the proper contents of the document"
    )
    xfa = doc.get_new_xref()
    doc.update_object(xfa, "<< >>")
    doc.update_stream(xfa, b"<xdp:xdp xmlns:xdp='http://ns.adobe.com/xdp/'><template/></xdp:xdp>")
    form = doc.get_new_xref()
    doc.update_object(form, f"<< /Fields [] /XFA {xfa} 0 R >>")
    doc.xref_set_key(doc.pdf_catalog(), "AcroForm", f"{form} 0 R")
    data = doc.tobytes()
    assert outcome(data, "form.pdf") == ("xfa_form", None)
    # The same page without XFA is an ordinary PDF.
    plain = pymupdf.open()
    plain.new_page().insert_text((72, 72), "Please wait...")
    assert outcome(plain.tobytes(), "plain.pdf") == ("ok", 1)
