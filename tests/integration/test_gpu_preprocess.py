"""GPU preprocessing (engine/embedding/gpu_preprocess.py) runs the processor's own code on tensors; on the CPU
it must give exactly what colpali-engine's process_images gives, so only the device differs on a GPU."""

from __future__ import annotations

import pytest
import torch

from engine.embedding import gpu_preprocess
from tests.fixtures import documents as d

pytestmark = pytest.mark.integration


def test_tensor_path_equals_process_images(embedder) -> None:
    proc = embedder.processor
    assert gpu_preprocess.supports(proc)
    pages = [
        d.text_image((1275, 1650)),
        d.text_image((1275, 1650), "INVOICE 42").convert("L"),
        d.text_image((900, 700)),
    ]
    expected = proc.process_images(pages)
    got = gpu_preprocess.process_pages(proc, pages, "cpu")
    assert set(got) == set(expected)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    assert not embedder.gpu_preprocess  # CPU machine: the processor stays on the CPU


def test_presized_pages_give_the_processor_inputs(embedder) -> None:
    """Workers hand over pages already at the model's input size; the processor then only normalizes and
    patchifies. PIL's bicubic and torchvision's differ by rounding only: at most one grey level."""
    proc = embedder.processor
    pages = [d.text_image((2550, 3300), "BILL OF LADING"), d.text_image((900, 700)).convert("L")]
    small = [gpu_preprocess.presize(proc, p) for p in pages]
    assert [s.size for s in small] == [gpu_preprocess.input_size(proc, *p.size) for p in pages]
    assert all(s.mode == "RGB" for s in small)
    assert gpu_preprocess.presize(proc, small[0]) is small[0]  # already at size: untouched
    expected = proc.process_images(pages)
    got = gpu_preprocess.process_pages(proc, small, "cpu")
    for key in ("input_ids", "attention_mask", "image_grid_thw"):
        assert torch.equal(got[key], expected[key]), key
    diff = (got["pixel_values"] - expected["pixel_values"]).abs()
    one_level = 1 / 255 / min(proc.image_processor.image_std)
    assert float(diff.max()) <= one_level * 1.01 and float(diff.mean()) < one_level / 100
