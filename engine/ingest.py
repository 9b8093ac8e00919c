"""Ingest: document → page frames (streamed) → page PNGs in the blob store → embeddings (bounded batches) → Qdrant.

Idempotent and resumable: pages already in the index are never re-embedded; a run that stops early
(deadline, crash, throttling) continues from the first page not stored. Re-ingesting changed bytes
under the same source key replaces the old document's points once the new ones are all stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.documents import open_document
from engine.documents.source import DocumentInput
from engine.index import PageIndex, PageRecord
from engine.storage import BlobStore

log = logging.getLogger(__name__)


def page_image_key(document_id: str, page_number: int) -> str:
    return f"pages/{document_id}/{page_number:05d}.png"


@dataclass
class IngestResult:
    document_id: str
    name: str
    source_uri: str
    source_type: str
    page_count: int
    pages_embedded: int
    pages_already_stored: int
    complete: bool
    next_page: int | None  # checkpoint: first page not stored when complete is False
    seconds: float
    replaced_documents: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressFn = Callable[[int, int], None]  # (pages done in this document, page_count)


def ingest_document(
    source: DocumentInput,
    *,
    embedder: Any,
    index: PageIndex,
    store: BlobStore,
    settings: Any = None,
    name: str | None = None,
    source_uri: str | None = None,
    start_page: int = 1,
    deadline: float | None = None,
    on_progress: ProgressFn | None = None,
    s3_client: Any = None,
) -> IngestResult:
    """Ingest one document. ``deadline`` is a time.monotonic() value; the run stops cleanly before it."""
    started = time.monotonic()
    with open_document(source, name=name, settings=settings, s3_client=s3_client) as doc:
        uri = source_uri or doc.uri or doc.name
        stored = index.stored_pages(doc.document_id)
        first_missing = next((n for n in range(1, doc.page_count + 1) if n not in stored), doc.page_count + 1)
        begin = max(start_page, first_missing)
        already = begin - 1
        result = IngestResult(
            doc.document_id, doc.name, uri, doc.type.value, doc.page_count, 0, already, False, begin, 0.0
        )
        if on_progress:
            on_progress(already, doc.page_count)
        per_page_s = 0.0

        def flush(frames: list[Any]) -> None:
            nonlocal per_page_s
            t = time.monotonic()
            records = []
            for frame, emb in zip(frames, embedder.embed_images([f.image for f in frames]), strict=True):
                key = page_image_key(doc.document_id, frame.page_number)
                if not store.exists(key):
                    store.put(key, frame.png_bytes(), "image/png")
                records.append(
                    PageRecord(
                        document_id=doc.document_id, page_number=frame.page_number, page_count=doc.page_count,
                        vectors=emb.vectors, grid=emb.grid, patch_offset=emb.patch_offset, model_id=embedder.model_id,
                        source_uri=uri, image_key=key, width=frame.width, height=frame.height,
                    )
                )  # fmt: skip
            index.upsert(records, last_safe_page=frames[0].page_number - 1)
            per_page_s = (time.monotonic() - t) / len(frames)
            result.pages_embedded += len(frames)
            result.next_page = frames[-1].page_number + 1
            if on_progress:
                on_progress(result.next_page - 1, doc.page_count)

        def batches() -> Iterator[list[Any]]:
            batch: list[Any] = []
            size: int | None = None
            for frame in doc.pages(start_page=begin):
                size = size or embedder.batch_size_for(embedder.visual_tokens(frame.width, frame.height))
                batch.append(frame)
                if len(batch) >= size:
                    yield batch
                    batch = []
            if batch:
                yield batch

        for batch in batches():
            if (
                deadline is not None
                and per_page_s
                and time.monotonic() + 1.5 * per_page_s * len(batch) > deadline
            ):
                log.info("deadline near: stopping %s at page %d (checkpoint)", doc.name, batch[0].page_number)
                result.seconds = time.monotonic() - started
                return result
            flush(batch)
        result.complete, result.next_page = True, None
        # Replace older versions of this source only now that the new one is completely stored.
        for old in index.documents_for_source(uri) - {doc.document_id}:
            index.delete_document(old)
            result.replaced_documents.append(old)
        if result.pages_embedded or result.replaced_documents:
            index.optimize()  # embedded edge shard: index what changed (a server does it itself)
        result.seconds = time.monotonic() - started
        return result
