"""Raster images (PNG, JPEG, TIFF incl. multi-page, WebP, BMP, GIF) → RGB page frames.

Sizes are checked from the header *before* any pixel is decoded, so a decompression bomb costs nothing.
Images are downsampled to the canonical DPI when they declare a higher one, never upsampled (that would
invent pixels and cost memory); an image without DPI metadata is taken as-is at the nominal canonical DPI.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from collections.abc import Iterator

from PIL import Image, ImageOps

from engine.errors import CorruptDocument, ImageTooLarge, NoPages, TooManyPages, UnsupportedDocument

# Our own (configurable) pixel limit is enforced from the header, before decoding. PIL's process-global
# Image.MAX_IMAGE_PIXELS is left alone: images are opened through the format's plugin class directly (which
# skips PIL's bomb check) rather than by switching that check off for the whole process.
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "webp": "WEBP", "bmp": "BMP", "gif": "GIF"}
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
)


def open_image(data: bytes, type_: str, name: str) -> Image.Image:
    """Open (header only) an image whose type was sniffed; typed errors for unreadable or unsupported ones."""
    Image.init()
    fmt = _PIL_FORMATS.get(type_)
    if fmt is None or fmt not in Image.OPEN:
        raise UnsupportedDocument(f"{type_!r} is not a supported image type", document=name)
    factory, _accept = Image.OPEN[fmt]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return factory(io.BytesIO(data), None)  # type: ignore[no-any-return,arg-type]
    except _DECODE_ERRORS as exc:
        variant = jpeg_variant(data) if type_ == "jpeg" else None
        if variant is not None:
            raise UnsupportedDocument(
                f"the JPEG is valid but {variant}, which the image decoder does not read (only 8-bit "
                "baseline/progressive JPEG); convert it to an 8-bit JPEG, a PNG or a 16-bit TIFF and upload again",
                document=name,
            ) from exc
        raise _decode_error(exc, type_, name) from exc


# SOF markers (ITU T.81 table B.1) → coding process; C4 (DHT), C8 (JPG), CC (DAC) are not frames
_SOF_PROCESS = {
    0xC0: "baseline", 0xC1: "extended sequential", 0xC2: "progressive", 0xC3: "lossless",
    0xC5: "differential sequential", 0xC6: "differential progressive", 0xC7: "differential lossless",
    0xC9: "arithmetic-coded sequential", 0xCA: "arithmetic-coded progressive", 0xCB: "arithmetic-coded lossless",
    0xCD: "arithmetic-coded differential sequential", 0xCE: "arithmetic-coded differential progressive",
    0xCF: "arithmetic-coded differential lossless",
}  # fmt: skip


def jpeg_variant(data: bytes) -> str | None:
    """Words like "a 12-bit extended sequential JPEG" for a frame that is not 8-bit baseline/progressive
    (12- or 16-bit samples, lossless or hierarchical coding), from the first SOF header; None otherwise."""
    off = 2  # after SOI
    for _ in range(512):
        if off + 4 > len(data) or data[off] != 0xFF:
            return None
        marker = data[off + 1]
        if marker == 0xFF:  # fill byte
            off += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            off += 2
            continue
        length = struct.unpack_from(">H", data, off + 2)[0]
        if marker in _SOF_PROCESS:
            if off + 5 > len(data):
                return None
            bits, process = data[off + 4], _SOF_PROCESS[marker]
            if bits == 8 and marker in (0xC0, 0xC1, 0xC2):
                return None
            return f"a {bits}-bit {process} JPEG"
        if marker == 0xDA or length < 2:
            return None
        off += 2 + length
    return None


def _decode_error(exc: BaseException, type_: str, name: str, page: int | None = None) -> Exception:
    where = f"page {page} of the {type_.upper()}" if page else f"the {type_.upper()} image"
    detail = " ".join(str(exc).split())[:160] or type(exc).__name__
    if "unsupported" in detail.lower() or "not supported" in detail.lower():
        # Valid by the spec, but a variant Pillow does not decode (e.g. some BMP compressions): not corrupt.
        return UnsupportedDocument(
            f"{where} uses a variant that cannot be decoded ({detail}); convert it to PNG or PDF and upload again",
            document=name,
        )
    extra = {"page_number": page} if page else {}
    return CorruptDocument(f"{where} cannot be read ({detail})", document=name, **extra)


def decode_image(data: bytes, name: str, *, max_pixels: int) -> Image.Image:
    """One image → RGB, with the same header-first pixel guard as documents (used by the API for its inputs)."""
    from engine.documents.sniff import sniff

    found = sniff(data)
    if found.type is None or not found.type.is_image:
        raise UnsupportedDocument("not a supported image (PNG, JPEG, TIFF, WebP, BMP or GIF)", document=name)
    image = open_image(data, found.type.value, name)
    w, h = image.size
    if w * h > max_pixels:
        raise ImageTooLarge(
            f"{w}x{h} = {w * h:,} pixels is above the limit of {max_pixels:,}; send a smaller image",
            document=name,
            width=w,
            height=h,
        )
    try:
        image.load()
        return to_rgb(image)
    except _DECODE_ERRORS as exc:
        raise _decode_error(exc, found.type.value, name) from exc


MULTI_PAGE_TYPES = {"tiff"}  # GIF/WebP animations are frames of one picture, not pages


class ImageDocument:
    def __init__(self, data: bytes, name: str, type_: str, *, max_pages: int, max_image_pixels: int) -> None:
        self.name = name
        self.type = type_
        self.max_image_pixels = max_image_pixels
        self.image = open_image(data, type_, name)
        try:
            self.page_count = getattr(self.image, "n_frames", 1) if type_ in MULTI_PAGE_TYPES else 1
        except _DECODE_ERRORS as exc:
            raise _decode_error(exc, type_, name) from exc
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
            except _DECODE_ERRORS as exc:
                raise _decode_error(exc, self.type, self.name, n) from exc
            self._check_size(n)
            declared = self.image.info.get("dpi")
            try:
                frame = ImageOps.exif_transpose(self.image.copy())
                frame.load()
                frame = to_rgb(frame)
            except _DECODE_ERRORS as exc:
                raise _decode_error(exc, self.type, self.name, n) from exc
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
        # (through mode I: point() does not take the big-endian I;16B that 16-bit TIFFs from Macs use)
        return image.convert("I").point(lambda v: v / 256).convert("L").convert("RGB")
    return image.convert("RGB")
