"""engine.secrets: one Secrets Manager adapter, values cached for a TTL, never in os.environ."""

from __future__ import annotations

import json
import os

import pytest

from engine.bootstrap import with_secrets
from engine.config import Settings
from engine.errors import ConfigError
from engine.secrets import SecretReader

pytestmark = pytest.mark.unit


class FakeSecretsManager:
    """The one call SecretReader makes of a boto3 secretsmanager client."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.calls = 0

    def get_secret_value(self, SecretId: str) -> dict[str, str]:  # noqa: N803 - boto3's name
        self.calls += 1
        if SecretId not in self.values:
            raise KeyError(SecretId)
        return {"SecretString": self.values[SecretId]}


def test_values_are_cached_for_the_ttl_then_read_again() -> None:
    now = [0.0]
    sm = FakeSecretsManager({"s": "one"})
    reader = SecretReader(ttl_s=300, client=sm, clock=lambda: now[0])
    assert reader.get("s") == "one" and reader.get("s") == "one" and sm.calls == 1
    sm.values["s"] = "two"  # rotated
    now[0] = 299.0
    assert reader.get("s") == "one"
    now[0] = 300.0
    assert reader.get("s") == "two" and sm.calls == 2


def test_errors_name_the_secret_not_the_value() -> None:
    reader = SecretReader(client=FakeSecretsManager({"plain": "hunter2"}))
    with pytest.raises(ConfigError, match="secret 'missing' \\(KeyError\\)"):
        reader.get("missing")
    with pytest.raises(ConfigError, match="not a JSON object") as info:
        reader.get_json("plain")
    assert "hunter2" not in str(info.value)


def test_qdrant_secret_goes_into_settings_not_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QDRANT_URL", raising=False)
    monkeypatch.delenv("QDRANT_API_KEY", raising=False)
    sm = FakeSecretsManager({"arn:q": json.dumps({"url": "http://127.0.0.1:6333", "api_key": "k"})})
    s = with_secrets(Settings(qdrant_secret_arn="arn:q"), SecretReader(client=sm))
    assert (s.qdrant_url, s.qdrant_api_key) == ("http://127.0.0.1:6333", "k")
    assert "QDRANT_URL" not in os.environ and "QDRANT_API_KEY" not in os.environ
    # an explicit QDRANT_URL wins and the secret is not read
    s = with_secrets(
        Settings(qdrant_secret_arn="arn:q", qdrant_url="http://other:6333"), SecretReader(client=sm)
    )
    assert s.qdrant_url == "http://other:6333" and sm.calls == 1
