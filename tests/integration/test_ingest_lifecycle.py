"""Data that is never lost, resurrected or stranded: S3 versions out of order, continuations of two versions,
two keys with the same bytes, deletions, DLQ replay, job states — the ingest and API handlers in-process
against moto's server on 127.0.0.1 and the embedded index (fixtures from test_handlers)."""

# ruff: noqa: F811 (the shared fixtures are imported from test_handlers)
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from tests.fixtures import documents as d
from tests.integration.test_handlers import BUCKET, aws, event, invoke, moto_url, put_event  # noqa: F401

pytestmark = pytest.mark.integration


def s3_event(
    key: str, sequencer: str, version_id: str | None = None, name: str = "ObjectCreated:Put"
) -> dict:
    ev = put_event(key)
    rec = ev["Records"][0]
    rec["eventName"] = name
    rec["s3"]["object"]["sequencer"] = sequencer
    if version_id:
        rec["s3"]["object"]["versionId"] = version_id
    return ev


def sqs_event(*bodies: dict | str) -> dict:
    return {
        "Records": [
            {
                "messageId": f"m-{i}",
                "eventSource": "aws:sqs",
                "body": b if isinstance(b, str) else json.dumps(b),
            }
            for i, b in enumerate(bodies)
        ]
    }


def svc():
    import handlers.common

    return handlers.common.service()


def page_pngs(aws_clients: dict) -> list[str]:
    listing = aws_clients["s3"].list_objects_v2(Bucket=BUCKET, Prefix="derived/pages/")
    return [o["Key"] for o in listing.get("Contents", [])]


def indexed_documents() -> set[str]:
    hits = svc().index.search(svc().embedder.embed_queries(["x"])[0], top_k=100, mode="exact")
    return {h.document_id for h in hits}


def versioned(aws_clients: dict) -> None:
    aws_clients["s3"].put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})


def put(aws_clients: dict, key: str, data: bytes) -> str | None:
    return aws_clients["s3"].put_object(Bucket=BUCKET, Key=key, Body=data).get("VersionId")


# ------------------------------------------------------------------------------------------ version order
def test_a_late_event_of_an_older_version_does_nothing(aws, tmp_path) -> None:
    versioned(aws)
    v1 = put(aws, "raw/doc.pdf", d.long_pdf(tmp_path / "v1.pdf", 3).read_bytes())
    v2 = put(aws, "raw/doc.pdf", d.long_pdf(tmp_path / "v2.pdf", 2).read_bytes())
    new = invoke("ingest", s3_event("raw/doc.pdf", "0055AED6DCD9028B00", v2))["results"][0]
    assert new["complete"] and new["page_count"] == 2
    late = invoke("ingest", s3_event("raw/doc.pdf", "0055AED6DCD9028A00", v1))["results"][0]
    assert late["skipped"] == "superseded" and late["pages_embedded"] == 0
    assert indexed_documents() == {new["document_id"]} and svc().index.count() == 2
    assert len(page_pngs(aws)) == 2


def test_continuations_of_two_versions_leave_only_the_newer(aws, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DOCVISION_DEADLINE_MARGIN_S", "0")
    versioned(aws)
    v1 = put(aws, "raw/doc.pdf", d.long_pdf(tmp_path / "v1.pdf", 6).read_bytes())
    first = invoke("ingest", s3_event("raw/doc.pdf", "00000000000000000A", v1), timeout_s=0.05)["results"][0]
    assert not first["complete"] and first["next_page"] == 3  # v1 checkpointed after one batch
    (msg,) = aws["sqs"].receive_message(QueueUrl=aws["queue"], MaxNumberOfMessages=10)["Messages"]

    v2 = put(aws, "raw/doc.pdf", d.long_pdf(tmp_path / "v2.pdf", 2).read_bytes())
    second = invoke("ingest", s3_event("raw/doc.pdf", "00000000000000000B", v2))["results"][0]
    # v1's claim is a running job's (its lease has not run out): v2 leaves it to v1's own next pass
    assert second["complete"] and second["replaced_documents"] == []

    late = invoke("ingest", sqs_event(msg["Body"]))  # v1's continuation arrives after v2 is indexed
    assert late["batchItemFailures"] == [] and late["results"][0]["skipped"] == "superseded"
    assert late["results"][0]["replaced_documents"] == [first["document_id"]]  # it gave its claim up
    assert indexed_documents() == {second["document_id"]} and svc().index.count() == 2
    assert svc().index.count(first["document_id"]) == 0
    assert all(second["document_id"] in k for k in page_pngs(aws)) and len(page_pngs(aws)) == 2


def test_a_newer_version_replaces_only_once_complete(aws, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DOCVISION_DEADLINE_MARGIN_S", "0")
    versioned(aws)
    v1 = put(aws, "raw/doc.pdf", d.long_pdf(tmp_path / "v1.pdf", 2).read_bytes())
    old = invoke("ingest", s3_event("raw/doc.pdf", "0A", v1))["results"][0]
    v2 = put(aws, "raw/doc.pdf", d.long_pdf(tmp_path / "v2.pdf", 6).read_bytes())
    partial = invoke("ingest", s3_event("raw/doc.pdf", "0B", v2), timeout_s=0.05)["results"][0]
    assert not partial["complete"]
    assert svc().index.count(old["document_id"]) == 2  # the old version stays searchable meanwhile
    (msg,) = aws["sqs"].receive_message(QueueUrl=aws["queue"], MaxNumberOfMessages=10)["Messages"]
    done = invoke("ingest", sqs_event(msg["Body"]))["results"][0]
    assert done["complete"] and done["replaced_documents"] == [old["document_id"]]
    assert indexed_documents() == {done["document_id"]} and svc().index.count() == 6


# ---------------------------------------------------------------------------- shared bytes and deletions
def test_two_keys_with_the_same_bytes_are_independent_and_deletes_clean_up(aws, tmp_path) -> None:
    same = d.long_pdf(tmp_path / "same.pdf", 2).read_bytes()
    put(aws, "raw/a.pdf", same)
    put(aws, "raw/b.pdf", same)
    a = invoke("ingest", s3_event("raw/a.pdf", "01"))["results"][0]
    b = invoke("ingest", s3_event("raw/b.pdf", "01"))["results"][0]
    shared = a["document_id"]
    assert b["document_id"] == shared and b["pages_embedded"] == 0

    put(aws, "raw/a.pdf", d.long_pdf(tmp_path / "other.pdf", 3).read_bytes())  # a overwritten
    a2 = invoke("ingest", s3_event("raw/a.pdf", "02"))["results"][0]
    assert a2["replaced_documents"] == []  # b still holds the shared document
    assert svc().index.count(shared) == 2 and indexed_documents() == {shared, a2["document_id"]}

    aws["s3"].delete_object(Bucket=BUCKET, Key="raw/b.pdf")
    gone = invoke("ingest", sqs_event(s3_event("raw/b.pdf", "02", name="ObjectRemoved:Delete")))
    assert gone["batchItemFailures"] == [] and gone["results"][0]["removed_documents"] == [shared]
    assert svc().index.count(shared) == 0 and not [k for k in page_pngs(aws) if shared in k]

    aws["s3"].delete_object(Bucket=BUCKET, Key="raw/a.pdf")
    invoke("ingest", s3_event("raw/a.pdf", "03", name="ObjectRemoved:DeleteMarkerCreated"))
    assert svc().index.count() == 0 and page_pngs(aws) == []

    # a late ObjectCreated for a version older than the delete does not bring the key back
    put(aws, "raw/a.pdf", same)
    late = invoke("ingest", s3_event("raw/a.pdf", "025"))["results"][0]
    assert late["skipped"] == "superseded" and svc().index.count() == 0


def test_sample_delete_event_is_accepted(aws, tmp_path) -> None:
    put(aws, "raw/shipping manifest.pdf", d.multipage_pdf(tmp_path / "m.pdf").read_bytes())
    doc = invoke("ingest", put_event("raw/shipping manifest.pdf"))["results"][0]["document_id"]
    out = invoke("ingest", event("s3-delete.json"))["results"][0]
    assert out["removed_documents"] == [doc] and svc().index.count() == 0


# --------------------------------------------------------------------------------------------------- DLQ
def test_a_dead_letter_message_replays_as_is(aws, tmp_path) -> None:
    put(aws, "raw/doc.pdf", b"%PDF-1.7\n" + b"\x00junk" * 100)
    out = invoke("ingest", sqs_event(s3_event("raw/doc.pdf", "01")))
    assert out["batchItemFailures"] == [] and out["results"][0]["error"]["code"] == "corrupt_document"
    (msg,) = aws["sqs"].receive_message(QueueUrl=aws["dlq"])["Messages"]

    put(aws, "raw/doc.pdf", d.long_pdf(tmp_path / "fixed.pdf", 2).read_bytes())  # the cause is fixed
    # what `aws sqs start-message-move-task` does: the same body, delivered from the ingest queue
    aws["sqs"].send_message(QueueUrl=aws["queue"], MessageBody=msg["Body"])
    (moved,) = aws["sqs"].receive_message(QueueUrl=aws["queue"])["Messages"]
    replay = invoke("ingest", sqs_event(moved["Body"]))
    assert replay["batchItemFailures"] == [] and replay["results"][0]["complete"]
    assert replay["results"][0]["pages_embedded"] == 2 and svc().index.count() == 2


def test_a_dlq_send_failure_fails_only_its_record(aws, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("INGEST_DLQ_URL", f"{aws['queue'].rsplit('/', 1)[0]}/no-such-queue")
    put(aws, "raw/bad.pdf", b"%PDF-1.7\n" + b"\x00junk" * 100)
    put(aws, "raw/good.pdf", d.long_pdf(tmp_path / "g.pdf", 2).read_bytes())
    out = invoke("ingest", sqs_event(s3_event("raw/bad.pdf", "01"), s3_event("raw/good.pdf", "01")))
    assert out["batchItemFailures"] == [{"itemIdentifier": "m-0"}]
    assert [r.get("complete") for r in out["results"]] == [True]
    assert svc().index.count() == 2


# ------------------------------------------------------------------------------------ retries and logging
def test_in_progress_duplicate_is_retried_later_and_not_an_error(aws, tmp_path) -> None:
    import logging

    import handlers.common

    put(aws, "raw/doc.pdf", d.long_pdf(tmp_path / "d.pdf", 2).read_bytes())
    body = s3_event("raw/doc.pdf", "01")
    service = svc()
    original = type(service).ingest
    nested: list[dict] = []
    errors: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                errors.append(record)

    def ingest_and_meanwhile_redeliver(self, *a, **k):
        nested.append(invoke("ingest", {"Records": [{**sqs_event(body)["Records"][0], "messageId": "dup"}]}))
        return original(self, *a, **k)

    collector = Collect()
    handlers.common.logger._logger.addHandler(collector)  # the Powertools logger's stdlib logger
    type(service).ingest = ingest_and_meanwhile_redeliver
    try:
        out = invoke("ingest", sqs_event(body))
    finally:
        type(service).ingest = original
        handlers.common.logger._logger.removeHandler(collector)
    assert out["results"][0]["complete"] and nested[0]["batchItemFailures"] == [{"itemIdentifier": "dup"}]
    assert [r.getMessage() for r in errors] == []


def test_conversion_timeout_is_retried_not_dead_lettered(aws, tmp_path, monkeypatch) -> None:
    from engine.errors import ConversionTimeout

    put(aws, "raw/deck.pptx", d.pptx(tmp_path / "deck.pptx").read_bytes())
    service = svc()

    def slow(self, *a, **k):
        raise ConversionTimeout("LibreOffice did not finish", document="raw/deck.pptx")

    monkeypatch.setattr(type(service), "ingest", slow)
    out = invoke("ingest", sqs_event(s3_event("raw/deck.pptx", "01")))
    assert out["batchItemFailures"] == [{"itemIdentifier": "m-0"}]
    assert "Messages" not in aws["sqs"].receive_message(QueueUrl=aws["dlq"], WaitTimeSeconds=0)


def test_log_keys_are_cleared_between_invocations(aws, tmp_path) -> None:
    import handlers.common

    put(aws, "raw/doc.pdf", d.long_pdf(tmp_path / "d.pdf", 2).read_bytes())
    invoke("ingest", sqs_event(s3_event("raw/doc.pdf", "01")))
    assert "document" not in handlers.common.logger.get_current_keys()


class FlakyShard:
    """The edge shard with its first ``failures`` updates failing the way qdrant-edge fails (plain Exception)."""

    def __init__(self, shard, failures: int) -> None:
        self.shard, self.failures, self.calls = shard, failures, 0

    def update(self, op):
        self.calls += 1
        if self.calls <= self.failures:
            raise Exception(
                "Service runtime error: failed to write segment: Resource temporarily unavailable"
            )
        return self.shard.update(op)

    def __getattr__(self, name):
        return getattr(self.shard, name)


def test_transient_index_errors_are_retried_and_counted(aws, tmp_path, capsys) -> None:
    put(aws, "raw/a.pdf", d.long_pdf(tmp_path / "a.pdf", 2).read_bytes())
    put(aws, "raw/b.pdf", d.long_pdf(tmp_path / "b.pdf", 3).read_bytes())
    index = svc().index
    index.shard = FlakyShard(index.shard, failures=2)
    ok = invoke("ingest", sqs_event(s3_event("raw/a.pdf", "01")))
    assert ok["batchItemFailures"] == [] and ok["results"][0]["complete"] and index.count() == 2

    index.shard = FlakyShard(index.shard.shard, failures=100)
    capsys.readouterr()
    failed = invoke("ingest", sqs_event(s3_event("raw/b.pdf", "01")))
    assert failed["batchItemFailures"] == [{"itemIdentifier": "m-0"}]
    emf = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{") and '"_aws"' in x]
    assert any(m.get("UpsertFailures") == [1.0] for m in emf)


def test_a_locked_embedded_index_is_a_typed_error(tmp_path) -> None:
    from engine.errors import IndexLocked
    from engine.index.edge import EdgeIndex

    path = tmp_path / "edge"
    EdgeIndex(path, model_id="m", dim=4).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from engine.index.edge import EdgeIndex; "
         f"idx = EdgeIndex({str(path)!r}, model_id='m', dim=4); print('open', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(IndexLocked) as exc:
            EdgeIndex(path, model_id="m", dim=4)
        assert exc.value.code == "index_locked" and "QDRANT_URL" in str(exc.value)
    finally:
        holder.kill()
        holder.wait(10)


# --------------------------------------------------------------------------------------------- job states
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _async_job(monkeypatch, body: dict) -> tuple[str, list]:
    import handlers.api

    pending: list = []
    monkeypatch.setattr(handlers.api, "_invoke_async", pending.append)
    ev = event("extract.json")
    ev["body"] = json.dumps({**body, "schema_name": "shipping_manifest", "mode": "async"})
    out = invoke("api", ev)
    assert out["statusCode"] == 202, out
    return json.loads(out["body"])["job_id"], pending


def _job(job_id: str) -> dict:
    ev = event("jobs-get.json")
    ev["path"] = f"/jobs/{job_id}"
    ev["pathParameters"] = {"job_id": job_id}
    out = invoke("api", ev)
    return json.loads(out["body"])


def test_every_job_failure_is_recorded(aws, tmp_path, monkeypatch) -> None:
    put(aws, "raw/m.pdf", d.multipage_pdf(tmp_path / "m.pdf").read_bytes())
    monkeypatch.setenv("DOCVISION_LLM_MODEL", "test-vlm")
    monkeypatch.setenv("DOCVISION_LLM_BASE_URL", f"http://127.0.0.1:{_closed_port()}/v1")
    monkeypatch.setenv("DOCVISION_EXTRACT_ATTEMPTS", "1")

    # the LLM endpoint refuses connections
    job_id, (payload,) = _async_job(monkeypatch, {"document": {"key": "raw/m.pdf"}})
    assert _job(job_id)["status"] == "queued"
    out = invoke("api", payload)
    assert out["status"] == "failed"
    job = _job(job_id)
    assert job["status"] == "failed" and job["error"]["code"] != "job_timeout", job

    # an AWS error (the bucket does not exist)
    job_id, (payload,) = _async_job(
        monkeypatch, {"document": {"bucket": "no-such-bucket", "key": "raw/x.pdf"}}
    )
    invoke("api", payload)
    job = _job(job_id)
    assert job["status"] == "failed" and job["error"]["code"] in ("aws_error", "not_found"), job

    # a duplicate invocation of a finished job changes nothing
    assert invoke("api", payload)["status"] == "failed" and _job(job_id)["error"] == job["error"]


def test_overdue_jobs_are_reported_failed(aws, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DOCVISION_JOB_TIMEOUT_S", "0.5")
    put(aws, "raw/m.pdf", d.multipage_pdf(tmp_path / "m.pdf").read_bytes())
    queued, _ = _async_job(monkeypatch, {"document": {"key": "raw/m.pdf"}})
    running, _ = _async_job(monkeypatch, {"document": {"key": "raw/m.pdf"}})
    assert svc().jobs.start(running)  # its invocation then dies (simulated Lambda timeout)
    assert _job(running)["status"] == "running"
    time.sleep(0.6)
    for job_id in (queued, running):
        job = _job(job_id)
        assert job["status"] == "failed" and job["error"]["code"] == "job_timeout", job
    assert not svc().jobs.start(queued)  # a late invocation does not revive it


# ------------------------------------------------------------------------------------- convert once, in time
def test_conversion_runs_once_and_counts_against_the_deadline(tmp_path, embedder, docs, monkeypatch) -> None:
    import types

    import engine.documents as documents
    import engine.ingest as ingest_mod
    from engine.config import Settings
    from engine.service import DocVision
    from engine.storage.converted import ConvertedPdfs

    dv = DocVision(
        Settings(index_path=tmp_path / "q", store=str(tmp_path / "store"), max_batch_size=2),
        embedder=embedder,
    )
    real_to_pdf, real_clock, offset = documents.to_pdf, time.monotonic, [0.0]
    timeouts: list[float] = []

    def converting(data, kind, name, settings):
        timeouts.append(settings.conversion_timeout_s)
        pdf = real_to_pdf(data, kind, name, settings)
        offset[0] = 1000.0  # the conversion used up the invocation
        return pdf

    monkeypatch.setattr(documents, "to_pdf", converting)
    monkeypatch.setattr(ingest_mod, "time", types.SimpleNamespace(monotonic=lambda: real_clock() + offset[0]))
    first = dv.ingest(docs["docx"], deadline=real_clock() + 120)
    assert timeouts and timeouts[0] <= 120  # the conversion's own timeout was cut to the time left
    assert first.converted and not first.complete and first.pages_embedded == 0 and first.next_page == 1
    assert ConvertedPdfs(dv.store).get(first.document_id) is not None  # kept: derived/converted/<doc>.pdf

    offset[0] = 0.0
    rest = dv.ingest(docs["docx"], start_page=first.next_page)  # the continuation
    assert rest.complete and not rest.converted and len(timeouts) == 1
    assert rest.document_id == first.document_id and dv.index.count(first.document_id) == rest.page_count
