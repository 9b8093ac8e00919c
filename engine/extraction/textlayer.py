"""The words of a PDF's pages, read in a child process with the render worker's limits.

A hostile PDF can crash MuPDF or spin; text extraction for citations therefore runs like rendering does
(engine.documents.worker): a separate process with RLIMIT_AS / RLIMIT_CPU, no core dumps, a minimal
environment and a wall-clock limit. Its failure is never the extraction's: the pages simply have no text layer
to check against (citations fall back to the similarity map or stay unlocated, and say so).

    python -I engine/extraction/textlayer.py MEMORY_MB CPU_S PDF_PATH PAGE,PAGE,…|count   → JSON on stdout
Each page: {"words": [[x0, y0, x1, y1, text], …]} with boxes as fractions of the displayed (rotated) page,
in content-stream order.
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


def read_words(pdf: Any, pages: list[int]) -> dict[int, list[list[Any]]]:
    """page → words of an opened pymupdf document (in this process)."""
    import pymupdf

    out: dict[int, list[list[Any]]] = {}
    for n in pages:
        if not 1 <= n <= pdf.page_count:
            continue
        page = pdf[n - 1]
        w, h = page.rect.width or 1.0, page.rect.height or 1.0
        m = page.rotation_matrix
        words = []
        for x0, y0, x1, y1, text, *_ in page.get_text("words"):
            r = pymupdf.Rect(x0, y0, x1, y1) * m
            box = [min(max(v, 0.0), 1.0) for v in (r.x0 / w, r.y0 / h, r.x1 / w, r.y1 / h)]
            words.append([*box, text])
        out[n] = words
    return out


def words_isolated(
    pdf_bytes: bytes, pages: list[int], settings: Any, name: str = ""
) -> dict[int, list[list[Any]]]:
    """page → words, read in a limited child process; {} (no text layer) when the child fails or times out."""
    if not pages:
        return {}
    if getattr(settings, "render_isolation", "process") == "none":
        import pymupdf

        with pymupdf.open(stream=pdf_bytes, filetype="pdf") as pdf:
            return read_words(pdf, pages)
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
    with pymupdf.open(path) as pdf:
        if argv[3] == "count":
            sys.stdout.write(json.dumps({"page_count": pdf.page_count}))
        else:
            sys.stdout.write(json.dumps(read_words(pdf, pages)))


if __name__ == "__main__":  # pragma: no cover
    _main(sys.argv[1:])
