"""Each client of the fallback chain sends its own credential, recorded at the (local) servers that receive it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import Settings
from engine.errors import ConfigError
from engine.extraction.clients import client_chain, resolve_credential
from engine.extraction.runner import extract_document
from engine.storage import LocalStore
from tests.fixtures import documents as d
from tests.fixtures.llm_server import ScriptedLLM

pytestmark = pytest.mark.integration
SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}},
    "required": ["title"],
}


def test_every_client_sends_only_its_own_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pdf = d.multipage_pdf(tmp_path / "m.pdf")
    monkeypatch.setenv("ANTHROPIC_BACKUP_KEY", "key-of-anthropic-backup")
    monkeypatch.setenv("OPENAI_BACKUP_KEY", "key-of-openai-backup")
    with (
        ScriptedLLM([{"status": 500}]) as primary,
        ScriptedLLM([{"status": 500}]) as anthropic,
        ScriptedLLM([{"status": 500}]) as keyless,
        ScriptedLLM([{"content": json.dumps({"title": "SHIPPING MANIFEST"})}]) as backup,
    ):
        s = Settings(
            llm_base_url=primary.base_url,
            llm_model="primary-vlm",
            llm_api_key="key-of-primary",
            llm_fallback=(
                f"anthropic|claude-x|{anthropic.base_url.removesuffix('/v1')}|env:ANTHROPIC_BACKUP_KEY,"
                f"openai-generic|keyless-vlm|{keyless.base_url},"
                f"openai-generic|backup-vlm|{backup.base_url}|env:OPENAI_BACKUP_KEY"
            ),
        )
        out = extract_document(pdf, SCHEMA, settings=s, store=LocalStore(tmp_path / "store"))
    assert out.result["data"]["title"] == "SHIPPING MANIFEST"
    # every server was tried (primary and the failing fallbacks with their retries), each with its own key only
    assert primary.headers and {h["authorization"] for h in primary.headers} == {"Bearer key-of-primary"}
    assert {h["x-api-key"] for h in anthropic.headers} == {"key-of-anthropic-backup"}
    assert {h["authorization"] for h in anthropic.headers} == {None}
    assert keyless.headers and all(h == {"authorization": None, "x-api-key": None} for h in keyless.headers)
    assert [h["authorization"] for h in backup.headers] == ["Bearer key-of-openai-backup"]
    prov = json.dumps(out.result["provenance"])
    assert "key-of-" not in prov  # keys are never written into results


def test_credential_references_fail_with_what_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE is not set"):
        resolve_credential("env:NOT_SET_ANYWHERE")
    with pytest.raises(ConfigError, match="env:VARIABLE or secret:"):
        resolve_credential("the-key-itself")
    with pytest.raises(ConfigError, match="provider\\|model\\|base_url\\|credential"):
        client_chain(Settings(llm_model="m", llm_base_url="http://x", llm_fallback="openai-generic"))


@pytest.fixture(scope="module")
def moto_server():
    from tests.fixtures.moto import moto_server as start

    with start() as url:
        yield url


def test_secrets_manager_reference(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    for k, v in {"AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)

    from engine import secrets

    sm = boto3.client("secretsmanager")
    sm.create_secret(Name="llm/backup", SecretString=json.dumps({"api_key": "key-from-secret"}))
    sm.create_secret(Name="llm/plain", SecretString="plain-key")
    monkeypatch.setattr(
        secrets, "_default", None
    )  # a fresh container: nothing read yet (boto3 from this env)
    assert resolve_credential("secret:llm/backup") == "key-from-secret"
    assert resolve_credential("secret:llm/plain") == "plain-key"
    with pytest.raises(ConfigError, match="Secrets Manager secret 'llm/missing'"):
        resolve_credential("secret:llm/missing")
