"""Page preprocessing on the GPU for Qwen2-VL-style processors (ColQwen2, ColQwen2.5).

transformers' Qwen2-VL image processor is torch code (its torchvision backend): resize (bicubic,
antialiased), rescale, normalize and patchify run on whatever device the image tensors are on. On the CPU
that is ~160 ms a US-letter page at 300 DPI (bench/results/embed-gpu-h100.json: 6.2 pages/s in one
process), which a GPU embedding 60+ pages/s cannot wait for. Here the page goes to the GPU as raw uint8
pixels (one copy) and the processor's own code runs there: the same math (the CPU and GPU outputs agree
to float rounding), so ids, grids and embeddings do not depend on where a page was preprocessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image


def supports(processor: Any) -> bool:
    """True for processors whose image half is transformers' torch backend and whose prompt is fixed."""
    image_processor = getattr(processor, "image_processor", None)
    bases = {
        c.__name__ for c in type(image_processor).__mro__
    }  # transformers 5.x / 4.x names of the torch path
    return hasattr(processor, "visual_prompt_prefix") and bool(
        {"TorchvisionBackend", "BaseImageProcessorFast"} & bases
    )


def page_tensor(image: Image.Image | torch.Tensor) -> torch.Tensor:
    """(3, H, W) uint8 pixels of an RGB page; a tensor is passed through."""
    if isinstance(image, torch.Tensor):
        return image
    arr = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    return torch.from_numpy(arr.copy() if not arr.flags.writeable else arr).permute(2, 0, 1)


def input_size(processor: Any, width: int, height: int) -> tuple[int, int] | None:
    """(width, height) the processor resizes a page of this size to (Qwen2-VL's smart_resize), else None."""
    image_processor: Any = getattr(processor, "image_processor", None)
    size = getattr(image_processor, "size", None) or {}
    try:
        longest, shortest = size["longest_edge"], size["shortest_edge"]
    except (KeyError, TypeError):
        return None
    if not longest or not shortest:
        return None
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    factor = int(image_processor.patch_size) * int(image_processor.merge_size)
    h, w = smart_resize(height, width, factor=factor, min_pixels=shortest, max_pixels=longest)
    return w, h


def presize(processor: Any, image: Image.Image) -> Image.Image:
    """The page resized on the CPU (PIL bicubic, antialiased) to the size the processor would resize it to.

    A 300-DPI letter page is 25 MB of pixels; at the model's input size it is ~1.8 MB, so this is what a
    DataLoader worker should hand over: the processor then finds the page at its target size and only
    rescales, normalizes and patchifies (on the GPU with ``process_pages``). PIL's bicubic and torchvision's
    antialiased bicubic differ by rounding (tests/integration/test_gpu_preprocess.py bounds it)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    target = input_size(processor, rgb.width, rgb.height)
    if target is None or target == rgb.size:
        return rgb
    return rgb.resize(target, Image.Resampling.BICUBIC)


def process_pages(
    processor: Any, pages: Sequence[Image.Image | torch.Tensor], device: str | torch.device
) -> Any:
    """``processor.process_images(pages)``, with the pixel work done on ``device``.

    Returns the same keys and shapes as colpali-engine's ``process_images``: ``pixel_values`` on the
    device (padded per image), token ids, masks and grids on the CPU.
    """
    tensors = [page_tensor(p).to(device, non_blocking=True) for p in pages]
    batch = processor(
        text=[processor.visual_prompt_prefix] * len(tensors),
        images=tensors,
        padding="longest",
        return_tensors="pt",
        device=device,
    )
    grid = batch["image_grid_thw"]
    offsets = (grid[:, 1] * grid[:, 2]).tolist()
    batch["pixel_values"] = torch.nn.utils.rnn.pad_sequence(
        list(torch.split(batch["pixel_values"], offsets)), batch_first=True
    )
    return batch
