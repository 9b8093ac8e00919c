"""Open a PDF or an image and iterate its frames: the code that runs inside the render worker (or in-process)."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from engine.documents.images import ImageDocument
from engine.documents.pdf import PdfDocument, iter_pdf_pages
from engine.errors import CorruptDocument, DocumentError, TooManyPages

Frame = tuple[int, Image.Image, int, bool]  # (page_number, image, effective_dpi, downscaled)
# (page_number, width, height, RGB bytes, effective_dpi, downscaled)
RawFrame = tuple[int, int, int, bytes | memoryview, int, bool]


def _raw(frames: Iterator[Frame]) -> Iterator[RawFrame]:
    for n, image, dpi, downscaled in frames:
        yield n, image.width, image.height, image.tobytes(), dpi, downscaled


class Renderable(Protocol):
    page_count: int

    def iter_pages(self, start_page: int = 1) -> Iterator[Frame]: ...

    def iter_raw(self, start_page: int = 1) -> Iterator[RawFrame]: ...

    def close(self) -> None: ...


def limits_of(settings: Any) -> dict[str, Any]:
    """The settings rendering needs, as plain JSON (they cross the pipe to the worker)."""
    return {
        "dpi": settings.dpi,
        "max_page_pixels": settings.max_page_pixels,
        "max_pages": settings.max_pages,
        "max_image_pixels": settings.max_image_pixels,
        "backend": settings.pdf_backend,
    }


class _Pdf:
    def __init__(self, data: bytes, name: str, limits: dict[str, Any]) -> None:
        self.limits = limits
        self.pdf = PdfDocument(data, name, max_pages=limits["max_pages"])
        self.page_count = self.pdf.page_count

    def iter_pages(self, start_page: int = 1) -> Iterator[Frame]:
        lim = self.limits
        yield from iter_pdf_pages(
            self.pdf,
            dpi=lim["dpi"],
            max_page_pixels=lim["max_page_pixels"],
            backend=lim["backend"],
            start_page=start_page,
        )

    def has_visible_content(self) -> bool:
        """Any page with text or a non-white pixel (at 12 DPI, greyscale); stops at the first such page."""
        import pymupdf

        for n in range(self.page_count):
            page = self.pdf.doc[n]
            if page.get_text("text").strip():
                return True
            pix = page.get_pixmap(dpi=12, alpha=False, colorspace=pymupdf.csGRAY)
            if min(pix.samples, default=255) < 235:
                return True
        return False

    def iter_raw(self, start_page: int = 1) -> Iterator[RawFrame]:
        """Pages as raw RGB buffers: with pymupdf, the pixmap's own memory (no PIL image, no extra copy)."""
        lim = self.limits
        if lim["backend"] != "pymupdf":
            yield from _raw(self.iter_pages(start_page))
            return
        from engine.documents.pdf import effective_dpi

        for n in range(start_page, self.page_count + 1):
            eff, downscaled = effective_dpi(*self.pdf.page_size_pt(n), lim["dpi"], lim["max_page_pixels"])
            pix = self.pdf.render_pixmap(n, eff)
            yield n, pix.width, pix.height, pix.samples_mv, eff, downscaled
            del pix

    def close(self) -> None:
        self.pdf.close()


class _Image:
    def __init__(self, data: bytes, name: str, type_: str, limits: dict[str, Any]) -> None:
        self.limits = limits
        self.image = ImageDocument(
            data, name, type_, max_pages=limits["max_pages"], max_image_pixels=limits["max_image_pixels"]
        )
        self.page_count = self.image.page_count

    def iter_pages(self, start_page: int = 1) -> Iterator[Frame]:
        lim = self.limits
        yield from self.image.iter_pages(
            dpi=lim["dpi"], max_page_pixels=lim["max_page_pixels"], start_page=start_page
        )

    def iter_raw(self, start_page: int = 1) -> Iterator[RawFrame]:
        yield from _raw(self.iter_pages(start_page))

    def close(self) -> None:
        self.image.close()


class _Poppler:
    """A PDF MuPDF finds no pages in (or cannot open) rendered by poppler, whose repair strategy differs.

    Only where poppler-utils is installed (developer machines, CI; not the Lambda image); otherwise MuPDF's
    verdict (corrupt_document) stands.
    """

    def __init__(self, data: bytes, name: str, limits: dict[str, Any], cause: DocumentError) -> None:
        self.name, self.limits = name, limits
        self.pdfinfo, self.pdftoppm = shutil.which("pdfinfo"), shutil.which("pdftoppm")
        if not (self.pdfinfo and self.pdftoppm):
            raise cause
        self._tmp = tempfile.TemporaryDirectory(prefix="docvision-poppler-")
        self.path = Path(self._tmp.name) / "document.pdf"
        self.path.write_bytes(data)
        try:
            info = subprocess.run(
                [str(self.pdfinfo), "-f", "1", "-l", str(limits["max_pages"]), str(self.path)],
                capture_output=True,
                timeout=60,
            ).stdout.decode(errors="replace")
        except subprocess.SubprocessError:
            self.close()
            raise cause from None
        pages = re.search(r"^Pages:\s+(\d+)", info, re.M)
        self.sizes = {
            int(m[1]): (float(m[2]), float(m[3]))
            for m in re.finditer(r"^Page\s+(\d+) size:\s+([\d.]+) x ([\d.]+) pts", info, re.M)
        }
        self.page_count = int(pages[1]) if pages else 0
        if self.page_count == 0 or len(self.sizes) != min(self.page_count, limits["max_pages"]):
            self.close()
            raise cause
        if self.page_count > limits["max_pages"]:
            self.close()
            raise TooManyPages(
                f"{self.page_count} pages exceeds the limit of {limits['max_pages']} (DOCVISION_MAX_PAGES)",
                document=name,
            )

    def iter_pages(self, start_page: int = 1) -> Iterator[Frame]:
        from engine.documents.pdf import effective_dpi

        lim = self.limits
        for n in range(start_page, self.page_count + 1):
            eff, downscaled = effective_dpi(*self.sizes[n], lim["dpi"], lim["max_page_pixels"])
            cmd = [
                str(self.pdftoppm),
                "-r",
                str(eff),
                "-f",
                str(n),
                "-l",
                str(n),
                "-singlefile",
                str(self.path),
            ]
            try:
                out = subprocess.run(cmd, capture_output=True, timeout=300)
                image = Image.open(io.BytesIO(out.stdout))
                image.load()
            except (subprocess.SubprocessError, OSError, ValueError, SyntaxError) as exc:
                raise CorruptDocument(
                    f"page {n} cannot be rendered by MuPDF or poppler", document=self.name, page_number=n
                ) from exc
            yield n, image.convert("RGB"), eff, downscaled

    def iter_raw(self, start_page: int = 1) -> Iterator[RawFrame]:
        yield from _raw(self.iter_pages(start_page))

    def close(self) -> None:
        self._tmp.cleanup()


def has_visible_content(renderable: Renderable) -> bool:
    """Whether a converted document shows anything; renderers that cannot tell (poppler, images) say yes."""
    check = getattr(renderable, "has_visible_content", None)
    return True if check is None else bool(check())


def open_renderable(data: bytes, type_: str, name: str, limits: dict[str, Any]) -> Renderable:
    if type_ == "pdf":
        try:
            return _Pdf(data, name, limits)
        except CorruptDocument as exc:
            return _Poppler(data, name, limits, exc)
    return _Image(data, name, type_, limits)
