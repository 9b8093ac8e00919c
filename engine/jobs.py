"""Asynchronous job records: every job is always in ``queued → running → done | failed``.

Transitions are conditional writes, so a duplicate or late invocation cannot move a finished job back, and
every exception ends the job as ``failed`` with a stable error code (never document text or model output).
A job that dies without reporting (Lambda timeout, out of memory) is caught by its ``deadline_at``: reading
an overdue ``queued``/``running`` job marks it ``failed`` with code ``job_timeout``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

from engine.errors import DocVisionError

JobStatus = Literal["queued", "running", "done", "failed"]
ACTIVE: tuple[JobStatus, ...] = ("queued", "running")
RETENTION_S = 14 * 24 * 3600


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


def error_of(exc: BaseException) -> dict[str, Any]:
    """A job record's error: our typed errors as they are; anything else by kind, without its text
    (an LLM client's or AWS SDK's message can quote prompts, answers or document names)."""
    if isinstance(exc, DocVisionError):
        return exc.to_dict()
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

    def __init__(self, table: str, resource: Any = None) -> None:
        if resource is None:
            import boto3

            resource = boto3.resource("dynamodb")
        self.table = resource.Table(table)

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

    def _move(self, job_id: str, to: JobStatus, allowed: tuple[str, ...], extra: dict[str, Any]) -> bool:
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
        try:
            self.table.update_item(
                Key={"job_id": job_id},
                UpdateExpression=f"SET {sets}",
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
        return self._move(job_id, "done", ("running",), {"result": result})

    def fail(self, job_id: str, error: BaseException | dict[str, Any]) -> bool:
        err = error if isinstance(error, dict) else error_of(error)
        return self._move(job_id, "failed", ACTIVE, {"error": err})

    def get(self, job_id: str) -> JobRecord | None:
        item = self.table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item")
        if not item:
            return None
        rec = self._record(item)
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
