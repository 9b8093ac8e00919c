"""The text channel: each page's words as a BM25 sparse vector, for lexical and hybrid search.

Every backend stores the same vector under the sparse name ``bm25`` with Qdrant's IDF modifier: the page side
holds BM25's saturated term frequency (k, b and an assumed average length folded in), Qdrant multiplies each
query term by its inverse document frequency over the collection's current points, so the IDF statistics live
in the collection and follow every upsert and delete. Tokens are hashed to indices in process by qdrant-edge's
``Bm25`` (Rust: word tokenizer, lowercase, English stop words and Snowball stemmer, all compiled in; nothing is
read from disk or the network), the same code for the embedded shard, qdrant-client's local mode and a server.

Where the words come from: a PDF's own text layer (engine/extraction/textlayer.py, read in the limited child
process); a page without one has no text vector (``ocr_text`` is the hook for OCR words once an OCR reader is
available; today it returns nothing). Pages without text simply never match the text channel; hybrid search
still ranks them by the visual plan.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from functools import cache
from typing import Any

log = logging.getLogger(__name__)

TEXT = "bm25"  # the sparse vector's name; a vector name never changes meaning: new parameters, new name
TEXT_CHANNEL = "bm25-v1"  # recorded in edge collections (client collections are told by the sparse vector)
BM25_K, BM25_B, BM25_AVG_LEN = 1.2, 0.75, 300.0  # average length: words on a typical text page
MAX_PAGE_CHARS = 200_000  # a page's text beyond this is not indexed (a hostile page of megabytes of words)
MAX_QUERY_CHARS = 2_000
MAX_QUERY_TERMS = 64  # a query's distinct terms beyond these are dropped: each one is a posting-list walk
RRF_K = 60  # reciprocal rank fusion's k (Cormack et al. 2009; Qdrant's server default is 2, ours is stated)
HYBRID_CANDIDATES = 50  # candidates each channel passes to the fusion

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@cache
def _bm25() -> Any:
    import qdrant_edge as qe

    return qe.Bm25(qe.Bm25Config(k=BM25_K, b=BM25_B, avg_len=BM25_AVG_LEN, language="english"))


def _clean(text: str, limit: int) -> str:
    return _CONTROL.sub(" ", text[:limit])


def encode_page(text: str) -> tuple[list[int], list[float]] | None:
    """(indices, values) of a page's text, or None when it has no indexable word."""
    vec = _bm25().embed_document(_clean(text or "", MAX_PAGE_CHARS))
    return (list(vec.indices), list(vec.values)) if vec.indices else None


def encode_query(text: str) -> tuple[list[int], list[float]] | None:
    """(indices, values) of a query (weight 1 per distinct term), or None when nothing indexable is left
    (only stop words or punctuation): the text channel then contributes nothing."""
    vec = _bm25().embed_query(_clean(text or "", MAX_QUERY_CHARS))
    if not vec.indices:
        return None
    pairs = list(zip(vec.indices, vec.values, strict=True))[:MAX_QUERY_TERMS]
    return [i for i, _ in pairs], [v for _, v in pairs]


def words_text(words: list[list[Any]]) -> str:
    """A page's text from text-layer words ([x0, y0, x1, y1, text, ...] each)."""
    return " ".join(str(w[4]) for w in words if len(w) > 4 and isinstance(w[4], str))


def ocr_text(frame: Any) -> str:
    """Hook: OCR words of a page without a text layer. No OCR reader is wired into ingest yet, so pages
    without a text layer have no text vector; plug an OCR word reader here (same word shape as the text
    layer's) and ingest uses it for exactly those pages."""
    return ""


PageTexts = Callable[[list[int]], dict[int, str]]  # page numbers -> their text ("" when none)


def pdf_page_texts(pdf_bytes: bytes | None, settings: Any, name: str = "") -> PageTexts:
    """A reader of a PDF's pages' text, through the limited text-layer child (a failure there is no text,
    never the ingest's failure). None or empty bytes (images): every page has no text."""

    def read(pages: list[int]) -> dict[int, str]:
        if not pdf_bytes or not pages:
            return {}
        from engine.extraction.textlayer import words_isolated

        try:
            found = words_isolated(pdf_bytes, pages, settings, name)
        except Exception as exc:  # the text channel never fails an ingest
            log.warning(
                "text layer of %s unreadable (%s): pages indexed without text", name, type(exc).__name__
            )
            return {}
        return {n: words_text(words) for n, words in found.items()}

    return read
