"""Typed errors with stable codes.

Every error names the document (or object) it is about and says what to do next. `code` is stable and
meant for machines (API responses, metrics dimensions, DLQ records); the message is for people.
"""

from __future__ import annotations

from typing import Any


class DocVisionError(Exception):
    code = "docvision_error"
    http_status = 500

    def __init__(self, message: str, *, document: str | None = None, **details: Any) -> None:
        self.document = document
        self.details = details
        self.reason = message
        super().__init__(f"{document}: {message}" if document else message)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": str(self), "document": self.document, **self.details}


class DocumentError(DocVisionError):
    """The input document cannot be turned into pages."""

    http_status = 422


class EmptyDocument(DocumentError):
    code = "empty_document"


class UnsupportedDocument(DocumentError):
    code = "unsupported_type"
    http_status = 415


class CorruptDocument(DocumentError):
    code = "corrupt_document"


class EncryptedDocument(DocumentError):
    code = "encrypted_document"


class NoPages(DocumentError):
    code = "no_pages"


class DocumentTooLarge(DocumentError):
    code = "document_too_large"
    http_status = 413


class TooManyPages(DocumentError):
    code = "too_many_pages"
    http_status = 413


class ImageTooLarge(DocumentError):
    """Decompression-bomb guard: the image declares more pixels than the configured hard limit."""

    code = "image_too_large"
    http_status = 413


class ConversionFailed(DocumentError):
    code = "conversion_failed"


class ConversionEmpty(DocumentError):
    """LibreOffice produced pages with nothing on them (no text, a blank raster): it could not really read the
    file, and indexing white pages would be a silent empty success."""

    code = "conversion_empty"


class ConversionOutOfMemory(DocumentError):
    """LibreOffice reached its address-space limit (DOCVISION_RENDER_MEMORY_MB) while loading or converting: the
    document is too big for the limit, not corrupt (LibreOffice itself only says "could not be loaded")."""

    code = "conversion_memory_limit"
    http_status = 413


class ConversionTimeout(DocumentError):
    code = "conversion_timeout"


class IngestPassesExceeded(DocumentError):
    """A document re-queued more times than DOCVISION_MAX_INGEST_PASSES allows without finishing."""

    code = "ingest_passes_exceeded"


class XfaForm(DocumentError):
    """An XFA-only form: the pages hold Adobe's "please wait" placeholder, the content lives in XFA XML."""

    code = "xfa_form"


class RendererCrashed(DocumentError):
    """The isolated render worker died (a signal, e.g. a MuPDF heap corruption); the caller keeps running."""

    code = "renderer_crashed"


class RendererKilled(DocVisionError):
    """The render worker was killed by a signal the document did not cause (SIGKILL from the kernel's OOM killer
    or a person, SIGTERM): transient, not a document error, so the job is retried instead of dead-lettered."""

    code = "renderer_killed"
    http_status = 503


class RenderTimeout(DocumentError):
    """A page or the whole document took longer than the render time limits (wall or CPU)."""

    code = "render_timeout"


class DocumentTooComplex(DocumentError):
    """Rendering needed more memory than the render worker's address-space limit."""

    code = "document_too_complex"
    http_status = 413


class ConfigError(DocVisionError):
    code = "config_error"


class ModelIntegrityError(DocVisionError):
    code = "model_integrity"


class ModelMismatch(DocVisionError):
    code = "model_mismatch"
    http_status = 409


class TokenBudgetMismatch(ModelMismatch):
    """Same model, another visual-token budget (DOCVISION_MAX_VISUAL_TOKENS) than the collection's pages."""

    code = "token_budget_mismatch"


class TokenPoolMismatch(ModelMismatch):
    """The collection's pages were pooled at index time by another factor (DOCVISION_TOKEN_POOL_FACTOR)."""

    code = "token_pool_mismatch"


class UpsertFailed(DocVisionError):
    code = "upsert_failed"
    http_status = 503


class NotFound(DocVisionError):
    code = "not_found"
    http_status = 404


class SchemaError(DocVisionError):
    code = "schema_error"
    http_status = 400


class ExtractionFailed(DocVisionError):
    code = "extraction_failed"
    http_status = 502


class UpstreamUnavailable(DocVisionError):
    """The LLM endpoint answered with an HTTP error or could not be reached."""

    code = "upstream_unavailable"
    http_status = 503


class UpstreamTimeout(DocVisionError):
    code = "timeout"
    http_status = 504


class IndexLocked(DocVisionError):
    """The embedded index is a folder one process at a time may open."""

    code = "index_locked"
    http_status = 503


class TextChannelMissing(DocVisionError):
    """Text or hybrid search on a collection built before the text channel existed."""

    code = "text_channel_missing"
    http_status = 409


class InputTooLarge(DocVisionError):
    """An API input (image, text, JSON body or schema) is above a request limit."""

    code = "input_too_large"
    http_status = 413


class BadRequest(DocVisionError):
    code = "bad_request"
    http_status = 400


# Every DocumentError subclass by code, so a worker process can send an error across a pipe and the parent
# re-raise the same type.
def error_class(code: str) -> type[DocVisionError]:
    def walk(cls: type[DocVisionError]) -> list[type[DocVisionError]]:
        return [cls] + [c for sub in cls.__subclasses__() for c in walk(sub)]

    return next((c for c in walk(DocVisionError) if c.code == code), DocumentError)
