"""Membership records that outlive their writers (issue 23 gaps): a purger that died holding its lease, and
records of the blob-store format from before the transactional table. The ingest handler in-process against
moto's server on 127.0.0.1 (S3, SQS, DynamoDB) and the embedded index; the dying purger is held at a barrier
and killed there, not raced by luck."""

# ruff: noqa: F811 (the shared fixtures are imported from test_handlers)
from __future__ import annotations

import json
import time
import types
from typing import Any

import pytest

from tests.fixtures import documents as d
from tests.integration.test_handlers import BUCKET, aws, invoke, moto_url  # noqa: F401
from tests.integration.test_ingest_lifecycle import page_pngs, put, s3_event, svc
from tests.integration.test_ingest_races import Held

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Killed(BaseException):
    """What the purger's invocation meets: not an Exception, so nothing inside catches it (as with a timeout)."""


def _purge_entries(aws) -> list[dict]:
    out = aws["ddb"].query(
        TableName="membership",
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "purges"}},
    )
    return out["Items"]


def test_a_purge_whose_purger_died_is_finished_by_the_next_invocation(aws, tmp_path, monkeypatch) -> None:
    import engine.index.membership as membership_mod
    import engine.ingest as ingest_mod

    pdf = d.long_pdf(tmp_path / "a.pdf", 3).read_bytes()
    put(aws, "raw/a.pdf", pdf)
    doc = invoke("ingest", s3_event("raw/a.pdf", "01"))["results"][0]["document_id"]
    assert svc().index.count(doc) == 3 and len(page_pngs(aws)) == 3
    aws["s3"].delete_object(Bucket=BUCKET, Key="raw/a.pdf")

    real_purge = ingest_mod.delete_document_everywhere
    dying = Held(lambda: invoke("ingest", s3_event("raw/a.pdf", "02", name="ObjectRemoved:Delete")))

    def purge_then_die(document_id: str, **k: Any) -> None:
        dying.reached()  # the document is marked deleting, nothing deleted yet
        raise Killed()  # the invocation is killed here

    monkeypatch.setattr(ingest_mod, "delete_document_everywhere", purge_then_die)
    dying.start()
    # while the purger is (for all anyone knows) at work, its lease keeps sweepers off
    assert svc().membership.sweep_purges() == []
    dying.finish()
    assert isinstance(dying.error, Killed)
    monkeypatch.setattr(ingest_mod, "delete_document_everywhere", real_purge)
    assert svc().index.count(doc) == 3  # stranded: marked deleting, pages still there
    (entry,) = _purge_entries(aws)
    assert entry["sk"]["S"] == doc

    # an invocation within the lease leaves it alone
    put(aws, "raw/other.pdf", d.long_pdf(tmp_path / "o.pdf", 1).read_bytes())
    invoke("ingest", s3_event("raw/other.pdf", "01"))
    assert svc().index.count(doc) == 3

    # past the lease (longer than any invocation: the purger is dead), the next invocation takes over
    ahead = types.SimpleNamespace(
        time=lambda: time.time() + 2000, monotonic=time.monotonic, sleep=time.sleep, time_ns=time.time_ns
    )
    monkeypatch.setattr(membership_mod, "time", ahead)
    invoke("ingest", s3_event("raw/other.pdf", "01"))  # any event: the sweep runs first
    assert svc().index.count(doc) == 0 and not [k for k in page_pngs(aws) if doc in k]
    assert _purge_entries(aws) == [] and svc().membership.claims(doc) == 0
    assert (
        aws["ddb"]
        .get_item(TableName="membership", Key={"pk": {"S": f"doc#{doc}"}, "sk": {"S": "head"}})
        .get("Item")
        is None
    )
    # the document can be ingested again afterwards, whole
    put(aws, "raw/a.pdf", pdf)
    again = invoke("ingest", s3_event("raw/a.pdf", "03"))["results"][0]
    assert again["document_id"] == doc and again["complete"] and svc().index.count(doc) == 3


def test_two_sweepers_take_a_dead_purge_over_once(aws, tmp_path, monkeypatch) -> None:
    """Two sweeps at the same moment (barrier): one takes the purge over, the other's write loses."""
    import engine.index.membership as membership_mod

    m = svc().membership
    m.table.transact([
        membership_mod.Write("doc#dead", "head", {"claims": 0, "state": "deleting", "lease_until": 1.0}, 0),
        membership_mod.Write("purges", "dead", {"lease_until": 1.0}, 0),
    ])  # fmt: skip
    purged: list[str] = []
    first = Held(lambda: m.sweep_purges())
    real = m.purge

    def held_purge(document_id: str) -> None:
        purged.append(document_id)
        if not first.at.is_set():
            first.reached()  # the first sweeper has re-marked the document and is purging
        real(document_id)

    m.purge = held_purge
    first.start()
    other = svc().membership  # a second process's view
    other.purge = held_purge
    assert other.sweep_purges() == []  # the mark is fresh again: hands off
    assert first.finish() == ["dead"] and purged == ["dead"]
    assert _purge_entries(aws) == []


# ------------------------------------------------------------------------------------- the old format
def _to_old_format(aws, key: str, sequencer: str, document_id: str) -> None:
    """Turn a key's table records into the blob-store records a deployment before the table wrote."""
    from engine.index.membership import _h, sequence_key

    uri = f"s3://{BUCKET}/{key}"
    h = _h(uri)
    ddb = aws["ddb"]
    for sk in ("head", f"ver#{sequence_key(sequencer)}-{document_id}"):
        ddb.delete_item(TableName="membership", Key={"pk": {"S": f"src#{h}"}, "sk": {"S": sk}})
    ddb.delete_item(TableName="membership", Key={"pk": {"S": f"doc#{document_id}"}, "sk": {"S": "head"}})
    record = {"uri": uri, "sequencer": sequencer, "version_id": None, "document_id": document_id,
              "state": "complete", "updated_at": time.time() - 86400}  # fmt: skip
    s3 = aws["s3"]
    s3.put_object(Bucket=BUCKET, Key=f"derived/sources/{h}/{sequence_key(sequencer)}-{document_id}.json",
                  Body=json.dumps(record).encode())  # fmt: skip
    s3.put_object(
        Bucket=BUCKET, Key=f"derived/holders/{document_id}/{h}.json", Body=json.dumps({"uri": uri}).encode()
    )
    import handlers.common

    handlers.common.reset_service()  # the new code starts on the old data (a fresh container)


def _old_blobs(aws) -> list[str]:
    keys = []
    for prefix in ("derived/sources/", "derived/holders/"):
        keys += [
            o["Key"] for o in aws["s3"].list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        ]
    return keys


def test_old_format_records_are_imported_and_keep_shared_documents(aws, tmp_path) -> None:
    same = d.long_pdf(tmp_path / "same.pdf", 2).read_bytes()
    put(aws, "raw/old.pdf", same)
    old = invoke("ingest", s3_event("raw/old.pdf", "01"))["results"][0]["document_id"]
    _to_old_format(aws, "raw/old.pdf", "01", old)
    assert svc().membership.claims(old) == 0 and len(_old_blobs(aws)) == 2

    # a new key with the same bytes comes and goes: raw/old.pdf (old format) still holds the pages
    put(aws, "raw/new.pdf", same)
    invoke("ingest", s3_event("raw/new.pdf", "01"))
    aws["s3"].delete_object(Bucket=BUCKET, Key="raw/new.pdf")
    gone = invoke("ingest", s3_event("raw/new.pdf", "02", name="ObjectRemoved:Delete"))["results"][0]
    assert gone["removed_documents"] == []  # before: [old], and raw/old.pdf lost its pages
    assert svc().index.count(old) == 2 and len([k for k in page_pngs(aws) if old in k]) == 2
    assert _old_blobs(aws) == [] and svc().membership.claims(old) == 1  # imported, once
    assert svc().membership.current(f"s3://{BUCKET}/raw/old.pdf").document_id == old


def test_a_new_version_of_an_old_format_key_replaces_its_document(aws, tmp_path) -> None:
    put(aws, "raw/old.pdf", d.long_pdf(tmp_path / "v1.pdf", 2).read_bytes())
    v1 = invoke("ingest", s3_event("raw/old.pdf", "01"))["results"][0]["document_id"]
    _to_old_format(aws, "raw/old.pdf", "01", v1)

    # an event older than the imported version does nothing (its order is kept)
    late = invoke("ingest", s3_event("raw/old.pdf", "00"))["results"][0]
    assert late["skipped"] == "superseded"

    put(aws, "raw/old.pdf", d.long_pdf(tmp_path / "v2.pdf", 3).read_bytes())
    v2 = invoke("ingest", s3_event("raw/old.pdf", "02"))["results"][0]
    assert v2["complete"] and v2["replaced_documents"] == [v1]  # before: [], v1's 2 pages left behind
    assert svc().index.count(v1) == 0 and svc().index.count() == 3

    aws["s3"].delete_object(Bucket=BUCKET, Key="raw/old.pdf")
    invoke("ingest", s3_event("raw/old.pdf", "03", name="ObjectRemoved:Delete"))
    assert svc().index.count() == 0 and page_pngs(aws) == [] and _old_blobs(aws) == []
