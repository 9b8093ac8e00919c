"""Where document bytes come from: a path, raw bytes, or an S3 object. Size limits apply before reading."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import BadRequest, DocumentTooLarge, EmptyDocument, NotFound


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str
    version_id: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


DocumentInput = str | Path | bytes | S3Object


@dataclass(frozen=True)
class LoadedBytes:
    data: bytes
    name: str  # what error messages call the document
    uri: str  # where it came from (lineage)
    sha256: str


def _too_large(name: str, size: int, max_bytes: int) -> DocumentTooLarge:
    return DocumentTooLarge(
        f"{size:,} bytes exceeds the limit of {max_bytes:,} (DOCVISION_MAX_BYTES)", document=name, size=size
    )


def load_bytes(
    source: DocumentInput, *, name: str | None, max_bytes: int, s3_client: Any = None
) -> LoadedBytes:
    if isinstance(source, S3Object):
        data, uri = _read_s3(source, max_bytes, s3_client), source.uri
        name = name or source.key
    elif isinstance(source, bytes | bytearray):
        data, uri = bytes(source), ""
        name = name or f"<{len(source)} bytes>"
        if len(data) > max_bytes:
            raise _too_large(name, len(data), max_bytes)
    else:
        path = Path(source)
        name = name or str(path)
        if not path.is_file():
            raise NotFound("no such file", document=name)
        size = path.stat().st_size
        if size > max_bytes:
            raise _too_large(name, size, max_bytes)
        data, uri = path.read_bytes(), path.resolve().as_uri()
    if not data.strip():
        raise EmptyDocument("the file is empty (0 bytes or only whitespace)", document=name)
    return LoadedBytes(data=data, name=name, uri=uri, sha256=hashlib.sha256(data).hexdigest())


def _read_s3(obj: S3Object, max_bytes: int, client: Any) -> bytes:
    import boto3
    from botocore.exceptions import ClientError

    client = client or boto3.client("s3")
    extra = {"VersionId": obj.version_id} if obj.version_id else {}
    try:
        head = client.head_object(Bucket=obj.bucket, Key=obj.key, **extra)
        if head["ContentLength"] > max_bytes:
            raise _too_large(obj.uri, head["ContentLength"], max_bytes)
        return client.get_object(Bucket=obj.bucket, Key=obj.key, **extra)["Body"].read()
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound", "NoSuchVersion"):
            raise NotFound("the S3 object (or that version of it) does not exist", document=obj.uri) from exc
        if code in ("NoSuchBucket",):
            raise NotFound("the S3 bucket does not exist", document=obj.uri) from exc
        if code in ("403", "AccessDenied", "AllAccessDisabled"):
            raise NotFound(
                "the S3 object does not exist or this function may not read it (check the bucket policy)",
                document=obj.uri,
            ) from exc
        if code in ("400", "InvalidArgument", "InvalidBucketName", "InvalidVersionId", "InvalidRequest"):
            raise BadRequest(
                f"S3 rejected the request ({code}): check the bucket name and version id", document=obj.uri
            ) from exc
        raise
