"""OCR word boxes for pages (and image regions of pages) that have no text layer: Tesseract, isolated.

Tesseract (Debian's `tesseract-ocr` and its language packs) reads a rendered frame and prints one TSV row per
word with its box and confidence. It runs inside the render worker (engine.documents.worker, op "ocr"), a child
of it with the worker's RLIMIT_AS / RLIMIT_CPU (inherited across exec), the worker's minimal environment and
a wall-clock limit per image, so an image that makes Tesseract spin or balloon costs that worker, not the
caller. The caller (``OcrWorker``) writes the frame, or a crop of it, as a PNG the worker reads; the words come
back with boxes as fractions of the displayed page, like the text layer's:

    [x0, y0, x1, y1, text, 0, confidence 0-1]

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


def parse_tsv(tsv: str, width: int, height: int, region: list[float] | None = None) -> list[list[Any]]:
    """Tesseract's TSV → words with boxes as fractions of the page (the image is `region` of the page)."""
    x0r, y0r, x1r, y1r = region or [0.0, 0.0, 1.0, 1.0]
    sx, sy = (x1r - x0r) / max(width, 1), (y1r - y0r) / max(height, 1)
    words: list[list[Any]] = []
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
        words.append([*(round(min(max(v, 0.0), 1.0), 5) for v in box), text, 0, round(conf / 100, 3)])
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
        "3",
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

    def words(self, image: Any, dpi: int, region: list[float] | None = None) -> list[list[Any]] | None:
        """OCR of `image` (a whole page frame), or of its `region` (page fractions); None when OCR failed."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        if region is not None:
            w, h = image.size
            box = (int(region[0] * w), int(region[1] * h), int(region[2] * w), int(region[3] * h))
            if box[2] - box[0] < 8 or box[3] - box[1] < 8:
                return []
            image = image.crop(box)
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
        reply = self._ask(cmd)
        self.seconds += time.monotonic() - t0
        self.images += 1
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
