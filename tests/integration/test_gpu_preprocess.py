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
