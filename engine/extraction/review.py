"""`docvision review RESULT_DIR`: one self-contained HTML page to review an extraction at a glance.

The page holds everything it shows: the cited page images inlined as data: URIs, inline CSS and a few lines of
inline script, and a Content-Security-Policy that forbids every fetch (no network at view time, nothing a value
says can load anything). At the top the document's verdict (quality.json's `verdict`, when the run wrote one)
and what to check; then the fields table (value, page, method, grounded, reason, OCR confidence) and each page
with every cited box drawn. Clicking a field highlights its box (and scrolls to it); clicking a box selects its
field. Every value from the document is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path
from typing import Any

from engine.errors import NotFound

DPI = 100
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

STYLE = """
html,body{height:100%}body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f4f5f7;
display:flex;flex-direction:column}header{padding:12px 20px;background:#fff;border-bottom:1px solid #d0d4d9}
.verdict{display:inline-block;padding:3px 10px;border-radius:4px;font-weight:600;color:#fff;text-transform:uppercase}
.v-accept{background:#1f883d}.v-review{background:#bf8700}.v-reject{background:#cf222e}.v-unknown{background:#6e7781}
main{display:flex;gap:16px;padding:16px;flex:1;min-height:0}
#fields{flex:0 0 46%;overflow-y:auto;overflow-x:hidden;font-size:13px;background:#fff;border:1px solid #d0d4d9}
table{border-collapse:collapse;width:100%}th,td{padding:4px 6px;word-break:break-word;border-bottom:1px solid #eaecef;text-align:left;
vertical-align:top}th{background:#f6f8fa;position:sticky;top:0}tr.field{cursor:pointer}tr.field:hover{background:#f0f6ff}
tr.field.active{background:#fff3c4}.g-true{color:#1f883d}.g-false{color:#cf222e;font-weight:600}.g-null{color:#6e7781}
#pages{flex:1;display:flex;flex-direction:column;gap:16px;overflow:auto}.page{background:#fff;border:1px solid #d0d4d9;padding:8px}
.sheet{position:relative;display:inline-block;max-width:100%}.sheet img{display:block;max-width:100%}
.box{position:absolute;border:2px solid;box-sizing:border-box;cursor:pointer}
.box.m-text{border-color:#1f883d}.box.m-ocr{border-color:#0a7f86}.box.m-similarity{border-color:#2f6fdf;border-style:dashed}
.box.bad{border-color:#cf222e}
.box.active{border-width:4px;border-color:#ff8c00;background:rgba(255,200,0,.28);z-index:3}
.reasons li{margin:2px 0}code{font-size:12px}
"""

SCRIPT = """
function select(path, scroll) {
  document.querySelectorAll('.active').forEach(function (e) { e.classList.remove('active'); });
  document.querySelectorAll('[data-path]').forEach(function (e) {
    if (e.getAttribute('data-path') === path) { e.classList.add('active'); }
  });
  var box = document.querySelector('.box.active');
  if (scroll && box) { box.scrollIntoView({block: 'center'}); }
  var row = document.querySelector('tr.field.active');
  if (!scroll && row) { row.scrollIntoView({block: 'nearest'}); }
}
document.querySelectorAll('tr.field').forEach(function (r) {
  r.addEventListener('click', function () { select(r.getAttribute('data-path'), true); });
});
document.querySelectorAll('.box').forEach(function (b) {
  b.addEventListener('click', function () { select(b.getAttribute('data-path'), false); });
});
"""


def value_at(data: Any, path: str) -> Any:
    """The value at a JSON path like $.lines[1].amount (None when absent)."""
    cur = data
    for name, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        try:
            cur = cur[name] if name else cur[int(index)]
        except (KeyError, IndexError, TypeError):
            return None
    return cur


def _verdict(quality: dict[str, Any]) -> tuple[str, list[str]]:
    """(verdict, reasons) from quality.json; the verdict may be a string or {"verdict"|"decision", "reasons"}."""
    v = quality.get("verdict")
    reasons = quality.get("verdict_reasons") or []
    if isinstance(v, dict):
        reasons = v.get("reasons") or reasons
        v = v.get("verdict") or v.get("decision") or v.get("value")
    text = [
        r if isinstance(r, str)
        else " ".join(str(x) for x in (r.get("path"), r.get("reason") or r.get("code")) if x)
        + "".join(f", {k} {x}" for k, x in r.items() if k not in ("path", "reason", "code"))
        for r in reasons
    ]  # fmt: skip
    return (str(v) if v in ("accept", "review", "reject") else "unknown"), text


def _path_reasons(quality: dict[str, Any]) -> dict[str, list[str]]:
    """Verdict reasons that name a path (shown on that field's row)."""
    v = quality.get("verdict")
    reasons = (v.get("reasons") if isinstance(v, dict) else None) or quality.get("verdict_reasons") or []
    out: dict[str, list[str]] = {}
    for r in reasons:
        if isinstance(r, dict) and r.get("path"):
            out.setdefault(str(r["path"]), []).append(str(r.get("reason") or r.get("code") or ""))
    return out


def _name(prov: dict[str, Any]) -> str:
    src = str(prov.get("source") or prov.get("document_id") or "")
    return src.rstrip("/").rsplit("/", 1)[-1]


def _pct(v: float) -> str:
    return f"{max(0.0, min(1.0, float(v))) * 100:.3f}%"


def build_html(result: dict[str, Any], quality: dict[str, Any], images: dict[int, bytes]) -> str:
    """The review page for one result; images: page → JPEG/PNG bytes of the cited pages."""
    esc = html.escape
    prov = result.get("provenance", {})
    data = result.get("data", {})
    citations = prov.get("citations") or []
    verdict, reasons = _verdict(quality)
    per_path = _path_reasons(quality)
    ungrounded = [c for c in citations if c.get("grounded") is False]
    rows = []
    for c in citations:
        g = c.get("grounded")
        conf = c.get("ocr_confidence")
        value = value_at(data, c["path"])
        notes = [c.get("reason")] if c.get("reason") else []
        notes += [r for r in per_path.get(c["path"], []) if r not in notes]
        rows.append(
            f'<tr class="field" data-path="{esc(c["path"])}"><td><code>{esc(c["path"].removeprefix("$."))}</code></td>'
            f"<td>{esc(json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value)}</td>"
            f"<td>{esc(str(c.get('page') or '–'))}</td><td>{esc(str(c.get('method')))}</td>"
            f'<td class="g-{str(g).lower() if g is not None else "null"}">{esc(str(g).lower() if g is not None else "unchecked")}</td>'
            f"<td>{esc(', '.join(notes))}</td><td>{'' if conf is None else f'{float(conf):.2f}'}</td></tr>"
        )
    pages = []
    for page in sorted(images):
        boxes = []
        for c in citations:
            if c.get("page") != page or not c.get("bbox"):
                continue
            x0, y0, x1, y1 = c["bbox"]
            cls = f"box m-{esc(str(c.get('method')))}" + (" bad" if c.get("grounded") is False else "")
            boxes.append(
                f'<a class="{cls}" data-path="{esc(c["path"])}" title="{esc(c["path"])}" style="left:{_pct(x0)};'
                f'top:{_pct(y0)};width:{_pct(x1 - x0)};height:{_pct(y1 - y0)}"></a>'
            )
        mime = "image/png" if images[page][:4] == b"\x89PNG" else "image/jpeg"
        src = f"data:{mime};base64,{base64.b64encode(images[page]).decode()}"
        pages.append(
            f'<section class="page" id="page-{page}"><div>Page {page}</div><div class="sheet">'
            f'<img alt="page {page}" src="{src}">{"".join(boxes)}</div></section>'
        )
    score = quality.get("score")
    summary = f"{len(citations)} values cited; {len(ungrounded)} not found where cited" + (
        f"; score {score}" if score is not None else ""
    )
    reason_list = "".join(f"<li>{esc(r)}</li>" for r in reasons) or (
        "".join(
            f"<li>{esc(c['path'])}: {esc(str(c.get('reason') or 'not grounded'))}</li>" for c in ungrounded
        )
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>Review: {esc(str(prov.get("source") or prov.get("document_id") or ""))}</title>
<style>{STYLE}</style></head><body>
<header><span id="verdict" class="verdict v-{verdict}">{verdict}</span>
 <strong title="{esc(str(prov.get("source") or ""))}">{esc(_name(prov))}</strong> · {esc(summary)}
 <ul class="reasons">{reason_list}</ul></header>
<main><div id="fields"><table><thead><tr><th>field</th><th>value</th><th>page</th><th>method</th><th>grounded</th>
<th>reason</th><th>OCR conf.</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>
<div id="pages">{"".join(pages)}</div></main>
<script>{SCRIPT}</script></body></html>
"""


def write_review(result_dir: Path, out: Path | None, *, settings: Any, source: str | None = None) -> Path:
    """Render the cited pages (or page 1) of the result's document and write the review page."""
    from engine.documents import open_document
    from engine.extraction.draw import _source

    path = result_dir / "result.json"
    if not path.exists():
        raise NotFound(f"no result.json in {result_dir}; give the folder `docvision extract` printed")
    result = json.loads(path.read_text())
    qpath = result_dir / "quality.json"
    quality = json.loads(qpath.read_text()) if qpath.exists() else {}
    prov = result["provenance"]
    wanted = sorted({c["page"] for c in prov.get("citations") or [] if c.get("page")}) or [1]
    images: dict[int, bytes] = {}
    with open_document(_source(prov, source), settings=settings.model_copy(update={"dpi": DPI})) as doc:
        for frame in doc.pages():
            if frame.page_number in wanted:
                buf = io.BytesIO()
                frame.image.convert("RGB").save(buf, format="JPEG", quality=80)
                images[frame.page_number] = buf.getvalue()
            if frame.page_number >= wanted[-1]:
                break
    target = out or result_dir / "review.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(build_html(result, quality, images), encoding="utf-8")
    return target
