"""Which LLM client BAML calls, chosen at run time from configuration (a ClientRegistry), never by editing .baml.

DOCVISION_LLM_PROVIDER=openai-generic  DOCVISION_LLM_BASE_URL=… DOCVISION_LLM_MODEL=… [DOCVISION_LLM_API_KEY]
DOCVISION_LLM_PROVIDER=anthropic       DOCVISION_LLM_MODEL=claude-…  (ANTHROPIC_API_KEY)
DOCVISION_LLM_PROVIDER=aws-bedrock     DOCVISION_LLM_MODEL=anthropic.claude-…  (AWS credentials/region)
DOCVISION_LLM_FALLBACK=<provider>|<model>|<base_url>|<credential>,…   clients tried in order when the primary fails

Credentials are per client; no client ever inherits another's key:
- the primary uses DOCVISION_LLM_API_KEY, or DOCVISION_LLM_API_KEY_REF (a reference, see below);
- each fallback names its own credential in its 4th field: `env:VAR` (read from that environment variable),
  `secret:<arn or name>` (AWS Secrets Manager: the secret string, or its "api_key" field if it is JSON), or
  empty (no key: the provider's own default, e.g. ANTHROPIC_API_KEY for anthropic, AWS credentials for Bedrock).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError

if TYPE_CHECKING:
    from engine.config import Settings

# Keep prompts, page images and answers out of logs unless asked: BAML logs prompts at info and prints the
# prompt and the model's reply in its warning when a reply does not parse, so default to errors only.
# BAML reads BAML_LOG itself; it is written only here: the default before BAML is imported, then per extraction.
_OPERATOR_BAML_LOG = os.environ.get("BAML_LOG")  # an operator's own level, kept when debugging is off
os.environ.setdefault("BAML_LOG", "error")


def configure_baml_log(settings: Settings) -> None:
    """BAML_LOG for this extraction: info with DOCVISION_LLM_DEBUG (prompts and answers logged), else the
    operator's BAML_LOG or error. Set per extraction, so one debug run does not leave prompt logging on for
    every later run of the container."""
    os.environ["BAML_LOG"] = "info" if settings.llm_debug else (_OPERATOR_BAML_LOG or "error")


@dataclass(frozen=True)
class ClientSpec:
    provider: str
    model: str
    base_url: str | None
    credential: str | None  # a reference (env:VAR | secret:ID), never the key itself

    def describe(self) -> str:
        return f"{self.provider}:{self.model}" + (f"@{self.base_url}" if self.base_url else "")


def _secret(secret_id: str) -> str:
    """The secret string, or its "api_key" field if it is JSON (engine.secrets: cached for DOCVISION_SECRET_TTL_S)."""
    from engine.secrets import default_reader

    value = default_reader().get(secret_id, what="LLM credential")
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    if isinstance(parsed, dict) and "api_key" in parsed:
        return str(parsed["api_key"])
    return value


def resolve_credential(ref: str | None) -> str | None:
    """`env:VAR` → that variable's value; `secret:ID` → the Secrets Manager secret; empty → None."""
    if not ref:
        return None
    kind, _, name = ref.partition(":")
    if kind == "env" and name:
        value = os.environ.get(name)
        if not value:
            raise ConfigError(f"LLM credential variable {name} is not set (named by {ref!r})")
        return value
    if kind == "secret" and name:
        return _secret(name)
    raise ConfigError(
        f"LLM credential reference {ref!r} is not understood: use env:VARIABLE or secret:<Secrets Manager ARN or name>"
    )


def client_chain(settings: Any) -> list[ClientSpec]:
    if not settings.llm_model:
        raise ConfigError(
            "no LLM configured: set DOCVISION_LLM_MODEL (and DOCVISION_LLM_BASE_URL for openai-generic); see README"
        )
    primary_ref = getattr(settings, "llm_api_key_ref", None)
    if primary_ref is None and settings.llm_api_key:
        primary_ref = "settings:llm_api_key"
    chain = [ClientSpec(settings.llm_provider, settings.llm_model, settings.llm_base_url, primary_ref)]
    for spec in filter(None, (s.strip() for s in (settings.llm_fallback or "").split(","))):
        parts = spec.split("|")
        if len(parts) < 2 or len(parts) > 4 or not parts[0] or not parts[1]:
            raise ConfigError(
                f"DOCVISION_LLM_FALLBACK entry {spec.split('|')[0]!r}… must be provider|model|base_url|credential "
                "(base_url and credential may be empty)"
            )
        provider, model, base_url, cred = (parts + ["", ""])[:4]
        chain.append(ClientSpec(provider, model, base_url or None, cred or None))
    return chain


def _key(spec: ClientSpec, settings: Any) -> str | None:
    if spec.credential == "settings:llm_api_key":
        return settings.llm_api_key  # the primary's own key
    return resolve_credential(spec.credential)


def _options(spec: ClientSpec, api_key: str | None, timeout_s: float) -> dict[str, Any]:
    opts: dict[str, Any] = {"model": spec.model}
    if spec.provider == "openai-generic":
        if not spec.base_url:
            raise ConfigError(
                "a base URL is required for the openai-generic provider (DOCVISION_LLM_BASE_URL, or the 3rd field "
                "of a DOCVISION_LLM_FALLBACK entry), e.g. https://api.openai.com/v1"
            )
        opts.update(base_url=spec.base_url, temperature=0)
        if api_key:
            opts["api_key"] = api_key
    elif spec.provider == "anthropic":
        opts.update(max_tokens=8192, temperature=0)
        if spec.base_url:
            opts["base_url"] = spec.base_url
        if api_key:
            opts["api_key"] = api_key
    elif spec.provider == "aws-bedrock":
        opts["inference_configuration"] = {"max_tokens": 8192, "temperature": 0}
    else:
        raise ConfigError(
            f"unknown LLM provider {spec.provider!r}: use openai-generic, anthropic or aws-bedrock"
        )
    opts["http"] = {"request_timeout_ms": int(timeout_s * 1000), "connect_timeout_ms": 10_000}
    return opts


def describe_chain(settings: Any) -> str:
    """The client chain as text (cache key, provenance): providers, models and endpoints, never keys."""
    return " > ".join(f"{s.provider}:{s.model}" for s in client_chain(settings))


def client_registry(settings: Any) -> tuple[Any, str]:
    """(ClientRegistry, a description of the client chain used for fingerprints and provenance)."""
    from baml_py import ClientRegistry

    chain = client_chain(settings)
    cr = ClientRegistry()
    names = []
    for i, spec in enumerate(chain):
        name = f"Client{i}"
        cr.add_llm_client(
            name, spec.provider, _options(spec, _key(spec, settings), settings.llm_timeout_s), "Exponential"
        )
        names.append(name)
    if len(names) > 1:
        cr.add_llm_client("Chain", "fallback", {"strategy": names})
        cr.set_primary("Chain")
    else:
        cr.set_primary(names[0])
    return cr, " > ".join(f"{s.provider}:{s.model}" for s in chain)
