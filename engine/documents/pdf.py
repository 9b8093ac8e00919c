"""PDF rasterization: pymupdf (default, in-process) or pdf2image/poppler, with the same validation."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pymupdf
from PIL import Image

from engine.documents.pdfcrypt import ENCRYPT_REF, open_pdf
from engine.errors import (
    CorruptDocument,
    DocumentTooComplex,
    EncryptedDocument,
    NoPages,
    TooManyPages,
    XfaForm,
)

# MuPDF prints repair chatter to stderr; we read it through TOOLS.mupdf_warnings() instead.
pymupdf.TOOLS.mupdf_display_errors(False)
pymupdf.TOOLS.mupdf_display_warnings(False)

# Messages MuPDF emits when content is really missing (as opposed to benign repairs).
_DAMAGE_MARKERS = ("cannot load", "premature end", "out of range", "not a stream", "non-page object")


def effective_dpi(width_pt: float, height_pt: float, dpi: int, max_pixels: int) -> tuple[int, bool]:
    """DPI to render a page of this size at so it stays within max_pixels; (dpi, downscaled)."""
    pixels = (width_pt * dpi / 72.0) * (height_pt * dpi / 72.0)
    if pixels <= max_pixels:
        return dpi, False
    return max(1, math.floor(dpi * math.sqrt(max_pixels / pixels))), True


# Everything MuPDF raises: its own FzErrorBase family (not RuntimeError subclasses) and pymupdf's wrappers.
MUPDF_ERRORS: tuple[type[BaseException], ...] = (
    pymupdf.mupdf.FzErrorBase,
    RuntimeError,
    ValueError,
    IndexError,
    KeyError,
)


def _is_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "malloc" in text or "out of memory" in text


class PdfDocument:
    """An opened, validated PDF. Pages render one at a time; nothing is cached between pages."""

    def __init__(self, data: bytes, name: str, *, max_pages: int) -> None:
        self.name = name
        self.data = data
        pymupdf.TOOLS.mupdf_warnings()  # drop anything left from earlier documents
        try:
            self.doc = open_pdf(data, name)
            needs_pass = bool(self.doc.needs_pass)
            page_count = 0 if needs_pass else self.doc.page_count
        except MUPDF_ERRORS as exc:
            if _is_memory(exc):
                raise DocumentTooComplex(
                    "opening the PDF needs more memory than the render limit (DOCVISION_RENDER_MEMORY_MB)",
                    document=name,
                ) from exc
            if ENCRYPT_REF.search(data[-(1 << 20) :]) or ENCRYPT_REF.search(data[: 1 << 20]):
                # MuPDF checks the encryption dictionary (/O, /U, /Perms) before anything else: a damaged one
                # fails the open. The file is encrypted all the same, and what the user can do is the same.
                raise EncryptedDocument(
                    "the PDF is encrypted and its encryption dictionary is damaged, so it cannot be opened even "
                    f"with the empty password ({_short(exc)}); remove the password (save an unprotected copy) "
                    "and upload that",
                    document=name,
                ) from exc
            raise CorruptDocument(f"not a readable PDF ({_short(exc)})", document=name) from exc
        if needs_pass:
            # Owner-password-only PDFs open without a password (needs_pass is False) and render normally.
            raise EncryptedDocument(
                "the PDF is encrypted with a user password; remove the password and upload it again",
                document=name,
            )
        # A repaired file is fine when its pages render (junk after %%EOF, no %%EOF line, a broken xref):
        # damage is judged page by page from MuPDF's warnings, not from the trailer.
        if page_count == 0:
            if self.doc.is_repaired or not self._has_page_tree():
                raise CorruptDocument(
                    "no page tree could be recovered from the PDF (damaged or truncated); upload the complete file",
                    document=name,
                )
            raise NoPages("the PDF has no pages", document=name)
        if page_count > max_pages:
            raise TooManyPages(
                f"{page_count} pages exceeds the limit of {max_pages} (DOCVISION_MAX_PAGES)",
                document=name,
                page_count=page_count,
            )
        self.page_count = page_count
        self._check_xfa()

    def _has_page_tree(self) -> bool:
        """The catalog points to a /Pages node (an empty one is a real zero-page PDF, no tree is damage)."""
        try:
            kind, _ = self.doc.xref_get_key(self.doc.pdf_catalog(), "Pages")
            if kind != "xref":
                return False
            pages = self.doc.xref_get_key(self.doc.pdf_catalog(), "Pages/Type")
            return pages[1] == "/Pages"
        except MUPDF_ERRORS:
            return False

    def _check_xfa(self) -> None:
        """XFA-only forms: the page is Adobe's "please wait" placeholder and the content lives in XFA XML.

        A typed error rather than a `degraded` flag: indexing the placeholder would make the document
        findable by "please wait" and by nothing it says; the user can flatten it (print to PDF) and upload again.
        """
        try:
            kind, _ = self.doc.xref_get_key(self.doc.pdf_catalog(), "AcroForm/XFA")
            if kind == "null":
                return
            text = " ".join(self.doc[0].get_text().lower().split())
        except MUPDF_ERRORS:
            return
        if self.page_count <= 2 and ("please wait" in text or "adobe reader" in text or not text):
            raise XfaForm(
                "an XFA-only (dynamic) form: its pages hold only a placeholder and the content is in XFA data "
                "that cannot be rendered; open it in Adobe Acrobat/Reader, print it to PDF and upload that",
                document=self.name,
            )

    def page_size_pt(self, page_number: int) -> tuple[float, float]:
        try:
            rect = self.doc[page_number - 1].rect  # rect honours /Rotate
        except MUPDF_ERRORS as exc:
            raise CorruptDocument(
                f"page {page_number} cannot be loaded ({_short(exc)})",
                document=self.name,
                page_number=page_number,
            ) from exc
        if not (rect.width >= 1 and rect.height >= 1 and rect.width * rect.height < 1e12):
            raise CorruptDocument(
                f"page {page_number} has an unusable size ({rect.width}x{rect.height} pt)",
                document=self.name,
                page_number=page_number,
            )
        return rect.width, rect.height

    def _check_damage(self, page_number: int) -> None:
        warnings = pymupdf.TOOLS.mupdf_warnings()
        if self.doc.is_repaired and any(m in warnings for m in _DAMAGE_MARKERS):
            first = next(line for line in warnings.splitlines() if any(m in line for m in _DAMAGE_MARKERS))
            raise CorruptDocument(
                f"page {page_number} is damaged ({first})", document=self.name, page_number=page_number
            )

    def render_pymupdf(self, page_number: int, dpi: int) -> Image.Image:
        pix = self.render_pixmap(page_number, dpi)
        return Image.frombytes("RGB", (pix.width, pix.height), pix.samples_mv)

    def render_pixmap(self, page_number: int, dpi: int) -> pymupdf.Pixmap:
        """The page as an RGB pixmap (the worker sends its samples without a PIL copy)."""
        pymupdf.TOOLS.mupdf_warnings()
        try:
            page = self.doc[page_number - 1]
            zoom = dpi / 72.0
            pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False, colorspace=pymupdf.csRGB)
        except MUPDF_ERRORS as exc:
            if _is_memory(exc):
                raise DocumentTooComplex(
                    f"page {page_number} needs more memory than the render limit (DOCVISION_RENDER_MEMORY_MB)",
                    document=self.name,
                    page_number=page_number,
                ) from exc
            raise CorruptDocument(
                f"page {page_number} cannot be rendered ({_short(exc)})",
                document=self.name,
                page_number=page_number,
            ) from exc
        self._check_damage(page_number)
        return pix

    def close(self) -> None:
        self.doc.close()


def _short(exc: BaseException) -> str:
    """MuPDF's message without the Python class path, one line, bounded (no document text is in it)."""
    return " ".join(str(exc).split())[:200] or type(exc).__name__


class PopplerRenderer:
    """pdf2image (pdftoppm) one page per call, so memory stays bounded like the pymupdf path."""

    def __init__(self, pdf: PdfDocument) -> None:
        self.pdf = pdf
        self._tmp = tempfile.TemporaryDirectory(prefix="docvision-pdf-")
        self.path = Path(self._tmp.name) / "document.pdf"
        self.path.write_bytes(pdf.data)

    def render(self, page_number: int, dpi: int) -> Image.Image:
        from pdf2image import convert_from_path
        from pdf2image.exceptions import PDFPageCountError, PDFSyntaxError

        try:
            images = convert_from_path(str(self.path), dpi=dpi, first_page=page_number, last_page=page_number)
        except (PDFPageCountError, PDFSyntaxError, OSError, ValueError) as exc:
            raise CorruptDocument(
                f"poppler cannot render page {page_number} ({exc})", document=self.pdf.name
            ) from exc
        if not images:
            raise CorruptDocument(f"poppler produced no image for page {page_number}", document=self.pdf.name)
        return images[0].convert("RGB")

    def close(self) -> None:
        self._tmp.cleanup()


def iter_pdf_pages(
    pdf: PdfDocument, *, dpi: int, max_page_pixels: int, backend: str, start_page: int = 1
) -> Iterator[tuple[int, Image.Image, int, bool]]:
    """Yield (page_number, image, effective_dpi, downscaled) lazily."""
    poppler = PopplerRenderer(pdf) if backend == "pdf2image" else None
    try:
        for n in range(start_page, pdf.page_count + 1):
            eff, downscaled = effective_dpi(*pdf.page_size_pt(n), dpi, max_page_pixels)
            image = poppler.render(n, eff) if poppler else pdf.render_pymupdf(n, eff)
            yield n, image, eff, downscaled
    finally:
        if poppler:
            poppler.close()
