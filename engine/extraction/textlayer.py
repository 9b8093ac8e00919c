"""The words of a PDF's pages, read in a child process with the render worker's limits.

A hostile PDF can crash MuPDF or spin; text extraction for citations therefore runs like rendering does
(engine.documents.worker): a separate process with RLIMIT_AS / RLIMIT_CPU, no core dumps, a minimal
environment and a wall-clock limit. Its failure is never the extraction's: the pages simply have no text layer
to check against (citations fall back to the similarity map or stay unlocated, and say so).

    python -I engine/extraction/textlayer.py MEMORY_MB CPU_S PDF_PATH PAGE,PAGE,…|count   → JSON on stdout
Each page: {"words": [[x0, y0, x1, y1, text, dir], …], "images": [[x0, y0, x1, y1], …], "size": [w, h]}
(the displayed page in points) with boxes as
fractions of the displayed (rotated) page, words in content-stream order; dir is the direction the word's text
runs on the displayed page (0 left to right, 90 upwards, 180 upside down, 270 downwards: a /Rotate 90 page or a
table set sideways); images are where the page places images (a logo, a pasted scan) that OCR may read.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
# run as a plain script (-I: no user site, no PYTHONPATH): importing the engine package would load BAML,
# pyarrow and jsonschema into the child for nothing
_SCRIPT = str(Path(__file__).resolve())
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LD_LIBRARY_PATH")


MIN_IMAGE_AREA = 0.002  # image placements smaller than this share of the page are bullets and rules, not text
COVERED_WORDS = 3  # an image region holding this many text-layer words already has its text
MAX_IMAGES = 8  # per page: OCR time is bounded by the page, not by how many images a document places


def _direction(vx: float, vy: float) -> int:
    """A direction vector on the displayed page (y down) → 0 / 90 / 180 / 270 degrees (counter-clockwise)."""
    if abs(vx) >= abs(vy):
        return 0 if vx >= 0 else 180
    return 90 if vy < 0 else 270


def read_layer(pdf: Any, pages: list[int]) -> dict[int, dict[str, list[list[Any]]]]:
    """page → {"words", "images"} of an opened pymupdf document (in this process)."""
    import pymupdf

    out: dict[int, dict[str, Any]] = {}
    for n in pages:
        if not 1 <= n <= pdf.page_count:
            continue
        page = pdf[n - 1]
        pw, ph = page.rect.width or 1.0, page.rect.height or 1.0
        m = page.rotation_matrix

        def frac(r: Any, m: Any = m, w: float = pw, h: float = ph) -> list[float]:
            r = pymupdf.Rect(r) * m
            return [min(max(v, 0.0), 1.0) for v in (r.x0 / w, r.y0 / h, r.x1 / w, r.y1 / h)]

        # one text page for both reads, so the words' (block, line) numbers index the dict's lines
        tp = page.get_textpage(flags=pymupdf.TEXTFLAGS_WORDS)
        dirs: dict[tuple[int, int], int] = {}
        for block in page.get_text("dict", textpage=tp)["blocks"]:
            for i, line in enumerate(block.get("lines", [])):
                vx, vy = line["dir"]
                dirs[(block["number"], i)] = _direction(m.a * vx + m.c * vy, m.b * vx + m.d * vy)
        words = [
            [*frac((x0, y0, x1, y1)), text, dirs.get((b, ln), 0)]
            for x0, y0, x1, y1, text, b, ln, _ in page.get_text("words", textpage=tp)
        ]
        images = []
        for info in page.get_image_info():
            box = frac(info["bbox"])
            if (box[2] - box[0]) * (box[3] - box[1]) >= MIN_IMAGE_AREA:
                images.append(box)
        out[n] = {
            "words": words,
            "images": images[:MAX_IMAGES],
            "size": [round(float(pw), 2), round(float(ph), 2)],
        }
    return out


def read_words(pdf: Any, pages: list[int]) -> dict[int, list[list[Any]]]:
    """page → words of an opened pymupdf document (in this process)."""
    return {n: p["words"] for n, p in read_layer(pdf, pages).items()}


def words_isolated(
    pdf_bytes: bytes, pages: list[int], settings: Any, name: str = ""
) -> dict[int, list[list[Any]]]:
    """page → words, read in a limited child process; {} (no text layer) when the child fails or times out."""
    return {n: p["words"] for n, p in layer_isolated(pdf_bytes, pages, settings, name).items()}


def layer_isolated(
    pdf_bytes: bytes, pages: list[int], settings: Any, name: str = ""
) -> dict[int, dict[str, list[list[Any]]]]:
    """page → {"words", "images"}, read in a limited child process; {} when the child fails or times out."""
    if not pages:
        return {}
    if getattr(settings, "render_isolation", "process") == "none":
        from engine.documents.pdfcrypt import open_pdf

        with open_pdf(pdf_bytes, name) as pdf:
            return read_layer(pdf, pages)
    with tempfile.TemporaryDirectory(dir=getattr(settings, "work_dir", None)) as tmp:
        path = Path(tmp) / "doc.pdf"
        path.write_bytes(pdf_bytes)
        cmd = [sys.executable, "-I", _SCRIPT, str(settings.render_memory_mb),
               str(int(settings.render_timeout_s)), str(path), ",".join(map(str, pages))]  # fmt: skip
        env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
        try:
            done = subprocess.run(
                cmd, capture_output=True, env=env, timeout=settings.render_timeout_s + 10, check=False
            )
        except subprocess.TimeoutExpired:
            log.warning("text layer of %s: timed out; citations fall back to no text layer", name)
            return {}
        if done.returncode != 0:
            log.warning(
                "text layer of %s: reader exited %s; citations fall back to no text layer",
                name,
                done.returncode,
            )
            return {}
        return {int(k): v for k, v in json.loads(done.stdout).items()}


KEEP_OCR_PIXELS = 64_000_000  # grey page images kept for second readings (one byte a pixel: 64 MB at most)


class PageOcr:
    """OCR over a document's frames into a TextLayer, and a second reading on demand.

    `on_frame` reads pages without a text layer, and image regions of pages with one, into the layer as OCR
    words; it keeps the images it read (grey, KEEP_OCR_PIXELS in all; later pages past that keep none) so that
    `second_reading(page)` can read them again at another scale when a value is not among the first reading's
    words (engine.extraction.citations). `seconds` / `images`: OCR's cost."""

    def __init__(self, settings: Any, layer: Any, languages: str) -> None:
        from engine.documents.ocr import OcrWorker

        self.settings, self.layer = settings, layer
        self.worker = OcrWorker(settings, languages)
        self._kept: dict[int, list[tuple[Any, int, list[float] | None]]] = {}
        self._kept_pixels = 0
        self._second: dict[int, list[list[Any]]] = {}

    @property
    def seconds(self) -> float:
        return self.worker.seconds

    @property
    def images(self) -> int:
        return self.worker.images

    def on_frame(self, frame: Any) -> None:
        p, layer = frame.page_number, self.layer
        if not layer.has_text_layer(p):
            regions: list[Any] = [None]
        else:  # an image the text layer already covers (a searchable scan's invisible text) is not read twice
            regions = [r for r in layer.images(p) if layer.text_words_in(p, r) < COVERED_WORDS]
        dpi = int(getattr(frame, "dpi", 0) or self.settings.dpi)
        size = (frame.image.width * 72 / dpi, frame.image.height * 72 / dpi)
        for region in regions:
            words = self.worker.words(frame.image, dpi, region)
            if words:
                layer.add_ocr(p, words, size)
                self._keep(p, frame.image, dpi, region)

    def _keep(self, page: int, image: Any, dpi: int, region: list[float] | None) -> None:
        if region is not None:
            w, h = image.size
            image = image.crop(
                (int(region[0] * w), int(region[1] * h), int(region[2] * w), int(region[3] * h))
            )
        if self._kept_pixels + image.width * image.height > KEEP_OCR_PIXELS:
            return
        self._kept_pixels += image.width * image.height
        self._kept.setdefault(page, []).append((image.convert("L"), dpi, region))

    def second_reading(self, page: int) -> list[list[Any]]:
        """The page's OCR'd images read again (another scale and resampling): words as the first reading's
        (fractions of the page); [] when the page kept no image or OCR failed. Read once per page."""
        if page not in self._second:
            words: list[list[Any]] = []
            for image, dpi, region in self._kept.get(page, []):
                got = self.worker.words(image, dpi, None, second=True)
                if got and region is not None:  # the crop's fractions → the page's
                    x0, y0, x1, y1 = region
                    got = [
                        [x0 + w[0] * (x1 - x0), y0 + w[1] * (y1 - y0), x0 + w[2] * (x1 - x0),
                         y0 + w[3] * (y1 - y0), *w[4:]]
                        for w in got
                    ]  # fmt: skip
                words += got or []
            self._second[page] = words
        return self._second[page]

    def close(self) -> None:
        self.worker.close()
        self._kept.clear()


def ocr_frames(settings: Any, layer: Any) -> tuple[Any, PageOcr | None]:
    """(frame hook, PageOcr) reading pages without a text layer, and image regions of pages with one, into
    `layer` (engine.extraction.citations.TextLayer) as OCR words; (None, None) when OCR is off or not installed."""
    from engine.documents.ocr import usable_languages

    languages = usable_languages(getattr(settings, "ocr_languages", "")) if settings.ocr_languages else ""
    if not languages:
        return None, None
    ocr = PageOcr(settings, layer, languages)
    return ocr.on_frame, ocr


def page_count_isolated(pdf_bytes: bytes, settings: Any) -> int | None:
    """The page count of a PDF, read in the limited child process; None when it cannot be read."""
    with tempfile.TemporaryDirectory(dir=getattr(settings, "work_dir", None)) as tmp:
        path = Path(tmp) / "doc.pdf"
        path.write_bytes(pdf_bytes)
        cmd = [sys.executable, "-I", _SCRIPT, str(settings.render_memory_mb),
               str(int(settings.render_timeout_s)), str(path), "count"]  # fmt: skip
        env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
        try:
            done = subprocess.run(cmd, capture_output=True, env=env, timeout=30, check=False)
        except subprocess.TimeoutExpired:
            return None
        if done.returncode != 0:
            return None
        return int(json.loads(done.stdout)["page_count"])


def _open_pdf_module() -> Any:  # pragma: no cover - runs in the child process
    """engine/documents/pdfcrypt.py loaded by its path (this child imports no engine package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "docvision_pdfcrypt", Path(__file__).resolve().parents[1] / "documents" / "pdfcrypt.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _main(argv: list[str]) -> None:  # pragma: no cover - runs in the child process
    import resource

    memory_mb, cpu_s, path = int(argv[0]), int(argv[1]), argv[2]
    pages = [] if argv[3] == "count" else [int(p) for p in argv[3].split(",")]
    if memory_mb > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    if cpu_s > 0:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    import pymupdf

    pymupdf.TOOLS.mupdf_display_errors(False)
    pymupdf.TOOLS.mupdf_display_warnings(False)
    with _open_pdf_module().open_pdf(Path(path).read_bytes()) as pdf:
        if argv[3] == "count":
            sys.stdout.write(json.dumps({"page_count": pdf.page_count}))
        else:
            sys.stdout.write(json.dumps(read_layer(pdf, pages)))


if __name__ == "__main__":  # pragma: no cover
    _main(sys.argv[1:])
