"""Converted PDFs of Office/ODF/HTML documents, stored once per document and reused.

LibreOffice conversion is the slowest step before rendering and its output depends only on the document's
bytes, so it is kept under ``converted/<document_id>.pdf`` in the blob store (S3: ``derived/converted/…``):
continuations of a long document and extraction of an ingested one render the stored PDF instead of
converting again. Ingest's garbage collection deletes it with the document's pages.
"""

from __future__ import annotations

from engine.errors import NotFound
from engine.storage import BlobStore


def converted_pdf_key(document_id: str) -> str:
    return f"converted/{document_id}.pdf"


class ConvertedPdfs:
    def __init__(self, store: BlobStore) -> None:
        self.store = store

    def get(self, document_id: str) -> bytes | None:
        try:
            data = self.store.get(converted_pdf_key(document_id))
        except NotFound:
            return None
        return data if data.startswith(b"%PDF-") else None  # a damaged copy is converted again

    def put(self, document_id: str, pdf: bytes) -> None:
        self.store.put(converted_pdf_key(document_id), pdf, "application/pdf")

    def delete(self, document_id: str) -> None:
        self.store.delete(converted_pdf_key(document_id))
