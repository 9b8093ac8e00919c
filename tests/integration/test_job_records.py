"""Job records that tell the truth (issue 23 item 11): a result that exists is never reported as a timeout,
a success after the deadline is kept, and an LLM HTTP error is `upstream_unavailable` — against moto's
DynamoDB and S3 on 127.0.0.1 and the local LLM test server."""

# ruff: noqa: F811  (pytest fixtures imported from test_handlers)
from __future__ import annotations

import json
import time

import pytest
from botocore.exceptions import ClientError

from tests.fixtures import documents as d
from tests.fixtures.llm_server import ScriptedLLM
from tests.integration.test_extraction import manifest
from tests.integration.test_handlers import BUCKET, api, aws, event, invoke, moto_url  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration


def _submit(aws, tmp_path, monkeypatch) -> tuple[str, dict, dict]:  # noqa: ANN001, F811
    """A 202 job for a long PDF; returns (job id, its async payload, the GET /jobs event)."""
    import handlers.api

    aws["s3"].put_object(
        Bucket=BUCKET, Key="raw/long.pdf", Body=d.long_pdf(tmp_path / "l.pdf", 6).read_bytes()
    )
    pending: list[dict] = []
    monkeypatch.setattr(handlers.api, "_invoke_async", pending.append)
    ev = event("extract.json")
    ev["body"] = json.dumps({"document": {"key": "raw/long.pdf"}, "schema_name": "shipping_manifest"})
    status, body = api(ev)
    assert status == 202, body
    jobs_ev = event("jobs-get.json")
    jobs_ev["path"] = f"/jobs/{body['job_id']}"
    jobs_ev["pathParameters"] = {"job_id": body["job_id"]}
    return body["job_id"], pending[0], jobs_ev


def _fail_dynamo_updates_to(status: str):  # noqa: ANN202
    """A botocore hook on the job store's own client: every UpdateItem that sets `status` fails as DynamoDB
    does under throttling (the real client and moto otherwise)."""
    from handlers.common import service

    client = service().jobs.table.meta.client
    calls = []

    def hook(params, **_):  # noqa: ANN001, ANN003
        if params.get("ExpressionAttributeValues", {}).get(":to") == status:
            calls.append(1)
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}}, "UpdateItem"
            )

    client.meta.events.register("provide-client-params.dynamodb.UpdateItem", hook)
    return calls


def _llm_env(monkeypatch, llm) -> None:  # noqa: ANN001
    monkeypatch.setenv("DOCVISION_LLM_BASE_URL", llm.base_url)
    monkeypatch.setenv("DOCVISION_LLM_MODEL", "test-vlm")


def test_a_result_is_never_reported_as_a_timeout_when_the_table_write_fails(
    aws, tmp_path, monkeypatch
) -> None:  # noqa: F811
    monkeypatch.setenv("DOCVISION_JOB_TIMEOUT_S", "30")
    with ScriptedLLM([{"content": json.dumps(manifest())}]) as llm:
        _llm_env(monkeypatch, llm)
        job_id, payload, jobs_ev = _submit(aws, tmp_path, monkeypatch)
        calls = _fail_dynamo_updates_to("done")
        out = invoke("api", payload)
    assert out["status"] == "done" and len(calls) >= 3, out  # retried, then left to the outcome object
    status, job = api(jobs_ev)  # before the deadline: not "running" for 16 minutes
    assert status == 200 and job["status"] == "done" and job["outputs"]["result"].endswith("result.json"), job
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)  # far past the deadline: still done
    status, job = api(jobs_ev)
    assert job["status"] == "done" and "error" not in job, job


def test_a_success_after_the_deadline_is_kept(aws, tmp_path, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("DOCVISION_JOB_TIMEOUT_S", "0.5")
    with ScriptedLLM([{"content": json.dumps(manifest())}]) as llm:
        _llm_env(monkeypatch, llm)
        job_id, payload, jobs_ev = _submit(aws, tmp_path, monkeypatch)
        import handlers.common

        svc = handlers.common.service()
        original = svc.jobs.start

        def start_then_read_late(jid: str) -> bool:  # the run starts; a reader sees it after the deadline
            started = original(jid)
            time.sleep(0.6)
            assert api(jobs_ev)[1]["error"]["code"] == "job_timeout"
            return started

        monkeypatch.setattr(svc.jobs, "start", start_then_read_late)
        assert invoke("api", payload)["status"] == "done"
    status, job = api(jobs_ev)
    assert (
        job["status"] == "done" and "error" not in job and job["outputs"]["result"].endswith("result.json")
    ), job


def test_an_llm_http_error_is_upstream_unavailable(aws, tmp_path, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("DOCVISION_EXTRACT_ATTEMPTS", "1")
    with ScriptedLLM([{"status": 500}] * 20) as llm:
        _llm_env(monkeypatch, llm)
        job_id, payload, jobs_ev = _submit(aws, tmp_path, monkeypatch)
        out = invoke("api", payload)
        assert out["status"] == "failed" and out["error"]["code"] == "upstream_unavailable", out
        status, job = api(jobs_ev)
        assert job["status"] == "failed" and job["error"]["code"] == "upstream_unavailable", job
        assert job["error"].get("upstream_status") == 500, job
        # the same failure in sync mode answers 503 with the same code (not a 500 internal_error)
        aws["s3"].put_object(
            Bucket=BUCKET, Key="raw/m.pdf", Body=d.multipage_pdf(tmp_path / "m.pdf").read_bytes()
        )
        ev = event("extract.json")
        ev["body"] = json.dumps({"document": {"key": "raw/m.pdf"}, "schema_name": "shipping_manifest",
                                 "mode": "sync", "no_cache": True})  # fmt: skip
        status, body = api(ev)
        assert status == 503 and body["error"]["code"] == "upstream_unavailable", body
