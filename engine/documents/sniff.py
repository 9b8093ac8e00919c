"""Document type detection from content: magic bytes, then container inspection (ZIP, OLE2).

The file name is never trusted: a PDF called ``scan.jpg`` is a PDF.
"""

from __future__ import annotations

import io
import re
import struct
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
    FODT = "fodt"  # flat (single-XML) OpenDocument
    FODS = "fods"
    FODP = "fodp"
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
_FLAT_ODF = {
    DocumentType.ODT: DocumentType.FODT,
    DocumentType.ODS: DocumentType.FODS,
    DocumentType.ODP: DocumentType.FODP,
}
# The main part's content type ([Content_Types].xml) decides what an OOXML package is, wherever the part lives.
_OOXML_MAIN = {
    "wordprocessingml.document.main+xml": DocumentType.DOCX,
    "wordprocessingml.template.main+xml": DocumentType.DOCX,
    "ms-word.document.macroenabled.main+xml": DocumentType.DOCX,
    "ms-word.template.macroenabledtemplate.main+xml": DocumentType.DOCX,
    "spreadsheetml.sheet.main+xml": DocumentType.XLSX,
    "spreadsheetml.template.main+xml": DocumentType.XLSX,
    "ms-excel.sheet.macroenabled.main+xml": DocumentType.XLSX,
    "ms-excel.template.macroenabled.main+xml": DocumentType.XLSX,
    "ms-excel.sheet.binary.macroenabled.main": DocumentType.XLSX,
    "presentationml.presentation.main+xml": DocumentType.PPTX,
    "presentationml.slideshow.main+xml": DocumentType.PPTX,
    "presentationml.template.main+xml": DocumentType.PPTX,
    "ms-powerpoint.presentation.macroenabled.main+xml": DocumentType.PPTX,
    "ms-powerpoint.slideshow.macroenabled.main+xml": DocumentType.PPTX,
}


class Sniffed:
    """Outcome of detection: a type, or the reason there is none (used verbatim in error messages).

    ``corrupt``: the container type is known but cannot be read (a truncated DOCX is corrupt, not unsupported).
    """

    def __init__(
        self,
        type_: DocumentType | None,
        reason: str = "",
        encrypted: bool = False,
        corrupt: bool = False,
        office_encrypted: bool = False,
    ) -> None:
        self.type = type_
        self.reason = reason
        self.encrypted = encrypted
        self.corrupt = corrupt
        # an encrypted Office file (OOXML package or DOC/XLS/PPT): perhaps Excel's default password only
        # (engine.documents.protected), which is converted like any Office document
        self.office_encrypted = office_encrypted


_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


def text_encoding(data: bytes) -> str | None:
    """The Unicode encoding a text file announces with a BOM, or shows by its NUL pattern (``<\\0h\\0``)."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return codec
    head = data[:8]
    if len(head) >= 8:
        if head[1:4] == b"\x00\x00\x00" and head[0]:
            return "utf-32-le"
        if head[0:3] == b"\x00\x00\x00" and head[3]:
            return "utf-32-be"
        if head[1] == 0 and head[3] == 0 and head[0] and head[2]:
            return "utf-16-le"
        if head[0] == 0 and head[2] == 0 and head[1] and head[3]:
            return "utf-16-be"
    return None


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
    if _biff_worksheet(head):
        return Sniffed(DocumentType.XLS)
    flat = _flat_odf(data)
    if flat is not None:
        return Sniffed(flat)
    if _looks_like_html(data[: 256 << 10]):
        return Sniffed(DocumentType.HTML)
    if _headerless_pdf(data):
        return Sniffed(DocumentType.PDF)
    return Sniffed(None, f"unrecognised content (first bytes {head[:8]!r})")


_PDF_OBJECT = re.compile(rb"^\s*(?:%[^\n]*\n\s*)*\d+\s+\d+\s+obj\b")


def _headerless_pdf(data: bytes) -> bool:
    """A PDF whose %PDF- line is missing or damaged (viewers open these): it starts with an indirect object
    (after comments) and has a page tree or a trailer further on."""
    if not _PDF_OBJECT.match(data[:1024]):
        return False
    tail = data[: 1 << 20]
    return b"endobj" in tail and (b"/Page" in tail or b"trailer" in tail)


def _sniff_zip(data: bytes) -> Sniffed:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
            if "mimetype" in names:
                mimetype = zf.read("mimetype").strip()
                if mimetype in _ODF_MIMETYPES:
                    manifest = zf.read("META-INF/manifest.xml") if "META-INF/manifest.xml" in names else b""
                    if b"encryption-data" in manifest:
                        return Sniffed(None, "a password-protected OpenDocument file", encrypted=True)
                    return Sniffed(_ODF_MIMETYPES[mimetype])
            if "[Content_Types].xml" in names:
                main = _ooxml_main_type(zf, names)
                if main is not None:
                    return Sniffed(main)
                prefixes = {n.split("/", 1)[0] for n in names}
                if "word" in prefixes:
                    return Sniffed(DocumentType.DOCX)
                if "xl" in prefixes:
                    return Sniffed(DocumentType.XLSX)
                if "ppt" in prefixes:
                    return Sniffed(DocumentType.PPTX)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, KeyError):
        return Sniffed(
            None,
            "a ZIP container (Office/ODF) that cannot be read: truncated or corrupt; upload the complete file",
            corrupt=True,
        )
    return Sniffed(None, "a ZIP archive that is not an Office (OOXML) or ODF document")


# --------------------------------------------------------------------------------------------- OLE2
class _Cfb:
    """Just enough of the Compound File Binary format to list directory entries and read small streams.

    Every read is bounds-checked and every chain walk is capped: the input is hostile.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sector = 1 << struct.unpack_from("<H", data, 0x1E)[0]
        self.mini = 1 << struct.unpack_from("<H", data, 0x20)[0]
        if self.sector not in (512, 4096) or self.mini != 64:
            raise ValueError("bad sector size")
        n_fat, first_dir = struct.unpack_from("<II", data, 0x2C)
        self.cutoff, first_minifat, _n_minifat, first_difat, n_difat = struct.unpack_from(
            "<IIIII", data, 0x38
        )
        difat = list(struct.unpack_from("<109I", data, 0x4C))
        sec, hops = first_difat, 0
        while sec < 0xFFFFFFFA and hops < min(n_difat, 1000):
            per = self.sector // 4 - 1
            difat += struct.unpack_from(f"<{per}I", self._sector(sec))
            sec = struct.unpack_from("<I", self._sector(sec), per * 4)[0]
            hops += 1
        self.fat: list[int] = []
        for s in difat[: min(n_fat, 10_000)]:
            if s < 0xFFFFFFFA:
                self.fat += struct.unpack_from(f"<{self.sector // 4}I", self._sector(s))
        raw = self._chain(first_dir, self.fat, self._sector)
        self.entries: dict[str, tuple[int, int, int]] = {}  # name -> (type, start, size)
        for off in range(0, len(raw) - 127, 128):
            n = struct.unpack_from("<H", raw, off + 64)[0]
            kind = raw[off + 66]
            if kind not in (1, 2, 5) or not 2 <= n <= 64:
                continue
            name = raw[off : off + n - 2].decode("utf-16-le", errors="replace")
            start, size = struct.unpack_from("<IQ", raw, off + 116)
            self.entries.setdefault(name, (kind, start, size & 0xFFFFFFFF))
        root = next((e for e in self.entries.values() if e[0] == 5), None)
        self.minifat = (
            []
            if first_minifat >= 0xFFFFFFFA
            else self._words(self._chain(first_minifat, self.fat, self._sector))
        )
        self.ministream = self._chain(root[1], self.fat, self._sector) if root else b""

    @staticmethod
    def _words(raw: bytes) -> list[int]:
        return list(struct.unpack_from(f"<{len(raw) // 4}I", raw))

    def _sector(self, n: int) -> bytes:
        off = (n + 1) * self.sector
        if off + self.sector > len(self.data):
            return (
                self.data[off:].ljust(self.sector, b"\x00") if off < len(self.data) else b"\x00" * self.sector
            )
        return self.data[off : off + self.sector]

    def _mini_sector(self, n: int) -> bytes:
        return self.ministream[n * 64 : n * 64 + 64].ljust(64, b"\x00")

    @staticmethod
    def _chain(start: int, table: list[int], read: object, limit: int = 1 << 16) -> bytes:
        out, sec, seen = [], start, 0
        while sec < len(table) and seen < limit:
            out.append(read(sec))  # type: ignore[operator]
            sec, seen = table[sec], seen + 1
        return b"".join(out)

    def stream(self, name: str, max_bytes: int = 1 << 16) -> bytes:
        kind, start, size = self.entries[name]
        limit = min(size, max_bytes)
        if size < self.cutoff:
            return self._chain(start, self.minifat, self._mini_sector, limit // 64 + 1)[:limit]
        return self._chain(start, self.fat, self._sector, limit // self.sector + 1)[:limit]


def _ole_encrypted(cfb: _Cfb, type_: DocumentType) -> bool:
    """Legacy Office encryption (XOR, RC4, RC4 CryptoAPI), from the format's own flags."""
    if type_ is DocumentType.DOC:
        fib = cfb.stream("WordDocument", 64)
        return len(fib) >= 12 and bool(struct.unpack_from("<H", fib, 0x0A)[0] & 0x0100)  # FIB fEncrypted
    if type_ is DocumentType.XLS:
        stream = cfb.stream("Workbook" if "Workbook" in cfb.entries else "Book", 1 << 16)
        off = 0
        for _ in range(400):  # FILEPASS follows BOF among the first records of the globals substream
            if off + 4 > len(stream):
                break
            rec, length = struct.unpack_from("<HH", stream, off)
            if rec == 0x002F:
                return True
            if rec == 0x000A:  # EOF of the globals substream
                break
            off += 4 + length
        return False
    if type_ is DocumentType.PPT:
        if "EncryptedSummary" in cfb.entries:
            return True
        user = cfb.stream("Current User", 64) if "Current User" in cfb.entries else b""
        return len(user) >= 16 and struct.unpack_from("<I", user, 12)[0] == 0xF3D1C4DF
    return False


def _sniff_ole(data: bytes) -> Sniffed:
    # Types come from the directory entries' exact names (a text that mentions "Book" is not a workbook).
    try:
        cfb = _Cfb(data)
        names = set(cfb.entries)
        if "EncryptedPackage" in names:
            return Sniffed(
                None, "a password-protected Office document", encrypted=True, office_encrypted=True
            )
        type_ = None
        if "WordDocument" in names:
            type_ = DocumentType.DOC
        elif "PowerPoint Document" in names:
            type_ = DocumentType.PPT
        elif "Workbook" in names or "Book" in names:
            type_ = DocumentType.XLS
        if type_ is not None and _ole_encrypted(cfb, type_):
            return Sniffed(
                None,
                f"a password-protected {type_.value.upper()} document",
                encrypted=True,
                office_encrypted=True,
            )
    except (struct.error, ValueError, KeyError, IndexError):
        return Sniffed(None, "an OLE2 compound file that cannot be read (truncated or corrupt)", corrupt=True)
    if type_ is None:
        return Sniffed(None, "an OLE2 compound file that is not a Word, Excel or PowerPoint document")
    return Sniffed(type_)


def _ooxml_main_type(zf: zipfile.ZipFile, names: set[str]) -> DocumentType | None:
    """As Office reads a package: _rels/.rels names the main part, [Content_Types].xml gives its type."""
    rels = zf.read("_rels/.rels")[: 1 << 20] if "_rels/.rels" in names else b""
    types = zf.read("[Content_Types].xml")[: 1 << 20]
    for rel in re.finditer(rb"<(?:\w+:)?Relationship\b[^>]*>", rels):
        if not re.search(rb"""Type\s*=\s*["'][^"']*/officeDocument["']""", rel.group(0)):
            continue
        target = re.search(rb"""Target\s*=\s*["']([^"']+)["']""", rel.group(0))
        if not target:
            continue
        part = "/" + target.group(1).decode("utf-8", errors="replace").lstrip("/")
        for override in re.finditer(rb"<(?:\w+:)?Override\b[^>]*>", types):
            name = re.search(rb"""PartName\s*=\s*["']([^"']+)["']""", override.group(0))
            ctype = re.search(rb"""ContentType\s*=\s*["']([^"']+)["']""", override.group(0))
            if name and ctype and name.group(1).decode(errors="replace").lower() == part.lower():
                suffix = ctype.group(1).decode(errors="replace").lower().removeprefix("application/vnd.")
                suffix = suffix.removeprefix("openxmlformats-officedocument.")
                if suffix in _OOXML_MAIN:
                    return _OOXML_MAIN[suffix]
    return None


def _biff_worksheet(head: bytes) -> bool:
    """A bare BIFF2-5 Excel stream (Excel 2.x-4.0 worksheets are not OLE2 files): a BOF record first, with a
    worksheet/workbook/chart document type."""
    if len(head) < 8:
        return False
    rec, length, _version, kind = struct.unpack_from("<HHHH", head, 0)
    return (
        rec in (0x0009, 0x0209, 0x0409, 0x0809)
        and 4 <= length <= 20
        and kind in (0x0010, 0x0020, 0x0040, 0x0100, 0x0005)
    )


def _decoded_text(data: bytes) -> bytes:
    codec = text_encoding(data)
    if codec and codec != "utf-8":
        data = data[: len(data) // 4 * 4].decode(codec, errors="replace").encode("utf-8", errors="replace")
    return data.lstrip(b"\xef\xbb\xbf \t\r\n")


def _flat_odf(data: bytes) -> DocumentType | None:
    """A flat OpenDocument file: an XML office:document root carrying office:mimetype."""
    text = _decoded_text(data[: 64 << 10])
    if not text.startswith(b"<"):
        return None
    root = re.search(rb"<([\w.-]+:)?document\b([^>]*)>", text)
    if not root or not re.match(rb"\s*(?:<\?.*?\?>\s*|<!--.*?-->\s*)*<", text[: root.start() + 1], re.S):
        return None
    mime = re.search(rb"""mimetype\s*=\s*["']([^"']+)["']""", root.group(2))
    kind = _ODF_MIMETYPES.get(mime.group(1).strip()) if mime else None
    return _FLAT_ODF[kind] if kind else None


# Elements an HTML file (or fragment) starts with, after comments and whitespace.
_HTML_START = re.compile(
    rb"<(?:!doctype\s+html|html|head|body|meta|title|script|style|link|base|div|p|span|table|h[1-6]|ul|ol|"
    rb"dl|a|img|b|i|u|em|strong|br|hr|form|section|article|header|footer|nav|main|center|font|pre|"
    rb"blockquote|iframe|noscript|svg)[\s>/]"
)
_COMMENTS = re.compile(rb"\s*(?:<!--.*?-->\s*)*", re.S)


def _looks_like_html(data: bytes) -> bool:
    """HTML as a browser (and LibreOffice's HTML filter) takes it: a document, or a fragment that starts with
    an HTML element, also after a long <script> or in UTF-16. XML that is not XHTML is not HTML."""
    text = _decoded_text(data).lower()
    if text.startswith(b"<?xml"):
        end = text.find(b"?>")
        text = text[end + 2 :].lstrip() if end > 0 else b""
        return bool(re.match(rb"(?:<!--.*?-->\s*)*(?:<!doctype\s+html|<html)", text, re.S))
    skipped = _COMMENTS.match(text)
    if _HTML_START.match(text, skipped.end() if skipped else 0):
        return True
    return text.startswith(b"<") and (b"<html" in text or b"<body" in text)
