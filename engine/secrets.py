"""Secrets Manager, read through one adapter: values cached for a TTL (a rotation reaches warm containers within
it), never written into ``os.environ`` (a child process or a crash dump would inherit them), never logged.

``SecretReader.get(id)`` is the secret string; ``get_json(id)`` its JSON object. Errors are ConfigError naming
the secret id and the exception type only (never the value).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from engine.errors import ConfigError

DEFAULT_TTL_S = 300.0


class SecretReader:
    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        client: Any = None,  # a boto3 "secretsmanager" client (untyped third-party); default: boto3's
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self._client = client
        self._clock = clock
        self._cache: dict[str, tuple[float, str]] = {}

    def _fetch(self, secret_id: str) -> str:
        if self._client is None:
            import boto3

            self._client = boto3.client("secretsmanager")
        return str(self._client.get_secret_value(SecretId=secret_id)["SecretString"])

    def get(self, secret_id: str, *, what: str = "secret") -> str:
        """The secret string, from the cache while it is younger than ttl_s. `what` names it in errors."""
        now = self._clock()
        hit = self._cache.get(secret_id)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        try:
            value = self._fetch(secret_id)
        except Exception as exc:  # noqa: BLE001 - any failure is a configuration problem the operator must fix
            raise ConfigError(
                f"cannot read the {what} from Secrets Manager secret {secret_id!r} ({type(exc).__name__}); "
                "check the secret exists and the function's role may read it"
            ) from None
        self._cache[secret_id] = (now, value)
        return value

    def get_json(self, secret_id: str, *, what: str = "secret") -> dict[str, Any]:
        value = self.get(secret_id, what=what)
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ConfigError(f"the {what} in Secrets Manager secret {secret_id!r} is not a JSON object")
        return parsed


_default: SecretReader | None = None


def default_reader(ttl_s: float | None = None) -> SecretReader:
    """The process's reader (one cache per container); ``ttl_s`` (DOCVISION_SECRET_TTL_S) sets its TTL."""
    global _default
    if _default is None:
        _default = SecretReader()
    if ttl_s is not None:
        _default.ttl_s = ttl_s
    return _default
