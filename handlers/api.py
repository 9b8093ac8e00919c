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
import json
import os
import re
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field, model_validator

from engine.errors import BadRequest, DocVisionError, InputTooLarge, NotFound
from handlers.common import error_body, logger, metrics, s3, service, tracer, warm_model

app = APIGatewayRestResolver(enable_validation=True)
SCHEMAS_DIR = Path(os.environ.get("DOCVISION_SCHEMAS_DIR", Path(__file__).resolve().parents[1] / "schemas"))
SYNC_MAX_PAGES = int(os.environ.get("DOCVISION_SYNC_MAX_PAGES", "4"))
# Request limits (issue 12): every image the API decodes, every text it embeds, every body it parses is bounded.
API_MAX_IMAGE_PIXELS = int(os.environ.get("DOCVISION_API_MAX_IMAGE_PIXELS", str(36_000_000)))  # A3 at 300 DPI
API_MAX_REQUEST_PIXELS = int(os.environ.get("DOCVISION_API_MAX_REQUEST_PIXELS", str(100_000_000)))
MAX_IMAGE_B64 = 8_000_000  # characters of base64 per image (6 MB decoded; API Gateway caps bodies at 10 MB)
MAX_TEXT_CHARS = 2000  # per query/text: the model reads a few hundred tokens; longer texts only cost minutes
# ...and characters are not tokens (2,000 emoji are 8,000): texts are bounded in the model's own tokens too
API_MAX_TEXT_TOKENS = int(os.environ.get("DOCVISION_API_MAX_TEXT_TOKENS", "1024"))
MAX_JSON_DEPTH = 64  # nesting of any request body
MAX_JSON_CONTAINERS = (
    50_000  # arrays + objects of any request body (the largest valid one has a few thousand)
)
LAMBDA_RESPONSE_LIMIT = 6 * 1024 * 1024
_BUCKET = r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$"
# Which S3 keys a caller may name as document.key (comma-separated prefixes; derived/ never, whatever this says).
API_KEY_PREFIXES = tuple(
    p.strip() for p in os.environ.get("DOCVISION_API_KEY_PREFIXES", "raw/").split(",") if p.strip()
)
QueryText = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
ImageB64 = Annotated[str, Field(min_length=1, max_length=MAX_IMAGE_B64)]


# ---------------------------------------------------------------------------------------------- models
class DocumentRef(BaseModel):
    bucket: str | None = Field(None, pattern=_BUCKET, description="S3 bucket (default: the documents bucket)")
    key: str = Field(
        ...,
        min_length=1,
        max_length=1024,
        description=f"S3 key of the document, under one of {list(API_KEY_PREFIXES)} (DOCVISION_API_KEY_PREFIXES); "
        "never under derived/",
    )
    version_id: str | None = Field(None, pattern=r"^[A-Za-z0-9._\-]{1,1024}$")

    @model_validator(mode="after")
    def allowed_key(self) -> DocumentRef:
        """A caller names documents, never what the service derived (page images, raw model replies under
        derived/failures, job outcomes), nor anything outside the configured prefixes."""
        parts = self.key.split("/")
        if self.key.startswith("derived/") or "" in parts[:-1] or "." in parts or ".." in parts:
            raise ValueError(
                "document.key may not name derived/ objects nor hold empty, '.' or '..' segments"
            )
        if not self.key.startswith(API_KEY_PREFIXES):
            raise ValueError(f"document.key must start with one of {list(API_KEY_PREFIXES)}")
        return self


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
    query: QueryText
    top_k: int = Field(10, ge=1, le=100)
    document_ids: list[str] | None = None
    mode: Literal["rerank", "exact", "dense", "text", "hybrid"] = "rerank"


class PageRef(BaseModel):
    document_id: str = Field(..., min_length=64, max_length=64)
    page_number: int = Field(..., ge=1)


class ScoreRequest(BaseModel):
    queries: list[QueryText] = Field(..., min_length=1, max_length=32)
    pages: list[PageRef] = Field(default_factory=list, max_length=64)
    images: list[ImageB64] = Field(
        default_factory=list, max_length=16, description="base64-encoded page images"
    )


class EmbedRequest(BaseModel):
    texts: list[QueryText] = Field(default_factory=list, max_length=32)
    images: list[ImageB64] = Field(default_factory=list, max_length=8, description="base64-encoded images")
    encoding: Literal["float16_base64", "json"] = Field(
        "float16_base64",
        description="float16_base64: each multivector's data is base64 of little-endian float16 (row-major, "
        "`shape`), which keeps 8 page images inside Lambda's 6 MB response; json: nested float lists",
    )


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
    from engine.jobs import upstream_error

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
        typed = upstream_error(exc)  # the LLM's HTTP errors and timeouts: typed, in the job and the answer
        svc.jobs.fail(job_id, typed or exc)
        if typed is not None:
            raise typed from exc
        raise
    metrics.add_metric(
        name="CacheHits" if out.cached else "ExtractionsSucceeded", unit=MetricUnit.Count, value=1
    )
    if out.quality["quality_score"] is not None:  # null: nothing checkable (a scan without rules), no claim
        metrics.add_metric(
            name="QualityScore", unit=MetricUnit.Percent, value=round(100 * out.quality["quality_score"], 1)
        )
    verdict = out.quality.get("verdict") or {}
    # one data point per document (0 or 1): the alarm sums them, so a single document needing review is seen
    metrics.add_metric(name="DocumentsNeedingReview", unit=MetricUnit.Count,
                       value=1 if verdict.get("decision") in ("review", "reject") else 0)  # fmt: skip
    grounding = out.quality.get("grounding") or {}
    result = {"cached": out.cached, "cache_key": out.cache_key, "outputs": out.keys,
              "quality": {"quality_score": out.quality["quality_score"], "schema_valid": out.quality["schema_valid"],
                          "grounding_ratio": grounding.get("ratio"), "verdict": verdict.get("decision"),
                          # codes and paths only: no value reaches the job record
                          "verdict_reasons": [{k: r[k] for k in ("reason", "path") if k in r} for r in verdict.get("reasons", [])][:50]}}  # fmt: skip
    svc.jobs.succeed(job_id, result)
    return {"job_id": job_id, "status": "done", **result}


def _job_view(record: Any) -> dict[str, Any]:
    """A job record as GET /jobs shows it: status, times, and the result's keys or the error."""
    view = record.to_dict()
    return {**{k: v for k, v in view.items() if k != "result"}, **(view.get("result") or {})}


@app.post("/extract")
def extract(body: Annotated[ExtractRequest, Body()]):  # noqa: ANN201 (a Response annotation makes Powertools build a model of it)
    from engine.extraction import compile_schema

    # schema errors (and schemas too large or deep with their $refs resolved) are 4xx before any work is queued
    compile_schema(_schema_for(body))
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
    """Decode with the same header-first pixel guard as ingest (never PIL's process-global limit switched off)."""
    from engine.documents.images import decode_image

    images, total = [], 0
    for i, e in enumerate(encoded):
        try:
            raw = base64.b64decode(e, validate=True)
        except ValueError as exc:
            raise RequestValidationError(
                [{"loc": ["body", "images", i], "msg": "not valid base64", "type": "value_error"}]
            ) from exc
        image = decode_image(raw, f"images[{i}]", max_pixels=API_MAX_IMAGE_PIXELS)
        total += image.width * image.height
        if total > API_MAX_REQUEST_PIXELS:
            raise InputTooLarge(
                f"the images of this request add up to more than {API_MAX_REQUEST_PIXELS:,} pixels; "
                "send fewer or smaller images per request",
                document=f"images[{i}]",
            )
        images.append(image)
    return images


def _check_tokens(texts: list[str], where: str) -> None:
    """Refuse a text above API_MAX_TEXT_TOKENS of the model's tokenizer before anything is embedded. A
    byte-level BPE gives at most one token per UTF-8 byte, so only texts longer than that are tokenized."""
    long = [(i, t) for i, t in enumerate(texts) if len(t.encode("utf-8")) > API_MAX_TEXT_TOKENS]
    if not long:
        return
    tokenizer = getattr(warm_model().processor, "tokenizer", None)
    if tokenizer is None:  # pragma: no cover - every supported family has one
        return
    counts = tokenizer([t for _, t in long], add_special_tokens=False)["input_ids"]
    for (i, _), ids in zip(long, counts, strict=True):
        if len(ids) > API_MAX_TEXT_TOKENS:
            raise InputTooLarge(
                f"the text is {len(ids):,} tokens, above the {API_MAX_TEXT_TOKENS:,} a text may have "
                "(DOCVISION_API_MAX_TEXT_TOKENS); shorten it",
                document=f"{where}[{i}]" if where != "query" else where,
            )


def _check_answer_size(texts: list[str], images: list[Any], encoding: str) -> None:
    """Refuse an embedding answer that cannot fit Lambda's 6 MB before computing it: one row of `dim` values
    per token (texts: their tokens plus the query prompt; images: their visual tokens). float16_base64 is
    exact (4/3 of 2 bytes a value); json is bounded below by 8 characters a value ("-0.0123, " is 9+)."""
    embedder = warm_model()
    per_value = 8 / 3 if encoding == "float16_base64" else 8
    rows = 0
    if texts:
        batch = embedder.processor.process_queries(texts)
        rows += int(batch["attention_mask"].sum())
    rows += sum(embedder.visual_tokens(im.width, im.height) for im in images)
    size = int(rows * embedder.dim * per_value)
    if size > LAMBDA_RESPONSE_LIMIT - 64 * 1024:
        raise InputTooLarge(
            f"the answer would be about {size:,} bytes, above Lambda's 6 MB response limit; send fewer images or "
            "texts per request" + ("" if encoding == "float16_base64" else " or use encoding=float16_base64"),
            document="embed",
        )


def _compact(result: dict[str, Any], encoding: str) -> dict[str, Any]:
    """Multivectors as base64 float16 (about 5x smaller than JSON floats); refuse what Lambda could not return."""
    import numpy as np

    if encoding == "float16_base64":
        for part in ("queries", "images"):
            for item in result.get(part, []):
                data = np.asarray(item["data"], dtype="<f2")
                item.update(
                    dtype="float16", encoding="base64", data=base64.b64encode(data.tobytes()).decode()
                )
    size = len(json.dumps(result))
    if size > LAMBDA_RESPONSE_LIMIT - 64 * 1024:
        raise InputTooLarge(
            f"the answer would be {size:,} bytes, above Lambda's 6 MB response limit; send fewer images or texts "
            "per request" + ("" if encoding == "float16_base64" else " or use encoding=float16_base64"),
            document="embed",
        )
    return result


@app.post("/search")
def search(body: Annotated[SearchRequest, Body()]) -> dict[str, Any]:
    _check_tokens([body.query], "query")
    warm_model()
    return service().search(body.query, top_k=body.top_k, document_ids=body.document_ids, mode=body.mode)


@app.post("/score")
def score(body: Annotated[ScoreRequest, Body()]) -> dict[str, Any]:
    if not body.pages and not body.images:
        raise RequestValidationError(
            [{"loc": ["body"], "msg": "give 'pages' or 'images' to score against", "type": "value_error"}]
        )
    _check_tokens(body.queries, "queries")
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
    _check_tokens(body.texts, "texts")
    images = _images(body.images)
    _check_answer_size(body.texts, images, body.encoding)
    result = service().embed_multivector(texts=body.texts or None, images=images or None)
    return _compact(result, body.encoding)


@app.get("/health")
def health() -> dict[str, Any]:
    return service().health()  # never loads the model (nor imports torch when it is not loaded)


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


@app.exception_handler(Exception)
def internal_error(exc: Exception) -> Response:
    """Anything unexpected: a JSON 500 with a correlation id, never API Gateway's 502. The log carries the
    exception type and code locations only, no message (it could quote a document, a prompt or an answer)."""
    import traceback

    request_id = app.current_event.request_context.request_id or str(uuid.uuid4())
    frames = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in traceback.extract_tb(exc.__traceback__)]
    logger.error(
        "unhandled error",
        extra={"correlation_id": request_id, "error_type": type(exc).__name__, "where": frames[-8:]},
    )
    body = error_body(exc)
    body["error"]["correlation_id"] = request_id
    return Response(500, content_types.APPLICATION_JSON, json.dumps(body))


# ------------------------------------------------------------------------------------- body pre-check
# Before Powertools parses anything: the body is decoded (base64, UTF-8) and its structure bounded in time
# linear in its length, so that no body can cost more than a parse. Two regex passes run in C: strings are
# cut out (the unrolled pattern consumes every character once, an unterminated string runs to the end and
# stops there; possessive, so the matcher keeps no backtracking state: 290 MB for 5 MB of \" otherwise),
# then everything but brackets. What is left is at most MAX_JSON_CONTAINERS brackets, counted
# in Python. Only then json.loads runs, with the nesting known to be shallow.
_JSON_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_CLOSES = {"]": "[", "}": "{"}


def _structure_problem(text: str) -> str | None:
    """Why the JSON text's arrays/objects are refused (too deep, too many, unbalanced), or None."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    too_many = len(brackets) > 2 * MAX_JSON_CONTAINERS
    stack: list[str] = []
    for c in brackets[
        : 2 * MAX_JSON_CONTAINERS + 1
    ]:  # depth first (the more useful answer), bounded either way
        if c in "[{":
            stack.append(c)
            if len(stack) > MAX_JSON_DEPTH:
                return f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels"
        elif not stack or stack.pop() != _CLOSES[c]:
            return "the body is not valid JSON: its brackets do not match"
    if too_many:
        return f"the JSON body has more than {MAX_JSON_CONTAINERS:,} arrays and objects"
    return "the body is not valid JSON: its brackets do not match" if stack else None


def _checked_body(event: dict[str, Any]) -> str | None:
    """The request body as text whose JSON is well-formed and bounded, or raises BadRequest saying why.

    A base64 body (isBase64Encoded) must be strict base64 of UTF-8 text; JSON is UTF-8 (RFC 8259 §8.1: a
    leading byte order mark may be ignored, and is); a lone surrogate (raw or as a \\uD800 escape) would
    fail later, when the text is encoded for the tokenizer, S3 or a log, so it is refused here."""
    body = event.get("body")
    if body is None or body == "":
        return body
    if not isinstance(body, str):
        raise BadRequest("the body must be a JSON document", document="body")
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except ValueError as exc:
            raise BadRequest("the body is marked base64 but is not valid base64", document="body") from exc
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(
                f"the body is not UTF-8 (byte {exc.start}); send JSON encoded as UTF-8", document="body"
            ) from exc
    body = body.removeprefix("\ufeff")
    problem = _structure_problem(body)
    if problem:
        raise BadRequest(problem, document="body")
    try:
        parsed = json.loads(body)
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")  # lone surrogates, raw or escaped
    except UnicodeEncodeError as exc:
        raise BadRequest(
            "the body holds an unpaired UTF-16 surrogate (e.g. \\ud800 without its pair); send valid Unicode",
            document="body",
        ) from exc
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"the body is not valid JSON ({exc.msg} at character {exc.pos})", document="body"
        ) from exc
    except (ValueError, RecursionError) as exc:  # e.g. an integer beyond Python's 4,300-digit limit
        raise BadRequest(f"the body is not valid JSON ({type(exc).__name__})", document="body") from exc
    return body


def _refused(exc: DocVisionError) -> dict[str, Any]:
    """A refusal before routing, shaped as every other error answer."""
    return {"statusCode": exc.http_status, "headers": {"Content-Type": "application/json"},
            "body": json.dumps(error_body(exc))}  # fmt: skip


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
    try:
        body = _checked_body(event)
    except BadRequest as exc:
        return _refused(exc)
    return app.resolve({**event, "body": body, "isBase64Encoded": False}, context)
