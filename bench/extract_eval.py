"""Extraction evaluation you can rerun (issue 22 item 8): real invoices with ground truth, a scripted model.

    python bench/extract_eval.py [--only NAME]     → bench/results/extract-eval.json

Corpus: bench/extract_corpus/ (11 invoices from invoice2data's test suite, MIT, with its ground-truth JSON;
SOURCES.md records repository, commit and license) plus scans made here: pages of two of them rasterized at
150 dpi into image-only PDFs (no text layer), so OCR grounding is checked when it runs.

For each document three scripted answers go through the real BAML runtime (tests/fixtures/llm_server.py):
  faithful    the ground truth (numbers as JSON numbers, dates ISO);
  as_printed  every number and date the way the page prints it (`4.904,94`, `29 maart 2014`), read from the
              text layer;
  planted     the ground truth with one value changed (a number +10 %, a date +11 days, an identifier with two
              characters swapped), rotating over the documents' fields.

Metrics (definitions in the JSON's "definitions"): value accuracy (faithful, as_printed), as-printed success,
citation precision (the cited box's words say the value), page-level and word-level grounding F1 at IoU 0.5
(ExtractBench: a value counts when its cited page / box matches the gold one; precision over cited values,
recall over gold values), planted-error recall, faithful false-alarm rate, verdict confusion matrix, seconds per
page for text-layer documents and for scans.

Gold boxes: the words of the source PDF's text layer that print the ground-truth value (exact printed forms:
engine.extraction.locale.printed_forms / letters and digits of a string), found here independently of the
citation code; a value the page does not print in any recognised form has no gold box and is reported
(`gold_missing`), not counted as a miss. For scans the gold boxes come from the PDF the scan was made from.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import write_result  # noqa: E402

CORPUS = ROOT / "bench" / "extract_corpus"
SCANS = {"coolblue2": "coolblue2-scan", "AzureInterior": "AzureInterior-scan"}
# ground-truth keys used (those a reader can check on the page), their schema types, and which are required
FIELDS = {
    "invoice_number": ({"type": "string", "description": "the invoice number"}, True),
    "date": ({"type": "string", "format": "date", "description": "invoice date"}, True),
    "amount": ({"type": "number", "description": "total amount due, tax included"}, True),
    "amount_untaxed": ({"type": ["number", "null"], "description": "total before tax"}, False),
    "amount_tax": ({"type": ["number", "null"], "description": "total tax"}, False),
    "date_due": ({"type": ["string", "null"], "format": "date", "description": "payment due date"}, False),
    "iban": ({"type": ["string", "null"], "description": "the seller's IBAN"}, False),
    "vat": ({"type": ["string", "null"], "description": "the seller's VAT number"}, False),
}


def fold(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", str(text)) if c.isalnum()).casefold()


def ground_truth(name: str) -> dict[str, Any]:
    (gt,) = json.loads((CORPUS / f"{name}.json").read_text())
    return {k: gt[k] for k in FIELDS if gt.get(k) not in (None, "")}


def schema_for(gt: dict[str, Any]) -> dict[str, Any]:
    props = {k: FIELDS[k][0] for k in gt}
    return {"type": "object", "properties": props, "required": [k for k in gt if FIELDS[k][1]]}


def kind_of(key: str) -> str:
    s = FIELDS[key][0]
    if s.get("format") == "date":
        return "date"
    return "number" if "number" in (s["type"] if isinstance(s["type"], list) else [s["type"]]) else "string"


# ------------------------------------------------------------------------------------------- gold words
def words_of(pdf: Path) -> dict[int, list[list[Any]]]:
    import pymupdf

    from engine.extraction.textlayer import read_words

    with pymupdf.open(pdf) as doc:
        return read_words(doc, list(range(1, doc.page_count + 1)))


def gold_spans(
    value: Any, kind: str, pages: dict[int, list[list[Any]]]
) -> list[tuple[int, list[float], str]]:
    """(page, box, printed text) of every run of 1-4 words printing the value."""
    from engine.extraction.locale import printed_forms, same_value

    out = []
    forms = {fold(f) for f in printed_forms(value, kind)} if kind != "string" else {fold(value)}
    for page, words in pages.items():
        for i in range(len(words)):
            for n in (1, 2, 3, 4, 5, 6):
                span = words[i : i + n]
                if len(span) < n:
                    break
                text = " ".join(str(w[4]) for w in span)
                core = text.strip(" :;,()[]*")
                if kind == "string":  # exactly, or inside one word at a letter/digit boundary ("n°562044387")
                    fc, fv = fold(core), fold(value)
                    hit = fc == fv or (n == 1 and len(fv) >= 4 and (fc.endswith(fv) or fc.startswith(fv)))
                else:
                    hit = fold(core) in forms or same_value(core, value, kind)
                if kind != "string" and not hit:
                    # "Total: €4.904,94" — the value's printed form at the end of a word
                    hit = any(fold(core).endswith(f) and len(f) >= 3 for f in forms) and n == 1
                if hit:
                    box = [
                        min(w[0] for w in span),
                        min(w[1] for w in span),
                        max(w[2] for w in span),
                        max(w[3] for w in span),
                    ]
                    out.append((page, box, text))
                    break
    return out


def iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_says(box: list[float], page_words: list[list[Any]], value: Any, kind: str) -> bool:
    """Do the words whose centre lies in the box print the value?"""
    from engine.extraction.locale import same_value

    inside = [
        w
        for w in page_words
        if box[0] <= (w[0] + w[2]) / 2 <= box[2] and box[1] <= (w[1] + w[3]) / 2 <= box[3]
    ]
    text = " ".join(str(w[4]) for w in inside)
    if kind == "string":
        return fold(value) in fold(text)
    return any(
        same_value(" ".join(str(w[4]) for w in inside[i:j]).strip(" :;,()*"), value, kind)
        for i in range(len(inside))
        for j in range(i + 1, min(len(inside), i + 6) + 1)
    ) or (kind == "date" and fold(value) in fold(text))


# ------------------------------------------------------------------------------------------------ answers
def as_printed(gt: dict[str, Any], pages: dict[int, list[list[Any]]]) -> dict[str, Any]:
    out = dict(gt)
    for k, v in gt.items():
        if kind_of(k) in ("number", "date"):
            spans = gold_spans(v, kind_of(k), pages)
            if spans:  # the tightest printing (a lone "41,31" rather than "% 41,31")
                out[k] = min((t.strip(" :;,*") for _, _, t in spans), key=len)
    return out


def plant(gt: dict[str, Any], i: int) -> tuple[dict[str, Any], str]:
    keys = [k for k in gt if FIELDS[k][1]]
    key = keys[i % len(keys)]
    v = gt[key]
    if kind_of(key) == "number":
        new: Any = round(float(v) * 1.1 + 1.0, 2)
    elif kind_of(key) == "date":
        new = (dt.date.fromisoformat(v) + dt.timedelta(days=11)).isoformat()
    else:
        s = str(v)
        digits = [j for j, c in enumerate(s) if c.isalnum()]
        a = next((j for j in digits[1:] if s[j] != s[digits[0]]), None)
        j0 = digits[0] if a is None else a - 1
        new = s[:j0] + s[j0 + 1] + s[j0] + s[j0 + 2 :] if len(s) > j0 + 1 and s[j0] != s[j0 + 1] else s + "7"
    return gt | {key: new}, f"$.{key}"


def same(a: Any, b: Any, kind: str) -> bool:
    if a is None or b is None:
        return a is b
    if kind == "number":
        return abs(float(a) - float(b)) < 1e-6
    return str(a) == str(b)


# ------------------------------------------------------------------------------------------------- scans
def make_scan(src: Path, dest: Path, dpi: int = 150) -> Path:
    """Every page rendered to an image, the images put in a new PDF: no text layer, the same geometry."""
    import pymupdf

    with pymupdf.open(src) as doc, pymupdf.open() as out:
        for page in doc:
            pix = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
            p = out.new_page(width=page.rect.width, height=page.rect.height)
            p.insert_image(p.rect, stream=pix.tobytes("png"))
        out.save(dest)
    return dest


# -------------------------------------------------------------------------------------------------- main
def run_one(
    pdf: Path, schema: dict[str, Any], answer: dict[str, Any], store_dir: Path
) -> tuple[Any, float, str | None]:
    from engine.config import Settings
    from engine.errors import ExtractionFailed
    from engine.extraction.runner import extract_document
    from engine.storage import LocalStore
    from tests.fixtures.llm_server import ScriptedLLM

    with ScriptedLLM([{"content": json.dumps(answer)}]) as llm:
        s = Settings(llm_base_url=llm.base_url, llm_model="eval", dpi=150, llm_image_max_side=1024)
        t = time.perf_counter()
        try:
            out = extract_document(pdf, schema, settings=s, store=LocalStore(store_dir), use_cache=False)
        except ExtractionFailed as exc:
            return None, time.perf_counter() - t, exc.code
        return out, time.perf_counter() - t, None


def f1(tp: int, pred: int, gold: int) -> dict[str, Any]:
    p = tp / pred if pred else None
    r = tp / gold if gold else None
    f = 2 * p * r / (p + r) if p and r else (0.0 if p is not None and r is not None else None)
    return {"tp": tp, "predicted": pred, "gold": gold, "precision": _r(p), "recall": _r(r), "f1": _r(f)}


def _r(x: float | None) -> float | None:
    return round(100 * x, 2) if x is not None else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=None)
    ap.add_argument("--out", default="extract-eval")
    args = ap.parse_args()
    import pymupdf

    names = sorted(p.stem for p in CORPUS.glob("*.pdf"))
    if args.only:
        names = [n for n in names if args.only in n]
    docs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in names:
            docs.append((n, CORPUS / f"{n}.pdf", n))
            if n in SCANS:
                docs.append((SCANS[n], make_scan(CORPUS / f"{n}.pdf", Path(tmp) / f"{SCANS[n]}.pdf"), n))
            if (CORPUS / f"{n}.png").exists():  # invoice2data's own raster of the same invoice
                docs.append((f"{n}-png", CORPUS / f"{n}.png", n))
        per_doc = []
        totals: dict[str, Any] = {"values": 0, "faithful_correct": 0, "as_printed_correct": 0, "as_printed_failed": 0,
                                  "cited": 0, "cited_contains": 0, "gold": 0, "page_tp": 0, "word_tp": 0,
                                  "gold_missing": [], "planted": 0, "planted_flagged": 0}  # fmt: skip
        scans_planted = [0, 0]
        confusion = {"faithful": {"accept": 0, "review": 0, "reject": 0, "failed": 0},
                     "planted": {"accept": 0, "review": 0, "reject": 0, "failed": 0}}  # fmt: skip
        seconds: dict[str, list[float]] = {"text_layer": [], "scan": []}
        for i, (name, pdf, source) in enumerate(docs):
            gt = ground_truth(source)
            schema = schema_for(gt)
            words = words_of(CORPUS / f"{source}.pdf")  # gold: the source's text layer (a scan's too)
            scan = name != source
            # a PNG is not the PDF's page geometry (cropped, other margins): no gold boxes for it
            image = pdf.suffix == ".png"
            if image:
                page_count = 1
            else:
                with pymupdf.open(pdf) as d:
                    page_count = d.page_count
            row: dict[str, Any] = {"document": name, "source": f"{source}.pdf", "scan": scan, "pages": page_count,
                                   "fields": sorted(gt)}  # fmt: skip
            # faithful
            out, secs, err = run_one(pdf, schema, gt, Path(tmp) / f"{name}-f")
            seconds["scan" if scan else "text_layer"].append(secs / page_count)
            if out is None:
                confusion["faithful"]["failed"] += 1
                row["faithful"] = {"failed": err}
            else:
                data = out.result["data"]
                cites = {c["path"]: c for c in out.result["provenance"]["citations"]}
                confusion["faithful"][out.quality["verdict"]["decision"]] += 1
                row["faithful"] = {"verdict": out.quality["verdict"]["decision"],
                                   "reasons": [f"{r['reason']} {r.get('path', '')}".strip() for r in out.quality["verdict"]["reasons"]],
                                   "seconds": round(secs, 3)}  # fmt: skip
                for k, v in gt.items():
                    kind = kind_of(k)
                    totals["values"] += 1
                    totals["faithful_correct"] += same(data.get(k), v, kind)
                    c = cites.get(f"$.{k}")
                    if image:  # value accuracy and the verdict count; grounding F1 needs gold boxes
                        continue
                    gold = gold_spans(v, kind, words)
                    predicted = c is not None and c.get("page") is not None and c.get("bbox") is not None
                    if not gold:
                        totals["gold_missing"].append(f"{name}:$.{k}")
                    else:
                        totals["gold"] += 1
                    if predicted:
                        assert c is not None
                        totals["cited"] += 1
                        totals["cited_contains"] += box_says(c["bbox"], words.get(c["page"], []), v, kind)
                        if gold:
                            totals["page_tp"] += any(g[0] == c["page"] for g in gold)
                            totals["word_tp"] += any(
                                g[0] == c["page"] and iou(g[1], c["bbox"]) >= 0.5 for g in gold
                            )
            # as printed
            ap_answer = as_printed(gt, words)
            out, _, err = run_one(pdf, schema, ap_answer, Path(tmp) / f"{name}-a")
            if out is None:
                totals["as_printed_failed"] += 1
                row["as_printed"] = {"failed": err}
            else:
                ok = sum(same(out.result["data"].get(k), v, kind_of(k)) for k, v in gt.items())
                totals["as_printed_correct"] += ok
                row["as_printed"] = {"correct": ok, "of": len(gt),
                                     "printed_forms": sorted(k for k in gt if ap_answer[k] != gt[k])}  # fmt: skip
            # planted
            answer, path = plant(gt, i)
            out, _, err = run_one(pdf, schema, answer, Path(tmp) / f"{name}-p")
            totals["planted"] += 1
            scans_planted[1] += scan
            if out is None:
                confusion["planted"]["failed"] += 1
                row["planted"] = {"path": path, "failed": err}
            else:
                c = next((c for c in out.result["provenance"]["citations"] if c["path"] == path), None)
                flagged = c is not None and c.get("grounded") is False
                totals["planted_flagged"] += flagged
                scans_planted[0] += flagged and scan
                confusion["planted"][out.quality["verdict"]["decision"]] += 1
                row["planted"] = {"path": path, "flagged": flagged, "verdict": out.quality["verdict"]["decision"],
                                  "method": c and c.get("method")}  # fmt: skip
            per_doc.append(row)
            print(json.dumps(row), file=sys.stderr)

    faithful_docs = sum(confusion["faithful"].values())
    result = {
        "corpus": {
            "documents": len(docs),
            "scans": sum(1 for d in docs if d[0] != d[2]),  # rasterized here, and invoice2data's PNGs
            "values": totals["values"],
            "sources": "bench/extract_corpus/SOURCES.md",
            "images_without_gold_boxes": [d[0] for d in docs if d[1].suffix == ".png"],
        },  # fmt: skip
        "value_accuracy_faithful": _r(totals["faithful_correct"] / totals["values"]),
        "value_accuracy_as_printed": _r(totals["as_printed_correct"] / totals["values"]),
        "as_printed_failed_documents": totals["as_printed_failed"],
        "citation_precision": _r(totals["cited_contains"] / totals["cited"]) if totals["cited"] else None,
        "page_grounding": f1(totals["page_tp"], totals["cited"], totals["gold"]),
        "word_grounding_iou50": f1(totals["word_tp"], totals["cited"], totals["gold"]),
        "gold_missing": totals["gold_missing"],
        "planted_error_recall": _r(totals["planted_flagged"] / totals["planted"]),
        "planted_error_recall_scans": _r(scans_planted[0] / scans_planted[1]) if scans_planted[1] else None,
        "faithful_false_alarm_rate": _r((faithful_docs - confusion["faithful"]["accept"]) / faithful_docs),
        "verdict_confusion": confusion,
        "seconds_per_page": {
            k: {
                "median": round(statistics.median(v), 3),
                "min": round(min(v), 3),
                "max": round(max(v), 3),
                "n": len(v),
            }
            for k, v in seconds.items()
            if v
        },  # fmt: skip
        "documents": per_doc,
        "definitions": {
            "value_accuracy": "extracted value equals the ground truth (numbers within 1e-6, dates/strings exactly), percent",
            "citation_precision": "cited values whose box's words (centre inside the box) print the value, percent",
            "page_grounding": "ExtractBench page-level: a cited value is a TP when its page is a page printing it",
            "word_grounding_iou50": "ExtractBench word-level: TP when the cited box has IoU >= 0.5 with a gold box",
            "planted_error_recall": "planted values cited grounded: false (text layer or OCR), percent",
            "faithful_false_alarm_rate": "faithful documents whose verdict is not accept, percent",
            "seconds_per_page": "wall seconds of one faithful extraction (render, BAML round trip to the local "
            "scripted server, text layer, OCR where it runs, citations, writing) / pages",
        },
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
