"""The ColPali-family registry: one entry per model family, one interface for all of them.

A family knows its colpali-engine model/processor classes, how to recognise a checkpoint (config
``model_type`` or hub id), and how to map a page's patch tokens back to a (rows × cols) grid on the page.
Adding a family = adding one ``Family`` to ``FAMILIES``; nothing else branches on the family name.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError


def _qwen_grid(batch: Any, i: int, merge: int) -> tuple[int, int]:
    _, h, w = (int(v) for v in batch["image_grid_thw"][i])
    return h // merge, w // merge


def _square_grid(batch: Any, i: int, merge: int) -> tuple[int, int]:
    side = int(batch["pixel_values"].shape[-1]) // merge  # merge carries the patch size for SigLIP towers
    return side, side


def _deferred_package(name: str) -> None:
    """Put package `name` in sys.modules without running its __init__ (PEP 562 runs it on first use).

    ``colpali_engine.models.__init__`` imports every model family (Gemma3, Idefics3, ModernVBert, Qwen3, …):
    ~14 s of a cold start on 2 vCPUs when one family is used. With the parent packages deferred, importing
    ``colpali_engine.models.qwen2.colqwen2`` runs only that family's modules; colpali-engine's classes stay
    the ones used. Anything that later reads an attribute of the package (``from colpali_engine.models
    import ColPali``) runs the real __init__ then, so nothing else changes.
    """
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        raise ImportError(f"{name} is not an installed package")
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def __getattr__(attr: str) -> Any:  # noqa: N807 (the module-level hook's fixed name)
        if attr.startswith("__"):
            raise AttributeError(attr)
        delattr(module, "__getattr__")
        loader.exec_module(module)  # the real __init__, once
        return getattr(module, attr)

    setattr(module, "__getattr__", __getattr__)  # noqa: B010 (a module attribute, set on purpose)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


def import_family_module(module: str) -> Any:
    """Import one colpali-engine family module without importing every other family."""
    if module in sys.modules:
        return sys.modules[module]
    for package in ("colpali_engine", "colpali_engine.models"):
        _deferred_package(package)
    return importlib.import_module(module)


@dataclass(frozen=True)
class Family:
    name: str
    model_class: str  # in colpali_engine.models
    processor_class: str
    model_types: tuple[str, ...]  # config.json model_type values
    hub_hints: tuple[str, ...]  # substrings of hub ids, e.g. "colqwen2.5"
    image_token_attr: str  # config attribute holding the image token id
    grid: Callable[[Any, int, int], tuple[int, int]] | None  # (batch, index, merge/patch) → (rows, cols)
    grid_param: Callable[[Any], int]  # model → the int passed to grid()
    module: str = ""  # the colpali-engine module defining both classes (only it is imported)
    vision_prefix: str | None = None  # state-dict prefix of the vision tower (loaded on demand when set)
    # What `python -m engine models` lists (engine/embedding/catalog.py): the public checkpoint the family is
    # listed for, its license as its model card states it, and the vectors a US-letter page yields at that
    # checkpoint's default visual-token budget (prompt tokens included; 0 = not recorded) and their dimension.
    # Sources: colqwen2 744 visual + 16 prompt tokens (bench/results/profile-ab-*.json), colsmol 1151
    # (the same), colqwen3 1240 + 16 at Tomoro's 1280-token budget (smart_resize, 32 px a token),
    # colqwen3.5 1792 (VultronRetriever Flash's published count), colpali 1024 patches + prompt.
    reference: str = ""
    license: str = ""
    page_vectors: int = 0
    dim: int = 128
    # The speed patches of engine/embedding/fast.py were measured on ColQwen2 alone: other families run the
    # stock forward unless DOCVISION_SPEEDUPS names patches.
    tuned: bool = False

    def classes(self) -> tuple[Any, Any]:
        mod = (
            import_family_module(self.module)
            if self.module
            else importlib.import_module("colpali_engine.models")
        )
        return getattr(mod, self.model_class), getattr(mod, self.processor_class)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            "colqwen2", "ColQwen2", "ColQwen2Processor", ("qwen2_vl",), ("colqwen2-", "colqwen2_", "/colqwen2"),
            "image_token_id", _qwen_grid, lambda m: m.visual.config.spatial_merge_size,
            "colpali_engine.models.qwen2.colqwen2", "visual.",
            "vidore/colqwen2-v1.0", "Apache-2.0", 760, 128, tuned=True,
        ),
        Family(
            "colqwen2.5", "ColQwen2_5", "ColQwen2_5_Processor", ("qwen2_5_vl",), ("colqwen2.5", "colqwen2_5"),
            "image_token_id", _qwen_grid, lambda m: m.visual.config.spatial_merge_size,
            "colpali_engine.models.qwen2_5.colqwen2_5", "visual.",
            "vidore/colqwen2.5-v0.2", "MIT adapter on Qwen2.5-VL-3B (Qwen research license)", 760, 128,
        ),
        Family(
            # Qwen3-VL backbone (patch 16, merge 2: 32 px a token), 320-d head fixed by colpali-engine's class.
            "colqwen3", "ColQwen3", "ColQwen3Processor", ("qwen3_vl",), ("colqwen3-", "colqwen3_", "/colqwen3"),
            "image_token_id", _qwen_grid, lambda m: m.visual.config.spatial_merge_size,
            "colpali_engine.models.qwen3.colqwen3", "visual.",
            "TomoroAI/tomoro-colqwen3-embed-4b", "Apache-2.0", 1256, 320,
        ),
        Family(
            # Qwen3.5 backbone (Gated DeltaNet + attention 3:1, Qwen3-VL's vision pipeline); head dim from config.dim.
            "colqwen3.5", "ColQwen3_5", "ColQwen3_5Processor", ("qwen3_5",),
            ("colqwen3.5", "colqwen3_5", "vultronretriever"),
            "image_token_id", _qwen_grid, lambda m: m.visual.config.spatial_merge_size,
            "colpali_engine.models.qwen3_5.colqwen3_5", "visual.",
            "VultronRetriever Flash 0.8B (Qwen3.5-0.8B backbone)", "Apache-2.0", 1792, 320,
        ),
        Family(
            "colpali", "ColPali", "ColPaliProcessor", ("paligemma",), ("colpali",),
            "image_token_index", _square_grid, lambda m: m.config.vision_config.patch_size,
            "colpali_engine.models.paligemma.colpali", None,
            "vidore/colpali-v1.3", "MIT adapter on PaliGemma-3B (Gemma terms)", 1030, 128,
        ),
        Family(
            # ColSmol / ColIdefics3 split pages into tiles plus a global view; no single patch grid exists.
            "colidefics3", "ColIdefics3", "ColIdefics3Processor", ("idefics3",), ("colsmol", "colidefics3"),
            "image_token_id", None, lambda m: 0,
            "colpali_engine.models.idefics3.colidefics3", None,
            "vidore/colSmol-256M", "MIT", 1151, 128,
        ),
        Family(
            # ColModernVBert: SigLIP tiles + a bidirectional ModernBERT encoder, Idefics3's tiling processor.
            "colmodernvbert", "ColModernVBert", "ColModernVBertProcessor", ("modernvbert",), ("colmodernvbert",),
            "image_token_id", None, lambda m: 0,
            "colpali_engine.models.modernvbert.colmodernvbert", None,
            "ModernVBERT/colmodernvbert", "MIT", 0, 128,
        ),
    ]
}  # fmt: skip

DEFAULT_FAMILY = "colqwen2"


def detect_family(source: str, family: str | None = None) -> Family:
    """Pick the family: explicit name > baked manifest > config.json model_type > hub id hint."""
    if family:
        if family not in FAMILIES:
            raise ConfigError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
        return FAMILIES[family]
    path = Path(source)
    if path.is_dir():
        manifest = path / "manifest.json"
        if manifest.exists():
            return FAMILIES[json.loads(manifest.read_text())["family"]]
        for name in ("config.json", "adapter_config.json"):
            if (path / name).exists():
                data = json.loads((path / name).read_text())
                model_type = data.get("model_type") or data.get("text_config", {}).get("model_type")
                for f in FAMILIES.values():
                    if model_type in f.model_types:
                        return f
                base = data.get("base_model_name_or_path")
                if base:
                    return detect_family(base)
        raise ConfigError(
            f"cannot tell the model family of {source}: no manifest.json or known config.json model_type"
        )
    lowered = source.lower()
    for f in sorted(FAMILIES.values(), key=lambda f: -max(len(h) for h in f.hub_hints)):
        if any(h in lowered for h in f.hub_hints):
            return f
    raise ConfigError(
        f"cannot tell the model family of {source!r}; pass DOCVISION_MODEL_FAMILY ({', '.join(FAMILIES)})"
    )
