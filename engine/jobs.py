"""Asynchronous job records: every job is always in ``queued → running → done | failed``.

Transitions are conditional writes, so a duplicate or late invocation cannot move a finished job back, and
every exception ends the job as ``failed`` with a stable error code (never document text or model output).
A job that dies without reporting (Lambda timeout, out of memory) is caught by its ``deadline_at``: reading
an overdue ``queued``/``running`` job marks it ``failed`` with code ``job_timeout``.

The record never contradicts the outputs: a finished job's result is written first as an outcome object in
the blob store (``jobs/<job_id>.json``), then to the table. Reading a job whose outcome exists shows it
``done`` even if the table write failed, and a success arriving after the deadline (``job_timeout`` was only a
guess) still turns the job ``done``; a job that ended in any other way stays as it ended.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

from engine.errors import DocVisionError, UpstreamTimeout, UpstreamUnavailable

JobStatus = Literal["queued", "running", "done", "failed"]
ACTIVE: tuple[JobStatus, ...] = ("queued", "running")
RETENTION_S = 14 * 24 * 3600
WRITE_ATTEMPTS = 3  # a finished job's table write, with backoff (the outcome object is already stored)
log = logging.getLogger(__name__)


@dataclass
class JobRecord:
    job_id: str
    status: JobStatus
    created_at: float
    deadline_at: float
    updated_at: float
    request: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    def to_dict(self, *, with_request: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not with_request:
            out.pop("request")
        for key in ("result", "error"):
            if out[key] is None:
                out.pop(key)
        return out


_HTTP_STATUS = re.compile(r"status(?:[ _]code)?\W{0,3}([1-5]\d\d)\b", re.IGNORECASE)


def upstream_error(exc: BaseException) -> DocVisionError | None:
    """The LLM client's failures as typed errors (without their text, which can quote prompts or answers):
    an HTTP error or unreachable endpoint is `upstream_unavailable`, a timeout `timeout`; None otherwise."""
    try:
        from baml_py.errors import BamlClientError, BamlTimeoutError
    except ImportError:  # pragma: no cover - baml-py is a dependency
        return None
    if isinstance(exc, BamlTimeoutError):
        return UpstreamTimeout(
            "the LLM did not answer in time; retry the job, or raise DOCVISION_LLM_TIMEOUT_S"
        )
    if isinstance(exc, BamlClientError):
        # only the status code is taken from the message (the rest can quote the endpoint's reply)
        found = _HTTP_STATUS.search(str(exc))
        status = int(found.group(1)) if found else None
        return UpstreamUnavailable(
            "the LLM endpoint refused or failed the request"
            + (f" (HTTP {status})" if status else "")
            + "; retry the job later, and check the LLM provider's status, quota and credentials",
            upstream_status=status,
        )
    return None


def error_of(exc: BaseException) -> dict[str, Any]:
    """A job record's error: our typed errors as they are; anything else by kind, without its text
    (an LLM client's or AWS SDK's message can quote prompts, answers or document names)."""
    typed = exc if isinstance(exc, DocVisionError) else upstream_error(exc)
    if typed is not None:
        return typed.to_dict()
    kind = type(exc).__name__
    code = "internal_error"
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            code = "aws_error"
            kind = f"{kind}:{exc.response.get('Error', {}).get('Code', '')}"
        elif isinstance(exc, BotoCoreError):
            code = "aws_error"
    except ImportError:  # pragma: no cover - botocore is a dependency
        pass
    if isinstance(exc, TimeoutError) or "Timeout" in kind:
        code = "timeout"
    elif code == "internal_error" and ("Connection" in kind or isinstance(exc, ConnectionError)):
        code = "upstream_unavailable"
    return {
        "code": code,
        "kind": kind,
        "message": f"{kind}: the job failed; retry it, and if it fails again see the logs with its job id",
    }


class JobStore(Protocol):
    def create(self, job_id: str, request: dict[str, Any], timeout_s: float) -> JobRecord: ...
    def start(self, job_id: str) -> bool: ...
    def succeed(self, job_id: str, result: dict[str, Any]) -> bool: ...
    def fail(self, job_id: str, error: BaseException | dict[str, Any]) -> bool: ...
    def get(self, job_id: str) -> JobRecord | None: ...


def _to_dynamo(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str), parse_float=Decimal)


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    return value


class DynamoJobStore:
    """Jobs in a DynamoDB table keyed by ``job_id`` (the template's JobsTable; TTL on ``expires_at``)."""

    def __init__(self, table: str, resource: Any = None, outcomes: Any = None) -> None:
        """`outcomes`: a BlobStore for the outcome objects of finished jobs (None: the table alone)."""
        if resource is None:
            import boto3

            resource = boto3.resource("dynamodb")
        self.table = resource.Table(table)
        self.outcomes = outcomes

    def create(self, job_id: str, request: dict[str, Any], timeout_s: float) -> JobRecord:
        now = time.time()
        rec = JobRecord(job_id, "queued", now, now + timeout_s, now, request)
        self.table.put_item(
            Item=_to_dynamo(
                {**asdict(rec), "request": json.dumps(request), "expires_at": int(now) + RETENTION_S}
            ),
            ConditionExpression="attribute_not_exists(job_id)",
        )
        return rec

    def _move(
        self,
        job_id: str,
        to: JobStatus,
        allowed: tuple[str, ...],
        extra: dict[str, Any],
        *,
        after_timeout: bool = False,
    ) -> bool:
        """Conditional transition from one of `allowed`; with `after_timeout` also from `failed` with code
        job_timeout (the deadline was a guess: the run was alive after all), dropping that error."""
        from botocore.exceptions import ClientError

        names = {"#s": "status", **{f"#{k}": k for k in extra}}
        values = {
            ":to": to,
            ":now": Decimal(str(time.time())),
            **{f":{k}": _to_dynamo(v) for k, v in extra.items()},
        }
        values.update({f":a{i}": s for i, s in enumerate(allowed)})
        sets = ", ".join(["#s = :to", "updated_at = :now", *(f"#{k} = :{k}" for k in extra)])
        allowed_expr = " OR ".join(f"#s = :a{i}" for i in range(len(allowed)))
        update = f"SET {sets}"
        if after_timeout:
            names.update({"#err": "error", "#code": "code"})
            values.update({":failed": "failed", ":timeout": "job_timeout"})
            allowed_expr += " OR (#s = :failed AND #err.#code = :timeout)"
            update += " REMOVE #err"
        try:
            self.table.update_item(
                Key={"job_id": job_id},
                UpdateExpression=update,
                ConditionExpression=f"attribute_exists(job_id) AND ({allowed_expr})",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False  # already moved on (duplicate invocation, overdue, finished): not ours to change
            raise

    def start(self, job_id: str) -> bool:
        return self._move(job_id, "running", ("queued",), {"started_at": time.time()})

    def succeed(self, job_id: str, result: dict[str, Any]) -> bool:
        """Outcome object first (what reading the job falls back on), then the table, retried with backoff.
        Raises only when neither holds the result; False: the job had already ended otherwise."""
        stored = False
        if self.outcomes is not None:
            try:
                self.outcomes.put(self._outcome_key(job_id), json.dumps(result).encode(), "application/json")
                stored = True
            except Exception as exc:  # the table write below may still record the result
                log.warning("job outcome object not stored (%s); writing the table only", type(exc).__name__)
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                return self._move(job_id, "done", ("running",), {"result": result}, after_timeout=True)
            except Exception as exc:
                if attempt < WRITE_ATTEMPTS:
                    time.sleep(0.2 * 2**attempt)
                elif stored:  # reading the job finds the outcome object and shows it done
                    log.warning("job table write failed (%s); its outcome object stands", type(exc).__name__)
                    return True
                else:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _outcome_key(job_id: str) -> str:
        return f"jobs/{job_id}.json"

    def _stored_outcome(self, job_id: str) -> dict[str, Any] | None:
        if self.outcomes is None or not self.outcomes.exists(self._outcome_key(job_id)):
            return None
        result: dict[str, Any] = json.loads(self.outcomes.get(self._outcome_key(job_id)))
        return result

    def fail(self, job_id: str, error: BaseException | dict[str, Any]) -> bool:
        err = error if isinstance(error, dict) else error_of(error)
        return self._move(job_id, "failed", ACTIVE, {"error": err})

    def get(self, job_id: str) -> JobRecord | None:
        item = self.table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item")
        if not item:
            return None
        rec = self._record(item)
        timed_out = rec.status == "failed" and (rec.error or {}).get("code") == "job_timeout"
        if rec.status in ACTIVE or timed_out:  # finished, but the table write failed or came late?
            outcome = self._stored_outcome(job_id)
            if outcome is not None:
                try:
                    self._move(job_id, "done", ACTIVE, {"result": outcome}, after_timeout=True)
                except Exception as exc:  # the table is still failing: the answer is done all the same
                    log.warning(
                        "job table write failed (%s); answering from the outcome object", type(exc).__name__
                    )
                    rec.status, rec.result, rec.error = "done", outcome, None
                    return rec
                item = self.table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item") or item
                return self._record(item)
        if rec.status in ACTIVE and time.time() > rec.deadline_at:
            overdue = {
                "code": "job_timeout",
                "message": f"the job was still {rec.status} at its deadline (it was stopped by a timeout or "
                "crashed); submit it again, as a smaller document or with more time",
            }
            self.fail(job_id, overdue)
            item = self.table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item") or item
            rec = self._record(item)
        return rec

    @staticmethod
    def _record(item: dict[str, Any]) -> JobRecord:
        data = _from_dynamo(item)
        request = data.get("request")
        return JobRecord(
            job_id=data["job_id"],
            status=data["status"],
            created_at=float(data.get("created_at", 0)),
            deadline_at=float(data.get("deadline_at", 0)),
            updated_at=float(data.get("updated_at", 0)),
            request=json.loads(request) if isinstance(request, str) else (request or {}),
            result=data.get("result"),
            error=data.get("error"),
        )
