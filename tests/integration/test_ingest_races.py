"""The version / delete / shared-bytes races of issue 23, run deterministically: one job is held at the exact
point of the race (threading.Event hooks on the functions the race goes through) while the other runs, against
moto's server on 127.0.0.1 with a versioned bucket and the embedded index; out-of-order, concurrent and
replayed events. Each of these lost or resurrected data before membership became transactional."""

# ruff: noqa: F811 (the shared fixtures are imported from test_handlers)
from __future__ import annotations

import threading
import types
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures import documents as d
from tests.integration.test_handlers import BUCKET, aws, invoke, moto_url  # noqa: F401
from tests.integration.test_ingest_lifecycle import page_pngs, put, s3_event, sqs_event, svc, versioned

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WAIT_S = 120  # only a hung test waits this long


class Held:
    """Runs ``fn`` in a thread; the hooks it passes through call ``reached()`` and block until ``release()``."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.at, self.go, self.done = threading.Event(), threading.Event(), threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = fn()
            except BaseException as exc:  # handed to the test
                self.error = exc
            finally:
                self.at.set()  # never leave the test waiting for a hook that did not come
                self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)

    def start(self) -> Held:
        self.thread.start()
        assert self.at.wait(WAIT_S), "the job never reached the held point"
        return self

    def reached(self) -> None:
        self.at.set()
        assert self.go.wait(WAIT_S), "never released"

    def finish(self) -> Any:
        self.go.set()
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive()
        return self.result


def _ingest(key: str, sequencer: str, version_id: str | None) -> Any:
    from engine.documents import S3Object
    from engine.index.membership import SourceVersion

    uri = f"s3://{BUCKET}/{key}"
    return svc().ingest(S3Object(BUCKET, key, version_id), name=uri, source_uri=uri,
                        version=SourceVersion(uri, sequencer, version_id))  # fmt: skip


# --------------------------------------------------------------------------------------------- item 3
def test_a_version_deleted_for_good_while_it_is_ingested_leaves_nothing(aws, tmp_path, monkeypatch) -> None:
    """ObjectRemoved:Delete of the version being ingested, arriving between its last page and `complete`."""
    import engine.ingest as ingest_mod

    versioned(aws)
    v1 = put(aws, "raw/doc.pdf", d.long_pdf(tmp_path / "v1.pdf", 3).read_bytes())
    real = ingest_mod._embed_pages
    job = Held(lambda: _ingest("raw/doc.pdf", "0A", v1))

    def embed_then_hold(*a: Any, **k: Any) -> Any:
        out = real(*a, **k)
        job.reached()  # every page stored, `complete` not yet called
        return out

    monkeypatch.setattr(ingest_mod, "_embed_pages", embed_then_hold)
    job.start()
    assert svc().index.count() == 3
    aws["s3"].delete_object(Bucket=BUCKET, Key="raw/doc.pdf", VersionId=v1)
    removed = invoke("ingest", sqs_event(s3_event("raw/doc.pdf", "0B", v1, name="ObjectRemoved:Delete")))
    assert removed["batchItemFailures"] == []
    result = job.finish()
    assert job.error is None, job.error
    assert not aws["s3"].list_object_versions(Bucket=BUCKET, Prefix="raw/").get("Versions")
    assert svc().index.count() == 0 and page_pngs(aws) == []  # before: 3 points and 3 PNGs stayed
    assert result.skipped == "gone"

    # replayed and out-of-order events of that version change nothing
    again = invoke(
        "ingest",
        sqs_event(
            s3_event("raw/doc.pdf", "0A", v1), s3_event("raw/doc.pdf", "0B", v1, name="ObjectRemoved:Delete")
        ),
    )
    assert again["batchItemFailures"] == [] and svc().index.count() == 0 and page_pngs(aws) == []


# --------------------------------------------------------------------------------------------- item 4
def test_a_superseded_version_that_failed_mid_way_leaves_nothing_after_redelivery(
    aws, tmp_path, monkeypatch
) -> None:
    """v1 is between two batches when v2 completes; v1 then stores a batch, fails transiently, and SQS delivers
    v1's original event again (no document_id in it)."""
    versioned(aws)
    v1 = put(aws, "raw/doc.pdf", d.long_pdf(tmp_path / "v1.pdf", 6).read_bytes())
    index = svc().index
    real_upsert, calls = index.upsert, []

    def upsert(records: list, **k: Any) -> Any:
        if records[0].source_uri.endswith("raw/doc.pdf") and records[0].page_count == 6:
            calls.append(records[0].page_number)
            if len(calls) == 2:
                job.reached()  # between v1's first and second batch
            if len(calls) == 3:
                raise ConnectionError("the index went away")  # transient: SQS redelivers
        return real_upsert(records, **k)

    monkeypatch.setattr(index, "upsert", upsert)
    job = Held(lambda: _ingest("raw/doc.pdf", "0A", v1))
    job.start()
    v2 = put(aws, "raw/doc.pdf", d.long_pdf(tmp_path / "v2.pdf", 2).read_bytes())
    new = invoke("ingest", s3_event("raw/doc.pdf", "0B", v2))["results"][0]
    assert new["complete"]
    job.finish()
    assert isinstance(job.error, ConnectionError)
    assert index.count(new["document_id"]) == 2

    redelivered = invoke("ingest", sqs_event(s3_event("raw/doc.pdf", "0A", v1)))
    assert redelivered["batchItemFailures"] == [] and redelivered["results"][0]["skipped"] == "superseded"
    assert index.count() == 2 and index.count(new["document_id"]) == 2  # before: v1's stale pages stayed
    assert len(page_pngs(aws)) == 2 and all(new["document_id"] in k for k in page_pngs(aws))


# --------------------------------------------------------------------------------------------- item 5
def test_deleting_one_key_while_another_ingests_the_same_bytes_keeps_the_live_document(
    aws, tmp_path, monkeypatch
) -> None:
    """a.pdf's delete has decided the shared document is unheld and is about to purge it when b.pdf (same bytes)
    starts; b.pdf's ingest runs to its end before the purge."""
    import engine.index.membership as membership_mod
    import engine.ingest as ingest_mod

    same = d.long_pdf(tmp_path / "same.pdf", 3).read_bytes()
    put(aws, "raw/a.pdf", same)
    a = invoke("ingest", s3_event("raw/a.pdf", "01"))["results"][0]
    shared = a["document_id"]
    put(aws, "raw/b.pdf", same)
    aws["s3"].delete_object(Bucket=BUCKET, Key="raw/a.pdf")

    real_purge = ingest_mod.delete_document_everywhere
    purging = Held(lambda: invoke("ingest", s3_event("raw/a.pdf", "02", name="ObjectRemoved:Delete")))

    def purge(document_id: str, **k: Any) -> None:
        if not purging.at.is_set():
            purging.reached()  # the purge of the shared document is decided; nothing deleted yet
        real_purge(document_id, **k)

    monkeypatch.setattr(ingest_mod, "delete_document_everywhere", purge)
    purging.start()

    # b.pdf starts now: it either finishes (the race is lost) or waits for the purge (transactional claims)
    b_blocked_or_done = threading.Event()
    real_time = membership_mod.time
    sleeps = types.SimpleNamespace(time=real_time.time, monotonic=real_time.monotonic,
                                   sleep=lambda s: (b_blocked_or_done.set(), real_time.sleep(s)))  # fmt: skip
    monkeypatch.setattr(membership_mod, "time", sleeps)
    b_job = threading.Thread(
        target=lambda: (results.append(_ingest("raw/b.pdf", "01", None)), b_blocked_or_done.set())
    )
    results: list[Any] = []
    b_job.start()
    assert b_blocked_or_done.wait(WAIT_S)
    out = purging.finish()
    b_job.join(WAIT_S)
    assert purging.error is None and out["results"][0]["removed_documents"] == [shared]
    (b,) = results
    assert b.complete and b.document_id == shared
    assert svc().index.count(shared) == 3  # before: 0 points while raw/b.pdf exists and is "complete"
    assert len([k for k in page_pngs(aws) if shared in k]) == 3

    # and once b.pdf goes too, nothing is left
    aws["s3"].delete_object(Bucket=BUCKET, Key="raw/b.pdf")
    invoke("ingest", s3_event("raw/b.pdf", "02", name="ObjectRemoved:Delete"))
    assert svc().index.count() == 0 and page_pngs(aws) == []


# --------------------------------------------------------------------------------------------- item 8
def test_deleting_the_current_version_by_id_indexes_the_version_s3_serves_again(aws, tmp_path) -> None:
    versioned(aws)
    v1 = put(aws, "raw/doc.pdf", d.long_pdf(tmp_path / "v1.pdf", 3).read_bytes())
    v2 = put(aws, "raw/doc.pdf", d.long_pdf(tmp_path / "v2.pdf", 2).read_bytes())
    old = invoke("ingest", s3_event("raw/doc.pdf", "01", v1))["results"][0]
    new = invoke("ingest", s3_event("raw/doc.pdf", "02", v2))["results"][0]
    assert new["replaced_documents"] == [old["document_id"]]

    aws["s3"].delete_object(Bucket=BUCKET, Key="raw/doc.pdf", VersionId=v2)  # v1 is current in S3 again
    out = invoke("ingest", sqs_event(s3_event("raw/doc.pdf", "03", v2, name="ObjectRemoved:Delete")))
    assert out["batchItemFailures"] == [] and out["results"][0]["removed_documents"] == [new["document_id"]]
    assert svc().index.count(old["document_id"]) == 3 and svc().index.count() == 3  # before: 0 (tombstoned)
    assert svc().membership.current(f"s3://{BUCKET}/raw/doc.pdf").version_id == v1

    # replays and late events: the remove again, v2's create again (gone), v1's create again (older)
    invoke("ingest", sqs_event(s3_event("raw/doc.pdf", "03", v2, name="ObjectRemoved:Delete"),
                               s3_event("raw/doc.pdf", "02", v2), s3_event("raw/doc.pdf", "01", v1)))  # fmt: skip
    assert svc().index.count(old["document_id"]) == 3 and svc().index.count() == 3
    assert len(page_pngs(aws)) == 3

    # deleting the last version leaves the key tombstoned and empty
    aws["s3"].delete_object(Bucket=BUCKET, Key="raw/doc.pdf", VersionId=v1)
    invoke("ingest", s3_event("raw/doc.pdf", "04", v1, name="ObjectRemoved:Delete"))
    assert svc().index.count() == 0 and page_pngs(aws) == []
