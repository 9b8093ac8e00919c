"""Backfill: shard planning, and shard runs against moto's S3 on 127.0.0.1 with the embedded index and the
tiny model — the same ingest entry point as the Lambda, so re-runs and overlapping Lambda ingests add nothing."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
from urllib.parse import quote_plus

import pytest

from engine.backfill import (
    SourceObject,
    list_source,
    load_record,
    plan_shards,
    record_key,
    run_shard,
    shard_of,
)
from engine.config import Settings
from engine.errors import ConfigError
from engine.service import DocVision
from tests.fixtures import documents as d
from tests.integration import test_handlers
from tests.integration.test_handlers import BUCKET, invoke, put_event

moto_url, aws = test_handlers.moto_url, test_handlers.aws  # the Lambda tests' AWS account (fixtures)

SOURCE = f"s3://{BUCKET}/archive/"


# ------------------------------------------------------------------------------------------- planning
def _keys(n: int) -> list[SourceObject]:
    rng = random.Random(7)
    names = ["a", "b/c", "ünïcode", "with space", "x+y", "deep/er/path", "%41"]
    return [
        SourceObject(f"archive/{rng.choice(names)}-{i}.pdf", f"etag{i}", rng.randint(1, 10**6))
        for i in range(n)
    ]


@pytest.mark.parametrize("shards", [1, 2, 7, 64])
def test_every_key_lands_in_exactly_one_shard_whatever_the_listing_order(shards: int) -> None:
    objs = _keys(2000)
    plan = plan_shards(objs, shards)
    assigned = [o.key for objs_i in plan.keys for o in objs_i]
    assert sorted(assigned) == sorted(o.key for o in objs)  # every key, none twice
    for i, objs_i in enumerate(plan.keys):
        assert all(shard_of(o.key, shards) == i for o in objs_i)
    shuffled = objs[:] + objs[:50]  # another order, and a listing that repeats keys
    random.Random(1).shuffle(shuffled)
    assert plan_shards(shuffled, shards).keys == plan.keys
    if shards > 1:  # keys spread over the shards (a hash, not a range of the listing)
        sizes = [len(k) for k in plan.keys]
        assert min(sizes) > 0.5 * 2000 / shards
    grown = plan_shards(objs + _keys(2100)[2000:], shards)  # keys added later do not move the others
    for i, objs_i in enumerate(plan.keys):
        assert set(o.key for o in objs_i) <= set(o.key for o in grown.keys[i])


def test_bad_shard_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        plan_shards([], 0)
    with pytest.raises(ConfigError, match="outside 0..1"):
        run_shard(None, None, SOURCE, shard=2, shards=2, objects=[])
    with pytest.raises(ConfigError, match="s3://bucket/prefix"):
        list_source(None, "/local/folder")


# --------------------------------------------------------------------------------------- shard runs
class CountingEmbedder:
    """The real embedder, counting pages; ``kill_after`` pages raises an exception nothing catches (a kill)."""

    def __init__(self, inner, kill_after: int | None = None) -> None:
        self.inner, self.kill_after, self.pages = inner, kill_after, 0

    def embed_images(self, images):
        if self.kill_after is not None and self.pages + len(images) > self.kill_after:
            raise Killed
        self.pages += len(images)
        return self.inner.embed_images(images)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class Killed(BaseException):
    """SIGKILL stand-in: not an Exception, so no handler in the backfill path swallows it."""


@pytest.fixture
def archive(aws, tmp_path) -> dict[str, int]:
    """Documents under archive/ (key → pages), a corrupt one, a folder marker, and an object outside it."""
    docs = {"archive/a.pdf": 2, "archive/b/c.pdf": 3, "archive/with space.pdf": 4, "archive/d.pdf": 5}
    for key, pages in docs.items():
        body = d.long_pdf(tmp_path / f"{pages}.pdf", pages).read_bytes()
        aws["s3"].put_object(Bucket=BUCKET, Key=key, Body=body)
    aws["s3"].put_object(Bucket=BUCKET, Key="archive/broken.pdf", Body=b"%PDF-1.7\n" + b"\x00junk" * 200)
    aws["s3"].put_object(Bucket=BUCKET, Key="archive/folder/", Body=b"")
    aws["s3"].put_object(Bucket=BUCKET, Key="elsewhere/e.pdf", Body=(tmp_path / "2.pdf").read_bytes())
    return docs


def _service(embedder, aws, kill_after: int | None = None) -> DocVision:
    return DocVision(Settings(), embedder=CountingEmbedder(embedder, kill_after), s3_client=aws["s3"])


def test_shards_ingest_their_documents_and_a_rerun_adds_nothing(aws, archive, embedder, tmp_path) -> None:
    svc = _service(embedder, aws)
    results = [run_shard(svc, aws["s3"], SOURCE, shard=i, shards=2) for i in range(2)]
    assert sum(r.documents for r in results) == 5  # 4 documents + the corrupt one; not the folder marker
    assert {k for r in results for k in r.entries} == set(archive) | {"archive/broken.pdf"}
    assert sum(r.done for r in results) == 4 and sum(r.failed for r in results) == 1
    assert sum(r.pages_embedded for r in results) == sum(archive.values()) == svc.embedder.pages
    assert svc.index.count() == sum(archive.values())
    for r in results:  # each shard wrote its record, and the corrupt document is in it with its code
        record = json.loads(svc.store.get(record_key(SOURCE, r.shard, 2)))
        assert record["entries"] == r.entries
    broken = next(r.entries["archive/broken.pdf"] for r in results if "archive/broken.pdf" in r.entries)
    assert broken["status"] == "failed" and broken["error"]["code"] == "corrupt_document"
    for key, pages in archive.items():  # the Lambda's ids and source URIs
        entry = next(r.entries[key] for r in results if key in r.entries)
        assert svc.index.stored_pages(entry["document_id"]) == set(range(1, pages + 1))
        assert svc.index.documents_for_source(f"s3://{BUCKET}/{key}") == {entry["document_id"]}
    pngs = svc.store.list("pages/")
    assert len(pngs) == sum(archive.values())

    again = [run_shard(svc, aws["s3"], SOURCE, shard=i, shards=2) for i in range(2)]
    assert sum(r.pages_embedded for r in again) == 0 and sum(r.skipped for r in again) == 5
    assert svc.embedder.pages == sum(archive.values()) and svc.index.count() == sum(archive.values())

    # A changed object is ingested again (new ETag) and replaces its old version; nothing else moves.
    aws["s3"].put_object(
        Bucket=BUCKET, Key="archive/a.pdf", Body=d.long_pdf(tmp_path / "6.pdf", 6).read_bytes()
    )
    third = [run_shard(svc, aws["s3"], SOURCE, shard=i, shards=2) for i in range(2)]
    assert sum(r.pages_embedded for r in third) == 6 and sum(r.skipped for r in third) == 4
    assert svc.index.count() == sum(archive.values()) - 2 + 6


def test_lambda_then_backfill_and_backfill_then_lambda_embed_nothing_twice(aws, archive) -> None:
    import handlers.common

    first = invoke("ingest", put_event("archive/d.pdf"))["results"][0]  # the Lambda got there first
    assert first["pages_embedded"] == 5
    svc = handlers.common.service()  # the same container state the Lambda uses (one embedded index)
    svc.__dict__["embedder"] = counting = CountingEmbedder(svc.embedder)
    r = run_shard(svc, aws["s3"], SOURCE, shard=0, shards=1)
    assert r.entries["archive/d.pdf"]["pages_embedded"] == 0
    assert r.entries["archive/d.pdf"]["pages_already_stored"] == 5
    assert r.entries["archive/d.pdf"]["document_id"] == first["document_id"]
    assert counting.pages == sum(archive.values()) - 5
    after = invoke("ingest", put_event("archive/b/c.pdf"))["results"][0]  # a late Lambda event
    assert after["pages_embedded"] == 0 and after["pages_already_stored"] == 3
    assert counting.pages == sum(archive.values()) - 5 and svc.index.count() == sum(archive.values())


def test_a_killed_run_resumes_where_it_stopped(aws, archive, embedder) -> None:
    total = sum(archive.values())
    killed = _service(embedder, aws, kill_after=7)  # dies inside the third document (key order: a, b/c, d...)
    with pytest.raises(Killed):
        run_shard(killed, aws["s3"], SOURCE, shard=0, shards=1)
    entries, _ = load_record(killed.store, record_key(SOURCE, 0, 1))  # the record + progress after it
    assert [k for k, e in entries.items() if e["status"] == "done"] == [
        "archive/a.pdf",
        "archive/b/c.pdf",
    ]
    stored_before = killed.index.count()
    assert 5 <= stored_before < total  # the third document's first batch was stored before the kill
    killed.index.close()

    resumed = _service(embedder, aws)
    r = run_shard(resumed, aws["s3"], SOURCE, shard=0, shards=1)
    assert r.skipped == 3 and r.done == 4 and r.failed == 1  # a, b/c and broken.pdf from the record
    assert r.entries["archive/d.pdf"]["pages_already_stored"] == stored_before - 5
    assert killed.embedder.pages + resumed.embedder.pages == total  # no page embedded twice
    assert resumed.index.count() == total


def _inventory(aws, rows: list[list[str]], fmt: str = "CSV") -> str:
    """An S3 Inventory report (manifest.json + one gzipped CSV part) in the bucket."""
    buf = io.StringIO()
    csv.writer(buf, quoting=csv.QUOTE_ALL).writerows(rows)
    part = "inventory/docvision-documents/all/data/part-0.csv.gz"
    aws["s3"].put_object(Bucket=BUCKET, Key=part, Body=gzip.compress(buf.getvalue().encode()))
    manifest = {
        "sourceBucket": BUCKET, "destinationBucket": f"arn:aws:s3:::{BUCKET}", "fileFormat": fmt,
        "fileSchema": "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, ETag",
        "files": [{"key": part, "size": 1, "MD5checksum": "x"}],
    }  # fmt: skip
    key = "inventory/docvision-documents/all/2026-11-25T00-00Z/manifest.json"
    aws["s3"].put_object(Bucket=BUCKET, Key=key, Body=json.dumps(manifest).encode())
    return f"s3://{BUCKET}/{key}"


def test_inventory_manifest_plans_the_same_shards_as_a_listing(aws, archive) -> None:
    listed = list(list_source(aws["s3"], SOURCE))
    rows = [[BUCKET, quote_plus(o.key), "v1", "true", "false", str(o.size), o.etag] for o in listed]
    rows += [
        [BUCKET, quote_plus("archive/old.pdf"), "v0", "false", "false", "10", "e"],  # not the latest version
        [BUCKET, quote_plus("archive/deleted.pdf"), "v2", "true", "true", "0", ""],  # a delete marker
        [BUCKET, quote_plus("elsewhere/e.pdf"), "v1", "true", "false", "10", "e"],  # outside the prefix
    ]
    manifest = _inventory(aws, rows)
    from_inventory = list(list_source(aws["s3"], SOURCE, manifest))
    assert sorted(o.key for o in from_inventory) == sorted(o.key for o in listed)
    assert "archive/with space.pdf" in {o.key for o in from_inventory}  # URL-decoded
    a = plan_shards(from_inventory, 3).keys
    b = plan_shards(listed, 3).keys
    assert [[o.key for o in s] for s in a] == [[o.key for o in s] for s in b]
    with pytest.raises(ConfigError, match="not 'other'"):
        list(list_source(aws["s3"], "s3://other/archive/", manifest))


def test_cli_plans_then_runs_a_shard_from_the_batch_array_index(aws, archive, monkeypatch, capsys) -> None:
    from engine.cli import main

    assert main(["backfill", SOURCE, "--shards", "3"]) == 0
    plan = capsys.readouterr().out
    assert "5 documents" in plan and "array job of size 3" in plan
    expected = plan_shards(list_source(aws["s3"], SOURCE), 3).keys[1]
    broken = sum(o.key == "archive/broken.pdf" for o in expected)
    monkeypatch.setenv("AWS_BATCH_JOB_ARRAY_INDEX", "1")
    assert main(["backfill", SOURCE, "--shards", "3"]) == 0
    summary = " ".join(capsys.readouterr().out.split())
    assert f"{len(expected) - broken} of {len(expected)} documents done" in summary
    assert f"{broken} failed" in summary
    record = json.loads(DocVision(Settings()).store.get(record_key(SOURCE, 1, 3)))
    assert sorted(record["entries"]) == [o.key for o in expected]
    with pytest.raises(SystemExit, match="shard number"):
        main(["backfill", SOURCE, "--shards", "3", "--shard", "x"])


# ------------------------------------------------------------------------------- issue 23 items 10 and 13
def test_a_key_deleted_since_the_listing_is_gone_not_an_error(aws, archive, embedder) -> None:
    listed = list(list_source(aws["s3"], SOURCE))
    aws["s3"].delete_object(Bucket=BUCKET, Key="archive/a.pdf")  # deleted between the listing and its turn
    svc = _service(embedder, aws)
    r = run_shard(svc, aws["s3"], SOURCE, shard=0, shards=1, objects=listed)
    assert r.entries["archive/a.pdf"]["status"] == "gone"
    assert r.errors == 0 and r.gone == 1 and r.done == 3  # before: an error, so the shard never succeeded
    again = run_shard(svc, aws["s3"], SOURCE, shard=0, shards=1, objects=listed)
    assert again.errors == 0 and again.skipped == 5 and again.pages_embedded == 0


class _Written:
    """A local store that counts the bytes put into it."""

    def __init__(self, inner) -> None:
        self.inner, self.bytes = inner, 0

    def put(self, key, data, content_type="application/octet-stream"):
        self.bytes += len(data)
        return self.inner.put(key, data, content_type)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _record_bytes(tmp_path, n: int) -> tuple[int, int]:
    """(bytes written, final record size) for a shard of n documents, each ingested instantly."""
    import types

    from engine.storage import LocalStore

    store = _Written(LocalStore(tmp_path / f"store-{n}"))
    done = types.SimpleNamespace(complete=True, document_id="d" * 64, page_count=1, pages_embedded=1,
                                 pages_already_stored=0)  # fmt: skip
    fake = types.SimpleNamespace(store=store, s3_client=None, ingest=lambda *a, **k: done)
    objs = [SourceObject(f"archive/{i:06d}.pdf", f"etag-{i:032d}", 100) for i in range(n)]
    run_shard(fake, None, SOURCE, shard=0, shards=1, objects=objs)
    return store.bytes, len(store.inner.get(record_key(SOURCE, 0, 1)))


def test_the_shard_record_costs_linear_bytes(tmp_path) -> None:
    """Before: the whole record after every document, n²/2 entries written (1,000 documents: ~500x the record)."""
    small, small_record = _record_bytes(tmp_path, 500)
    large, large_record = _record_bytes(tmp_path, 1000)
    assert (
        large <= 5 * large_record and small <= 5 * small_record
    )  # every entry written a bounded number of times
    assert large < 2.5 * small  # doubling the shard about doubles the bytes


def test_a_resume_reads_the_progress_after_the_record(tmp_path) -> None:
    import types

    from engine.storage import LocalStore

    store = LocalStore(tmp_path / "store")
    calls: list[str] = []
    kill = [True]

    def ingest(source, **k):
        if len(calls) == 100 and kill[0]:
            kill[0] = False
            raise Killed
        calls.append(source.key)
        return types.SimpleNamespace(complete=True, document_id="d" * 64, page_count=1, pages_embedded=1,
                                     pages_already_stored=0)  # fmt: skip

    fake = types.SimpleNamespace(store=store, s3_client=None, ingest=ingest)
    objs = [SourceObject(f"archive/{i:04d}.pdf", f"e{i}", 100) for i in range(150)]
    with pytest.raises(Killed):
        run_shard(fake, None, SOURCE, shard=0, shards=1, objects=objs)
    entries, _ = load_record(store, record_key(SOURCE, 0, 1))
    assert len(entries) == 100  # 64 in the rewritten record, 36 as progress entries after it
    r = run_shard(fake, None, SOURCE, shard=0, shards=1, objects=objs)
    assert r.skipped == 100 and r.done == 150 and len(calls) == 150 and len(set(calls)) == 150
    assert store.list("backfill/") == [record_key(SOURCE, 0, 1)]  # the progress folded in and removed
