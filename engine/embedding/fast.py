"""Speed patches for Qwen2-VL-based families (ColQwen2, ColQwen2.5): same math, less overhead.

Each patch is optional, applied after loading, and measured on its own in ``bench/embed_variants.py``
(figures in bench/results/embed-variants-*.json); ``DOCVISION_SPEEDUPS`` picks them, default ``auto``.

linear_patch_embed  The vision tower's patch embedding is a Conv3d whose kernel equals its stride and its
                    input (2×14×14 pixels × 3 channels). That is a matrix product; cuDNN/oneDNN run it as a
                    slow 3-D convolution. Replaced by a Linear holding the same weights (bit-identical math).
batched_attention   transformers splits the packed vision sequence into one attention call per image and
                    reads ``cu_seqlens`` back to the host in each of the 32 layers (a GPU sync each). Pages
                    of equal size (the common case: one DPI, one paper size) go through one batched SDPA
                    call; the lengths are read once per forward.
prepacked_linear    CPU bf16 only: Linear weights reordered once into oneDNN's blocked layout (the AMX/VNNI tile
                    format) instead of on every call; ``torch.ops.mkldnn._linear_pointwise`` runs them.
fp8                 CUDA (Hopper) only: Linear layers as FP8 e4m3 matrix products (``torch._scaled_mm``),
                    weights per output channel, activations per token, scaled back to bf16.
fp8_block           CUDA (Hopper) only: fp8 e4m3 with DeepSeek-V3-style block scales (weights per 128x128 block,
                    activations per token per 128 columns) through ``F.scaled_mm`` block-wise recipes; finer
                    scales than ``fp8`` for the fidelity target. Layers whose dimensions are not multiples of
                    128 (the patch embedding) and the 128-d head stay bf16.
fp8_layers          CUDA (sm89+) only: ``fp8``'s rowwise Linear (weights per channel, activations per token,
                    ``torch._scaled_mm``) only on the layer classes named in ``DOCVISION_FP8_LAYERS`` (comma list of
                    ``FP8_CLASSES``, or none; default ``FP8_DEFAULT_LAYERS``: the set bench/embed_gpu.py selects
                    by per-class sensitivity at page cosine to fp32 >= 0.996). Quantization fuses under ``compile``
                    (into the preceding layer norm).
static_pages        A batch of equal-size pages with one prompt (every backfill batch: one DPI, one paper size)
                    skips transformers' per-forward glue: vision rotary embeddings, ``cu_seqlens``, M-RoPE
                    position ids and the image-token positions are computed once per (batch, page size, prompt)
                    and reused; no host sync inside the forward (ids/masks may stay on the CPU), so the host
                    can queue the next batch while the GPU runs. Other batches take the model's own forward.
cuda_graphs         ``compile`` with CUDA graphs (Inductor's ``reduce-overhead``): each compiled block replays
                    as one graph per shape; the caller marks each forward a new step.
int8_onednn         CPU only: Linear layers as int8 matrix products through oneDNN (VNNI / AMX-INT8 where the CPU has
                    them): activations quantized per token at run time, weights per output channel (from the baked
                    int8 weights where the plan already holds them). Output in the compute dtype. Opt-in: measured
                    against the default per CPU class in ``bench/embed_ab.py`` (bench/results/embed-ab-*.json).
compile             ``torch.compile`` of the vision blocks and the language model (Inductor), static shapes:
                    each new (batch, page size) compiles once (~8 s on an H100); past torch's recompile
                    limit (8 shapes) further shapes run eagerly. Bulk backfills of one paper size and DPI
                    hit one or two shapes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

ALL = (
    "linear_patch_embed",
    "batched_attention",
    "prepacked_linear",
    "fp8",
    "fp8_block",
    "compile",
    "cuda_graphs",
    "int8_onednn",
    "fp8_layers",
    "static_pages",
)


def default_speedups(device: str) -> tuple[str, ...]:
    """What the in-process A/B showed wins beyond the spread of its repetitions, per device.

    H100, batch 32: patch embedding + batched attention 1.04x, + torch.compile 1.51x (cosine to fp32
    unchanged); fp8 on top 1.64x but cosine 0.980, so it stays opt-in. Second H100 run
    (embed-gpu-h100-stock-today-new.json): fp8_block 0.56x of compile alone at cosine 0.979, cuda_graphs
    within the spread (61.2 vs 62.1 pages/s model only): both opt-in. CPU (AMX, 2 cores): compile was
    slower than eager (12.7 vs 9.7 s/page) and prepacked oneDNN weights within run-to-run noise.
    CPU, every class measured (bench/results/embed-ab-cpu-*.json, 2 cores, 3 alternating reps): no patch
    wins beyond the spread. AMX: linear_patch_embed + batched_attention 1.13x by median, slowest patched rep
    20.75 s vs fastest unpatched 19.63 s; int8_onednn 0.99x. AVX512-VNNI without AMX (fbgemm plan, 3-rep rerun
    alone on the host): patches 1.00x, int8_onednn 0.92x. AVX2: patches 42.6 → 40.9 s, within the spread. So the CPU default is none.
    H100, one run (embed-gpu-h100-static-fp8.json, 3 alternating rounds): static_pages 64.8 [64.8-65.1]
    vs 57.2 [56.6-57.6] pages/s model only (same cosine, 0.99982); fp8_layers (vision_fc1) on top 68.2
    [67.9-68.2] at page cosine 0.99725 (>= 0.995): both CUDA defaults.
    """
    if device != "cuda":
        return ()
    return ("linear_patch_embed", "batched_attention", "fp8_layers", "static_pages", "compile")


def parse(spec: str | None, device: str) -> tuple[str, ...]:
    from engine.errors import ConfigError

    if spec is None or spec.strip() in ("", "auto"):
        return default_speedups(device)
    if spec.strip() == "none":
        return ()
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise ConfigError(f"DOCVISION_SPEEDUPS: unknown {unknown}; known: auto, none, {', '.join(ALL)}")
    return names


def apply(model: nn.Module, names: Iterable[str], fp8_layers_spec: str | None = None) -> list[str]:
    """Apply the named patches that fit this model and device; returns those applied.

    ``fp8_layers_spec``: the layer classes ``fp8_layers`` quantizes (DOCVISION_FP8_LAYERS), default
    FP8_DEFAULT_LAYERS."""
    applied = []
    for name in names:
        ok = (
            fp8_layers(model, fp8_layer_spec(fp8_layers_spec))
            if name == "fp8_layers"
            else PATCHES[name](model)
        )
        if ok:
            applied.append(name)
    if applied:
        log.info("speedups applied: %s", ", ".join(applied))
    return applied


# ------------------------------------------------------------------------------------------ patch embed
class LinearPatchProj(nn.Module):
    """Drop-in for ``PatchEmbed.proj``: (n, C, T, P, P) → (n, E) as one matrix product."""

    def __init__(self, conv: nn.Conv3d) -> None:
        super().__init__()
        self.out_channels = conv.out_channels
        self.weight = nn.Parameter(conv.weight.detach().reshape(conv.out_channels, -1), requires_grad=False)
        self.bias = conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.reshape(x.shape[0], -1), self.weight, self.bias)


def _submodule(model: nn.Module, name: str) -> Any:
    """`model.<name>`, or `model.model.<name>` where colpali-engine wraps the transformers model."""
    found = getattr(model, name, None)
    return found if found is not None else getattr(getattr(model, "model", None), name, None)


def _vision(model: nn.Module) -> Any:
    return _submodule(model, "visual")


def _replace_linears(
    model: nn.Module, keep: Callable[[nn.Linear], bool], make: Callable[[nn.Linear], nn.Module]
) -> int:
    """Swap every Linear child for which `keep` holds by `make(linear)`; returns how many were swapped."""
    targets = [
        (parent, name, mod)
        for parent in model.modules()
        for name, mod in parent.named_children()
        if isinstance(mod, nn.Linear) and keep(mod)
    ]
    for parent, name, mod in targets:
        setattr(parent, name, make(mod))
    return len(targets)


def linear_patch_embed(model: nn.Module) -> bool:
    visual = _vision(model)
    proj = getattr(getattr(visual, "patch_embed", None), "proj", None)
    if not isinstance(proj, nn.Conv3d) or list(proj.kernel_size) != list(proj.stride):
        return False
    visual.patch_embed.proj = LinearPatchProj(proj)
    return True


# ------------------------------------------------------------------------------------------ attention
def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _attention_forward(
    self: Any,
    hidden_states: torch.Tensor,
    cu_seqlens: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    n = hidden_states.shape[0]
    q, k, v = self.qkv(hidden_states).reshape(n, 3, self.num_heads, -1).unbind(1)  # (n, heads, head_dim)
    assert position_embeddings is not None, "Qwen2-VL vision blocks always pass rotary embeddings"
    cos, sin = position_embeddings  # fp32, (n, head_dim): rotary kept in fp32 as upstream does
    cos, sin = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()
    qf, kf = q.float(), k.float()
    q = (qf * cos + _rotate_half(qf) * sin).to(v.dtype)
    k = (kf * cos + _rotate_half(kf) * sin).to(v.dtype)
    lengths = self._docvision_lengths[0]
    if lengths is not None and len(set(lengths)) == 1:
        b, L = len(lengths), lengths[0]
        q, k, v = (t.reshape(b, L, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scaling)  # (b, heads, L, head_dim)
        out = out.transpose(1, 2).reshape(n, -1)
    else:
        if lengths is None:
            lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
        outs = [
            F.scaled_dot_product_attention(
                qi.transpose(0, 1)[None],
                ki.transpose(0, 1)[None],
                vi.transpose(0, 1)[None],
                scale=self.scaling,
            )[0].transpose(0, 1)
            for qi, ki, vi in zip(q.split(lengths), k.split(lengths), v.split(lengths), strict=True)
        ]
        out = torch.cat(outs).reshape(n, -1)
    return self.proj(out)


def batched_attention(model: nn.Module) -> bool:
    visual = _vision(model)
    blocks = getattr(visual, "blocks", None)
    if not blocks or not hasattr(blocks[0], "attn") or not hasattr(blocks[0].attn, "qkv"):
        return False
    attn_cls = type(blocks[0].attn)
    if attn_cls.__name__ != "VisionAttention":  # Qwen2-VL only; Qwen2.5-VL windows its attention
        return False
    shared: list[list[int] | None] = [None]  # per-forward image lengths, read once from grid_thw

    def remember_lengths(_mod: nn.Module, args: tuple, kwargs: dict) -> None:
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        shared[0] = None if grid is None else [int(t * h * w) for t, h, w in grid.tolist()]

    visual.register_forward_pre_hook(remember_lengths, with_kwargs=True)
    for blk in blocks:
        blk.attn._docvision_lengths = shared
        blk.attn.forward = _attention_forward.__get__(blk.attn)
    return True


# ------------------------------------------------------------------------------------------ oneDNN prepack
class PrepackedLinear(nn.Module):
    """bf16 Linear whose weight sits in oneDNN's blocked layout, packed once at load."""

    def __init__(self, lin: nn.Linear, rows_hint: int = 1024) -> None:
        super().__init__()
        w = lin.weight.detach()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(w, rows_hint)
        self.bias = None if lin.bias is None else lin.bias.detach()
        self.in_features, self.out_features = lin.in_features, lin.out_features
        # transformers reads `.weight.dtype/.device`; an empty tensor answers without keeping a second copy
        self.weight = torch.empty(0, dtype=w.dtype, device=w.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.mkldnn._linear_pointwise(
            x.reshape(-1, shape[-1]), self.packed, self.bias, "none", [], ""
        )
        return y.reshape(*shape[:-1], self.out_features)


def _packable(mod: nn.Linear) -> bool:
    return (
        type(mod) is nn.Linear
        and mod.weight.device.type == "cpu"
        and mod.weight.dtype in (torch.bfloat16, torch.float32)
    )


def prepacked_linear(model: nn.Module) -> bool:
    first = next((m for m in model.modules() if isinstance(m, nn.Linear) and _packable(m)), None)
    if first is None or not torch.backends.mkldnn.is_available():
        return False
    dtype = first.weight.dtype
    try:  # bf16 packing needs AVX512-BW/VL/DQ or AVX-NE-CONVERT; refuse cleanly elsewhere
        PrepackedLinear(nn.Linear(32, 32).to(dtype))(torch.zeros(2, 32, dtype=dtype))
    except RuntimeError as exc:
        log.info("prepacked_linear not available on this CPU: %s", str(exc).splitlines()[0])
        return False
    return _replace_linears(model, _packable, PrepackedLinear) > 0


# ------------------------------------------------------------------------------------------ fp8
FP8_MAX = 448.0


class Fp8Linear(nn.Module):
    """y = x W^T + b with x and W in float8 e4m3 (per-token and per-channel scales), output bf16."""

    w8: torch.Tensor
    w_scale: torch.Tensor

    def __init__(self, lin: nn.Linear) -> None:
        super().__init__()
        w = lin.weight.detach().float()
        scale = (w.abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp(min=1e-12)
        self.register_buffer("w8", (w / scale).to(torch.float8_e4m3fn))
        self.register_buffer("w_scale", scale.reshape(1, -1).contiguous())
        self.bias = None if lin.bias is None else nn.Parameter(lin.bias.detach(), requires_grad=False)
        self.in_features, self.out_features = lin.in_features, lin.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        xs = (x2.abs().amax(dim=1, keepdim=True).float() / FP8_MAX).clamp(min=1e-12)
        x8 = (x2 / xs).to(torch.float8_e4m3fn)
        y = torch._scaled_mm(x8, self.w8.t(), scale_a=xs, scale_b=self.w_scale, out_dtype=torch.bfloat16)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)


def fp8(model: nn.Module) -> bool:
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9):
        return False

    head = getattr(model, "custom_text_proj", None)

    def eligible(mod: nn.Linear) -> bool:
        return (
            mod.weight.is_cuda
            and mod.in_features % 16 == 0
            and mod.out_features % 16 == 0
            and mod is not head  # keep the embedding head (128-d, 320-d, …) in bf16
        )

    return _replace_linears(model, eligible, Fp8Linear) > 0


BLOCK = 128


class Fp8BlockLinear(nn.Module):
    """y = x W^T + b in fp8 e4m3: W scaled per 128x128 block, x per token per 128 columns; output bf16."""

    w8: torch.Tensor
    w_scale: torch.Tensor

    def __init__(self, lin: nn.Linear) -> None:
        super().__init__()
        w = lin.weight.detach().float()
        n, k = w.shape
        blocks = w.reshape(n // BLOCK, BLOCK, k // BLOCK, BLOCK)
        scale = (blocks.abs().amax(dim=(1, 3)) / FP8_MAX).clamp(min=1e-12)  # (n/128, k/128)
        self.register_buffer("w8", (blocks / scale[:, None, :, None]).reshape(n, k).to(torch.float8_e4m3fn))
        # cuBLAS wants the K-block count of the weight scales padded to a multiple of 4
        self.register_buffer("w_scale", F.pad(scale, (0, -(k // BLOCK) % 4)).contiguous())
        self.bias = None if lin.bias is None else nn.Parameter(lin.bias.detach(), requires_grad=False)
        self.in_features, self.out_features = k, n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        m = x2.shape[0]
        if m % 4:  # cuBLAS wants the token count of the activation scales a multiple of 4
            x2 = F.pad(x2, (0, 0, 0, -m % 4))
        g = x2.reshape(x2.shape[0], -1, BLOCK)
        xs = (g.abs().amax(dim=-1).float() / FP8_MAX).clamp(min=1e-12)  # (m, k/128)
        x8 = (g / xs[..., None]).to(torch.float8_e4m3fn).reshape(x2.shape)
        y = F.scaled_mm(
            x8, self.w8.t(), xs.t().contiguous().t(), F.ScalingType.BlockWise1x128,
            self.w_scale.t(), F.ScalingType.BlockWise128x128, output_dtype=torch.bfloat16,
        )[:m]  # fmt: skip
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)


def fp8_block(model: nn.Module) -> bool:
    if (
        not torch.cuda.is_available()
        or torch.cuda.get_device_capability() < (9, 0)
        or not hasattr(F, "scaled_mm")
    ):
        return False

    head = getattr(model, "custom_text_proj", None)

    def eligible(mod: nn.Linear) -> bool:
        return (
            mod.weight.is_cuda
            and mod.in_features % BLOCK == 0
            and mod.out_features % BLOCK == 0
            and mod is not head  # keep the embedding head (128-d, 320-d, …) in bf16
        )

    return _replace_linears(model, eligible, Fp8BlockLinear) > 0


# ------------------------------------------------------------------------------------------ int8 (oneDNN)
class OnednnInt8Linear(nn.Module):
    """y = x W^T + b as an int8 GEMM in oneDNN: x per token (symmetric, held as uint8 + 128), W per channel.

    oneDNN's quantized linear takes one activation scale; per-token scales are applied to its fp32 output
    rows instead (exact: the scale of row i factors out of row i of the product). CPUs without VNNI multiply
    u8×s8 pairs into saturating int16 (vpmaddubsw): there weights keep 7 bits (±63), as fbgemm's reduce_range.
    """

    def __init__(
        self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype
    ):
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.packed = torch.ops.onednn.qlinear_prepack(q.contiguous(), None)
        self.w_scale = scale.float().contiguous()
        self.w_zp = torch.zeros(self.out_features, dtype=torch.int32)
        self.bias = None if bias is None else bias.detach().float()
        self.out_dtype = out_dtype
        self._one, self._zp = torch.tensor(1.0), torch.tensor(128, dtype=torch.int32)
        self.weight = torch.empty(0, dtype=out_dtype)  # transformers reads `.weight.dtype`

    @classmethod
    def from_linear(cls, mod: nn.Module, out_dtype: torch.dtype) -> OnednnInt8Linear:
        qmax = 127 if _has_vnni() else 63
        if isinstance(mod, nn.Linear):
            w, bias = mod.weight.detach().float(), mod.bias
        else:  # torch.ao dynamic Linear (the fbgemm plan): its int8 weights, as they are where VNNI is there
            dyn: Any = mod
            qw, bias = dyn.weight(), dyn.bias()
            q, scale = qw.int_repr(), qw.q_per_channel_scales().float()
            if qmax == 127:
                return cls(q, scale, bias, out_dtype)
            w = q.float() * scale[:, None]
        scale = (w.abs().amax(dim=1) / qmax).clamp(min=1e-12)
        q = torch.round(w / scale[:, None]).clamp_(-qmax, qmax).to(torch.int8)
        return cls(q, scale, bias, out_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).float()
        s = (x2.abs().amax(dim=1, keepdim=True) / 127.0).clamp(min=1e-12)
        xq = torch.round(x2 / s).add_(128).clamp_(0, 255).to(torch.uint8)
        y = torch.ops.onednn.qlinear_pointwise.tensor(
            xq, self._one, self._zp, self.packed, self.w_scale, self.w_zp, None,
            1.0, 0, torch.float32, "none", [], "",
        )  # fmt: skip
        y = y.mul_(s)
        if self.bias is not None:
            y = y.add_(self.bias)
        return y.to(self.out_dtype).reshape(*shape[:-1], self.out_features)


def _has_vnni() -> bool:
    from engine.embedding.compute import cpu_flags

    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def _int8_eligible(mod: nn.Module) -> bool:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    if isinstance(mod, DynamicLinear):
        return True
    return type(mod) is nn.Linear and mod.weight.device.type == "cpu" and mod.weight.numel() >= 4096


def int8_swaps(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module, nn.Module]]:
    """(parent, name, current, int8 replacement) for every eligible Linear; the caller swaps them in."""
    if torch.cuda.is_available() or not hasattr(torch.ops.onednn, "qlinear_prepack"):
        return []
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return [
        (parent, name, mod, OnednnInt8Linear.from_linear(mod, dtype))
        for parent in list(model.modules())
        for name, mod in list(parent.named_children())
        if _int8_eligible(mod)
    ]


def int8_onednn(model: nn.Module) -> bool:
    swaps = int8_swaps(model)
    for parent, name, _old, new in swaps:
        setattr(parent, name, new)
    return bool(swaps)


# ------------------------------------------------------------------------------------------ compile
def compile_model(model: nn.Module, mode: str | None = None) -> bool:
    if not torch.cuda.is_available():
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # weights become constants: oneDNN prepacks them (AMX/VNNI layouts)
    for blk in getattr(_vision(model), "blocks", []):
        blk.compile(dynamic=False, mode=mode)
    for layer in getattr(_submodule(model, "language_model"), "layers", []):
        layer.compile(dynamic=False, mode=mode)
    return True


def cuda_graphs(model: nn.Module) -> bool:
    """``compile`` replaying each block as a CUDA graph; callers call ``new_step()`` before each forward."""
    if not torch.cuda.is_available():
        return False
    return compile_model(model, mode="reduce-overhead")


def new_step() -> None:
    """Tell CUDA-graph trees a new forward begins (outputs of the last one are no longer read)."""
    torch.compiler.cudagraph_mark_step_begin()


# ------------------------------------------------------------------------------------------ fp8 by layer class
FP8_CLASSES = (
    "vision_qkv",
    "vision_proj",
    "vision_fc1",
    "vision_fc2",
    "merger",
    "text_qkv",
    "text_o",
    "text_gate_up",
    "text_down",
)
# Chosen in bench/results/embed-gpu-h100-static-fp8.json (H100, random weights, 8 pages): alone, each class
# cost 0.0014-0.0041 of min page cosine to fp32 (bf16: 0.99965); greedily (least cosine lost per FLOP first)
# vision_fc1 (22% of the FLOPs) was kept first (0.99695 >= 0.996); any second class fell to 0.9936-0.9952. Compiled, the
# page cosine was 0.99725 and throughput +5% (68.2 vs 64.8 pages/s model only, beyond the spread).
FP8_DEFAULT_LAYERS: tuple[str, ...] = ("vision_fc1",)
_TEXT_LEAVES = {
    "q_proj": "text_qkv",
    "k_proj": "text_qkv",
    "v_proj": "text_qkv",
    "o_proj": "text_o",
    "gate_proj": "text_gate_up",
    "up_proj": "text_gate_up",
    "down_proj": "text_down",
}
_VISION_LEAVES = {"qkv": "vision_qkv", "proj": "vision_proj", "fc1": "vision_fc1", "fc2": "vision_fc2"}


def layer_class(name: str) -> str | None:
    """The FP8_CLASSES entry of a Linear by its qualified name in a Qwen2-VL model, None for any other."""
    parts = name.split(".")
    if "visual" in parts:
        if "merger" in parts:
            return "merger"
        return _VISION_LEAVES.get(parts[-1]) if "blocks" in parts else None
    if "layers" in parts:
        return _TEXT_LEAVES.get(parts[-1])
    return None


def fp8_layer_spec(spec: str | None) -> tuple[str, ...]:
    from engine.errors import ConfigError

    if spec is None or not spec.strip() or spec.strip() == "auto":
        return FP8_DEFAULT_LAYERS
    if spec.strip() == "none":
        return ()
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    unknown = [n for n in names if n not in FP8_CLASSES]
    if unknown:
        raise ConfigError(f"DOCVISION_FP8_LAYERS: unknown {unknown}; known: {', '.join(FP8_CLASSES)}")
    return names


def is_qwen2_vl(model: nn.Module) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) == "qwen2_vl"


def swap_fp8(model: nn.Module, classes: Iterable[str]) -> list[tuple[nn.Module, str, nn.Module]]:
    """Replace the Linear layers of the given classes by Fp8Linear; returns (parent, name, old) to undo it.

    Needs ``torch._scaled_mm`` for the tensors' device (CUDA sm89+; recent torch also runs it on CPU)."""
    if not is_qwen2_vl(model):
        raise ValueError("fp8 layer classes name Qwen2-VL layers; this model is another family")
    wanted = set(classes)
    modules = dict(model.named_modules())
    swaps: list[tuple[nn.Module, str, nn.Module]] = []
    for qual, mod in list(modules.items()):
        if type(mod) is not nn.Linear or layer_class(qual) not in wanted:
            continue
        if mod.in_features % 16 or mod.out_features % 16:
            continue
        parent_name, _, leaf = qual.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        swaps.append((parent, leaf, mod))
        setattr(parent, leaf, Fp8Linear(mod))
    return swaps


def unswap(swaps: list[tuple[nn.Module, str, nn.Module]]) -> None:
    for parent, leaf, old in swaps:
        setattr(parent, leaf, old)


def fp8_layers(model: nn.Module, classes: Iterable[str] | None = None) -> bool:
    """Rowwise fp8 on the given layer classes (default FP8_DEFAULT_LAYERS), CUDA sm89+ only."""
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9):
        return False
    if not any(p.is_cuda for p in model.parameters()):
        return False
    if not is_qwen2_vl(model):
        return False  # layer_class() names Qwen2-VL's layers; other families' names would map wrongly
    chosen = tuple(FP8_DEFAULT_LAYERS if classes is None else classes)
    return bool(chosen) and bool(swap_fp8(model, chosen))


# ------------------------------------------------------------------------------------------ static pages
class StaticPages:
    """ColQwen2's forward for batches of equal-size pages sharing one prompt, with per-shape constants cached.

    transformers recomputes, on every forward, the vision rotary embeddings and ``cu_seqlens`` (a Python loop
    over the images), the M-RoPE position ids (a loop over the batch with host syncs) and the image-token
    mask (a sync to check its count). For a batch whose pages have one grid and whose token ids are one
    prompt, all of these depend only on (batch, grid, prompt): computed once here, then reused. Decisions
    are taken on CPU tensors (what the processor returns), so the forward queues GPU work without waiting.
    """

    KEYS = {"input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids"}

    def __init__(self, model: nn.Module) -> None:
        self.model: Any = model
        self.visual = _vision(model)
        self.lm = _submodule(model, "language_model")
        self.cache: dict[tuple, dict[str, Any] | None] = {}  # per (grid, prompt, device, dtype); None: unfit
        self.hits = 0

    def plan(self, kw: dict[str, Any]) -> tuple[tuple, dict[str, Any]] | None:
        """(key, constants) when this batch fits the static path, None when the model's own forward must run."""
        if set(kw) - self.KEYS or "pixel_values" not in kw or "image_grid_thw" not in kw:
            return None
        ids: Any = kw.get("input_ids")
        mask: Any = kw.get("attention_mask")
        grid: Any = kw["image_grid_thw"]
        pix: Any = kw["pixel_values"]
        if ids is None or mask is None or pix.dim() != 3:
            return None
        ids, mask, grid = ids.cpu(), mask.cpu(), grid.cpu()  # no-ops for the processor's CPU tensors
        b = ids.shape[0]
        if grid.shape[0] != b or not bool((grid == grid[0]).all()) or int(grid[0, 0]) != 1:
            return None
        if not bool(mask.bool().all()) or not bool((ids == ids[0]).all()):
            return None
        n = int(grid[0, 1] * grid[0, 2])
        if pix.shape[:2] != (b, n):
            return None
        key = (tuple(grid[0].tolist()), tuple(ids[0].tolist()), pix.device, self.model.dtype)
        if key not in self.cache:
            if len(self.cache) >= 16:  # page shapes of one run are few; never grow without bound
                self.cache.clear()
            self.cache[key] = self._constants(ids[0], grid[0], kw.get("mm_token_type_ids"), pix.device)
        consts = self.cache[key]
        return None if consts is None else (key, consts)

    def _constants(
        self,
        ids0: torch.Tensor,
        grid0: torch.Tensor,
        types: torch.Tensor | None,
        device: torch.device,
    ) -> dict[str, Any] | None:
        from transformers.vision_utils import get_vision_position_ids

        cfg = self.model.config
        image = torch.eq(ids0, int(cfg.image_token_id))
        merge = int(self.visual.spatial_merge_size)
        n = int(grid0[1] * grid0[2])
        m = n // (merge * merge)
        where = image.nonzero().flatten()
        if len(where) != m or int(where[-1] - where[0]) + 1 != m:  # one contiguous run of image tokens
            return None
        types0 = types[0].cpu() if types is not None else image.long()
        pos = get_vision_position_ids(grid0[None], merge).to(device)
        dtype = self.model.dtype
        with torch.inference_mode():
            vcos, vsin = self.visual.rotary_pos_emb(torch.empty(0, device=device, dtype=dtype), pos)
            rope, _ = self.model.get_rope_index(
                ids0[None], mm_token_type_ids=types0[None], image_grid_thw=grid0[None]
            )
            tcos, tsin = self.lm.rotary_emb(torch.empty(0, device=device, dtype=dtype), rope.to(device))
        return {
            "n": n,
            "start": int(where[0]),
            "m": m,
            "ids": ids0[None].to(device),
            "vision_rope": (vcos, vsin),
            "text_rope": (tcos, tsin),
        }

    def forward(self, pixel_values: torch.Tensor, c: dict[str, Any]) -> torch.Tensor:
        b, n = pixel_values.shape[:2]
        blocks = self.visual.blocks
        lengths = getattr(blocks[0].attn, "_docvision_lengths", None)
        if lengths is not None:
            lengths[0] = [n] * b
        # per batch size: the page's rotary table repeated per page (GPU ops, no host work or sync)
        rope = (c["vision_rope"][0].repeat(b, 1), c["vision_rope"][1].repeat(b, 1))
        cu_seqlens = torch.arange(0, (b + 1) * n, n, dtype=torch.int32, device=pixel_values.device)
        x = self.visual.patch_embed(pixel_values.reshape(b * n, -1).to(self.model.dtype))
        for blk in blocks:
            x = blk(x, cu_seqlens=cu_seqlens, position_embeddings=rope)
        merged = self.visual.merger(x).reshape(b, c["m"], -1)
        emb = self.lm.embed_tokens(c["ids"].expand(b, -1))
        s, m = c["start"], c["m"]
        h = torch.cat([emb[:, :s], merged.to(emb.dtype), emb[:, s + m :]], dim=1)
        for layer in self.lm.layers:
            h = layer(h, attention_mask=None, position_embeddings=c["text_rope"])
        proj = self.model.custom_text_proj(self.lm.norm(h))
        return proj / proj.norm(dim=-1, keepdim=True)


def static_pages(model: nn.Module) -> bool:
    visual, lm = _vision(model), _submodule(model, "language_model")
    if visual is None or lm is None or not hasattr(model, "custom_text_proj"):
        return False
    if not hasattr(model, "get_rope_index") or not hasattr(visual, "rotary_pos_emb"):
        return False
    blocks = getattr(visual, "blocks", None)
    if not blocks or type(blocks[0].attn).__name__ != "VisionAttention":
        return False
    if not hasattr(blocks[0].attn, "_docvision_lengths"):
        batched_attention(model)  # one SDPA call per layer for the whole batch
    runner = StaticPages(model)
    own_forward = model.forward

    def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
        planned = None if args else runner.plan(kwargs)
        if planned is None:
            device = next(model.parameters()).device
            moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
            return own_forward(*args, **moved)
        runner.hits += 1
        return runner.forward(kwargs["pixel_values"], planned[1])

    model.forward = forward  # type: ignore[method-assign]
    model._docvision_static = runner  # type: ignore[assignment]
    return True


PATCHES = {
    "linear_patch_embed": linear_patch_embed,
    "batched_attention": batched_attention,
    "prepacked_linear": prepacked_linear,
    "fp8": fp8,
    "fp8_block": fp8_block,
    "int8_onednn": int8_onednn,
    "compile": compile_model,
    "cuda_graphs": cuda_graphs,
    "fp8_layers": fp8_layers,
    "static_pages": static_pages,
}
