"""Issue 23 items 18-20 through the real converter: what users can open converts, what LibreOffice cannot read
is a typed error (never a silent white page), and each failure has the code that says what to do."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from engine.config import Settings
from engine.documents import open_document
from engine.errors import DocVisionError

pytestmark = [pytest.mark.integration, pytest.mark.slow]

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def _zip(files: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return buf.getvalue()


def _docx(body: str, parts: dict[str, str | bytes], rels: str = "", main: str = "word/document.xml") -> bytes:
    folder = main.rsplit("/", 1)[0]
    return _zip(
        {
            "[Content_Types].xml": '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/'
            '2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
            'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Default Extension="htm" '
            f'ContentType="application/xhtml+xml"/><Override PartName="/{main}" ContentType="application/vnd.'
            'openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>',
            "_rels/.rels": '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/'
            f'2006/relationships"><Relationship Id="rId1" Type="{R}/officeDocument" Target="{main}"/></Relationships>',
            main: f'<?xml version="1.0"?><w:document xmlns:w="{W}" xmlns:r="{R}"><w:body>{body}</w:body></w:document>',
            f"{folder}/_rels/{main.rsplit('/', 1)[1]}.rels": '<?xml version="1.0"?><Relationships xmlns="http://'
            f'schemas.openxmlformats.org/package/2006/relationships">{rels}</Relationships>',
            **parts,
        }
    )


def _outcome(data: bytes, name: str, tmp_path: Path) -> str | int:
    try:
        with open_document(data, name=name, settings=Settings(dpi=36, work_dir=tmp_path)) as doc:
            return len(list(doc.pages()))
    except DocVisionError as exc:
        return exc.code


def test_altchunk_body_is_conversion_empty_not_a_white_page(tmp_path: Path) -> None:
    data = _docx(
        '<w:altChunk r:id="rIdA"/><w:sectPr/>',
        {"word/afchunk.htm": "<html><body><p>the whole body lives in an HTML chunk</p></body></html>"},
        f'<Relationship Id="rIdA" Type="{R}/aFChunk" Target="afchunk.htm"/>',
    )
    assert _outcome(data, "altchunk.docx", tmp_path) == "conversion_empty"


def test_a_docx_with_text_still_converts(tmp_path: Path) -> None:
    data = _docx("<w:p><w:r><w:t>Invoice 42</w:t></w:r></w:p><w:sectPr/>", {})
    assert _outcome(data, "plain.docx", tmp_path) == 1


def test_docx_whose_parts_are_not_under_word(tmp_path: Path) -> None:
    data = _docx("<w:p><w:r><w:t>Elsewhere</w:t></w:r></w:p><w:sectPr/>", {}, main="content/main.xml")
    assert _outcome(data, "elsewhere.docx", tmp_path) == 1


def test_html_fragment_and_utf16_head_convert(tmp_path: Path) -> None:
    assert _outcome(b"<div><p>only a fragment of a page</p></div>", "frag.html", tmp_path) == 1
    utf16 = "<head><title>t</title></head><body><p>UTF-16 text</p></body>".encode("utf-16-le")
    assert _outcome(utf16, "u16.html", tmp_path) == 1
    script = b"<script>" + b"var a = 1;\n" * 400 + b"</script><p>after a long script</p>"
    assert _outcome(script, "script.html", tmp_path) == 1


def test_flat_odt_converts(tmp_path: Path) -> None:
    fodt = (
        b'<?xml version="1.0" encoding="UTF-8"?><office:document xmlns:office="urn:oasis:names:tc:opendocument:'
        b'xmlns:office:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2" '
        b'office:mimetype="application/vnd.oasis.opendocument.text"><office:body><office:text><text:p>Flat ODF'
        b"</text:p></office:text></office:body></office:document>"
    )
    assert _outcome(fodt, "flat.fodt", tmp_path) == 1


def excel4_worksheet(text: bytes = b"Excel 4 cell") -> bytes:
    """A bare BIFF4 worksheet stream (what Excel 4.0 saved): BOF, one LABEL and one NUMBER cell, EOF."""
    import struct

    def rec(kind: int, body: bytes) -> bytes:
        return struct.pack("<HH", kind, len(body)) + body

    return (
        rec(0x0409, struct.pack("<HHH", 0, 0x0010, 0))
        + rec(0x0000, struct.pack("<HHHH", 0, 2, 0, 2))  # DIMENSIONS
        + rec(0x0204, struct.pack("<HHHH", 0, 0, 0, len(text)) + text)  # LABEL
        + rec(0x0203, struct.pack("<HHHd", 1, 0, 0, 42.5))  # NUMBER
        + rec(0x000A, b"")
    )


def test_excel4_worksheet_converts(tmp_path: Path) -> None:
    assert _outcome(excel4_worksheet(), "old.xls", tmp_path) == 1


def _spreadsheet_bomb() -> bytes:
    """A 700-byte flat ODS whose one row of 64 text cells repeats 1,048,000 times: 67 million cells to load."""
    ns = (
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"'
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document {ns} office:version="1.2" '
        'office:mimetype="application/vnd.oasis.opendocument.spreadsheet"><office:body><office:spreadsheet>'
        '<table:table table:name="S"><table:table-row table:number-rows-repeated="1048000">'
        '<table:table-cell table:number-columns-repeated="64" office:value-type="string"><text:p>cell text'
        "</text:p></table:table-cell></table:table-row></table:table></office:spreadsheet></office:body>"
        "</office:document>"
    ).encode()


def test_a_spreadsheet_that_exhausts_the_converters_memory_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: conversion_failed, "source file could not be loaded ... may be corrupt or password-protected"."""
    import engine.documents.office as office

    monkeypatch.setattr(office, "PROGRESS_EVERY_S", 1.0)  # LibreOffice's start alone takes longer
    settings = Settings(dpi=36, work_dir=tmp_path, render_memory_mb=800, conversion_timeout_s=240)
    caplog.set_level("INFO", logger="engine.documents.office")
    with pytest.raises(DocVisionError) as info:
        open_document(_spreadsheet_bomb(), name="bomb.fods", settings=settings)
    err = info.value
    assert err.code == "conversion_memory_limit", str(err)
    assert "DOCVISION_RENDER_MEMORY_MB" in str(err) and "800 MB" in str(err)
    assert "corrupt" not in str(err) and "password" not in str(err)
    assert err.details["setting"] == "DOCVISION_RENDER_MEMORY_MB"
    # the conversion said it was alive while it ran (elapsed, memory; never cell text)
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("converting bomb.fods")]
    assert progress and all("cell text" not in line for line in progress)
    # the same kind of file within the limit, and a corrupt one, keep their codes
    small = _spreadsheet_bomb().replace(b"1048000", b"20").replace(b'repeated="64"', b'repeated="4"')
    assert _outcome(small, "small.fods", tmp_path) == 1
    junk = _zip({"mimetype": "application/vnd.oasis.opendocument.spreadsheet", "content.xml": "<x"})
    assert _outcome(junk, "junk.ods", tmp_path) in ("conversion_failed", "corrupt_document")
