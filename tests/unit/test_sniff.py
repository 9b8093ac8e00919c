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
