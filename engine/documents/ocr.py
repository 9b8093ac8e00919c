"""OCR word boxes for pages (and image regions of pages) that have no text layer: Tesseract, isolated.

Tesseract (Debian's `tesseract-ocr` and its language packs) reads a rendered frame and prints one TSV row per
word with its box and confidence. It runs inside the render worker (engine.documents.worker, op "ocr"), a child
of it with the worker's RLIMIT_AS / RLIMIT_CPU (inherited across exec), the worker's minimal environment and
a wall-clock limit per image, so an image that makes Tesseract spin or balloon costs that worker, not the
caller. The caller (``OcrWorker``) writes the frame, or a crop of it, as a PNG the worker reads; the words come
back with boxes as fractions of the displayed page, like the text layer's:

    [x0, y0, x1, y1, text, direction (0/90/180/270, as the text layer's), confidence 0-1]

A page read poorly (median confidence below 0.75, or most lines running sideways) is read again with orientation detection (--psm 1), so a
scan placed sideways is read too; its words keep boxes on the page as displayed and carry their direction.

A missing Tesseract, a timeout or a crash is never the extraction's failure: the page then simply has no
words (citations fall back to the similarity map and say so).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_LANGUAGES = "eng+deu+fra+nld+spa+ita+por"
_START_ALLOWANCE_S = 30.0  # the worker's interpreter start and imports, on top of the per-image limit


def tesseract_binary() -> str | None:
    return shutil.which("tesseract")


@functools.cache
def installed_languages(binary: str | None = None) -> frozenset[str]:
    binary = binary or tesseract_binary()
    if not binary:
        return frozenset()
    try:
        done = subprocess.run(
            [binary, "--list-langs"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(ln.strip() for ln in done.stdout.splitlines()[1:] if ln.strip())


def usable_languages(wanted: str) -> str:
    """The wanted languages ("eng+deu") that are installed, in order; "" when none is (or no Tesseract)."""
    have = installed_languages()
    return "+".join(lang for lang in wanted.split("+") if lang and lang in have)


def _direction(dx: float, dy: float) -> int:
    """A direction on the image (y down) → 0 / 90 / 180 / 270 degrees counter-clockwise (as the text layer's)."""
    if abs(dx) >= abs(dy):
        return 0 if dx >= 0 else 180
    return 90 if dy < 0 else 270


def parse_tsv(tsv: str, width: int, height: int, region: list[float] | None = None) -> list[list[Any]]:
    """Tesseract's TSV → words with boxes as fractions of the page (the image is `region` of the page) and
    the direction their line runs (a sideways scan read with --psm 1: boxes stay in the image's frame)."""
    x0r, y0r, x1r, y1r = region or [0.0, 0.0, 1.0, 1.0]
    sx, sy = (x1r - x0r) / max(width, 1), (y1r - y0r) / max(height, 1)
    words: list[list[Any]] = []
    lines: dict[tuple[str, ...], list[list[Any]]] = {}
    for line in tsv.splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) < 12 or cols[0] != "5":  # level 5: a word
            continue
        text = cols[11].strip()
        try:
            left, top, w, h, conf = int(cols[6]), int(cols[7]), int(cols[8]), int(cols[9]), float(cols[10])
        except ValueError:
            continue
        if not text or conf < 0:
            continue
        box = [x0r + left * sx, y0r + top * sy, x0r + (left + w) * sx, y0r + (top + h) * sy]
        word = [*(round(min(max(v, 0.0), 1.0), 5) for v in box), text, 0, round(conf / 100, 3)]
        words.append(word)
        lines.setdefault(tuple(cols[1:5]), []).append(word)
    for ws in lines.values():  # a line's direction from its first to its last word
        if len(ws) > 1:
            a, b = ws[0], ws[-1]
            angle = _direction((b[0] + b[2]) - (a[0] + a[2]), (b[1] + b[3]) - (a[1] + a[3]))
            for word in ws:
                word[5] = angle
    return words


# ------------------------------------------------------------------------------------ in the worker
def ocr_op(cmd: dict[str, Any]) -> dict[str, Any]:  # runs in the render worker (op "ocr")
    """Run Tesseract on one PNG the caller wrote; reply {"tsv": …} or {"error": …} (never document text)."""
    binary = tesseract_binary()
    if not binary:
        return {"error": {"code": "ocr_unavailable", "reason": "tesseract is not installed", "details": {}}}
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "HOME")}
    env["OMP_THREAD_LIMIT"] = "1"  # one core per page; concurrency comes from documents, not threads
    argv = [
        binary,
        cmd["path"],
        "stdout",
        "-l",
        cmd["languages"],
        "--psm",
        str(int(cmd.get("psm", 3))),
        "--dpi",
        str(int(cmd["dpi"])),
        "tsv",
    ]
    try:
        done = subprocess.run(
            argv, capture_output=True, env=env, timeout=float(cmd["timeout_s"]), check=False
        )
    except subprocess.TimeoutExpired:
        return {
            "error": {"code": "ocr_timeout", "reason": "tesseract ran past the page limit", "details": {}}
        }
    if done.returncode != 0:
        return {
            "error": {"code": "ocr_failed", "reason": f"tesseract exited {done.returncode}", "details": {}}
        }
    return {"tsv": done.stdout.decode("utf-8", "replace")}


# ------------------------------------------------------------------------------------ in the caller
# a page read with a median word confidence below this (a clean upright scan reads above 0.9), or whose lines
# mostly run sideways, is read again with orientation detection
POOR_CONFIDENCE = 0.75


def _score(words: list[list[Any]]) -> float:
    return sum(float(w[6]) for w in words)


def _poor(words: list[list[Any]]) -> bool:
    if not words:
        return True
    confs = sorted(float(w[6]) for w in words)
    sideways = sum(1 for w in words if w[5] != 0)
    return confs[len(confs) // 2] < POOR_CONFIDENCE or sideways > len(words) / 2


OCR_DPI = 300  # the resolution Tesseract reads best at (its documentation: at least 300 dpi)
OCR_MAX_UPSCALE = 2.0  # a frame is enlarged at most this much for the first reading (96 dpi → 192)
SECOND_READING_SCALE = 1.5  # the second reading enlarges the first reading's pixels this much more


def enlarged(image: Any, dpi: int, second: bool = False) -> tuple[Any, int]:
    """The image as OCR reads it: enlarged towards OCR_DPI (first reading, bicubic), and a further
    SECOND_READING_SCALE (Lanczos) for the second reading; (image, its dpi)."""
    from PIL import Image

    factor = min(OCR_MAX_UPSCALE, max(1.0, OCR_DPI / max(dpi, 1)))
    if second:
        factor *= SECOND_READING_SCALE
    if factor <= 1.05:
        return image, dpi
    size = (round(image.width * factor), round(image.height * factor))
    return image.resize(size, Image.Resampling.LANCZOS if second else Image.Resampling.BICUBIC), round(
        dpi * factor
    )


class OcrWorker:
    """One render worker kept for OCR over a document's pages; `words(image, ...)` → word list or None."""

    def __init__(self, settings: Any, languages: str) -> None:
        from engine.documents import worker

        self.languages = languages
        self.timeout_s = float(settings.render_page_timeout_s)
        self._tmp = tempfile.mkdtemp(prefix="docvision-ocr-", dir=getattr(settings, "work_dir", None))
        self._proc: subprocess.Popen[bytes] | None = worker._spawn(
            settings.render_memory_mb, int(settings.render_timeout_s) + 1
        )
        self._started = False
        self.seconds = 0.0  # wall seconds spent in OCR (the cost the benchmark reports)
        self.images = 0

    def words(
        self, image: Any, dpi: int, region: list[float] | None = None, second: bool = False
    ) -> list[list[Any]] | None:
        """OCR of `image` (a whole page frame), or of its `region` (page fractions); None when OCR failed.

        A frame under OCR_DPI is enlarged to it (at most OCR_MAX_UPSCALE times, bicubic) first: Tesseract
        misreads small glyphs (3/9, 5/S) at 96-150 dpi that it reads at 200-300. `second`: a second reading
        (another scale, Lanczos) for values the first one did not show; Tesseract's misreads depend on the
        exact pixels, so a second look at other pixels reads most of them right."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        if region is not None:
            w, h = image.size
            box = (int(region[0] * w), int(region[1] * h), int(region[2] * w), int(region[3] * h))
            if box[2] - box[0] < 8 or box[3] - box[1] < 8:
                return []
            image = image.crop(box)
        image, dpi = enlarged(image, dpi, second)
        path = Path(self._tmp) / "page.png"
        image.convert("RGB").save(path, compress_level=1)
        t0 = time.monotonic()
        cmd = {
            "op": "ocr",
            "path": str(path),
            "languages": self.languages,
            "dpi": dpi,
            "timeout_s": self.timeout_s,
        }
        words = self._parse(self._ask(cmd), image, region)
        if words is not None and region is None and _poor(words):
            # little read with confidence: perhaps a sideways scan; --psm 1 detects the orientation first
            # (about a second more, so only where the plain read was poor)
            turned = self._parse(self._ask({**cmd, "psm": 1}), image, region)
            if turned is not None and _score(turned) > _score(words):
                words = turned
        self.seconds += time.monotonic() - t0
        self.images += 1
        return words

    def _parse(
        self, reply: dict[str, Any] | None, image: Any, region: list[float] | None
    ) -> list[list[Any]] | None:
        if reply is None or "tsv" not in reply:
            code = (reply or {}).get("error", {}).get("code", "ocr_worker_died")
            log.warning("OCR of one page image failed (%s); that page keeps no words", code)
            return None
        return parse_tsv(reply["tsv"], image.size[0], image.size[1], region)

    def _ask(self, cmd: dict[str, Any]) -> dict[str, Any] | None:
        from engine.documents.worker import _HEADER

        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        deadline = time.monotonic() + self.timeout_s + 5 + (0 if self._started else _START_ALLOWANCE_S)
        self._started = True
        try:
            proc.stdin.write(json.dumps(cmd).encode() + b"\n")
            proc.stdin.flush()
            head = self._read(proc, _HEADER.size, deadline)
            if head is None:
                return None
            body = self._read(proc, _HEADER.unpack(head)[0], deadline)
            return json.loads(body) if body is not None else None
        except (OSError, ValueError):
            self._stop()
            return None

    def _read(self, proc: subprocess.Popen[bytes], n: int, deadline: float) -> bytes | None:
        fd = proc.stdout.fileno()  # type: ignore[union-attr]
        buf = b""
        while len(buf) < n:
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
            chunk = os.read(fd, n - len(buf)) if ready else b""
            if not chunk:  # timed out or the worker died: it is not asked again
                self._stop()
                return None
            buf += chunk
        return buf

    def _stop(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
            for f in (self._proc.stdin, self._proc.stdout):
                with contextlib.suppress(OSError):
                    if f:
                        f.close()
            self._proc = None

    def close(self) -> None:
        self._stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> OcrWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
