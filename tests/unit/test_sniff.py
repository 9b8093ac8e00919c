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


def test_ole_streams_pick_the_legacy_office_type() -> None:
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100
    assert sniff(ole + "WordDocument".encode("utf-16-le")).type is DocumentType.DOC
    assert sniff(ole + "Workbook".encode("utf-16-le")).type is DocumentType.XLS
    assert sniff(ole + "PowerPoint Document".encode("utf-16-le")).type is DocumentType.PPT
    enc = sniff(ole + "EncryptedPackage".encode("utf-16-le"))
    assert enc.type is None and enc.encrypted
