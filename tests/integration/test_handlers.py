"""Lambda handlers in-process against moto's server (S3, SQS, DynamoDB) on 127.0.0.1, the embedded index,
the tiny model and the local LLM test server — with the sample events from events/."""

from __future__ import annotations

import copy
import importlib
import json
import os
import sys
from pathlib import Path

import pytest

from tests.fixtures import documents as d
from tests.fixtures.llm_server import ScriptedLLM
from tests.fixtures.moto import moto_server
from tests.integration.test_extraction import manifest

pytestmark = pytest.mark.integration
EVENTS = Path(__file__).resolve().parents[2] / "events"
BUCKET = "docvision-documents"


def event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


@pytest.fixture(scope="module")
def moto_url():
    with moto_server() as url:
        yield url


@pytest.fixture
def aws(moto_url, baked_tiny, tmp_path, monkeypatch):
    """A fresh AWS account (moto reset) with the bucket, queues and tables the template creates."""
    import boto3
    import requests

    requests.post(f"{moto_url}/moto-api/reset")
    env = {
        "AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_METRICS_NAMESPACE": "DocVisionTest", "IDEMPOTENCY_TABLE": "idem", "JOBS_TABLE": "jobs", "MEMBERSHIP_TABLE": "membership",
        "DOCUMENTS_BUCKET": BUCKET, "DOCVISION_MODEL": str(baked_tiny), "DOCVISION_STORE": f"s3://{BUCKET}/derived",
        "DOCVISION_INDEX_PATH": str(tmp_path / "qdrant"), "DOCVISION_MAX_BATCH_SIZE": "2", "AWS_LAMBDA_FUNCTION_NAME": "docvision-api",
    }  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    sqs = boto3.client("sqs")
    dlq = sqs.create_queue(QueueName="ingest-dlq")["QueueUrl"]
    queue = sqs.create_queue(QueueName="ingest")["QueueUrl"]
    monkeypatch.setenv("INGEST_QUEUE_URL", queue)
    monkeypatch.setenv("INGEST_DLQ_URL", dlq)
    ddb = boto3.client("dynamodb")
    for name, key in (("idem", "id"), ("jobs", "job_id")):
        ddb.create_table(TableName=name, KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")  # fmt: skip
    ddb.create_table(TableName="membership", BillingMode="PAY_PER_REQUEST",  # as template.yaml's MembershipTable
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}])  # fmt: skip
    import handlers.common

    handlers.common.reset_service()
    for mod in ("handlers.ingest", "handlers.api"):
        if mod in sys.modules:
            importlib.reload(sys.modules[mod])
    yield {"s3": s3, "sqs": sqs, "queue": queue, "dlq": dlq, "ddb": ddb}
    handlers.common.reset_service()


def put_event(key: str) -> dict:
    ev = copy.deepcopy(event("s3-put.json"))
    ev["Records"][0]["s3"]["object"]["key"] = key.replace(" ", "+")
    return ev


def invoke(name: str, ev: dict, timeout_s: float = 900.0) -> dict:
    from handlers.invoke import invoke as run

    return run(name, ev, timeout_s)


def test_s3_put_ingests_end_to_end_and_duplicates_do_nothing(aws, tmp_path, capsys) -> None:
    aws["s3"].put_object(
        Bucket=BUCKET, Key="raw/shipping manifest.pdf", Body=d.multipage_pdf(tmp_path / "m.pdf").read_bytes()
    )
    out = invoke("ingest", put_event("raw/shipping manifest.pdf"))
    (result,) = out["results"]
    assert result["complete"] and result["pages_embedded"] == 4 and out["batchItemFailures"] == []
    import handlers.common

    svc = handlers.common.service()
    assert svc.index.count(result["document_id"]) == 4
    pngs = [o["Key"] for o in aws["s3"].list_objects_v2(Bucket=BUCKET, Prefix="derived/pages/")["Contents"]]
    assert len(pngs) == 4
    logs = capsys.readouterr().out
    emf = [json.loads(line) for line in logs.splitlines() if line.startswith("{") and '"_aws"' in line]
    assert any(m.get("PagesEmbedded") == [4.0] for m in emf), logs[-3000:]
    calls = []
    original = type(svc).ingest
    type(svc).ingest = lambda self, *a, **k: calls.append(a) or original(self, *a, **k)
    try:
        again = invoke("ingest", put_event("raw/shipping manifest.pdf"))
    finally:
        type(svc).ingest = original
    assert (
        calls == [] and again["results"][0]["document_id"] == result["document_id"]
    )  # idempotency record answered
    assert svc.index.count() == 4


def test_deadline_checkpoints_requeues_and_resumes_without_duplicates(aws, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DOCVISION_DEADLINE_MARGIN_S", "0")
    import handlers.ingest

    importlib.reload(handlers.ingest)
    aws["s3"].put_object(
        Bucket=BUCKET, Key="raw/long.pdf", Body=d.long_pdf(tmp_path / "l.pdf", 6).read_bytes()
    )
    first = invoke("ingest", put_event("raw/long.pdf"), timeout_s=0.05)["results"][0]
    assert not first["complete"] and first["next_page"] == 3
    msgs = aws["sqs"].receive_message(QueueUrl=aws["queue"], MaxNumberOfMessages=10)["Messages"]
    (msg,) = msgs
    body = json.loads(msg["Body"])
    assert body["start_page"] == 3 and body["key"] == "raw/long.pdf"
    sqs_event = {
        "Records": [
            {
                "messageId": msg["MessageId"],
                "eventSource": "aws:sqs",
                "body": msg["Body"],
                "receiptHandle": msg["ReceiptHandle"],
            }
        ]
    }
    second = invoke("ingest", sqs_event)["results"][0]
    assert second["complete"] and second["pages_already_stored"] == 2 and second["pages_embedded"] == 4
    import handlers.common

    assert handlers.common.service().index.stored_pages(first["document_id"]) == set(range(1, 7))
    assert handlers.common.service().index.count() == 6


def test_corrupt_document_goes_to_the_dlq_with_its_reason(aws) -> None:
    aws["s3"].put_object(Bucket=BUCKET, Key="raw/broken.pdf", Body=b"%PDF-1.7\n" + b"\x00junk" * 100)
    out = invoke("ingest", put_event("raw/broken.pdf"))
    assert out["results"][0]["error"]["code"] == "corrupt_document"
    (msg,) = aws["sqs"].receive_message(QueueUrl=aws["dlq"])["Messages"]
    body = json.loads(msg["Body"])
    assert (
        body["error"]["code"] == "corrupt_document"
        and body["job"]["key"] == "raw/broken.pdf"
        and "broken.pdf" in body["error"]["message"]
    )


def test_transient_failure_is_a_batch_item_failure(aws, monkeypatch) -> None:
    aws["s3"].put_object(
        Bucket=BUCKET,
        Key="raw/a.png",
        Body=d.image_file(Path(os.environ["DOCVISION_INDEX_PATH"]).parent / "a.png", "PNG").read_bytes(),
    )
    import handlers.common
    from engine.errors import UpsertFailed

    svc = handlers.common.service()
    monkeypatch.setattr(
        type(svc),
        "ingest",
        lambda self, *a, **k: (_ for _ in ()).throw(
            UpsertFailed("qdrant down", document="x", last_safe_page=0)
        ),
    )
    sqs_event = {
        "Records": [
            {"messageId": "m-1", "eventSource": "aws:sqs", "body": json.dumps(put_event("raw/a.png"))}
        ]
    }
    assert invoke("ingest", sqs_event)["batchItemFailures"] == [{"itemIdentifier": "m-1"}]


def api(ev: dict) -> tuple[int, dict]:
    out = invoke("api", ev)
    return out["statusCode"], json.loads(out["body"])


def test_extract_sync_then_async_job_lifecycle(aws, tmp_path, monkeypatch) -> None:
    aws["s3"].put_object(
        Bucket=BUCKET, Key="raw/shipping manifest.pdf", Body=d.multipage_pdf(tmp_path / "m.pdf").read_bytes()
    )
    with ScriptedLLM([{"content": json.dumps(manifest())}]) as llm:
        monkeypatch.setenv("DOCVISION_LLM_BASE_URL", llm.base_url)
        monkeypatch.setenv("DOCVISION_LLM_MODEL", "test-vlm")
        status, body = api(event("extract.json"))
        assert status == 200, body
        assert body["status"] == "done" and body["quality"]["schema_valid"]
        result_key = body["outputs"]["result"]
        assert result_key.startswith(f"s3://{BUCKET}/derived/results/")
        assert (
            set(body["outputs"]["tables"]) >= {"root", "line_items"}
            and "csv" in body["outputs"]["tables"]["line_items"]
        )
        key = result_key.split(f"{BUCKET}/", 1)[1]
        canonical = json.loads(aws["s3"].get_object(Bucket=BUCKET, Key=key)["Body"].read())
        assert canonical["data"]["consignee"]["name"] == "Northwind Traders"

        # a long document: 202 + job id, the asynchronous invocation runs it, GET /jobs shows the outcome
        aws["s3"].put_object(
            Bucket=BUCKET, Key="raw/long.pdf", Body=d.long_pdf(tmp_path / "l.pdf", 6).read_bytes()
        )
        import handlers.api

        pending = []
        monkeypatch.setattr(handlers.api, "_invoke_async", pending.append)
        ev = event("extract.json")
        ev["body"] = json.dumps({"document": {"key": "raw/long.pdf"}, "schema_name": "shipping_manifest"})
        status, body = api(ev)
        assert status == 202 and body["status"] == "queued"
        job_id = body["job_id"]
        jobs_ev = event("jobs-get.json")
        jobs_ev["path"] = f"/jobs/{job_id}"
        jobs_ev["pathParameters"] = {"job_id": job_id}
        assert api(jobs_ev)[1]["status"] == "queued"
        (payload,) = pending
        done = invoke("api", payload)
        assert done["status"] == "done"
        status, job = api(jobs_ev)
        assert status == 200 and job["status"] == "done" and job["outputs"]["result"].endswith("result.json")


def test_bad_requests_get_clear_400s(aws) -> None:
    ev = event("extract.json")
    for body, code, needle in [
        ({"schema_name": "shipping_manifest"}, 400, "document"),
        (
            {"document": {"key": "raw/k"}, "schema_name": "shipping_manifest", "schema": {"type": "object"}},
            400,
            "exactly one",
        ),
        (
            {"document": {"key": "raw/k"}, "schema": {"type": "object", "properties": {"a": {"oneOf": []}}}},
            400,
            "oneOf",
        ),
        ({"document": {"key": "raw/k"}, "schema_name": "no_such_schema"}, 404, "no_such_schema"),
        ({"document": {"key": "raw/missing.pdf"}, "schema_name": "shipping_manifest"}, 404, "missing.pdf"),
    ]:
        ev["body"] = json.dumps(body)
        status, out = api(ev)
        assert status == code, (body, out)
        assert needle in json.dumps(out)
    ev = event("search.json")
    ev["body"] = json.dumps({"query": ""})
    status, out = api(ev)
    assert (
        status == 400
        and out["error"]["code"] == "bad_request"
        and out["error"]["details"][0]["where"].endswith("query")
    )
    ev["body"] = "{not json"
    assert api(ev)[0] == 400


def test_search_score_embed_health_and_openapi(aws, tmp_path) -> None:
    aws["s3"].put_object(
        Bucket=BUCKET, Key="raw/shipping manifest.pdf", Body=d.multipage_pdf(tmp_path / "m.pdf").read_bytes()
    )
    doc_id = invoke("ingest", put_event("raw/shipping manifest.pdf"))["results"][0]["document_id"]
    status, res = api(event("search.json"))
    assert status == 200 and len(res["hits"]) == 4 and res["hits"][0]["document_id"] == doc_id
    ev = event("score.json")
    ev["body"] = json.dumps({"queries": ["consignee"], "pages": [{"document_id": doc_id, "page_number": 1}]})
    status, res = api(ev)
    assert status == 200 and len(res["scores"][0]) == 1
    status, res = api(event("embed.json"))
    assert status == 200 and res["queries"][0]["shape"][1] == 128
    status, res = api(event("health.json"))
    assert status == 200 and res["index"]["reachable"] and res["model"]["model_id"] == "tiny-random-colqwen2"
    assert "recall_check" not in res
    ev = event("health.json")
    ev["queryStringParameters"] = {"deep": "1"}
    status, res = api(ev)  # 4 pages: below DOCVISION_RECALL_CHECK_MIN_PAGES, so no check has run yet
    assert status == 200 and res["recall_check"] is None and res["index"]["search_limits"] is None
    ev = event("health.json")
    ev["path"] = ev["resource"] = "/openapi.json"
    status, spec = api(ev)
    assert status == 200 and {
        "/extract",
        "/jobs/{job_id}",
        "/search",
        "/score",
        "/embed/multivector",
        "/health",
    } <= set(spec["paths"])
