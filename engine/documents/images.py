"""Raster images (PNG, JPEG, TIFF incl. multi-page, WebP, BMP, GIF) → RGB page frames.

Sizes are checked from the header *before* any pixel is decoded, so a decompression bomb costs nothing.
Images are downsampled to the canonical DPI when they declare a higher one, never upsampled (that would
invent pixels and cost memory); an image without DPI metadata is taken as-is at the nominal canonical DPI.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator

from PIL import Image, ImageOps

from engine.errors import CorruptDocument, ImageTooLarge, NoPages, TooManyPages

# We enforce our own (configurable) limit before decoding; PIL's global one would fire with a less useful error.
Image.MAX_IMAGE_PIXELS = None

MULTI_PAGE_TYPES = {"tiff"}  # GIF/WebP animations are frames of one picture, not pages


class ImageDocument:
    def __init__(self, data: bytes, name: str, type_: str, *, max_pages: int, max_image_pixels: int) -> None:
        self.name = name
        self.type = type_
        self.max_image_pixels = max_image_pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                self.image = Image.open(io.BytesIO(data))
                self.page_count = getattr(self.image, "n_frames", 1) if type_ in MULTI_PAGE_TYPES else 1
        except (OSError, SyntaxError, ValueError) as exc:
            raise CorruptDocument(f"the {type_.upper()} image cannot be read ({exc})", document=name) from exc
        if self.page_count < 1:
            raise NoPages("the image has no frames", document=name)
        if self.page_count > max_pages:
            raise TooManyPages(f"{self.page_count} pages exceeds the limit of {max_pages}", document=name)
        self._check_size(1)

    def _check_size(self, page_number: int) -> None:
        w, h = self.image.size
        if w * h > self.max_image_pixels:
            raise ImageTooLarge(
                f"page {page_number} is {w}x{h} = {w * h:,} pixels, above the decode limit of "
                f"{self.max_image_pixels:,} (DOCVISION_MAX_IMAGE_PIXELS); possible decompression bomb",
                document=self.name,
                width=w,
                height=h,
            )

    def iter_pages(
        self, *, dpi: int, max_page_pixels: int, start_page: int = 1
    ) -> Iterator[tuple[int, Image.Image, int, bool]]:
        for n in range(start_page, self.page_count + 1):
            try:
                self.image.seek(n - 1)
            except EOFError as exc:
                raise CorruptDocument(
                    f"frame {n} of {self.page_count} is missing", document=self.name
                ) from exc
            self._check_size(n)
            declared = self.image.info.get("dpi")
            try:
                frame = ImageOps.exif_transpose(self.image.copy())
                frame.load()
            except (OSError, SyntaxError, ValueError) as exc:
                raise CorruptDocument(
                    f"page {n} cannot be decoded ({exc})", document=self.name, page_number=n
                ) from exc
            frame = to_rgb(frame)
            eff_dpi = dpi
            if declared and declared[0] and float(declared[0]) > dpi:
                scale = dpi / float(declared[0])
                frame = frame.resize(
                    (max(1, round(frame.width * scale)), max(1, round(frame.height * scale))),
                    Image.Resampling.LANCZOS,
                )
            elif declared and declared[0]:
                eff_dpi = round(float(declared[0]))
            downscaled = False
            if frame.width * frame.height > max_page_pixels:
                scale = math.sqrt(max_page_pixels / (frame.width * frame.height))
                frame = frame.resize(
                    (max(1, int(frame.width * scale)), max(1, int(frame.height * scale))),
                    Image.Resampling.LANCZOS,
                )
                eff_dpi, downscaled = max(1, int(eff_dpi * scale)), True
            yield n, frame, eff_dpi, downscaled

    def close(self) -> None:
        self.image.close()


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode → RGB; transparency is composited on white (how a page looks printed)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping.
        return image.point(lambda v: v / 256).convert("L").convert("RGB")
    return image.convert("RGB")
