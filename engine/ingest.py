"""Ingest: document → page frames (streamed) → page PNGs in the blob store → embeddings (bounded batches) → Qdrant.

Idempotent and resumable: pages already in the index are never re-embedded; a run that stops early
(deadline, crash, throttling) continues from the first page not stored. Versions of one source key are
ordered (``SourceVersion.sequencer``): an older version never replaces a newer one, and a new version replaces
the old one only once it is completely stored. Two keys holding the same bytes are independent: a
document's pages go only when no version record of any key holds it, decided by transactions on the
membership table (engine.index.membership).

``ingest_document`` is the one per-document entry point (Lambda handler, CLI, bulk backfill).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.config import Settings, get_settings
from engine.documents import S3Object, open_document, sniff
from engine.documents.source import DocumentInput, load_bytes
from engine.errors import ConversionTimeout, NotFound
from engine.index import PageIndex, PageRecord
from engine.index.membership import (
    Membership,
    MembershipTable,
    SourceVersion,
    VersionGone,
    local_sequencer,
    open_table,
)
from engine.index.text import PageTexts, ocr_text, pdf_page_texts
from engine.ports import Embedder
from engine.storage import BlobStore
from engine.storage.converted import ConvertedPdfs

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
    # "superseded": a newer version (or a deletion) of the key is already indexed; "gone": this version was
    # deleted for good (its pages went unless another key holds the same bytes)
    skipped: str | None = None
    converted: bool = False  # LibreOffice ran in this call (False when the stored converted PDF was reused)
    conversion_deferred: bool = False  # the conversion did not fit in the time left: a new invocation does it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressFn = Callable[[int, int], None]  # (pages done in this document, page_count)
DocumentsFn = Callable[[str], BlobStore]  # bucket → the store its documents are read from


def delete_document_everywhere(document_id: str, *, index: PageIndex, store: BlobStore) -> None:
    """Pages (points), page images and the converted PDF of a document no source key holds any more."""
    index.delete_document(document_id)
    for key in store.list(f"pages/{document_id}/"):
        store.delete(key)
    ConvertedPdfs(store).delete(document_id)


def open_membership(
    index: PageIndex, store: BlobStore, settings: Settings | None = None, table: MembershipTable | None = None
) -> Membership:
    """The membership rules over the configured table (DynamoDB, or SQLite beside a local store); a document
    no version holds any more is purged from this index and store."""
    s = settings or get_settings()
    return Membership(
        table or open_table(s, store),
        purge=lambda doc: delete_document_everywhere(doc, index=index, store=store),
        lease_s=s.membership_lease_s,
    )


@dataclass
class RemoveResult:
    removed_documents: list[str]
    current_removed: bool = False  # the key's current version was deleted: S3 may serve an older one now


def remove_source(
    version: SourceVersion,
    *,
    index: PageIndex,
    store: BlobStore,
    deleted_version_id: str | None = None,
    members: Membership | None = None,
) -> RemoveResult:
    """An S3 ObjectRemoved event: the key stops holding its document(s); documents nobody else holds go.

    A delete marker (or an unversioned delete) tombstones the key at ``version.sequencer`` so that late
    ObjectCreated events of older versions cannot bring it back. Deleting one version for good
    (``deleted_version_id``) forgets just that version, and an ingest of it still in flight gives up at
    ``complete``; when it was the key's current version, ``current_removed`` tells the caller to index the
    version S3 serves now (or tombstone the key when there is none)."""
    members = members or open_membership(index, store)
    if deleted_version_id:
        purged, was_current = members.remove_version(version.uri, deleted_version_id)
        result = RemoveResult(purged, was_current)
    else:
        result = RemoveResult(members.remove(version))
    if result.removed_documents:
        index.optimize()
    return result


def ingest_document(
    source: DocumentInput,
    *,
    embedder: Embedder,
    index: PageIndex,
    store: BlobStore,
    settings: Settings | None = None,
    name: str | None = None,
    source_uri: str | None = None,
    version: SourceVersion | None = None,
    expected_document_id: str | None = None,
    documents: DocumentsFn | None = None,
    start_page: int = 1,
    deadline: float | None = None,
    whole_invocation: bool = True,
    on_progress: ProgressFn | None = None,
    members: Membership | None = None,
) -> IngestResult:
    """Ingest one document. ``deadline`` is a time.monotonic() value; the run stops cleanly before it
    (conversion included) and returns ``complete=False`` with the page to continue from.

    ``version`` orders this run among the versions of its source key (default: now, i.e. newest);
    ``expected_document_id`` is what an earlier run of this job saw (continuations; informational: a
    superseded job gives up every claim of its version, whatever document it holds). ``start_page`` is only
    a hint: the run always continues from the first page not stored. S3Object sources are read through
    ``documents(bucket)``. ``whole_invocation``: this job has (nearly) all of its invocation's time; when it
    has not and a conversion would not fit in what is left, the job stops before converting so that the
    continuation converts with a whole invocation; with a whole invocation too short, ConversionTimeout
    (``permanent``) says which setting to raise."""
    s = settings or get_settings()
    started = time.monotonic()
    uri = source_uri or _source_uri(source, name)
    if version is None:
        # An S3 object without an event (backfill, extraction) ranks below every event of its key, so it never
        # replaces what the ingest queue indexed; a file is newest when it is ingested.
        version = (
            SourceVersion(uri, "", source.version_id)
            if isinstance(source, S3Object)
            else SourceVersion(uri, local_sequencer())
        )
    members = members or open_membership(index, store, s)

    newer = members.superseded_by(version)
    if newer is not None:
        orphans = members.abandon(version)
        log.info("superseded: a newer version of %s is indexed; nothing to do", uri)
        # report what the key shows now (the newer version's document; nothing for a deletion)
        shown = newer.document_id or ""
        stored = len(index.stored_pages(shown)) if shown else 0
        return IngestResult(shown, name or uri, uri, "", stored, 0, stored, True, None, time.monotonic() - started,
                            replaced_documents=orphans, skipped="superseded")  # fmt: skip

    if isinstance(source, S3Object):
        if documents is None:
            raise TypeError("S3Object sources need documents= (bucket → blob store)")
        try:
            data = documents(source.bucket).get(
                source.key, version_id=source.version_id, max_bytes=s.max_bytes
            )
        except NotFound:
            members.abandon(version)  # a pass of this version that ran before the object went: its claim goes
            raise
        name = name or source.uri
    else:
        loaded = load_bytes(source, name=name, max_bytes=s.max_bytes)
        data, name = loaded.data, loaded.name

    # Office/HTML: reuse the converted PDF stored by an earlier run; otherwise convert within the time left.
    open_kwargs: dict[str, Any] = {}
    converted = ConvertedPdfs(store)
    doc_id = hashlib.sha256(data).hexdigest()
    found = sniff(data)
    needs_conversion = bool(found.type and found.type.needs_conversion and not found.encrypted)
    if needs_conversion:
        cached = converted.get(doc_id)
        if cached is not None:
            open_kwargs["pdf_bytes"] = cached
    doc_settings = s
    if needs_conversion and "pdf_bytes" not in open_kwargs and deadline is not None:
        left = deadline - time.monotonic()
        if left <= 1 or (left < s.conversion_timeout_s and not whole_invocation):
            # not worth starting: the continuation converts with a whole invocation
            log.info("conversion of %s deferred to a new invocation (%.0f s left)", name, left)
            return _not_started(doc_id, name or uri, uri, started, deferred=True)
        if left < s.conversion_timeout_s:
            doc_settings = s.model_copy(update={"conversion_timeout_s": left})
    try:
        opened = open_document(data, name=name, settings=doc_settings, **open_kwargs)
    except ConversionTimeout as exc:
        if doc_settings is not s:  # cut short by the invocation's time, not by the configured limit
            if whole_invocation:  # even a whole invocation is too short: say what to raise
                raise ConversionTimeout(
                    f"the conversion needs more than the {doc_settings.conversion_timeout_s:.0f} s an invocation "
                    "leaves: raise the ingest function's timeout (IngestTimeoutSeconds, at most 900) or lower "
                    "DOCVISION_DEADLINE_MARGIN_S, or ingest this document with the Batch backfill",
                    document=name, permanent=True, setting="IngestTimeoutSeconds",
                    limit_s=round(doc_settings.conversion_timeout_s, 1),
                ) from exc  # fmt: skip
            log.info("deadline reached while converting %s; continuing in a new invocation", name)
            return _not_started(doc_id, name or uri, uri, started, deferred=True)
        raise

    with opened as doc:
        converted_now = needs_conversion and "pdf_bytes" not in open_kwargs
        pdf_bytes = getattr(doc, "pdf_bytes", None)
        if converted_now and pdf_bytes:
            converted.put(
                doc.document_id, pdf_bytes
            )  # once per document: continuations and extraction reuse it
        try:
            # the claim: from here until complete (or abandon), no purge of this document can run
            members.begin(version, doc.document_id)
        except VersionGone:
            log.info("this version of %s was deleted for good; nothing to ingest", uri)
            return IngestResult(doc.document_id, doc.name, uri, doc.type.value, doc.page_count, 0, 0, True, None,
                                time.monotonic() - started, skipped="gone")  # fmt: skip
        # the text channel's words: the PDF's text layer (the converted PDF of an Office document); images: none
        texts = pdf_page_texts(pdf_bytes or (data if doc.type.value == "pdf" else None), s, doc.name)
        # Conversion counts against the deadline: past it, checkpoint now (the converted PDF is stored, so the
        # continuation starts rendering at once). Otherwise at least one batch runs, so every call progresses.
        result = _embed_pages(doc, uri, embedder=embedder, index=index, store=store, deadline=deadline,
                              on_progress=on_progress, started=started, stop_if_late=converted_now,
                              texts=texts)  # fmt: skip
        result.converted = converted_now
        if not result.complete:
            return result
        is_current, orphans = members.complete(version, doc.document_id)
        if not is_current:
            # a newer version is current (or this version was deleted for good meanwhile): our claim went,
            # and with it our pages if no other key holds them
            result.skipped = "gone" if members.gone(uri, version.version_id) else "superseded"
        result.replaced_documents = [o for o in orphans if o != doc.document_id]
        if result.pages_embedded or orphans:
            index.optimize()  # embedded edge shard: index what changed (a server does it itself)
        result.seconds = time.monotonic() - started
        return result


def _source_uri(source: DocumentInput, name: str | None) -> str:
    """The source key versions are ordered under: S3 URI, file URI, else the name or the bytes' hash."""
    if isinstance(source, S3Object):
        return source.uri
    if isinstance(source, str | Path):
        return Path(source).resolve().as_uri()
    return name or f"sha256:{hashlib.sha256(source).hexdigest()}"


def _not_started(
    document_id: str, name: str, uri: str, started: float, *, deferred: bool = False
) -> IngestResult:
    return IngestResult(document_id, name, uri, "", 0, 0, 0, False, 1, time.monotonic() - started,
                        conversion_deferred=deferred)  # fmt: skip


def _embed_pages(
    doc: Any,
    uri: str,
    *,
    embedder: Embedder,
    index: PageIndex,
    store: BlobStore,
    deadline: float | None,
    on_progress: ProgressFn | None,
    started: float,
    stop_if_late: bool = False,
    texts: PageTexts | None = None,
) -> IngestResult:
    stored = index.stored_pages(doc.document_id)
    begin = next((n for n in range(1, doc.page_count + 1) if n not in stored), doc.page_count + 1)
    already = begin - 1
    result = IngestResult(
        doc.document_id, doc.name, uri, doc.type.value, doc.page_count, 0, already, False, begin, 0.0
    )
    if on_progress:
        on_progress(already, doc.page_count)
    if stop_if_late and deadline is not None and begin <= doc.page_count and time.monotonic() >= deadline:
        result.seconds = time.monotonic() - started
        return result  # the time went into converting: continue in a new invocation
    per_page_s = 0.0

    def flush(frames: list[Any]) -> None:
        nonlocal per_page_s
        t = time.monotonic()
        records = []
        text_on = texts is not None and getattr(index, "text_channel", False)
        words = texts([f.page_number for f in frames]) if texts is not None and text_on else {}
        for frame, emb in zip(frames, embedder.embed_images([f.image for f in frames]), strict=True):
            key = page_image_key(doc.document_id, frame.page_number)
            if not store.exists(key):
                store.put(key, frame.png_bytes(), "image/png")
            records.append(
                PageRecord(
                    document_id=doc.document_id, page_number=frame.page_number, page_count=doc.page_count,
                    vectors=emb.vectors, grid=emb.grid, patch_offset=emb.patch_offset, model_id=embedder.model_id,
                    source_uri=uri, image_key=key, width=frame.width, height=frame.height,
                    text=(words.get(frame.page_number) or ocr_text(frame)) if text_on else "",
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
    result.seconds = time.monotonic() - started
    return result
