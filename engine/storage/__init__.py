"""Blob store with one interface for a local folder and S3 (page PNGs, results, job records).

open_store(".docvision/store")          # local folder (default)
open_store("s3://bucket/prefix")        # S3 (boto3; AWS_ENDPOINT_URL works for moto/minio)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from engine.errors import NotFound


class BlobStore(Protocol):
    uri: str

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str: ...
    def get(self, key: str, *, version_id: str | None = None, max_bytes: int | None = None) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def url(self, key: str) -> str: ...


class LocalStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"key {key!r} escapes the store")
        return path

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # write-then-rename: a reader never sees half a file
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return self.url(key)

    def get(self, key: str, *, version_id: str | None = None, max_bytes: int | None = None) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"no object {key!r} in {self.uri}")
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise _too_large(self.url(key), path.stat().st_size, max_bytes)
        return path.read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file()
            and not p.name.startswith(".tmp-")
            and p.relative_to(self.root).as_posix().startswith(prefix)
        )

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def url(self, key: str) -> str:
        return str(self._path(key))


class S3Store:
    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        import boto3

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = client or boto3.client("s3")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type)
        return self.url(key)

    def get(self, key: str, *, version_id: str | None = None, max_bytes: int | None = None) -> bytes:
        """One object (a given version of it); with ``max_bytes``, its size is checked before it is read."""
        from botocore.exceptions import ClientError

        extra = {"VersionId": version_id} if version_id else {}
        try:
            if max_bytes is not None:
                size = self.client.head_object(Bucket=self.bucket, Key=self._key(key), **extra)[
                    "ContentLength"
                ]
                if size > max_bytes:
                    raise _too_large(self.url(key), size, max_bytes)
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "NoSuchVersion", "404", "NotFound"):
                raise NotFound(f"no object {key!r} in {self.uri}", document=self.url(key)) from exc
            raise

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError:
            return False

    def list(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            keys += [o["Key"][strip:] for o in page.get("Contents", [])]
        return sorted(keys)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def _too_large(where: str, size: int, max_bytes: int) -> Exception:
    from engine.errors import DocumentTooLarge

    return DocumentTooLarge(
        f"{size:,} bytes exceeds the limit of {max_bytes:,} (DOCVISION_MAX_BYTES)", document=where, size=size
    )


def open_store(uri: str, client: Any = None) -> BlobStore:
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[5:].partition("/")
        return S3Store(bucket, prefix, client)
    return LocalStore(uri)
