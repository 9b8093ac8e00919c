"""What every handler shares: Powertools objects, the per-container service, secrets, error mapping.

Module-level objects live for the container's lifetime: the model, index client and S3 clients are
created on first use (lazily) and reused by every warm invocation.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from engine.config import powertools_names

if TYPE_CHECKING:
    from engine.ports import Embedder
    from engine.service import DocVision

# Powertools' own variables (POWERTOOLS_SERVICE_NAME, POWERTOOLS_METRICS_NAMESPACE), read in engine/config.py
SERVICE_NAME, METRICS_NAMESPACE = powertools_names()
logger = Logger(service=SERVICE_NAME)
tracer = Tracer(service=SERVICE_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE_NAME)

_service: DocVision | None = None


def service() -> DocVision:
    """The DocVision core for this container (engine.bootstrap.build: Settings from the environment, the Qdrant
    secret through engine.secrets, every port built on first use)."""
    global _service
    if _service is None:
        from engine.service import bootstrap

        _service = bootstrap()
    return _service


def reset_service() -> None:
    """Tests and the in-process runner: forget the container state (a new 'cold start'). The old services are
    closed first, so the embedded index's lock is free for the next container in this process."""
    global _service, _s3
    if _service is not None:
        _service.services.close()
    _service, _s3 = None, None


def warm_model() -> Embedder:
    """Load the model if this container has not yet; emit its load time as a metric (cold start)."""
    svc = service()
    if not svc.services.embedder.loaded:
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
