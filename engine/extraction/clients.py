"""Which LLM client BAML calls, chosen at run time from configuration (a ClientRegistry), never by editing .baml.

DOCVISION_LLM_PROVIDER=openai-generic  DOCVISION_LLM_BASE_URL=… DOCVISION_LLM_MODEL=… [DOCVISION_LLM_API_KEY]
DOCVISION_LLM_PROVIDER=anthropic       DOCVISION_LLM_MODEL=claude-…  (ANTHROPIC_API_KEY)
DOCVISION_LLM_PROVIDER=aws-bedrock     DOCVISION_LLM_MODEL=anthropic.claude-…  (AWS credentials/region)
DOCVISION_LLM_FALLBACK=<provider>|<model>|<base_url>,…   clients tried in order when the primary fails
"""

from __future__ import annotations

import os
from typing import Any

from engine.errors import ConfigError

# Keep prompts, page images and answers out of logs unless asked (BAML logs them at info level).
os.environ.setdefault("BAML_LOG", "warn")


def _options(
    provider: str, model: str, base_url: str | None, api_key: str | None, timeout_s: float
) -> dict[str, Any]:
    opts: dict[str, Any] = {"model": model}
    if provider == "openai-generic":
        if not base_url:
            raise ConfigError(
                "DOCVISION_LLM_BASE_URL is required for the openai-generic provider (e.g. https://api.openai.com/v1)"
            )
        opts.update(base_url=base_url, temperature=0)
        if api_key:
            opts["api_key"] = api_key
    elif provider == "anthropic":
        opts.update(max_tokens=8192, temperature=0)
        if api_key:
            opts["api_key"] = api_key
    elif provider == "aws-bedrock":
        opts["inference_configuration"] = {"max_tokens": 8192, "temperature": 0}
    else:
        raise ConfigError(
            f"unknown DOCVISION_LLM_PROVIDER {provider!r}: use openai-generic, anthropic or aws-bedrock"
        )
    opts["http"] = {"request_timeout_ms": int(timeout_s * 1000), "connect_timeout_ms": 10_000}
    return opts


def client_registry(settings: Any) -> tuple[Any, str]:
    """(ClientRegistry, a description of the client chain used for fingerprints and provenance)."""
    from baml_py import ClientRegistry

    if not settings.llm_model:
        raise ConfigError(
            "no LLM configured: set DOCVISION_LLM_MODEL (and DOCVISION_LLM_BASE_URL for openai-generic); see README"
        )
    cr = ClientRegistry()
    chain = [(settings.llm_provider, settings.llm_model, settings.llm_base_url, settings.llm_api_key)]
    for spec in filter(None, (settings.llm_fallback or "").split(",")):
        provider, model, *rest = spec.split("|")
        chain.append((provider, model, rest[0] if rest else None, settings.llm_api_key))
    names = []
    for i, (provider, model, base_url, key) in enumerate(chain):
        name = f"Client{i}"
        cr.add_llm_client(
            name, provider, _options(provider, model, base_url, key, settings.llm_timeout_s), "Exponential"
        )
        names.append(name)
    if len(names) > 1:
        cr.add_llm_client("Chain", "fallback", {"strategy": names})
        cr.set_primary("Chain")
    else:
        cr.set_primary(names[0])
    return cr, " > ".join(f"{p}:{m}" for p, m, *_ in chain)
