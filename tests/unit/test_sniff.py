from pathlib import Path

import pytest

from engine.documents.sniff import DocumentType, sniff

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"%PDF-1.7\n...", DocumentType.PDF),
        (b"junk before header %PDF-1.4", DocumentType.PDF),
        (b"\x89PNG\r\n\x1a\n....", DocumentType.PNG),
        (b"\xff\xd8\xff\xe0....", DocumentType.JPEG),
        (b"II*\x00....", DocumentType.TIFF),
        (b"MM\x00*....", DocumentType.TIFF),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", DocumentType.WEBP),
        (b"BM" + b"\x00" * 20, DocumentType.BMP),
        (b"GIF89a....", DocumentType.GIF),
        (b"{\\rtf1\\ansi hello}", DocumentType.RTF),
        (b"\xef\xbb\xbf  <!DOCTYPE html><html></html>", DocumentType.HTML),
        (b"<div><body>hi</body></div>", DocumentType.HTML),
    ],
)
def test_magic_bytes(head: bytes, expected: DocumentType) -> None:
    assert sniff(head).type is expected


def test_unknown_content_names_the_bytes() -> None:
    found = sniff(b"just some plain text, not a document")
    assert found.type is None and "unrecognised content" in found.reason


def test_zip_that_is_not_office() -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("hello.txt", "hi")
    found = sniff(buf.getvalue())
    assert found.type is None and "ZIP archive" in found.reason


CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "files"


def test_ole_types_come_from_directory_entries_of_real_files() -> None:
    def kind(name: str) -> DocumentType | None:
        return sniff((CORPUS / name).read_bytes()).type

    assert kind("poi-SampleDoc.doc") is DocumentType.DOC
    assert kind("poi-SampleSS.xls") is DocumentType.XLS
    assert kind("poi-basic_test_ppt_file.ppt") is DocumentType.PPT
    # The stream names anywhere in the bytes (not in a directory entry) decide nothing.
    fake = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100 + "Book".encode("utf-16-le")
    found = sniff(fake)
    assert found.type is None and found.corrupt


@pytest.mark.parametrize(
    "name",
    [
        "poi-password_tika_binaryrc4.doc",
        "poi-password_password_cryptoapi.doc",
        "poi-password.xls",
        "poi-Password_Protected-hello.ppt",
        "poi-protected_agile.docx",
    ],
)
def test_legacy_and_agile_office_encryption(name: str) -> None:
    found = sniff((CORPUS / name).read_bytes())
    assert found.encrypted and found.type is None


def test_truncated_docx_is_corrupt_not_unsupported() -> None:
    found = sniff((CORPUS / "poi-truncated62886.docx").read_bytes())
    assert found.corrupt and found.type is None


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"])
def test_unicode_html(codec: str) -> None:
    html = "<!DOCTYPE html><html><body><p>caf\u00e9 \u4e2d\u6587</p></body></html>"
    assert sniff(html.encode(codec)).type is DocumentType.HTML


# Issue 23 item 18: what LibreOffice converts is not refused for its name or first bytes.
def _zip(files: dict[str, str]) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x09\x04\x06\x00\x00\x00\x10\x00" + b"\x00" * 40, DocumentType.XLS),  # Excel 4.0 worksheet BOF
        (b"\x09\x02\x06\x00\x00\x00\x10\x00" + b"\x00" * 40, DocumentType.XLS),  # Excel 3.0
        (
            b'<?xml version="1.0"?><office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"'
            b' office:mimetype="application/vnd.oasis.opendocument.text"><office:body/></office:document>',
            DocumentType.FODT,
        ),
        (
            b'<?xml version="1.0"?>\n<!-- x --><office:document xmlns:office="urn:oasis:names:tc:opendocument:'
            b'xmlns:office:1.0" office:version="1.3" office:mimetype="application/vnd.oasis.opendocument.'
            b'spreadsheet">',
            DocumentType.FODS,
        ),
        (b"<script>" + b"var a = 1;\n" * 500 + b"</script><html><body>x</body></html>", DocumentType.HTML),
        (b"<div class='x'><p>only a fragment</p></div>", DocumentType.HTML),
        ("<head><title>t</title></head><body>x</body>".encode("utf-16-le"), DocumentType.HTML),
        ("\ufeff<head><title>t</title></head>".encode("utf-16"), DocumentType.HTML),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', None),
    ],
)
def test_content_decides_what_libreoffice_converts(data: bytes, expected: DocumentType | None) -> None:
    assert sniff(data).type is expected


def test_ooxml_type_comes_from_content_types_not_folder_names() -> None:
    ct = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
    data = _zip(
        {
            "[Content_Types].xml": f'<Types><Override PartName="/data/book.xml" ContentType="{ct}"/></Types>',
            "_rels/.rels": '<Relationships><Relationship Id="r1" Type="http://schemas.openxmlformats.org/'
            'officeDocument/2006/relationships/officeDocument" Target="data/book.xml"/></Relationships>',
            "data/book.xml": "<workbook/>",
        }
    )
    assert sniff(data).type is DocumentType.XLSX
