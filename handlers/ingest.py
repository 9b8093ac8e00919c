"""Ingest Lambda: S3 ObjectCreated / ObjectRemoved (through the ingest SQS queue, or direct) → the index.

One job per object event. Created: pages → embeddings → Qdrant, in version order (an older version never
replaces a newer one; see engine.ingest). Removed: the key's pages go unless another key holds the same bytes.
Duplicate deliveries of one object version are skipped (Powertools idempotency on DynamoDB); when the
invocation's remaining time runs short the document is checkpointed and its rest re-queued; a document that
can never be ingested (corrupt, encrypted, unsupported…) goes to the DLQ as ``{"job", "error", "failed_at"}``,
a body this handler accepts as is (replay = move the message back to the ingest queue); transient failures
are SQS batch item failures (Powertools BatchProcessor), retried by SQS, then moved to the same DLQ.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.typing import LambdaContext

from engine.documents import S3Object
from engine.errors import ConversionTimeout, DocumentError, IngestPassesExceeded, NotFound
from engine.index.membership import SourceVersion, local_sequencer
from handlers.common import logger, metrics, service, tracer, warm_model

Job = dict[str, Any]


# ------------------------------------------------------------------------------------------ event parsing
def jobs_from_body(body: dict[str, Any]) -> list[Job]:
    """Jobs in one SQS message body: an S3 notification, our continuation, or a dead-letter record."""
    if "job" in body and isinstance(body["job"], dict):  # a DLQ record moved back to the queue: replay it
        return [body["job"]]
    if "start_page" in body and "key" in body:  # our own continuation
        return [body]
    return [_s3_job(r) for r in body.get("Records", []) if "s3" in r]  # S3 → SQS (s3:TestEvent: none)


def jobs_from_event(event: dict[str, Any]) -> list[tuple[str | None, Job]]:
    """(SQS message id or None, job) for every record of a direct S3 or SQS event."""
    jobs: list[tuple[str | None, Job]] = []
    for record in event.get("Records", []):
        if record.get("eventSource") == "aws:sqs":
            jobs += [(record["messageId"], job) for job in jobs_from_body(json.loads(record["body"]))]
        elif record.get("eventSource") == "aws:s3" or "s3" in record:
            jobs.append((None, _s3_job(record)))
    return jobs


def _s3_job(record: dict[str, Any]) -> Job:
    obj = record["s3"]["object"]
    return {
        "op": "remove" if record.get("eventName", "").startswith("ObjectRemoved") else "ingest",
        "event": record.get("eventName", ""),
        "bucket": record["s3"]["bucket"]["name"],
        "key": unquote_plus(obj["key"]),  # keys in S3 events are URL-encoded (spaces arrive as '+')
        "version_id": obj.get("versionId"),
        "etag": obj.get("eTag"),
        # orders the events of one key; S3 always sends it, hand-written events get the time of arrival
        "sequencer": obj.get("sequencer") or local_sequencer(),
        "start_page": 1,
        "pass": 0,
    }


def _version(job: Job) -> SourceVersion:
    return SourceVersion(
        f"s3://{job['bucket']}/{job['key']}", job.get("sequencer") or "", job.get("version_id")
    )


# ------------------------------------------------------------------------------------------------- jobs
@lru_cache(maxsize=1)
def _idempotent_ingest() -> Any:
    """The idempotent ingest, built on first use from Settings (no configuration read at import time)."""
    s = service().settings
    config = IdempotencyConfig(
        # one object version, one pass (continuations count up ``pass``)
        event_key_jmespath="[bucket, key, version_id || etag, sequencer, pass]",
        expires_after_seconds=s.idempotency_ttl_s,
        raise_on_no_idempotency_key=True,
    )
    persistence = DynamoDBPersistenceLayer(table_name=s.idempotency_table)
    return config, idempotent_function(
        data_keyword_argument="job", persistence_store=persistence, config=config
    )(_ingest_object)


def ingest_object(job: Job, deadline: float, whole_invocation: bool = True) -> dict[str, Any]:
    _, fn = _idempotent_ingest()
    return fn(job=job, deadline=deadline, whole_invocation=whole_invocation)


def _ingest_object(job: Job, deadline: float, whole_invocation: bool = True) -> dict[str, Any]:
    svc = service()
    cap = svc.settings.max_ingest_passes
    if job.get("pass", 0) >= cap:  # a document that never finishes must not circle the queue for ever
        metrics.add_metric(name="IngestPassesExceeded", unit=MetricUnit.Count, value=1)
        raise IngestPassesExceeded(
            f"not finished after {cap} passes; raise DOCVISION_MAX_INGEST_PASSES or the ingest function's "
            "timeout (IngestTimeoutSeconds), or ingest it with the Batch backfill",
            document=f"s3://{job['bucket']}/{job['key']}", passes=job.get("pass", 0), setting="DOCVISION_MAX_INGEST_PASSES",
        )  # fmt: skip
    warm_model()
    uri = f"s3://{job['bucket']}/{job['key']}"
    try:
        result = svc.ingest(
            S3Object(job["bucket"], job["key"], job.get("version_id")),
            name=uri,
            source_uri=uri,
            version=_version(job),
            expected_document_id=job.get("document_id"),
            start_page=job.get("start_page", 1),
            deadline=deadline,
            whole_invocation=whole_invocation,
        )
    except (
        NotFound
    ):  # the object (version) was deleted before we got to it: its ObjectRemoved event handles it
        logger.info("object no longer exists; nothing to ingest")
        return {"key": job["key"], "skipped": "not_found"}
    if result.conversion_deferred:
        metrics.add_metric(name="ConversionsDeferred", unit=MetricUnit.Count, value=1)
    if (
        result.recall_check
    ):  # the plan's recall on this collection, measured after it grew (engine index check)
        metrics.add_metric(name="SearchRecallEstimate", unit=MetricUnit.NoUnit,
                           value=result.recall_check["recall_at_10"])  # fmt: skip
    metrics.add_metric(name="PagesRendered", unit=MetricUnit.Count, value=result.pages_embedded)
    metrics.add_metric(name="PagesEmbedded", unit=MetricUnit.Count, value=result.pages_embedded)
    if result.pages_embedded:
        metrics.add_metric(
            name="EmbedSecondsPerPage",
            unit=MetricUnit.Seconds,
            value=round(result.seconds / result.pages_embedded, 3),
        )
    if result.skipped:
        metrics.add_metric(name="StaleVersionsSkipped", unit=MetricUnit.Count, value=1)
    elif not result.complete:
        _requeue(
            {
                **job,
                "start_page": result.next_page,
                "document_id": result.document_id,
                "pass": job.get("pass", 0) + 1,
            }
        )
        metrics.add_metric(name="IngestContinuations", unit=MetricUnit.Count, value=1)
    else:
        metrics.add_metric(name="DocumentsIngested", unit=MetricUnit.Count, value=1)
    logger.info("ingested", extra={"result": result.to_dict()})
    return result.to_dict()


def remove_object(job: Job, deadline: float) -> dict[str, Any]:
    """ObjectRemoved: idempotent by itself (a tombstone per sequencer), so no idempotency record.

    Deleting the current version for good makes S3 serve the previous one again: that version is indexed
    at the deletion's sequencer (or the key is tombstoned when S3 serves nothing)."""
    svc = service()
    version = _version(job)
    deleted_version = job.get("version_id") if job.get("event") == "ObjectRemoved:Delete" else None
    outcome = svc.remove_source(version, deleted_version_id=deleted_version)
    removed = list(outcome.removed_documents)
    out: dict[str, Any] = {"key": job["key"], "removed_documents": removed}
    if outcome.current_removed:
        serving = _serving_version(job)
        if serving is None:
            removed += svc.remove_source(version).removed_documents
        else:
            logger.info("the current version was deleted; indexing the version S3 serves now")
            restore = {**job, "op": "ingest", "version_id": serving, "start_page": 1, "pass": 0}
            out["restored"] = ingest_object(restore, deadline)
    metrics.add_metric(name="DocumentsRemoved", unit=MetricUnit.Count, value=len(removed))
    logger.info("source removed", extra={"removed_documents": removed})
    return out


def _serving_version(job: Job) -> str | None:
    """The version id S3 serves for the key now ("null" in an unversioned bucket); None: nothing (404, or a
    delete marker is current)."""
    from botocore.exceptions import ClientError

    s3 = service().s3_client or _s3()
    try:
        head = s3.head_object(Bucket=job["bucket"], Key=job["key"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound", "405"):
            return None
        raise
    return str(head.get("VersionId") or "null")


def _s3() -> Any:
    import boto3

    return boto3.client("s3")


def _sqs() -> Any:
    import boto3

    return boto3.client("sqs")


def _requeue(job: Job) -> None:
    url = service().settings.ingest_queue_url
    if not url:
        raise RuntimeError("INGEST_QUEUE_URL is not set: the rest of the document cannot be re-queued")
    _sqs().send_message(QueueUrl=url, MessageBody=json.dumps(job))
    logger.info("checkpointed; rest of the document re-queued", extra={"job": job})


def _dead_letter(job: Job, exc: Exception) -> bool:
    """Permanent failure: straight to the DLQ as a body this handler replays as is. False if the send failed."""
    body = {
        "job": {**job, "pass": job.get("pass", 0)},
        "error": exc.to_dict() if hasattr(exc, "to_dict") else {"message": type(exc).__name__},
        "failed_at": time.time(),
    }
    logger.warning("document cannot be ingested", extra={"job": job, "error": body["error"]})
    url = service().settings.ingest_dlq_url
    if not url:
        return True
    try:
        _sqs().send_message(QueueUrl=url, MessageBody=json.dumps(body, default=str))
        return True
    except Exception:
        logger.exception("could not send the job to the DLQ; leaving it to SQS to retry")
        return False


class Retry(Exception):
    """This record should be retried by SQS (and reach the DLQ through the redrive policy if it keeps failing)."""


def run_job(job: Job, deadline: float, whole_invocation: bool = True) -> dict[str, Any]:
    """One job; raises Retry for what SQS should deliver again. Log keys are this job's only.
    ``whole_invocation``: no other job of this invocation ran before this one."""
    logger.append_keys(document=f"s3://{job['bucket']}/{job['key']}")
    try:
        if job.get("op") == "remove":
            return remove_object(job, deadline)
        return ingest_object(job, deadline, whole_invocation)
    except IdempotencyAlreadyInProgressError as exc:
        logger.info("the same object version is being ingested right now; retrying later")
        raise Retry("in progress elsewhere") from exc
    except ConversionTimeout as exc:
        metrics.add_metric(name="ConversionTimeouts", unit=MetricUnit.Count, value=1)
        if exc.details.get("permanent"):  # a whole invocation is too short: retrying cannot help
            metrics.add_metric(name="DocumentsRejected", unit=MetricUnit.Count, value=1)
            if not _dead_letter(job, exc):
                raise Retry("DLQ unavailable") from exc
            return {"key": job["key"], "error": exc.to_dict()}
        # the configured limit on a possibly loaded host: may succeed on a retry
        metrics.add_metric(name="IngestErrors", unit=MetricUnit.Count, value=1)
        logger.warning("conversion timed out; will be retried", extra={"error": exc.to_dict()})
        raise Retry("conversion timeout") from exc
    except DocumentError as exc:
        metrics.add_metric(name="DocumentsRejected", unit=MetricUnit.Count, value=1)
        if not _dead_letter(job, exc):
            raise Retry("DLQ unavailable") from exc
        return {"key": job["key"], "error": exc.to_dict()}
    except Exception as exc:  # transient or unknown: let SQS retry this record, then its DLQ
        metrics.add_metric(
            name="UpsertFailures" if exc.__class__.__name__ == "UpsertFailed" else "IngestErrors",
            unit=MetricUnit.Count,
            value=1,
        )
        logger.exception("ingest failed; will be retried")
        raise Retry(type(exc).__name__) from exc
    finally:
        logger.remove_keys(["document"])


def _sweep_purges() -> None:
    """Finish the purges of purgers that died (their lease ran out): one query when there are none."""
    try:
        swept = service().membership.sweep_purges()
    except Exception:  # the next invocation sweeps again; this one's jobs must not wait for it
        logger.exception("sweeping abandoned purges failed; the next invocation tries again")
        return
    if swept:
        metrics.add_metric(name="PurgesTakenOver", unit=MetricUnit.Count, value=len(swept))
        logger.warning("finished purges whose purger died", extra={"documents": swept})


# --------------------------------------------------------------------------------------------- handler
@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config, _ = _idempotent_ingest()
    config.register_lambda_context(context)
    margin = service().settings.deadline_margin_s
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - margin
    _sweep_purges()
    results: list[dict[str, Any]] = []
    ran = [0]  # jobs started in this invocation: only the first has the whole invocation's time

    def run(job: Job) -> dict[str, Any]:
        ran[0] += 1
        return run_job(job, deadline, whole_invocation=ran[0] == 1)

    records = event.get("Records", [])
    if records and all(r.get("eventSource") == "aws:sqs" for r in records):

        def record_handler(record: SQSRecord) -> list[dict[str, Any]]:
            out = [run(job) for job in jobs_from_body(json.loads(record.body))]
            results.extend(out)
            return out

        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        response: PartialItemFailureResponse = process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
        return {**response, "results": results}
    for _, job in jobs_from_event(event):  # a direct S3 notification: failures raise (Lambda retries it)
        results.append(run(job))
    return {"batchItemFailures": [], "results": results}
