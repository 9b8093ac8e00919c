"""Embedder: pages and queries → late-interaction multivectors, on the compute path the machine supports."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image

from engine.embedding import compute, fast, gpu_preprocess
from engine.embedding.baked import load_baked, load_deferred, model_identity, prefetch
from engine.embedding.families import Family, detect_family
from engine.embedding.loader import load_source
from engine.embedding.vectors import PageEmbedding
from engine.errors import ModelIntegrityError

log = logging.getLogger(__name__)
# speed patches that leave the vision tower's parameters where load_deferred() copies the weights in
LAZY_VISION_PATCHES = {"linear_patch_embed", "batched_attention"}


def memory_budget_mb(configured: int | None) -> int:
    """Configured budget (engine.bootstrap passes DOCVISION_MEMORY_BUDGET_MB, else the Lambda function's memory
    size), else half the machine's memory."""
    if configured:
        return configured
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 / 2)


class Embedder:
    """Load once (module scope in a Lambda), then embed many pages and queries."""

    def __init__(
        self,
        source: str,
        *,
        family: str | None = None,
        compute_mode: str = "auto",
        speedups: str | None = "auto",
        fp8_layers: str | None = "auto",
        threads: int | None = None,
        verify: str | bool = "sha256",
        max_visual_tokens: int | None = None,
        memory_budget: int | None = None,
        max_batch_size: int | None = None,
        lazy_vision: bool = False,
        backend: str = "auto",
    ) -> None:
        started = time.perf_counter()
        self.source = source
        self.plan = compute.choose(compute_mode, threads)
        dtype = getattr(torch, self.plan.dtype)
        path = Path(source)
        self.manifest: dict | None = None
        self.backend, self.backend_reason = self._choose_backend(backend, path)
        if self.backend == "openvino":
            self._init_openvino(
                path, family, verify, max_visual_tokens, memory_budget, max_batch_size, started
            )
            return
        patches = fast.parse(speedups, self.plan.device)
        untuned = speedups is None or speedups.strip() in ("", "auto")  # the measured defaults, not a choice
        fast.fp8_layer_spec(fp8_layers)  # a bad DOCVISION_FP8_LAYERS fails here, before the model loads
        self._deferred: str | None = None  # state-dict prefix still to load (the vision tower)
        self.timings: dict[str, float] = {}
        self.vision_load_seconds: float | None = None
        if (path / "manifest.json").exists():
            self.family: Family = detect_family(source, family)
            if untuned and not self.family.tuned:
                patches = ()  # the defaults were measured on ColQwen2 alone (Family.tuned)
            # Queries are text-only: a query-serving process (the API) loads the vision tower on the first
            # image. Only with patches that keep the tower's tensors in place (see baked.load_deferred).
            if lazy_vision and self.family.vision_prefix and set(patches) <= LAZY_VISION_PATCHES:
                self._deferred = self.family.vision_prefix
            # weights are read and prepacked in a thread while the family's classes (transformers) import
            weights = prefetch(
                path, dtype=dtype, int8_gemm=self.plan.int8_gemm, verify=verify, defer_prefix=self._deferred,
                threads=self.plan.threads,
            )  # fmt: skip
            imports_started = time.perf_counter()
            try:
                model_cls, processor_cls = self.family.classes()
                imported = time.perf_counter()
                self.processor = processor_cls.from_pretrained(path)  # (beside the prefetch too)
                self.model, self.manifest = load_baked(
                    path, model_cls, dtype=dtype, int8_gemm=self.plan.int8_gemm, verify=verify,
                    defer_prefix=self._deferred, prefetched=weights, threads=self.plan.threads,
                )  # fmt: skip
            except BaseException:
                weights.cancel()  # (a no-op once the weights are ready)
                raise
            ready = weights.result()
            self.timings = {  # where a cold start's seconds went (bench/coldstart.py reports them)
                "family_import": imported - imports_started,
                "weights_ready": ready.seconds,  # in the background thread, from its start
                **{f"weights_{k}": v for k, v in ready.parts.items()},
                # processor + model object + install; the prepack took every CPU from boost_at on
                "assemble": time.perf_counter() - imported,
                "boost_at": (weights.boosted or weights.started) - weights.started,
            }
            self.model_id = model_identity(self.manifest)
        else:
            self.model, self.processor, self.family, rev = load_source(
                source, family_name=family, dtype=dtype
            )
            if self.plan.int8_gemm:
                self.model = torch.ao.quantization.quantize_dynamic(
                    self.model, {torch.nn.Linear}, dtype=torch.qint8
                )
            self.model_id = (path.name if path.is_dir() else source) + (f"@{rev}" if rev else "")
            if (path / "TINY_MODEL.json").exists():
                self.model_id = "tiny-random-" + self.family.name
            if untuned and not self.family.tuned:
                patches = ()
        if self.plan.device == "cuda":
            self.model = self.model.to("cuda")
        self.speedups = fast.apply(self.model, patches, fp8_layers)
        # On a GPU the processor's resize/normalize/patchify run there too (engine/embedding/gpu_preprocess.py).
        self.gpu_preprocess = self.plan.device == "cuda" and gpu_preprocess.supports(self.processor)
        self.visual_token_budget: int | None = None
        if max_visual_tokens:
            self._set_token_budget(max_visual_tokens)
        self.dim = int(getattr(self.model, "dim", 128))
        # Measured (bench/results/embed-*.json): on CPU a batch of 8 is slower per page than 1 (cache pressure),
        # so CPU batches stay small; GPUs want large ones.
        self.max_batch_size = max_batch_size or (32 if self.plan.device == "cuda" else 2)
        self.memory_budget_mb = memory_budget_mb(memory_budget)
        self.load_seconds = time.perf_counter() - started
        self._image_token_id = getattr(self.model.config, self.family.image_token_attr, None)
        log.info(
            "model %s (%s) ready on %s in %.2f s",
            self.model_id,
            self.family.name,
            self.plan.name,
            self.load_seconds,
        )

    def _choose_backend(self, requested: str, path: Path) -> tuple[str, str]:
        """torch or openvino: what the in-process A/B recorded in the manifest says for this CPU class."""
        from engine.embedding import openvino_backend as ovb
        from engine.errors import ConfigError

        if self.plan.device != "cpu":
            if requested == "openvino":
                raise ConfigError("DOCVISION_EMBED_BACKEND=openvino runs on CPUs only; unset it on a GPU")
            ovb.choose_backend(requested, None, path, "gpu")  # validates the name
            return "torch", f"{self.plan.device} device"
        manifest = load_manifest_info(str(path)) if path.is_dir() else None
        return ovb.choose_backend(requested, manifest, path, compute.cpu_class())

    def _init_openvino(
        self,
        path: Path,
        family: str | None,
        verify: str | bool,
        max_visual_tokens: int | None,
        memory_budget: int | None,
        max_batch_size: int | None,
        started: float,
    ) -> None:
        from transformers import AutoConfig

        from engine.embedding import openvino_backend as ovb
        from engine.embedding.baked import verify_files, verify_level
        from engine.errors import ConfigError

        self.family = detect_family(str(path), family)
        if self.family.name not in ovb.SUPPORTED_FAMILIES:
            raise ConfigError(
                f"the OpenVINO backend exports {', '.join(ovb.SUPPORTED_FAMILIES)}, not {self.family.name}; "
                "set DOCVISION_EMBED_BACKEND=torch"
            )
        self.manifest = load_manifest_info(str(path))
        if self.manifest is not None:
            files = (self.manifest.get("openvino") or {}).get("files")
            if not files:
                raise ModelIntegrityError(
                    f"{path}/manifest.json lists no OpenVINO files; bake again with --backend openvino"
                )
            if verify:
                verify_files(path, {"files": files}, verify_level(verify))
            self.model_id = model_identity(self.manifest)
        else:
            self.model_id = (
                "tiny-random-" + self.family.name if (path / "TINY_MODEL.json").exists() else path.name
            )
        _, processor_cls = self.family.classes()
        self.processor = processor_cls.from_pretrained(path)
        precision = ovb.cpu_precision(compute.cpu_flags(), compute._onednn_isa_capped())
        self.model = ovb.OpenVinoColQwen2(
            path, AutoConfig.from_pretrained(path), threads=self.plan.threads, precision=precision
        )
        self.timings = {"openvino_compile": self.model.compile_seconds}
        self.speedups = []
        self._deferred = None
        self.vision_load_seconds = None
        self.gpu_preprocess = False
        self.visual_token_budget = None
        if max_visual_tokens:
            self._set_token_budget(max_visual_tokens)
        self.dim = self.model.dim
        self.max_batch_size = max_batch_size or 2
        self.memory_budget_mb = memory_budget_mb(memory_budget)
        self.load_seconds = time.perf_counter() - started
        self._image_token_id = getattr(self.model.config, self.family.image_token_attr, None)
        log.info(
            "model %s ready on openvino (%s) in %.2f s",
            self.model_id,
            self.model.precision,
            self.load_seconds,
        )

    def _tiling(self) -> tuple[int, int] | None:
        """(tile side in pixels, image tokens per tile) for processors that cut a page into square tiles plus a
        global view (Idefics3 / ColSmol); None for the others."""
        ip = getattr(self.processor, "image_processor", None)
        tile = (getattr(ip, "max_image_size", None) or {}).get("longest_edge")
        per_tile = getattr(self.processor, "image_seq_len", None)
        if tile and per_tile and hasattr(ip, "get_number_of_image_patches"):
            return int(tile), int(per_tile)
        return None

    def _token_side(self) -> int:
        """Pixels on a side of one visual token for Qwen-VL processors: patch × merge (28 for Qwen2-VL's 14-px
        patches, 32 for Qwen3-VL / Qwen3.5's 16-px ones)."""
        ip = getattr(self.processor, "image_processor", None)
        return int(getattr(ip, "patch_size", 14) or 14) * int(getattr(ip, "merge_size", 2) or 2)

    def _set_token_budget(self, tokens: int) -> None:
        """A visual-token budget. Qwen-VL processors: max_pixels = tokens × side², side = patch × merge. Tiling processors
        (ColSmol): the page's longest edge becomes k tiles, k the largest with (k² + 1) tiles × tokens per tile
        within the budget (1 tile when k = 1), whatever the page's aspect ratio. Pages embedded at different
        budgets are not comparable, so the budget becomes part of the model id: it is in every point's payload
        and in the collection, and mixing budgets in one collection is refused."""
        from engine.errors import ConfigError
        from engine.index.base import with_token_budget

        ip = getattr(self.processor, "image_processor", None)
        size = getattr(ip, "size", None) or {}
        tiling = self._tiling()
        if tiling:
            tile, per_tile = tiling
            if tokens < per_tile:
                raise ConfigError(
                    f"DOCVISION_MAX_VISUAL_TOKENS={tokens} is below one tile of {self.family.name} "
                    f"({per_tile} tokens); use {per_tile} or more"
                )
            k = 1
            while ((k + 1) ** 2 + 1) * per_tile <= tokens:
                k += 1
            size["longest_edge"] = k * tile
        elif "longest_edge" in size and "shortest_edge" in size:  # Qwen-VL: pixel budget
            if tokens < 4:
                raise ConfigError(f"DOCVISION_MAX_VISUAL_TOKENS={tokens} is too small; use 64 or more")
            side = self._token_side()
            ip.max_pixels = tokens * side * side  # type: ignore[union-attr]
            size["longest_edge"] = tokens * side * side
        else:
            raise ConfigError(
                f"DOCVISION_MAX_VISUAL_TOKENS applies to Qwen-VL-style (colqwen2, colqwen2.5, colqwen3, colqwen3.5) and tiling "
                f"(colidefics3, colmodernvbert) families, not {self.family.name}; unset it or pick such a model"
            )
        self.visual_token_budget = tokens
        self.model_id = with_token_budget(self.model_id, tokens)

    # ------------------------------------------------------------------------------------------ batching
    def model_bytes(self) -> int:
        if self.backend == "openvino":
            return int(cast(Any, self.model).weight_bytes)
        return sum(
            t.numel() * t.element_size()
            for t in self.model.state_dict().values()
            if isinstance(t, torch.Tensor)
        )

    def page_activation_mb(self, visual_tokens: int) -> float:
        """Estimated peak activation memory of one page in a batch (calibrated by bench/embed.py)."""
        cfg = self.model.config
        vision = getattr(cfg, "vision_config", None)
        text = getattr(cfg, "text_config", cfg)
        v_dim = int(getattr(vision, "embed_dim", None) or getattr(vision, "hidden_size", None) or 1024)
        # patches per visual token: Qwen2-VL merges 2×2, Idefics3 / ModernVBert pixel-shuffle by factor²
        merge = (
            getattr(vision, "spatial_merge_size", None)
            or getattr(cfg, "scale_factor", None)
            or getattr(cfg, "pixel_shuffle_factor", None)
            or 1
        )
        act_bytes = 2 if self.plan.dtype == "bfloat16" else 4
        vision_mb = visual_tokens * merge * merge * v_dim * act_bytes * 16 / 2**20
        text_mb = visual_tokens * getattr(text, "intermediate_size", 4096) * act_bytes * 4 / 2**20
        return vision_mb + text_mb

    def batch_size_for(self, visual_tokens: int, reserve_mb: int = 768) -> int:
        free = self.memory_budget_mb - self.model_bytes() / 2**20 - reserve_mb
        return int(max(1, min(self.max_batch_size, free // max(self.page_activation_mb(visual_tokens), 1))))

    def visual_tokens(self, width: int, height: int) -> int:
        ip = getattr(self.processor, "image_processor", None)
        size = getattr(ip, "size", None) or {}
        tiling = self._tiling()
        if tiling:  # tiles + the global view, or one image when the page fits a tile
            n_tiles = ip.get_number_of_image_patches(height, width)[0]  # type: ignore[union-attr]
            return max(int(n_tiles), 1) * tiling[1]
        if "longest_edge" in size:  # Qwen2-VL style processors: size holds the pixel budget
            from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

            side = self._token_side()
            h, w = smart_resize(
                height, width, factor=side, min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"]
            )
            return (h // side) * (w // side)
        return int(getattr(self.processor, "image_seq_length", 1024))

    # ------------------------------------------------------------------------------------------ forward
    def _forward(self, batch: Any) -> torch.Tensor:
        device = next(self.model.parameters()).device
        # static_pages decides on the processor's CPU ids/masks/grids without a GPU sync: only pixels move
        keep = (
            {"input_ids", "attention_mask", "image_grid_thw", "mm_token_type_ids"}
            if "static_pages" in self.speedups
            else set()
        )
        batch = {
            k: v.to(device) if isinstance(v, torch.Tensor) and k not in keep else v for k, v in batch.items()
        }
        dtype = torch.float32 if self.backend == "openvino" else getattr(torch, self.plan.dtype)
        if "pixel_values" in batch and batch["pixel_values"].is_floating_point():
            batch["pixel_values"] = batch["pixel_values"].to(dtype)
        if "cuda_graphs" in self.speedups:
            fast.new_step()
        with torch.inference_mode():
            out = self.model(**batch)
        return out.float().cpu()

    def load_vision(self) -> None:
        """Load the vision tower if it was deferred (lazy_vision); a no-op otherwise."""
        if self._deferred is None:
            return
        assert self.manifest is not None
        self.vision_load_seconds = load_deferred(
            self.model, Path(self.source), self._deferred,
            dtype=getattr(torch, self.plan.dtype), int8_gemm=self.plan.int8_gemm,
        )  # fmt: skip
        self._deferred = None

    def embed_images(self, images: Sequence[Image.Image]) -> list[PageEmbedding]:
        self.load_vision()
        if self.gpu_preprocess:
            batch = gpu_preprocess.process_pages(self.processor, list(images), self.plan.device)
        else:
            batch = self.processor.process_images(list(images))
        out = self._forward(batch)
        mask = batch["attention_mask"].bool()
        results = []
        merge = self.family.grid_param(self.model)
        for i in range(len(images)):
            keep = mask[i]
            ids = batch["input_ids"][i][keep]
            vectors = out[i][keep].numpy()
            positions = (
                (ids == self._image_token_id).nonzero().flatten()
                if self._image_token_id is not None
                else torch.tensor([])
            )
            grid = self.family.grid(batch, i, merge) if self.family.grid else None
            offset = int(positions[0]) if len(positions) else 0
            if grid and len(positions) != grid[0] * grid[1]:
                grid = None  # tiling processors: no single grid
            results.append(
                PageEmbedding(vectors=np.ascontiguousarray(vectors), grid=grid, patch_offset=offset)
            )
        return results

    def embed_pages(
        self, frames: Iterable[Any], batch_size: int | None = None
    ) -> Iterator[tuple[Any, PageEmbedding]]:
        """Stream (frame, embedding) pairs; at most one batch of frames is held at a time."""
        pending: list[Any] = []
        size = batch_size
        for frame in frames:
            if size is None:
                size = batch_size or self.batch_size_for(self.visual_tokens(frame.width, frame.height))
                log.info("embedding batch size %d (budget %d MB)", size, self.memory_budget_mb)
            pending.append(frame)
            if len(pending) >= size:
                yield from zip(pending, self.embed_images([f.image for f in pending]), strict=True)
                pending = []
        if pending:
            yield from zip(pending, self.embed_images([f.image for f in pending]), strict=True)

    def embed_queries(self, texts: Sequence[str]) -> list[np.ndarray]:
        batch = self.processor.process_queries(list(texts))
        out = self._forward(batch)
        mask = batch["attention_mask"].bool()
        return [np.ascontiguousarray(out[i][mask[i]].numpy()) for i in range(len(texts))]

    # ------------------------------------------------------------------------------------------ scoring
    def score(self, queries: Sequence[np.ndarray], pages: Sequence[np.ndarray]) -> np.ndarray:
        """Late-interaction (MaxSim) scores, (n_queries, n_pages): colpali-engine's own score_multi_vector."""
        return score_multi_vector(queries, pages)

    def describe(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "visual_token_budget": self.visual_token_budget,
            "family": self.family.name,
            "compute": self.plan.name
            if self.backend == "torch"
            else f"cpu-openvino-{self.model.precision}-int8w",
            "backend": self.backend,
            "backend_reason": self.backend_reason,
            "threads": self.plan.threads,
            "speedups": self.speedups,
            "reason": self.plan.reason,
            "dim": self.dim,
            "load_seconds": round(self.load_seconds, 3),
            "vision": "deferred" if self._deferred else "loaded",
            "baked": self.manifest is not None,
        }


def score_multi_vector(queries: Sequence[np.ndarray], pages: Sequence[np.ndarray]) -> np.ndarray:
    from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

    qs = [torch.from_numpy(np.asarray(q, dtype=np.float32)) for q in queries]
    ps = [torch.from_numpy(np.asarray(p, dtype=np.float32)) for p in pages]
    return BaseVisualRetrieverProcessor.score_multi_vector(qs, ps, device="cpu").float().numpy()


def load_manifest_info(path: str) -> dict | None:
    p = Path(path) / "manifest.json"
    return json.loads(p.read_text()) if p.exists() else None
