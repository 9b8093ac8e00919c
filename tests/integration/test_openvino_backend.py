"""The OpenVINO backend on the tiny ColQwen2 (real OpenVINO runtime, real NNCF int8 weights): bake-time export,
multivectors within cosine 0.995 per token of the PyTorch fp32 path, the backend chosen from the manifest's A/B."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

pytest.importorskip("openvino")
pytestmark = pytest.mark.slow


def _page(w: int = 850, h: int = 1100) -> Image.Image:
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    for i in range(30):
        d.text((40, 30 + i * 34), f"line {i}: container MSKU{i:07d} weight {i * 7.5} kg", fill="black")
    d.rectangle((w // 2, h // 2, w // 2 + 200, h // 2 + 120), fill=(20, 40, 200))
    return img


@pytest.fixture(scope="module")
def ov_baked(tiny_colqwen2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.bake import bake

    out = tmp_path_factory.mktemp("ov") / "colqwen2"
    bake(str(tiny_colqwen2), out, backend="openvino", ab_reps=1)
    return out


def _fp32(tiny: Path):
    from engine.embedding import Embedder

    return Embedder(str(tiny), compute_mode="fp32", backend="torch", speedups="none", verify=False)


def test_export_written_at_bake_time_and_recorded(ov_baked: Path) -> None:
    manifest = json.loads((ov_baked / "manifest.json").read_text())
    ov = manifest["openvino"]
    assert ov["weights"] == "int8-nncf-asym-per-channel"
    assert {"openvino/vision.xml", "openvino/text.xml", "openvino/embed_tokens.npy"} <= set(ov["files"])
    assert not any(
        k.startswith("openvino/") for k in manifest["files"]
    )  # a torch cold start never hashes them
    ab = next(iter(manifest["backend_ab"].values()))
    assert ab["winner"] in ("torch", "openvino") and ab["reps"] == 1
    # int8 weights: the .bin holds ~1 byte per weight, not 4
    xml_bytes = sum(m["bytes"] for k, m in ov["files"].items() if k.endswith(".bin"))
    assert xml_bytes < manifest["parameters"] * 2


@pytest.mark.parametrize("size", [(850, 1100), (1100, 850), (612, 1008)])
def test_pages_match_pytorch_fp32(ov_baked: Path, tiny_colqwen2: Path, size: tuple[int, int]) -> None:
    from engine.embedding import Embedder

    ov = Embedder(str(ov_baked), backend="openvino", verify="sha256")
    assert ov.describe()["backend"] == "openvino"
    ref = _fp32(tiny_colqwen2)
    pages = [_page(*size), _page(*size).rotate(180)]
    for a, b in zip(ref.embed_images(pages), ov.embed_images(pages), strict=True):
        assert a.vectors.shape == b.vectors.shape and a.grid == b.grid and a.patch_offset == b.patch_offset
        assert float((a.vectors * b.vectors).sum(-1).min()) >= 0.995


def test_mixed_page_sizes_in_one_batch(ov_baked: Path, tiny_colqwen2: Path) -> None:
    """Pages of different sizes are padded together by the processor; each comes back unpadded and right."""
    from engine.embedding import Embedder

    ov = Embedder(str(ov_baked), backend="openvino", verify=False)
    ref = _fp32(tiny_colqwen2)
    pages = [_page(850, 1100), _page(1400, 700)]
    for a, b in zip(ref.embed_images(pages), ov.embed_images(pages), strict=True):
        assert a.vectors.shape == b.vectors.shape
        assert float((a.vectors * b.vectors).sum(-1).min()) >= 0.995


def test_queries_match_pytorch_fp32(ov_baked: Path, tiny_colqwen2: Path) -> None:
    from engine.embedding import Embedder

    ov = Embedder(str(ov_baked), backend="openvino", verify=False)
    ref = _fp32(tiny_colqwen2)
    texts = ["container weight", "a much longer query about the blue rectangle on page seven", "x"]
    for a, b in zip(ref.embed_queries(texts), ov.embed_queries(texts), strict=True):
        assert a.shape == b.shape
        assert float((a * b).sum(-1).min()) >= 0.995
    scores_ref = ref.score(ref.embed_queries(texts), [e.vectors for e in ref.embed_images([_page()])])
    scores_ov = ov.score(ov.embed_queries(texts), [e.vectors for e in ov.embed_images([_page()])])
    np.testing.assert_allclose(scores_ov, scores_ref, rtol=0.05)  # bf16 activations where the CPU has them


def test_text_positions_are_transformers_rope_index(tiny_colqwen2: Path) -> None:
    from engine.embedding import openvino_backend as ovb
    from engine.embedding.loader import load_source

    model, proc, _, _ = load_source(str(tiny_colqwen2), dtype=torch.float32)
    for size in [(850, 1100), (1400, 700), (300, 2000)]:
        b = proc.process_images([_page(*size)])
        ref, _ = model.get_rope_index(
            b["input_ids"], mm_token_type_ids=b["mm_token_type_ids"], image_grid_thw=b["image_grid_thw"]
        )
        mine = ovb.text_positions(
            b["input_ids"][0].numpy(), b["image_grid_thw"][0].tolist(), ovb._spec_of(model)
        )
        assert np.array_equal(ref.numpy(), mine)


def test_auto_follows_the_recorded_ab(ov_baked: Path, tmp_path: Path) -> None:
    from engine.embedding import Embedder
    from engine.embedding.compute import cpu_class

    copy = tmp_path / "m"
    shutil.copytree(ov_baked, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for winner in ("openvino", "torch"):
        manifest["backend_ab"] = {
            cpu_class(): {"winner": winner, "torch_s_per_page": 1, "openvino_s_per_page": 2}
        }
        (copy / "manifest.json").write_text(json.dumps(manifest))
        e = Embedder(str(copy), verify=False)
        assert e.backend == winner and "A/B on CPU class" in e.backend_reason
    manifest["backend_ab"] = {"some-other-class": {"winner": "openvino"}}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    e = Embedder(str(copy), verify=False)
    assert e.backend == "torch" and "no backend A/B recorded" in e.backend_reason


def test_bad_inputs_are_typed_errors(ov_baked: Path, baked_tiny: Path, tmp_path: Path) -> None:
    from engine.embedding import Embedder
    from engine.errors import ConfigError, ModelIntegrityError

    with pytest.raises(ConfigError, match="no OpenVINO export"):
        Embedder(str(baked_tiny), backend="openvino")
    with pytest.raises(ConfigError, match="not one of"):
        Embedder(str(baked_tiny), backend="onnx")
    copy = tmp_path / "m"
    shutil.copytree(ov_baked, copy)
    with (copy / "openvino" / "text.bin").open("r+b") as f:  # same size, one byte flipped
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelIntegrityError):
        Embedder(str(copy), backend="openvino", verify="sha256")
