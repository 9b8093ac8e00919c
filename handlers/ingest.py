"""Ingest Lambda: S3 ObjectCreated (direct, or through the ingest SQS queue) → pages → embeddings → Qdrant.

Per object: duplicate deliveries of the same object version are skipped (Powertools idempotency on
DynamoDB); when the invocation's remaining time runs short, the document is checkpointed and its rest
re-queued (SQS message with start_page) so nothing is lost or embedded twice; a document that can never
be ingested (corrupt, encrypted, unsupported…) goes to the DLQ with its reason; transient failures are
reported as SQS batch item failures and retried by SQS, then land in the same DLQ.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from engine.documents import S3Object
from engine.errors import DocumentError
from handlers.common import logger, metrics, service, tracer, warm_model

SAFETY_MARGIN_S = float(os.environ.get("DOCVISION_DEADLINE_MARGIN_S", "30"))
_persistence = DynamoDBPersistenceLayer(
    table_name=os.environ.get("IDEMPOTENCY_TABLE", "docvision-idempotency")
)
_idempotency = IdempotencyConfig(
    event_key_jmespath="[bucket, key, version_id || etag, start_page]",  # one object version, one pass
    expires_after_seconds=int(os.environ.get("IDEMPOTENCY_TTL_S", str(7 * 24 * 3600))),
    raise_on_no_idempotency_key=True,
)


def jobs_from_event(event: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    """(SQS message id or None, job) for S3 notifications (direct or in SQS) and continuation messages."""
    jobs: list[tuple[str | None, dict[str, Any]]] = []
    for record in event.get("Records", []):
        if record.get("eventSource") == "aws:sqs":
            body = json.loads(record["body"])
            if "start_page" in body:  # our own continuation
                jobs.append((record["messageId"], body))
                continue
            for inner in body.get("Records", []):  # S3 → SQS notification
                jobs.append((record["messageId"], _s3_job(inner)))
        elif record.get("eventSource") == "aws:s3" or "s3" in record:
            jobs.append((None, _s3_job(record)))
    return jobs


def _s3_job(record: dict[str, Any]) -> dict[str, Any]:
    obj = record["s3"]["object"]
    # Keys in S3 events are URL-encoded (spaces arrive as '+').
    return {
        "bucket": record["s3"]["bucket"]["name"],
        "key": unquote_plus(obj["key"]),
        "version_id": obj.get("versionId"),
        "etag": obj.get("eTag") or obj.get("sequencer"),
        "start_page": 1,
    }


@idempotent_function(data_keyword_argument="job", persistence_store=_persistence, config=_idempotency)
def ingest_object(job: dict[str, Any], deadline: float) -> dict[str, Any]:
    svc = service()
    warm_model()
    result = svc.ingest(
        S3Object(job["bucket"], job["key"], job.get("version_id")),
        name=f"s3://{job['bucket']}/{job['key']}",
        source_uri=f"s3://{job['bucket']}/{job['key']}",
        start_page=job.get("start_page", 1),
        deadline=deadline,
    )
    metrics.add_metric(name="PagesRendered", unit=MetricUnit.Count, value=result.pages_embedded)
    metrics.add_metric(name="PagesEmbedded", unit=MetricUnit.Count, value=result.pages_embedded)
    if result.pages_embedded:
        metrics.add_metric(
            name="EmbedSecondsPerPage",
            unit=MetricUnit.Seconds,
            value=round(result.seconds / result.pages_embedded, 3),
        )
    if not result.complete:
        _requeue({**job, "start_page": result.next_page, "document_id": result.document_id})
        metrics.add_metric(name="IngestContinuations", unit=MetricUnit.Count, value=1)
    else:
        metrics.add_metric(name="DocumentsIngested", unit=MetricUnit.Count, value=1)
    logger.info("ingested", extra={"result": result.to_dict()})
    return result.to_dict()


def _sqs() -> Any:
    import boto3

    return boto3.client("sqs")


def _requeue(job: dict[str, Any]) -> None:
    url = os.environ["INGEST_QUEUE_URL"]
    _sqs().send_message(QueueUrl=url, MessageBody=json.dumps(job))
    logger.info("checkpointed; rest of the document re-queued", extra={"job": job})


def _dead_letter(job: dict[str, Any], exc: Exception) -> None:
    """Permanent failure: straight to the DLQ with everything needed to understand and replay it."""
    body = {
        "job": job,
        "error": exc.to_dict() if hasattr(exc, "to_dict") else {"message": str(exc)},
        "failed_at": time.time(),
    }
    url = os.environ.get("INGEST_DLQ_URL")
    if url:
        _sqs().send_message(QueueUrl=url, MessageBody=json.dumps(body, default=str))
    logger.error("document cannot be ingested", extra=body)


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    _idempotency.register_lambda_context(context)
    deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - SAFETY_MARGIN_S
    failures, results = [], []
    for message_id, job in jobs_from_event(event):
        logger.append_keys(document=f"s3://{job['bucket']}/{job['key']}")
        try:
            results.append(ingest_object(job=job, deadline=deadline))
        except DocumentError as exc:
            metrics.add_metric(name="DocumentsRejected", unit=MetricUnit.Count, value=1)
            _dead_letter(job, exc)
            results.append({"key": job["key"], "error": exc.to_dict()})
        except Exception as exc:  # transient or unknown: let SQS retry this record, then its DLQ
            metrics.add_metric(
                name="UpsertFailures" if exc.__class__.__name__ == "UpsertFailed" else "IngestErrors",
                unit=MetricUnit.Count,
                value=1,
            )
            logger.exception("ingest failed; will be retried")
            if message_id is None:
                raise
            failures.append({"itemIdentifier": message_id})
    return {"batchItemFailures": failures, "results": results}
