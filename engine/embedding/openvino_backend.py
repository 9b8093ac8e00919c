"""ColQwen2 on OpenVINO (Intel's CPU inference runtime): exported at bake time, run in place of the torch model.

Export (``python -m models.bake SRC OUT --backend openvino``) traces two graphs from the fp32 model and writes
them under ``OUT/openvino/``:

vision.xml   patch pixels (n, 1176) + vision position ids (n, 2) → merged visual tokens (n / 4, hidden): the
             patch embedding (as a matrix product, fast.linear_patch_embed), the rotary table, every block
             (one page's full attention: one SDPA, no cu_seqlens) and the merger
text.xml     input embeddings (1, L, hidden) + M-RoPE position ids (3, 1, L) → L2-normalised multivectors
             (1, L, dim): the rotary table, the decoder layers (causal attention), the norm and ColQwen2's
             projection
embed_tokens.npy / embed_scale.npy   the token embedding table, int8 per row + its fp32 scales (gathered
             on the host: a (vocab × hidden) table is no graph work)

Weights are int8 (NNCF ``compress_weights``, per output channel, asymmetric); activations run in the
runtime's precision: bf16 where the CPU has AMX / AVX512-BF16 (OpenVINO's default there), f32 otherwise
(``precision``). The host does what the processor already does (resize, patchify, token ids) plus the two
position-id tables (transformers' own functions), and one page at a time through both graphs: each page its
own shape (OpenVINO graphs are shape-dynamic), no padding.

The runtime object is an ``nn.Module`` only so the Embedder's probes (``parameters()``, ``config``, ``dim``,
``visual.config``) keep working; it holds no torch weights.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.embedding.backends import OV_DIR, available, choose_backend, decide  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

FORMAT = 1
SUPPORTED_FAMILIES = ("colqwen2",)


# ------------------------------------------------------------------------------------------ export graphs
def _single_page_attention(
    self: Any,
    hidden_states: torch.Tensor,
    cu_seqlens: torch.Tensor | None = None,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Qwen2-VL's VisionAttention for one page (one sequence): the same math as upstream, one SDPA call."""
    n = hidden_states.shape[0]
    q, k, v = self.qkv(hidden_states).reshape(n, 3, self.num_heads, -1).unbind(1)
    assert position_embeddings is not None
    cos, sin = position_embeddings
    cos, sin = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()
    qf, kf = q.float(), k.float()
    q = (qf * cos + _rotate_half(qf) * sin).to(v.dtype)
    k = (kf * cos + _rotate_half(kf) * sin).to(v.dtype)
    q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # (1, heads, n, head_dim)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=self.scaling)
    return self.proj(out.squeeze(0).transpose(0, 1).reshape(n, -1))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class VisionGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.visual: Any = model.visual

    def forward(self, patches: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.patch_embed(patches)
        rope = v.rotary_pos_emb(x, positions)
        for blk in v.blocks:
            x = blk(x, cu_seqlens=None, position_embeddings=rope)
        return v.merger(x)


class TextGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.lm: Any = model.language_model
        self.proj: Any = model.custom_text_proj

    def forward(self, embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        rope = self.lm.rotary_emb(embeds, positions)
        h = embeds
        for layer in self.lm.layers:
            h = layer(h, attention_mask=None, position_embeddings=rope)  # None: causal (SDPA is_causal)
        out = self.proj(self.lm.norm(h))
        return out / out.norm(dim=-1, keepdim=True)


def _example(model: Any, processor: Any) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """A small real page through the processor: the traced shapes' example inputs."""
    from PIL import Image

    batch = processor.process_images([Image.new("RGB", (224, 280), "white")])
    grid = batch["image_grid_thw"]
    n = int(grid[0].prod())
    patches = batch["pixel_values"][0, :n].float()
    return batch, patches, vision_positions(grid[0], model.visual.config.spatial_merge_size)


def export(model: Any, processor: Any, out: Path, *, weights: str = "int8") -> dict[str, Any]:
    """Write ``out/openvino/`` from an fp32 ColQwen2 model; returns what the manifest records."""
    import openvino as ov

    from engine.embedding import fast

    started = time.perf_counter()
    target = out / OV_DIR
    target.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    fast.linear_patch_embed(model)  # the Conv3d as the same matrix product (int8-compressible, no 3-D conv)
    attn = [blk.attn for blk in model.visual.blocks]
    for a in attn:
        a.forward = _single_page_attention.__get__(a)
    try:
        batch, patches, vpos = _example(model, processor)
        ids = batch["input_ids"][0]
        embeds = model.language_model.embed_tokens(ids)[None].float()
        tpos = text_positions(ids.numpy(), batch["image_grid_thw"][0].tolist(), _spec_of(model))
        with torch.no_grad():
            vision = ov.convert_model(VisionGraph(model), example_input=(patches, vpos))
            text = ov.convert_model(TextGraph(model), example_input=(embeds, torch.from_numpy(tpos)))
    finally:
        for a in attn:
            a.__dict__.pop("forward", None)
    vision.reshape({0: [-1, patches.shape[1]], 1: [-1, 2]})
    text.reshape({0: [1, -1, embeds.shape[-1]], 1: [3, 1, -1]})
    converted = time.perf_counter()
    if weights == "int8":
        import nncf

        vision = nncf.compress_weights(vision, mode=nncf.CompressWeightsMode.INT8_ASYM)
        text = nncf.compress_weights(text, mode=nncf.CompressWeightsMode.INT8_ASYM)
    elif weights != "fp32":
        raise ValueError(f"weights must be int8 or fp32, not {weights!r}")
    ov.save_model(vision, target / "vision.xml", compress_to_fp16=False)
    ov.save_model(text, target / "text.xml", compress_to_fp16=False)
    table = model.language_model.embed_tokens.weight.detach().float()
    scale = (table.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    np.save(target / "embed_tokens.npy", torch.round(table / scale[:, None]).to(torch.int8).numpy())
    np.save(target / "embed_scale.npy", scale.numpy())
    spec = _spec_of(model)
    info = {
        "format": FORMAT,
        "openvino": ov.__version__,
        "weights": "int8-nncf-asym-per-channel" if weights == "int8" else "fp32",
        "embed_tokens": "int8-symmetric-per-row",
        "patch_dim": int(patches.shape[1]),
        "hidden": int(embeds.shape[-1]),
        "dim": int(model.custom_text_proj.out_features),
        **spec,
        "convert_seconds": round(converted - started, 1),
        "export_seconds": round(time.perf_counter() - started, 1),
        "bytes": sum(f.stat().st_size for f in target.iterdir()),
    }
    (target / "openvino.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("openvino export → %s (%s) in %.1f s", target, info["weights"], info["export_seconds"])
    return info


def _spec_of(model: Any) -> dict[str, int]:
    cfg: Any = model.config
    return {
        "image_token_id": int(cfg.image_token_id),
        "vision_start_token_id": int(getattr(cfg, "vision_start_token_id", -1)),
        "spatial_merge_size": int(model.visual.config.spatial_merge_size),
    }


# ------------------------------------------------------------------------------------------ position ids
def vision_positions(grid: Any, merge: int) -> torch.Tensor:
    """(n, 2) row/col ids of one page's patches, merge-block-major: transformers' own function."""
    from transformers.vision_utils import get_vision_position_ids

    return get_vision_position_ids(torch.as_tensor(grid).reshape(1, 3), merge)


def text_positions(ids: np.ndarray, grid: list[int] | None, spec: dict[str, int]) -> np.ndarray:
    """(3, 1, L) M-RoPE position ids of one unpadded sequence with at most one image (Qwen2-VL's rule).

    Text tokens: t = h = w = their running position. The image's tokens: t = start, h = start + row,
    w = start + col over the (h/merge × w/merge) grid; the text after it continues from start + max(rows,
    cols). A query (no image) is 0..L-1 on all three rows. Checked against ``get_rope_index`` in tests."""
    n = len(ids)
    pos = np.zeros((3, n), dtype=np.int64)
    where = (
        np.flatnonzero(ids == spec["image_token_id"]) if grid is not None else np.array([], dtype=np.int64)
    )
    if len(where) == 0:
        pos[:] = np.arange(n)
        return pos[:, None, :]
    s = int(where[0])
    merge = spec["spatial_merge_size"]
    t, h, w = (int(x) for x in grid)  # type: ignore[union-attr]
    rows, cols = h // merge, w // merge
    m = t * rows * cols
    if len(where) != m or int(where[-1]) - s + 1 != m:
        raise ValueError("one contiguous run of image tokens expected")
    pos[:, :s] = np.arange(s)
    tt, rr, cc = np.meshgrid(np.arange(t), np.arange(rows), np.arange(cols), indexing="ij")
    pos[0, s : s + m] = s + tt.ravel()
    pos[1, s : s + m] = s + rr.ravel()
    pos[2, s : s + m] = s + cc.ravel()
    after = s + max(t, rows, cols)
    pos[:, s + m :] = after + np.arange(n - s - m)
    return pos[:, None, :]


# ------------------------------------------------------------------------------------------ runtime
def cpu_precision(flags: set[str], isa_capped: bool) -> str:
    """bf16 where the CPU computes it natively (and oneDNN is not capped below it), else f32."""
    return "bf16" if {"amx_bf16", "avx512_bf16"} & flags and not isa_capped else "f32"


class OpenVinoColQwen2(nn.Module):
    """ColQwen2's forward (``model(**processor_batch)`` → (B, L, dim)) on two compiled OpenVINO graphs."""

    def __init__(self, directory: Path, config: Any, *, threads: int, precision: str) -> None:
        super().__init__()
        import openvino as ov

        started = time.perf_counter()
        root = Path(directory) / OV_DIR
        self.info = json.loads((root / "openvino.json").read_text())
        core = ov.Core()
        props = {
            "INFERENCE_NUM_THREADS": int(threads),
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision,
        }
        self.vision = core.compile_model(str(root / "vision.xml"), "CPU", props)
        self.text = core.compile_model(str(root / "text.xml"), "CPU", props)
        self.vision_request = self.vision.create_infer_request()
        self.text_request = self.text.create_infer_request()
        hint = self.text.get_property("INFERENCE_PRECISION_HINT")
        self.precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        self.table = np.load(root / "embed_tokens.npy", mmap_mode="r")
        self.table_scale = np.load(root / "embed_scale.npy")
        self.config = config
        self.dim = int(self.info["dim"])
        self.visual = SimpleNamespace(
            config=SimpleNamespace(spatial_merge_size=self.info["spatial_merge_size"])
        )
        self.weight_bytes = int(self.info["bytes"])
        self._probe = nn.Parameter(torch.zeros(1), requires_grad=False)  # device/dtype probes only
        self.compile_seconds = time.perf_counter() - started

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def embed(self, ids: np.ndarray) -> np.ndarray:
        return self.table[ids].astype(np.float32) * self.table_scale[ids, None]

    def page(self, ids: np.ndarray, patches: np.ndarray | None, grid: list[int] | None) -> np.ndarray:
        """One unpadded sequence (and its page's patches) → (L, dim)."""
        embeds = self.embed(ids)
        if patches is not None and grid is not None:
            vpos = vision_positions(grid, self.info["spatial_merge_size"]).numpy()
            merged = self.vision_request.infer({0: patches, 1: vpos})[0]
            where = np.flatnonzero(ids == self.info["image_token_id"])
            if len(where) != len(merged):
                raise ValueError(f"{len(where)} image tokens for {len(merged)} visual tokens")
            embeds[where] = merged
        pos = text_positions(ids, grid if patches is not None else None, self.info)
        return np.array(self.text_request.infer({0: embeds[None], 1: pos})[0][0])

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        **_: Any,
    ) -> torch.Tensor:
        b, length = input_ids.shape
        out = torch.zeros(b, length, self.dim)
        mask = attention_mask.bool()
        for i in range(b):
            keep = mask[i]
            ids = input_ids[i][keep].numpy()
            patches = grid = None
            if pixel_values is not None and image_grid_thw is not None:
                grid = [int(x) for x in image_grid_thw[i]]
                n = grid[0] * grid[1] * grid[2]
                patches = np.ascontiguousarray(pixel_values[i, :n].float().numpy())
            out[i, keep] = torch.from_numpy(self.page(ids, patches, grid))
        return out

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return {}


def runtime_isas(compiled: Any) -> list[str]:
    """The kernel implementations OpenVINO picked (e.g. brgemm_avx512_amx): evidence of AMX on or off."""
    seen: set[str] = set()
    for op in compiled.get_runtime_model().get_ops():
        rt = op.get_rt_info()
        if "primitiveType" in rt:
            v = rt["primitiveType"]
            seen.add(v.astype(str) if hasattr(v, "astype") else str(v))
    return sorted(seen)


# ------------------------------------------------------------------------------------------ choosing a backend


def export_files(directory: Path) -> dict[str, dict[str, Any]]:
    """sha256 + size of every file of the export (the manifest's ``openvino.files``)."""
    from engine.embedding.baked import sha256_file

    root = Path(directory)
    return {
        p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted((root / OV_DIR).rglob("*"))
        if p.is_file()
    }


def record_ab(directory: Path, cls: str, result: dict[str, Any]) -> dict:
    """Merge one CPU class's A/B into the manifest (``backend_ab``)."""
    path = Path(directory) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.setdefault("backend_ab", {})[cls] = result
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def run_ab(directory: Path, reps: int = 3, tokens: int | None = None) -> dict[str, Any]:
    """Both backends loaded in this process, one US-letter page each in turn, ``reps`` times after a warm-up;
    per-token cosine of the OpenVINO page to the torch one of the same weights."""
    import statistics

    from PIL import Image, ImageDraw

    from engine.embedding.compute import cpu_class
    from engine.embedding.embedder import Embedder

    page = Image.new("RGB", (2550, 3300), "white")
    draw = ImageDraw.Draw(page)
    for line in range(60):
        draw.text(
            (150, 150 + line * 50),
            f"line {line}: container MSKU{line:07d} weight {line * 7.5} kg",
            fill="black",
        )
    embedders = {
        name: Embedder(str(directory), backend=name, speedups="none", verify=False, max_visual_tokens=tokens)
        for name in ("torch", "openvino")
    }
    out = {name: e.embed_images([page])[0].vectors for name, e in embedders.items()}  # warm-up
    cos = (out["torch"] * out["openvino"]).sum(-1)
    times: dict[str, list[float]] = {name: [] for name in embedders}
    for _ in range(reps):
        for name, e in embedders.items():
            t = time.perf_counter()
            e.embed_images([page])
            times[name].append(round(time.perf_counter() - t, 3))
    import platform

    return {
        "torch_s_per_page": round(statistics.median(times["torch"]), 3),
        "openvino_s_per_page": round(statistics.median(times["openvino"]), 3),
        "seconds": times,
        "reps": reps,
        "openvino_min_cosine_vs_torch": round(float(cos.min()), 5),
        "winner": decide(times["torch"], times["openvino"], float(cos.min())),
        "cpu_class": cpu_class(),
        "threads": embedders["torch"].plan.threads,
        "compute": {n: e.describe()["compute"] for n, e in embedders.items()},
        "where": f"{platform.processor() or platform.machine()}, {embedders['torch'].plan.threads} threads, bake time",
    }
