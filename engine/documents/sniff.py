"""Document type detection from content: magic bytes, then container inspection (ZIP, OLE2).

The file name is never trusted: a PDF called ``scan.jpg`` is a PDF.
"""

from __future__ import annotations

import io
import zipfile
from enum import StrEnum


class DocumentType(StrEnum):
    PDF = "pdf"
    PNG = "png"
    JPEG = "jpeg"
    TIFF = "tiff"
    WEBP = "webp"
    BMP = "bmp"
    GIF = "gif"
    DOCX = "docx"
    XLSX = "xlsx"
    PPTX = "pptx"
    DOC = "doc"
    XLS = "xls"
    PPT = "ppt"
    ODT = "odt"
    ODS = "ods"
    ODP = "odp"
    RTF = "rtf"
    HTML = "html"

    @property
    def is_image(self) -> bool:
        return self in _IMAGES

    @property
    def needs_conversion(self) -> bool:
        """Rendered through LibreOffice (to PDF) rather than natively."""
        return not self.is_image and self is not DocumentType.PDF


_IMAGES = {
    DocumentType.PNG,
    DocumentType.JPEG,
    DocumentType.TIFF,
    DocumentType.WEBP,
    DocumentType.BMP,
    DocumentType.GIF,
}

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ODF_MIMETYPES = {
    b"application/vnd.oasis.opendocument.text": DocumentType.ODT,
    b"application/vnd.oasis.opendocument.spreadsheet": DocumentType.ODS,
    b"application/vnd.oasis.opendocument.presentation": DocumentType.ODP,
}


class Sniffed:
    """Outcome of detection: a type, or the reason there is none (used verbatim in error messages)."""

    def __init__(self, type_: DocumentType | None, reason: str = "", encrypted: bool = False) -> None:
        self.type = type_
        self.reason = reason
        self.encrypted = encrypted


def _utf16(name: str) -> bytes:
    return name.encode("utf-16-le")


def sniff(data: bytes) -> Sniffed:
    head = data[:2048]
    if not data.strip():
        return Sniffed(None, "the file is empty")
    # PDF: the header may follow a little junk (the spec allows it within the first 1024 bytes).
    if b"%PDF-" in head[:1024]:
        return Sniffed(DocumentType.PDF)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed(DocumentType.PNG)
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed(DocumentType.JPEG)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return Sniffed(DocumentType.TIFF)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniffed(DocumentType.WEBP)
    if head[:2] == b"BM" and len(head) > 14:
        return Sniffed(DocumentType.BMP)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed(DocumentType.GIF)
    if head.startswith(b"{\\rtf"):
        return Sniffed(DocumentType.RTF)
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(data)
    if head.startswith(_OLE_MAGIC):
        return _sniff_ole(data)
    if _looks_like_html(head):
        return Sniffed(DocumentType.HTML)
    return Sniffed(None, f"unrecognised content (first bytes {head[:8]!r})")


def _sniff_zip(data: bytes) -> Sniffed:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
            if "mimetype" in names:
                mimetype = zf.read("mimetype").strip()
                if mimetype in _ODF_MIMETYPES:
                    return Sniffed(_ODF_MIMETYPES[mimetype])
            if "[Content_Types].xml" in names:
                prefixes = {n.split("/", 1)[0] for n in names}
                if "word" in prefixes:
                    return Sniffed(DocumentType.DOCX)
                if "xl" in prefixes:
                    return Sniffed(DocumentType.XLSX)
                if "ppt" in prefixes:
                    return Sniffed(DocumentType.PPTX)
    except zipfile.BadZipFile:
        return Sniffed(None, "a ZIP container that cannot be read (truncated or corrupt Office file?)")
    return Sniffed(None, "a ZIP archive that is not an Office (OOXML) or ODF document")


def _sniff_ole(data: bytes) -> Sniffed:
    # OLE2 directory entries hold stream names in UTF-16LE; looking for them is enough to tell
    # Word/Excel/PowerPoint apart without a full compound-file parser.
    if _utf16("EncryptedPackage") in data:
        return Sniffed(None, "a password-protected Office document", encrypted=True)
    if _utf16("WordDocument") in data:
        return Sniffed(DocumentType.DOC)
    if _utf16("Workbook") in data or _utf16("Book") in data:
        return Sniffed(DocumentType.XLS)
    if _utf16("PowerPoint Document") in data:
        return Sniffed(DocumentType.PPT)
    return Sniffed(None, "an OLE2 compound file that is not a Word, Excel or PowerPoint document")


def _looks_like_html(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html")):
        return True
    return text.startswith(b"<") and (b"<html" in text or b"<body" in text)
