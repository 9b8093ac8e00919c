"""Speed patches (engine/embedding/fast.py) must not change what the model computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from engine.embedding import Embedder, fast
from engine.errors import ConfigError
from tests.fixtures.documents import text_image


def stock(tiny: Path):
    from colpali_engine.models import ColQwen2, ColQwen2Processor

    return ColQwen2.from_pretrained(tiny, dtype=torch.float32).eval(), ColQwen2Processor.from_pretrained(tiny)


def mixed_pages() -> list[Image.Image]:
    """Two letter pages (equal patch counts → one batched attention call) and a landscape one (split path)."""
    return [
        text_image((850, 1100), "INVOICE 1001"),
        text_image((850, 1100), "BILL OF LADING"),
        text_image((1100, 700), "PACKING LIST"),
    ]


def max_masked_diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return float((a[mask] - b[mask]).abs().max())


@pytest.mark.parametrize(
    "patches",
    [
        ["linear_patch_embed"],
        ["batched_attention"],
        ["prepacked_linear"],
        ["linear_patch_embed", "batched_attention"],
    ],
)
def test_patch_is_the_same_math(tiny_colqwen2: Path, patches: list[str]) -> None:
    ref_model, processor = stock(tiny_colqwen2)
    model, _ = stock(tiny_colqwen2)
    assert fast.apply(model, patches) == patches
    for imgs in (mixed_pages()[:2], mixed_pages()):  # equal sizes, then mixed sizes
        batch = processor.process_images(imgs)
        with torch.inference_mode():
            ref, out = ref_model(**batch), model(**batch)
        assert max_masked_diff(ref, out, batch["attention_mask"].bool()) < 1e-4


def test_patch_embed_is_a_linear_with_the_conv_weights(tiny_colqwen2: Path) -> None:
    model, _ = stock(tiny_colqwen2)
    conv = model.visual.patch_embed.proj
    fast.apply(model, ["linear_patch_embed"])
    lin = model.visual.patch_embed.proj
    assert isinstance(lin, fast.LinearPatchProj)
    assert torch.equal(lin.weight, conv.weight.reshape(conv.out_channels, -1))


@pytest.mark.slow
def test_compiled_model_matches_eager(tiny_colqwen2: Path) -> None:
    ref_model, processor = stock(tiny_colqwen2)
    model, _ = stock(tiny_colqwen2)
    assert "compile" in fast.apply(model, ["linear_patch_embed", "batched_attention", "compile"])
    batch = processor.process_images(mixed_pages()[:2])
    with torch.inference_mode():
        ref, out = ref_model(**batch), model(**batch)
    torch._dynamo.reset()
    assert max_masked_diff(ref, out, batch["attention_mask"].bool()) < 1e-3


def test_fp8_linear_numerics() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 512).to(torch.bfloat16)
    x = torch.randn(4, 7, 256, dtype=torch.bfloat16)
    y = fast.Fp8Linear(lin)(x)
    assert y.shape == (4, 7, 512) and y.dtype == torch.bfloat16
    cos = torch.nn.functional.cosine_similarity(y.float(), lin(x).float(), dim=-1)
    assert cos.min() > 0.99


def test_fp8_is_not_applied_without_a_gpu(tiny_colqwen2: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("machine has a GPU")
    model, _ = stock(tiny_colqwen2)
    assert fast.apply(model, ["fp8", "fp8_layers"], "vision_fc1,text_down") == []
    assert not any(isinstance(m, fast.Fp8Linear) for m in model.modules())


def test_spec_parsing() -> None:
    assert fast.parse("auto", "cuda") == (
        "linear_patch_embed",
        "batched_attention",
        "fp8_layers",
        "static_pages",
        "compile",
    )
    assert fast.parse(None, "cpu") == ()  # no CPU patch won beyond the spread (bench/results/embed-ab-*.json)
    assert fast.parse("none", "cpu") == ()
    assert fast.parse("fp8, compile", "cuda") == ("fp8", "compile")
    with pytest.raises(ConfigError, match="unknown \\['turbo'\\]"):
        fast.parse("compile,turbo", "cpu")


def test_embedder_reports_its_speedups(baked_tiny: Path) -> None:
    assert Embedder(str(baked_tiny)).describe()["speedups"] == []
    assert Embedder(str(baked_tiny), speedups="none").describe()["speedups"] == []


def test_int8_onednn_linear_numerics() -> None:
    """Per-token activation scales: a row of large values must not flatten the small rows (per-tensor would)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 512)
    x = torch.randn(3, 5, 256)
    x[0, 0] *= 1000  # one outlier token
    y = fast.OnednnInt8Linear.from_linear(lin, torch.float32)(x)
    assert y.shape == (3, 5, 512) and y.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(y, lin(x).detach(), dim=-1)
    assert cos.min() > 0.999


def test_int8_onednn_reuses_the_fbgemm_plan_weights(baked_tiny: Path) -> None:
    """On the int8 plan the patch takes the baked int8 weights as they are and keeps the page embedding."""
    img = mixed_pages()[:1]
    ref = Embedder(str(baked_tiny), compute_mode="int8", speedups="none").embed_images(img)[0].vectors
    emb = Embedder(str(baked_tiny), compute_mode="int8", speedups="int8_onednn")
    assert emb.describe()["speedups"] == ["int8_onednn"]
    assert any(isinstance(m, fast.OnednnInt8Linear) for m in emb.model.modules())
    out = emb.embed_images(img)[0].vectors
    assert out.shape == ref.shape
    assert float((out * ref).sum(-1).mean()) > 0.99


def test_static_pages_is_the_same_math(tiny_colqwen2: Path) -> None:
    ref_model, processor = stock(tiny_colqwen2)
    model, _ = stock(tiny_colqwen2)
    assert fast.apply(model, ["linear_patch_embed", "static_pages"]) == ["linear_patch_embed", "static_pages"]
    runner = model._docvision_static
    pages = mixed_pages()
    equal = processor.process_images([pages[0], pages[1], pages[0]])
    with torch.inference_mode():
        ref, out, again = ref_model(**equal), model(**equal), model(**equal)
    assert runner.hits == 2 and len(runner.cache) == 1  # constants computed once for this shape
    assert max_masked_diff(ref, out, equal["attention_mask"].bool()) < 1e-5
    assert torch.equal(out, again)
    two = processor.process_images(pages[:2])  # another batch size: its own constants
    with torch.inference_mode():
        assert max_masked_diff(ref_model(**two), model(**two), two["attention_mask"].bool()) < 1e-5
    assert runner.hits == 3 and len(runner.cache) == 1  # same page shape and prompt: same constants
    # pages of different sizes and text queries take the model's own forward, with the same results
    for batch in (
        processor.process_images(pages),
        processor.process_queries(["invoice", "bill of lading 7"]),
    ):
        with torch.inference_mode():
            ref, out = ref_model(**batch), model(**batch)
        assert max_masked_diff(ref, out, batch["attention_mask"].bool()) < 1e-5
    assert runner.hits == 3


def test_every_linear_has_a_fp8_class_and_swaps_undo(tiny_colqwen2: Path) -> None:
    model, processor = stock(tiny_colqwen2)
    linears = {n for n, m in model.named_modules() if type(m) is torch.nn.Linear}
    classes = {n: fast.layer_class(n) for n in linears}
    assert {n for n, c in classes.items() if c is None} == {"custom_text_proj"}  # the 128-d head stays
    assert set(classes.values()) - {None} == set(fast.FP8_CLASSES)
    assert classes["visual.blocks.0.mlp.fc1"] == "vision_fc1"
    assert classes["language_model.layers.1.mlp.down_proj"] == "text_down"
    assert fast.layer_class("visual.patch_embed.proj") is None

    batch = processor.process_images(mixed_pages()[:2])
    with torch.inference_mode():
        ref = model(**batch)
    swaps = fast.swap_fp8(model, ["text_down", "vision_fc2"])
    swapped = {n for n, m in model.named_modules() if isinstance(m, fast.Fp8Linear)}
    assert swapped == {n for n, c in classes.items() if c in ("text_down", "vision_fc2")}
    with torch.inference_mode():
        out = model(**batch)
    mask = batch["attention_mask"].bool()
    cos = torch.nn.functional.cosine_similarity(out[mask].float(), ref[mask].float(), dim=-1)
    assert float(cos.min()) > 0.9 and not torch.equal(out, ref)  # fp8 e4m3: close, not equal
    fast.unswap(swaps)
    assert not any(isinstance(m, fast.Fp8Linear) for m in model.modules())
    with torch.inference_mode():
        assert torch.equal(model(**batch), ref)


def test_fp8_layer_classes_are_refused_for_other_families(tiny_colidefics3: Path) -> None:
    """SigLIP/Llama names (``layers.N.self_attn.q_proj`` in the vision tower) would map to text classes."""
    from engine.embedding.loader import load_source

    model = load_source(str(tiny_colidefics3), dtype=torch.float32)[0]
    assert not fast.is_qwen2_vl(model)
    with pytest.raises(ValueError, match="another family"):
        fast.swap_fp8(model, ["text_qkv"])
    assert not any(isinstance(m, fast.Fp8Linear) for m in model.modules())


def test_fp8_layer_spec() -> None:
    assert (
        fast.fp8_layer_spec(None) == fast.fp8_layer_spec("auto") == fast.FP8_DEFAULT_LAYERS == ("vision_fc1",)
    )
    assert fast.fp8_layer_spec("none") == ()
    assert fast.fp8_layer_spec(" text_down, vision_fc1 ") == ("text_down", "vision_fc1")
    with pytest.raises(ConfigError, match="unknown \\['vision_everything'\\]"):
        fast.fp8_layer_spec("text_down,vision_everything")


def test_embedder_refuses_an_unknown_fp8_layer_class(baked_tiny: Path) -> None:
    with pytest.raises(ConfigError, match="DOCVISION_FP8_LAYERS: unknown \\['vision_mlp'\\]"):
        Embedder(str(baked_tiny), fp8_layers="vision_mlp")
