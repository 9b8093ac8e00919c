"""Documents → canonical page frames, one at a time.

    from engine.documents import open_document
    with open_document("invoice.docx") as doc:
        for frame in doc.pages():
            frame.image  # RGB PIL image at 300 DPI (2550x3300 for US letter)

The type comes from the content (engine.documents.sniff); Office/ODF/HTML go through LibreOffice to PDF;
PDFs render with pymupdf (or poppler); images are decoded after a header-only size check.
Validation that can be done up front (type, encryption, page count, truncation, limits) happens in
``open_document``, before a single frame is produced.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from engine.config import Settings, get_settings
from engine.documents.frames import PageFrame
from engine.documents.images import ImageDocument
from engine.documents.office import convert_to_pdf
from engine.documents.pdf import PdfDocument, iter_pdf_pages
from engine.documents.sniff import DocumentType, sniff
from engine.documents.source import DocumentInput, S3Object, load_bytes
from engine.errors import EncryptedDocument, UnsupportedDocument

__all__ = ["Document", "DocumentType", "PageFrame", "S3Object", "open_document", "render_pages", "sniff"]


class Document:
    """An opened document: identity, type and page count known; pages rendered lazily."""

    def __init__(
        self,
        source: DocumentInput,
        *,
        name: str | None = None,
        settings: Settings | None = None,
        s3_client: Any = None,
    ):
        self.settings = s = settings or get_settings()
        loaded = load_bytes(source, name=name, max_bytes=s.max_bytes, s3_client=s3_client)
        self.name, self.uri, self.document_id = loaded.name, loaded.uri, loaded.sha256
        self.size_bytes = len(loaded.data)
        found = sniff(loaded.data)
        if found.encrypted:
            raise EncryptedDocument(
                f"{found.reason}; remove the password and upload it again", document=self.name
            )
        if found.type is None:
            raise UnsupportedDocument(
                f"unsupported document type: {found.reason}. Supported: PDF, PNG, JPEG, TIFF, WebP, BMP, GIF, "
                "DOCX/XLSX/PPTX, DOC/XLS/PPT, ODT/ODS/ODP, RTF, HTML",
                document=self.name,
            )
        self.type: DocumentType = found.type
        self._pdf: PdfDocument | None = None
        self._image: ImageDocument | None = None
        if self.type.is_image:
            self._image = ImageDocument(
                loaded.data,
                self.name,
                self.type.value,
                max_pages=s.max_pages,
                max_image_pixels=s.max_image_pixels,
            )
            self.page_count = self._image.page_count
        else:
            pdf_bytes = loaded.data
            if self.type.needs_conversion:
                pdf_bytes = convert_to_pdf(
                    loaded.data,
                    self.type.value,
                    self.name,
                    soffice=s.soffice,
                    timeout_s=s.conversion_timeout_s,
                    work_dir=s.work_dir,
                )
            self._pdf = PdfDocument(pdf_bytes, self.name, max_pages=s.max_pages)
            self.page_count = self._pdf.page_count

    def pages(self, start_page: int = 1) -> Iterator[PageFrame]:
        """Yield frames from ``start_page`` (1-based) to the end; only one page image is alive at a time here."""
        s = self.settings
        if self._image is not None:
            it = self._image.iter_pages(dpi=s.dpi, max_page_pixels=s.max_page_pixels, start_page=start_page)
        else:
            assert self._pdf is not None
            it = iter_pdf_pages(
                self._pdf,
                dpi=s.dpi,
                max_page_pixels=s.max_page_pixels,
                backend=s.pdf_backend,
                start_page=start_page,
            )
        for number, image, dpi, downscaled in it:
            yield PageFrame(
                document_id=self.document_id,
                page_number=number,
                page_count=self.page_count,
                dpi=dpi,
                source_type=self.type.value,
                image=image,
                source_name=self.name,
                downscaled=downscaled,
            )

    def close(self) -> None:
        for part in (self._pdf, self._image):
            if part is not None:
                part.close()

    def __enter__(self) -> Document:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_document(
    source: DocumentInput, *, name: str | None = None, settings: Settings | None = None, s3_client: Any = None
) -> Document:
    return Document(source, name=name, settings=settings, s3_client=s3_client)


def render_pages(
    source: DocumentInput, *, name: str | None = None, settings: Settings | None = None, s3_client: Any = None
) -> Iterator[PageFrame]:
    with open_document(source, name=name, settings=settings, s3_client=s3_client) as doc:
        yield from doc.pages()
