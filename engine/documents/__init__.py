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
from typing import TYPE_CHECKING, Any

from engine.documents.frames import PageFrame
from engine.documents.native import Renderable, has_visible_content, limits_of, open_renderable
from engine.documents.office import convert_to_pdf
from engine.documents.protected import unlock_default_password
from engine.documents.sniff import DocumentType, sniff
from engine.documents.source import DocumentInput, S3Object, load_bytes
from engine.documents.worker import RenderWorker
from engine.errors import ConversionEmpty, CorruptDocument, EncryptedDocument, UnsupportedDocument

if TYPE_CHECKING:  # the render worker imports this package: keep pydantic-settings out of its start
    from engine.config import Settings

__all__ = [
    "Document",
    "DocumentType",
    "PageFrame",
    "S3Object",
    "detect_type",
    "open_document",
    "render_pages",
    "sniff",
    "to_pdf",
]


class Document:
    """An opened document: identity, type and page count known; pages rendered lazily.

    PDFs and images are opened and rasterized in an isolated worker process (engine.documents.worker) unless
    ``render_isolation`` is ``none``. ``pdf_bytes`` (optional) is the already converted PDF of an Office/HTML
    document (stored by a previous run): LibreOffice is skipped and those bytes are rendered.
    """

    def __init__(
        self,
        source: DocumentInput,
        *,
        name: str | None = None,
        settings: Settings | None = None,
        s3_client: Any = None,
        pdf_bytes: bytes | None = None,
    ):
        from engine.config import get_settings

        self.settings = s = settings or get_settings()
        loaded = load_bytes(source, name=name, max_bytes=s.max_bytes, s3_client=s3_client)
        self.name, self.uri, self.document_id = loaded.name, loaded.uri, loaded.sha256
        self.size_bytes = len(loaded.data)
        data = loaded.data
        if sniff(data).office_encrypted:
            # Excel's built-in default password opens it in Office without a question: so here too
            data = unlock_default_password(data, self.name, s) or data
        self.type: DocumentType = detect_type(data, self.name)
        self.pdf_bytes: bytes | None = None  # the converted PDF of an Office/HTML document
        kind = self.type.value
        if self.type.needs_conversion:
            self.pdf_bytes = pdf_bytes if pdf_bytes is not None else to_pdf(data, kind, self.name, s)
            data, kind = self.pdf_bytes, "pdf"
        self._renderer: Renderable | RenderWorker
        if s.render_isolation == "process":
            self._renderer = RenderWorker(
                data,
                kind,
                self.name,
                limits=limits_of(s),
                memory_mb=s.render_memory_mb,
                page_timeout_s=s.render_page_timeout_s,
                document_timeout_s=s.render_timeout_s,
                work_dir=s.work_dir,
                check_content=self.pdf_bytes is not None,
            )
            visible = self._renderer.visible
        else:
            self._renderer = open_renderable(data, kind, self.name, limits_of(s))
            visible = self.pdf_bytes is None or has_visible_content(self._renderer)
        self.page_count = self._renderer.page_count
        if not visible:
            self.close()
            raise ConversionEmpty(
                f"LibreOffice converted the {self.type.value.upper()} to {self.page_count} page(s) with no text "
                "and nothing drawn: it could not really read the file (e.g. an XLSB variant, a DOCX whose body "
                "is an altChunk, broken HTML). Save it again as PDF or a standard DOCX/XLSX and upload that",
                document=self.name,
            )

    def pages(self, start_page: int = 1) -> Iterator[PageFrame]:
        """Yield frames from ``start_page`` (1-based) to the end; only one page image is alive at a time here."""
        renderer = self._renderer
        it = (
            renderer.pages(start_page)
            if isinstance(renderer, RenderWorker)
            else renderer.iter_pages(start_page)
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
        self._renderer.close()

    def __enter__(self) -> Document:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def detect_type(data: bytes, name: str) -> DocumentType:
    """The sniffed type, or the typed error that says why there is none."""
    found = sniff(data)
    if found.encrypted:
        raise EncryptedDocument(f"{found.reason}; remove the password and upload it again", document=name)
    if found.corrupt:
        raise CorruptDocument(found.reason, document=name)
    if found.type is None:
        raise UnsupportedDocument(
            f"unsupported document type: {found.reason}. Supported: PDF, PNG, JPEG, TIFF, WebP, BMP, GIF, "
            "DOCX/XLSX/PPTX, DOC/XLS/PPT, ODT/ODS/ODP (also flat FODT/FODS/FODP), RTF, HTML",
            document=name,
        )
    return found.type


def to_pdf(data: bytes, type_: str, name: str, settings: Settings | None = None) -> bytes:
    """An Office/ODF/RTF/HTML document → PDF bytes through LibreOffice (external references neutralized first).

    ``type_`` is the sniffed type's value (``detect_type(data, name).value``). The result can be stored and
    passed back to ``open_document(..., pdf_bytes=...)`` to skip the conversion next time.
    """
    from engine.config import get_settings

    s = settings or get_settings()
    return convert_to_pdf(
        data,
        type_,
        name,
        soffice=s.soffice,
        timeout_s=s.conversion_timeout_s,
        work_dir=s.work_dir,
        memory_mb=s.render_memory_mb,
    )


def open_document(
    source: DocumentInput,
    *,
    name: str | None = None,
    settings: Settings | None = None,
    s3_client: Any = None,
    pdf_bytes: bytes | None = None,
) -> Document:
    return Document(source, name=name, settings=settings, s3_client=s3_client, pdf_bytes=pdf_bytes)


def render_pages(
    source: DocumentInput, *, name: str | None = None, settings: Settings | None = None, s3_client: Any = None
) -> Iterator[PageFrame]:
    with open_document(source, name=name, settings=settings, s3_client=s3_client) as doc:
        yield from doc.pages()
