"""Load a model that is not baked: a local Hugging Face directory or a hub id, with LoRA adapters merged."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from engine.embedding.families import Family, detect_family

log = logging.getLogger(__name__)


def resolve(source: str, revision: str | None) -> tuple[Path, str | None]:
    """A local dir as is; a hub id through the Hugging Face cache (downloads only when not cached)."""
    path = Path(source)
    if path.is_dir():
        return path, revision
    from huggingface_hub import snapshot_download

    local = snapshot_download(source, revision=revision)
    return Path(local), revision or Path(local).name


def load_source(
    source: str,
    *,
    revision: str | None = None,
    base: str | None = None,
    family_name: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Any, Any, Family, str | None]:
    src, resolved_rev = resolve(source, revision)
    has_config = (src / "config.json").exists() or (src / "adapter_config.json").exists()
    family = detect_family(str(src) if has_config else source, family_name)
    model_cls, processor_cls = family.classes()
    adapter_cfg = src / "adapter_config.json"
    if adapter_cfg.exists():
        try:
            from peft import PeftModel
        except ImportError as exc:  # the Lambda image leaves peft out (infra/prune_dists.py)
            from engine.errors import ConfigError

            raise ConfigError(
                f"{source} is a LoRA adapter, and merging one needs peft, which this installation lacks "
                "(the Lambda image prunes it); bake the model instead (python -m models.bake, which "
                "merges the adapter) and point DOCVISION_MODEL at the baked directory"
            ) from exc

        base_id = base or json.loads(adapter_cfg.read_text())["base_model_name_or_path"]
        base_dir, _ = resolve(base_id, None)
        log.info("merging LoRA adapter %s into base %s", src, base_dir)
        model = model_cls.from_pretrained(base_dir, dtype=dtype)
        model = PeftModel.from_pretrained(model, src).merge_and_unload()
        proc_dir = src if (src / "preprocessor_config.json").exists() else base_dir
    else:
        model = model_cls.from_pretrained(src, dtype=dtype)
        proc_dir = src
    processor = processor_cls.from_pretrained(proc_dir)
    return model.eval(), processor, family, resolved_rev
