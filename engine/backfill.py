"""Backfill: ingest an existing S3 archive in shards (one machine per shard, e.g. an AWS Batch array job).

    plan_shards(list_source(s3, "s3://bucket/prefix"), shards=64)     # who does what, from a listing
    run_shard(service, s3, "s3://bucket/prefix", shard=3, shards=64)  # this machine's share

Assignment is stable: a key's shard is a hash of the key alone, so every key lands in exactly one shard
whatever order the listing (or an S3 Inventory report) comes in, and a key added later keeps out of the
other shards' way. Each document goes through the same ingest entry point as the Lambda
(``DocVision.ingest`` on the pinned object version, ``source_uri`` = ``s3://bucket/key``), so ids, page
images, replacement and the "never embed a stored page twice" rule are the Lambda's: a document ingested by
either path is not embedded again, and a document cut off half way resumes from its first missing page.

Each shard keeps a record in the blob store (``backfill/<source id>/<N>-shards/shard-<I>.json``): what is
done (by ETag), what failed and why, what was gone (deleted since the listing). After every document only
that document's entry is written (``shard-<I>/progress/<n>.json``, a few hundred bytes); the record is
rewritten, and the progress entries it now holds deleted, once as many entries have piled up as the record
holds: every byte is rewritten a bounded number of times, so a shard costs O(n) bytes, not O(n²). A re-run
reads the record plus the progress after it and skips what is done without downloading it; a killed run
continues from there.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import unquote, unquote_plus

from engine.documents import S3Object
from engine.errors import ConfigError, DocumentError, DocVisionError, NotFound
from engine.ports import IngestService

log = logging.getLogger(__name__)

RECORD_VERSION = 1


@dataclass(frozen=True)
class SourceObject:
    key: str
    etag: str
    size: int
    version_id: str | None = None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise ConfigError(f"{uri!r} is not an S3 location; give s3://bucket/prefix")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix


def shard_of(key: str, shards: int) -> int:
    """The shard that owns ``key``: a hash of the key alone (stable across listings and runs)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % shards


def _wanted(key: str, size: int) -> bool:
    # Folder markers ("a/b/") and empty objects are not documents.
    return not key.endswith("/") and size > 0


# ------------------------------------------------------------------------------------------ listings
def list_prefix(s3: Any, bucket: str, prefix: str) -> Iterator[SourceObject]:
    """Current objects under the prefix (ListObjectsV2, 1,000 keys a request)."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            if _wanted(o["Key"], o["Size"]):
                yield SourceObject(o["Key"], o["ETag"].strip('"'), o["Size"])


def read_inventory(s3: Any, manifest_uri: str, bucket: str, prefix: str) -> Iterator[SourceObject]:
    """Current objects under the prefix from an S3 Inventory report (``.../manifest.json``; CSV or Parquet).

    For very large buckets: one manifest read instead of a listing of millions of keys. Versioned
    inventories list every version; only the latest, non-delete-marker one is kept.
    """
    m_bucket, m_key = parse_s3_uri(manifest_uri)
    manifest = json.loads(s3.get_object(Bucket=m_bucket, Key=m_key)["Body"].read())
    if manifest.get("sourceBucket") not in (None, bucket):
        raise ConfigError(
            f"the inventory {manifest_uri} is of bucket {manifest['sourceBucket']!r}, not {bucket!r}; "
            "give the manifest.json of the bucket being backfilled"
        )
    fmt = manifest.get("fileFormat", "CSV").upper()
    columns = [c.strip() for c in manifest.get("fileSchema", "").split(",")]
    data_bucket = manifest.get("destinationBucket", f"arn:aws:s3:::{m_bucket}").rsplit(":", 1)[-1]
    for part in manifest["files"]:
        body = s3.get_object(Bucket=data_bucket, Key=part["key"])["Body"].read()
        if fmt == "CSV":
            if not columns or columns == [""]:
                raise ConfigError(
                    f"the inventory {manifest_uri} has no fileSchema; cannot read its CSV files"
                )
            text = gzip.decompress(body).decode() if body[:2] == b"\x1f\x8b" else body.decode()
            rows: Iterable[dict[str, Any]] = (
                dict(zip(columns, r, strict=False)) for r in csv.reader(io.StringIO(text))
            )
        elif fmt == "PARQUET":
            import pyarrow.parquet as pq

            rows = pq.read_table(io.BytesIO(body)).to_pylist()
        else:
            raise ConfigError(
                f"inventory format {fmt} is not supported; configure the inventory as CSV or Parquet"
            )
        for row in rows:
            obj = _inventory_object(row, fmt, bucket, prefix)
            if obj is not None:
                yield obj


def _inventory_object(row: dict[str, Any], fmt: str, bucket: str, prefix: str) -> SourceObject | None:
    if row.get("Bucket", bucket) != bucket:
        return None
    # CSV inventories URL-encode keys (space as '+'); Parquet ones do not.
    key = unquote_plus(row["Key"]) if fmt == "CSV" else row["Key"]
    if not key.startswith(prefix):
        return None
    if (
        str(row.get("IsLatest", "true")).lower() == "false"
        or str(row.get("IsDeleteMarker", "false")).lower() == "true"
    ):
        return None
    size = int(row.get("Size") or 0)
    if not _wanted(key, size):
        return None
    version = row.get("VersionId") or None
    return SourceObject(
        key, str(row.get("ETag") or "").strip('"'), size, unquote(version) if version else None
    )


def list_source(s3: Any, source: str, inventory: str | None = None) -> Iterator[SourceObject]:
    bucket, prefix = parse_s3_uri(source)
    if inventory:
        return read_inventory(s3, inventory, bucket, prefix)
    return list_prefix(s3, bucket, prefix)


# ------------------------------------------------------------------------------------------- planning
@dataclass
class ShardPlan:
    source: str
    shards: int
    keys: list[list[SourceObject]]  # keys[i]: shard i's objects, in key order

    def summary(self) -> list[dict[str, int]]:
        return [
            {"shard": i, "documents": len(objs), "bytes": sum(o.size for o in objs)}
            for i, objs in enumerate(self.keys)
        ]


def plan_shards(objects: Iterable[SourceObject], shards: int, source: str = "") -> ShardPlan:
    if shards < 1:
        raise ConfigError(f"--shards must be at least 1, got {shards}")
    plan = ShardPlan(source, shards, [[] for _ in range(shards)])
    seen: set[str] = set()
    for o in objects:
        if o.key in seen:  # an inventory part repeated, or a listing retried: one owner, one entry
            continue
        seen.add(o.key)
        plan.keys[shard_of(o.key, shards)].append(o)
    for objs in plan.keys:
        objs.sort(key=lambda o: o.key)
    return plan


# ----------------------------------------------------------------------------------------- the record
def source_id(source: str) -> str:
    return hashlib.sha256(source.rstrip("/").encode()).hexdigest()[:16]


def record_key(source: str, shard: int, shards: int) -> str:
    return f"backfill/{source_id(source)}/{shards}-shards/shard-{shard:05d}.json"


@dataclass
class ShardResult:
    source: str
    shard: int
    shards: int
    record_key: str
    documents: int = 0  # in this shard
    done: int = 0  # complete, this run or before
    skipped: int = 0  # complete in an earlier run (by the record; not downloaded)
    failed: int = 0  # permanent: the document cannot be ingested (corrupt, encrypted, unsupported...)
    gone: int = 0  # deleted since the listing: nothing to ingest (its ObjectRemoved event did the rest)
    errors: int = 0  # transient: retried by the next run
    pages_embedded: int = 0
    pages_already_stored: int = 0
    seconds: float = 0.0
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> what happened to it

    def to_dict(self) -> dict[str, Any]:
        return {"record_version": RECORD_VERSION, **asdict(self)}

    @property
    def pages_per_s(self) -> float:
        return self.pages_embedded / self.seconds if self.seconds else 0.0


FINISHED = ("done", "failed", "gone")  # not tried again for the same ETag
COMPACT_MIN = 64  # progress entries before the first rewrite of the record


def progress_prefix(key: str) -> str:
    return key.removesuffix(".json") + "/progress/"


def load_record(store: Any, key: str) -> tuple[dict[str, dict[str, Any]], int]:
    """The shard's entries (the record, then the progress written after it, later entries winning) and the
    number of the last progress entry."""
    entries: dict[str, dict[str, Any]] = {}
    upto = 0
    if store.exists(key):
        record = json.loads(store.get(key))
        found = record.get("entries", {})
        entries = found if isinstance(found, dict) else {}
        upto = int(record.get("progress_upto", 0))
    last = upto
    for part in store.list(progress_prefix(key)):
        n = int(part.rsplit("/", 1)[-1].removesuffix(".json"))
        if n <= upto:
            continue  # already in the record (its deletion was cut short)
        try:
            item = json.loads(store.get(part))
        except NotFound:
            continue
        entries[item["key"]] = item["entry"]
        last = max(last, n)
    return entries, last


ShardProgress = Callable[[str, int, int, int], None]  # (key, documents handled, documents, pages embedded)


def run_shard(
    service: IngestService,
    s3: Any,
    source: str,
    *,
    shard: int,
    shards: int,
    inventory: str | None = None,
    objects: Iterable[SourceObject] | None = None,
    on_document: ShardProgress | None = None,
    on_page: Callable[[int, int], None] | None = None,
) -> ShardResult:
    """Ingest shard ``shard`` of ``shards`` of ``source`` through ``service.ingest``; returns the tally.

    Permanent document errors are recorded and not retried for the same ETag; anything else (network,
    throttling, the index) is recorded as an error and retried by the next run of the shard.
    """
    if not 0 <= shard < shards:
        raise ConfigError(f"--shard {shard} is outside 0..{shards - 1} (--shards {shards})")
    bucket, _ = parse_s3_uri(source)
    listed = objects if objects is not None else list_source(s3, source, inventory)
    mine = plan_shards(listed, shards, source).keys[shard]
    key = record_key(source, shard, shards)
    store = service.store
    previous, last = load_record(store, key)
    result = ShardResult(source, shard, shards, key, documents=len(mine))
    started = time.monotonic()
    pending: list[str] = []  # progress entries not yet folded into the record
    in_record = len(previous)

    def save(final: bool = False) -> None:
        """Rewrite the record, then drop the progress it now holds. Until the end of the run it keeps the
        earlier runs' entries not reached yet; at the end, this listing's entries."""
        nonlocal in_record
        result.seconds = round(time.monotonic() - started, 3)
        merged = result.entries if final else {**previous, **result.entries}
        body = {**result.to_dict(), "entries": merged, "progress_upto": last}
        store.put(key, json.dumps(body, separators=(",", ":")).encode(), "application/json")
        for part in store.list(progress_prefix(key)):
            store.delete(part)
        pending.clear()
        in_record = len(merged)

    def progress(obj_key: str) -> None:
        """After every document: only its entry (a killed run resumes from here)."""
        nonlocal last
        last += 1
        part = f"{progress_prefix(key)}{last:09d}.json"
        store.put(
            part, json.dumps({"key": obj_key, "entry": result.entries[obj_key]}).encode(), "application/json"
        )
        pending.append(part)
        if len(pending) >= max(COMPACT_MIN, in_record):  # geometric: each rewrite follows as many new entries
            save()

    for n, obj in enumerate(mine, 1):
        before = previous.get(obj.key)
        if before and before.get("etag") == obj.etag and before.get("status") in FINISHED:
            result.entries[obj.key] = before
            result.skipped += 1
            result.done += before["status"] == "done"
            result.failed += before["status"] == "failed"
            result.gone += before["status"] == "gone"
        else:
            result.entries[obj.key] = _ingest_one(service, bucket, obj, on_page)
            status = result.entries[obj.key]["status"]
            result.done += status == "done"
            result.failed += status == "failed"
            result.gone += status == "gone"
            result.errors += status == "error"
            result.pages_embedded += result.entries[obj.key].get("pages_embedded", 0)
            result.pages_already_stored += result.entries[obj.key].get("pages_already_stored", 0)
            progress(obj.key)
        if on_document:
            on_document(obj.key, n, len(mine), result.pages_embedded)
    save(final=True)
    return result


def _ingest_one(
    service: IngestService, bucket: str, obj: SourceObject, on_page: Callable[[int, int], None] | None
) -> dict[str, Any]:
    uri = f"s3://{bucket}/{obj.key}"
    entry: dict[str, Any] = {"etag": obj.etag, "version_id": obj.version_id}
    try:
        # Pin the version listed, so bytes changing mid-run cannot mix two versions; the Lambda's own
        # event for a newer version does the rest.
        version = obj.version_id or _current_version(service, bucket, obj)
        r = service.ingest(S3Object(bucket, obj.key, version), name=uri, source_uri=uri, on_progress=on_page)
    except (Gone, NotFound):  # deleted since the listing: nothing to ingest, nothing to retry
        log.info("%s was deleted since it was listed", uri)
        return {**entry, "status": "gone"}
    except DocumentError as exc:  # the document itself: recorded, not retried for these bytes
        log.warning("document cannot be ingested: %s (%s)", uri, exc.code)
        return {**entry, "status": "failed", "error": {"code": exc.code, "message": str(exc)}}
    except DocVisionError as exc:
        log.warning("ingest failed, the next run retries it: %s (%s)", uri, exc.code)
        return {**entry, "status": "error", "error": {"code": exc.code, "message": str(exc)}}
    except Exception as exc:  # transient (network, throttling, the index): the next run retries it
        log.warning("ingest failed, the next run retries it: %s (%s)", uri, type(exc).__name__)
        return {**entry, "status": "error", "error": {"code": "transient", "message": type(exc).__name__}}
    return {
        **entry,
        "status": "done" if r.complete else "error",
        "document_id": r.document_id,
        "pages": r.page_count,
        "pages_embedded": r.pages_embedded,
        "pages_already_stored": r.pages_already_stored,
    }


class Gone(Exception):
    """The listed key does not exist any more."""


def _current_version(service: IngestService, bucket: str, obj: SourceObject) -> str | None:
    from botocore.exceptions import ClientError

    s3 = service.s3_client
    if s3 is None:
        return None
    try:
        head = s3.head_object(Bucket=bucket, Key=obj.key)
    except ClientError as exc:  # 404: deleted since the listing (405: a delete marker is current)
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound", "405"):
            raise Gone(obj.key) from exc
        raise
    if head["ETag"].strip('"') != obj.etag:
        log.info("s3://%s/%s changed since it was listed; ingesting the current version", bucket, obj.key)
    version = head.get("VersionId")
    return None if version in (None, "null") else version
