"""API Lambda (API Gateway REST): extraction jobs and search/score/embed, one resolver, one OpenAPI document.

POST /extract            document + JSON Schema → 200 with result keys (small) or 202 + job id (large)
GET  /jobs/{job_id}      job status and the S3 keys of canonical JSON, tables and quality report
POST /search             text query → top pages (prefetch + MaxSim rerank)
POST /score              queries × pages (indexed page refs or base64 images) → late-interaction scores
POST /embed/multivector  texts and/or base64 images → raw multivectors
GET  /health             model id, compute path, Qdrant reachability
GET  /openapi.json       this API's OpenAPI document
"""

from __future__ import annotations

import base64
import io
import json
import os
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field, model_validator

from engine.errors import DocVisionError, NotFound
from handlers.common import error_body, logger, metrics, s3, service, tracer, warm_model

app = APIGatewayRestResolver(enable_validation=True)
SCHEMAS_DIR = Path(os.environ.get("DOCVISION_SCHEMAS_DIR", Path(__file__).resolve().parents[1] / "schemas"))
SYNC_MAX_PAGES = int(os.environ.get("DOCVISION_SYNC_MAX_PAGES", "4"))


# ---------------------------------------------------------------------------------------------- models
class DocumentRef(BaseModel):
    bucket: str | None = Field(None, description="S3 bucket (default: the documents bucket)")
    key: str = Field(..., min_length=1, description="S3 key of the document (raw upload or ingested)")
    version_id: str | None = None


class ExtractRequest(BaseModel):
    document: DocumentRef
    json_schema: dict[str, Any] | None = Field(None, alias="schema", description="inline JSON Schema")
    schema_name: str | None = Field(
        None, pattern=r"^[a-z0-9_\-]+$", description="name of a stored schema, e.g. shipping_manifest"
    )
    format: Literal["parquet", "csv"] = "parquet"
    mode: Literal["auto", "sync", "async"] = "auto"
    no_cache: bool = False

    @model_validator(mode="after")
    def one_schema(self) -> ExtractRequest:
        if (self.json_schema is None) == (self.schema_name is None):
            raise ValueError("give exactly one of 'schema' (inline JSON Schema) or 'schema_name'")
        return self


class SearchRequest(BaseModel):
    query: str = Field(..., min_length=1, max_length=2000)
    top_k: int = Field(10, ge=1, le=100)
    document_ids: list[str] | None = None
    mode: Literal["rerank", "exact", "dense"] = "rerank"


class PageRef(BaseModel):
    document_id: str = Field(..., min_length=64, max_length=64)
    page_number: int = Field(..., ge=1)


class ScoreRequest(BaseModel):
    queries: list[str] = Field(..., min_length=1, max_length=32)
    pages: list[PageRef] = Field(default_factory=list, max_length=64)
    images: list[str] = Field(default_factory=list, max_length=16, description="base64-encoded page images")


class EmbedRequest(BaseModel):
    texts: list[str] = Field(default_factory=list, max_length=32)
    images: list[str] = Field(default_factory=list, max_length=8, description="base64-encoded images")


# ------------------------------------------------------------------------------------------------ jobs
# Job records live in the job store (engine.jobs): queued → running → done | failed, every exception recorded.
def _invoke_async(payload: dict[str, Any]) -> None:
    """Run the job in a separate asynchronous invocation of this function (tests replace this)."""
    import boto3

    boto3.client("lambda").invoke(
        FunctionName=os.environ["AWS_LAMBDA_FUNCTION_NAME"],
        InvocationType="Event",
        Payload=json.dumps(payload).encode(),
    )


def _schema_for(req: ExtractRequest) -> dict[str, Any]:
    if req.json_schema is not None:
        return req.json_schema
    path = SCHEMAS_DIR / f"{req.schema_name}.json"
    if not path.exists():
        raise NotFound(
            f"no stored schema named {req.schema_name!r}; known: {sorted(p.stem for p in SCHEMAS_DIR.glob('*.json'))}"
        )
    return json.loads(path.read_text())


@tracer.capture_method
def run_extraction(job_id: str, request: dict[str, Any]) -> dict[str, Any]:
    """Run a created job: queued → running → done | failed (every exception is recorded, then re-raised)."""
    from engine.documents import S3Object
    from engine.extraction import extract_document

    svc = service()
    if not svc.jobs.start(job_id):  # a duplicate or late invocation: the job already ran or was given up
        logger.info("job is not queued any more; nothing to do", extra={"job_id": job_id})
        record = svc.jobs.get(job_id)
        return _job_view(record) if record else {"job_id": job_id, "status": "failed"}
    try:
        req = ExtractRequest.model_validate(request)
        bucket = req.document.bucket or svc.settings.documents_bucket or os.environ["DOCUMENTS_BUCKET"]
        out = extract_document(
            S3Object(bucket, req.document.key, req.document.version_id), _schema_for(req), settings=svc.settings, store=svc.store,
            service=svc, name=f"s3://{bucket}/{req.document.key}", csv=req.format == "csv", use_cache=not req.no_cache, s3_client=s3(),
        )  # fmt: skip
    except Exception as exc:
        metrics.add_metric(name="ExtractionsFailed", unit=MetricUnit.Count, value=1)
        svc.jobs.fail(job_id, exc)
        raise
    metrics.add_metric(
        name="CacheHits" if out.cached else "ExtractionsSucceeded", unit=MetricUnit.Count, value=1
    )
    if out.quality["quality_score"] is not None:  # null: nothing checkable (a scan without rules), no claim
        metrics.add_metric(
            name="QualityScore", unit=MetricUnit.Percent, value=round(100 * out.quality["quality_score"], 1)
        )
    grounding = out.quality.get("grounding") or {}
    result = {"cached": out.cached, "cache_key": out.cache_key, "outputs": out.keys,
              "quality": {"quality_score": out.quality["quality_score"], "schema_valid": out.quality["schema_valid"],
                          "grounding_ratio": grounding.get("ratio")}}  # fmt: skip
    svc.jobs.succeed(job_id, result)
    return {"job_id": job_id, "status": "done", **result}


def _job_view(record: Any) -> dict[str, Any]:
    """A job record as GET /jobs shows it: status, times, and the result's keys or the error."""
    view = record.to_dict()
    return {**{k: v for k, v in view.items() if k != "result"}, **(view.get("result") or {})}


@app.post("/extract")
def extract(body: Annotated[ExtractRequest, Body()]):  # noqa: ANN201 (a Response annotation makes Powertools build a model of it)
    from engine.extraction import compile_schema

    compile_schema(_schema_for(body))  # schema errors are 400s before any work is queued
    job_id = str(uuid.uuid4())
    request = body.model_dump(by_alias=True)
    mode = body.mode
    if mode == "auto":  # decided without converting or rendering; unknown (never-converted Office) → 202
        from engine.documents import S3Object
        from engine.extraction.runner import pages_without_converting

        svc = service()
        bucket = body.document.bucket or os.environ["DOCUMENTS_BUCKET"]
        ref = S3Object(bucket, body.document.key, body.document.version_id)
        index = svc.__dict__.get("index")  # only if already open: never load the model just to count pages
        pages = pages_without_converting(ref, svc.settings, svc.store, index, s3_client=s3())
        mode = "sync" if pages is not None and pages <= SYNC_MAX_PAGES else "async"
    jobs = service().jobs
    jobs.create(job_id, request, service().settings.job_timeout_s)
    if mode == "sync":
        return Response(200, content_types.APPLICATION_JSON, json.dumps(run_extraction(job_id, request)))
    try:
        _invoke_async({"docvision_job": job_id, "request": request})
    except Exception as exc:
        jobs.fail(job_id, exc)
        raise
    return Response(
        202,
        content_types.APPLICATION_JSON,
        json.dumps({"job_id": job_id, "status": "queued", "status_url": f"/jobs/{job_id}"}),
    )


@app.get("/jobs/<job_id>")
def get_job(job_id: str) -> dict[str, Any]:
    record = service().jobs.get(job_id)  # an overdue queued/running job is marked failed here
    if record is None:
        raise NotFound("no such job", document=job_id)
    return _job_view(record)


# ------------------------------------------------------------------------------------ search and score
def _images(encoded: list[str]) -> list[Any]:
    from PIL import Image

    try:
        return [Image.open(io.BytesIO(base64.b64decode(e, validate=True))).convert("RGB") for e in encoded]
    except Exception as exc:
        raise RequestValidationError(
            [{"loc": ["body", "images"], "msg": f"not a base64-encoded image ({exc})", "type": "value_error"}]
        ) from exc


@app.post("/search")
def search(body: Annotated[SearchRequest, Body()]) -> dict[str, Any]:
    warm_model()
    return service().search(body.query, top_k=body.top_k, document_ids=body.document_ids, mode=body.mode)


@app.post("/score")
def score(body: Annotated[ScoreRequest, Body()]) -> dict[str, Any]:
    if not body.pages and not body.images:
        raise RequestValidationError(
            [{"loc": ["body"], "msg": "give 'pages' or 'images' to score against", "type": "value_error"}]
        )
    warm_model()
    return service().score(
        body.queries, pages=[p.model_dump() for p in body.pages], images=_images(body.images) or None
    )


@app.post("/embed/multivector")
def embed(body: Annotated[EmbedRequest, Body()]) -> dict[str, Any]:
    if not body.texts and not body.images:
        raise RequestValidationError(
            [{"loc": ["body"], "msg": "give 'texts' and/or 'images'", "type": "value_error"}]
        )
    warm_model()
    return service().embed_multivector(texts=body.texts or None, images=_images(body.images) or None)


@app.get("/health")
def health() -> dict[str, Any]:
    warm_model()
    return service().health()


@app.get("/openapi.json")
def openapi():  # noqa: ANN201
    return Response(
        200, content_types.APPLICATION_JSON, app.get_openapi_json_schema(title="docvision", version="0.1.0")
    )


# -------------------------------------------------------------------------------------------- errors
@app.exception_handler(RequestValidationError)
def bad_request(exc: RequestValidationError) -> Response:
    errors = [{"where": ".".join(map(str, e.get("loc", []))), "problem": e.get("msg")} for e in exc.errors()]
    return Response(
        400,
        content_types.APPLICATION_JSON,
        json.dumps(
            {"error": {"code": "bad_request", "message": "the request body is not valid", "details": errors}}
        ),
    )


@app.exception_handler(DocVisionError)
def engine_error(exc: DocVisionError) -> Response:
    logger.warning("request failed", extra={"error": exc.to_dict()})
    return Response(exc.http_status, content_types.APPLICATION_JSON, json.dumps(error_body(exc), default=str))


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "docvision_job" in event:  # the asynchronous half of a 202 extraction
        from engine.jobs import error_of

        try:
            return run_extraction(event["docvision_job"], event["request"])
        except Exception as exc:  # recorded on the job; not raised, so Lambda does not run it again
            logger.warning("job failed", extra={"job_id": event["docvision_job"], "error": error_of(exc)})
            return {"job_id": event["docvision_job"], "status": "failed", "error": error_of(exc)}
    return app.resolve(event, context)
