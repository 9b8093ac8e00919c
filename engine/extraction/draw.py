"""`docvision cite RESULT_DIR --out DIR`: the cited boxes drawn on the page images, one PNG per cited page.

Green: found on the page's text layer (grounded); blue: similarity-map estimate (scans). Values not found on
any page are listed in the corner of the first page (red), since they have no box.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from engine.errors import NotFound

DPI = 110
COLORS = {"text": (0, 160, 60), "ocr": (0, 130, 130), "similarity": (30, 90, 230)}


def _source(provenance: dict[str, Any], override: str | None) -> Any:
    from engine.documents import S3Object

    src = override or provenance.get("source") or ""
    if src.startswith("file://"):
        return Path(unquote(urlparse(src).path))
    if src.startswith("s3://"):
        bucket, _, key = src[5:].partition("/")
        return S3Object(bucket, key)
    if Path(src).exists():
        return Path(src)
    raise NotFound(f"the extracted document {src!r} is not readable from here; pass --source FILE")


def draw_citations(
    result_dir: Path, out_dir: Path, *, settings: Any, source: str | None = None
) -> list[Path]:
    from PIL import ImageDraw

    from engine.documents import open_document

    path = result_dir / "result.json"
    if not path.exists():
        raise NotFound(f"no result.json in {result_dir}; give the folder `docvision extract` printed")
    prov = json.loads(path.read_text())["provenance"]
    citations = prov.get("citations") or []
    by_page: dict[int, list[dict[str, Any]]] = {}
    for c in citations:
        if c.get("page") and c.get("bbox"):
            by_page.setdefault(c["page"], []).append(c)
    missing = [c["path"] for c in citations if c.get("grounded") is False]
    pages = sorted(by_page) or [1]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with open_document(_source(prov, source), settings=settings.model_copy(update={"dpi": DPI})) as doc:
        for frame in doc.pages():
            if frame.page_number not in pages:
                continue
            img = frame.image.convert("RGB")
            draw = ImageDraw.Draw(img)
            w, h = img.size
            for c in by_page.get(frame.page_number, []):
                x0, y0, x1, y1 = c["bbox"]
                color = COLORS.get(c["method"], (200, 120, 0))
                draw.rectangle([x0 * w - 2, y0 * h - 2, x1 * w + 2, y1 * h + 2], outline=color, width=2)
                draw.text((x0 * w, max(0, y0 * h - 11)), c["path"].removeprefix("$."), fill=color)
            if frame.page_number == pages[0] and missing:
                draw.text(
                    (6, 4),
                    "not on the page: " + ", ".join(p.removeprefix("$.") for p in missing[:8]),
                    fill=(210, 0, 0),
                )
            target = out_dir / f"page-{frame.page_number}.png"
            img.save(target)
            written.append(target)
            if frame.page_number >= pages[-1]:
                break
    return written
