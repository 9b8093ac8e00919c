"""The baked model's manifest and the model identity it defines; no torch (health checks and the index read it
before, or without, loading the model)."""

from __future__ import annotations

import json
from pathlib import Path

from engine.errors import ModelIntegrityError

FORMAT_VERSION = 1
QUANT_SCHEME = "int8-weight-only-symmetric-per-output-channel"
QUANT_TAG = "int8"  # the short name in model ids; a new scheme gets a new tag (its embeddings differ)


def model_identity(manifest: dict) -> str:
    """The model id stored with every point: what the weights are, never where they sit.

    hub source   ``<hub id>@<revision>+int8``    (revision: the commit the bake resolved, when known)
    local source ``<family>-sha256:<16 hex of the baked tensors' digest>+int8`` (a directory path is no identity:
                 the same bake moved, mounted elsewhere or made on another machine opens the same index)
    tiny random  ``tiny-random-<family>``       (tests and the demo)
    """
    if manifest.get("model_id"):
        return str(manifest["model_id"])
    family = manifest.get("family", "model")
    if manifest.get("tiny_random"):
        return f"tiny-random-{family}"
    src = manifest.get("source") or {}
    quant = QUANT_TAG if manifest.get("quantization") == QUANT_SCHEME else str(manifest.get("quantization"))
    if src.get("kind", "hub") == "hub" and src.get("id"):
        return src["id"] + (f"@{src['revision']}" if src.get("revision") else "") + f"+{quant}"
    # the tensors' digest (the file's sha256 is not stable: safetensors writes its metadata map in hash order)
    weights = manifest.get("weights_digest") or (manifest.get("files") or {}).get(
        "model.safetensors", {}
    ).get("sha256", "")
    if not weights:
        raise ModelIntegrityError("manifest.json names no model.safetensors; rebuild the model directory")
    return f"{family}-sha256:{weights[:16]}+{quant}"


def read_manifest(directory: Path) -> dict:
    path = directory / "manifest.json"
    if not path.exists():
        raise ModelIntegrityError(
            f"{directory} is not a baked model (no manifest.json); run `python -m models.bake`"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelIntegrityError(f"{path} is not valid JSON ({exc})") from exc


def baked_identity(source: str) -> tuple[str, int] | None:
    """(model id, embedding dim) of a baked directory from its manifest alone; None when not baked."""
    path = Path(source) / "manifest.json"
    if not path.exists():
        return None
    manifest = read_manifest(path.parent)
    return model_identity(manifest), int(manifest.get("embedding_dim", 128))


def baked_page_vectors(source: str) -> int | None:
    """Vectors a US-letter page yields (recorded at bake time); None when not baked or baked before it was."""
    path = Path(source) / "manifest.json"
    if not path.exists():
        return None
    value = read_manifest(path.parent).get("page_vectors")
    return int(value) if value else None
