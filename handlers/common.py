"""What every handler shares: Powertools objects, the per-container service, secrets, error mapping.

Module-level objects live for the container's lifetime: the model, index client and S3 clients are
created on first use (lazily) and reused by every warm invocation.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

SERVICE_NAME = os.environ.get("POWERTOOLS_SERVICE_NAME", "docvision")
logger = Logger(service=SERVICE_NAME)
tracer = Tracer(service=SERVICE_NAME)
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "DocVision"), service=SERVICE_NAME)

_service: Any = None


def _load_qdrant_secret() -> None:
    """QDRANT_SECRET_ARN → QDRANT_URL / QDRANT_API_KEY (Secrets Manager JSON {"url": …, "api_key": …})."""
    arn = os.environ.get("QDRANT_SECRET_ARN")
    if arn and not os.environ.get("QDRANT_URL"):
        from aws_lambda_powertools.utilities.parameters import get_secret

        secret = json.loads(get_secret(arn, max_age=300))
        os.environ["QDRANT_URL"] = secret["url"]
        if secret.get("api_key"):
            os.environ["QDRANT_API_KEY"] = secret["api_key"]


def service() -> Any:
    """The DocVision core for this container (settings from the environment)."""
    global _service
    if _service is None:
        from engine.service import bootstrap

        _load_qdrant_secret()
        _service = bootstrap()
    return _service


def reset_service() -> None:
    """Tests and the in-process runner: forget the container state (a new 'cold start')."""
    global _service, _s3
    _service, _s3 = None, None


def warm_model() -> Any:
    """Load the model if this container has not yet; emit its load time as a metric (cold start)."""
    svc = service()
    if "embedder" not in svc.__dict__:
        started = time.perf_counter()
        embedder = svc.embedder
        seconds = time.perf_counter() - started
        metrics.add_metric(name="ModelLoadSeconds", unit=MetricUnit.Seconds, value=round(seconds, 3))
        logger.info("model loaded", extra={"model": embedder.describe(), "seconds": round(seconds, 2)})
    return svc.embedder


_s3: Any = None


def s3() -> Any:
    global _s3
    if _s3 is None:
        import boto3

        _s3 = boto3.client("s3")
    return _s3


def error_body(exc: Exception) -> dict[str, Any]:
    from engine.errors import DocVisionError

    if isinstance(exc, DocVisionError):
        return {"error": exc.to_dict()}
    return {
        "error": {"code": "internal_error", "message": "internal error; see the logs with this request's id"}
    }
