"""What every index backend stores and answers; pooling and point ids live here, once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from engine.errors import ModelMismatch, TokenBudgetMismatch, TokenPoolMismatch, UpsertFailed
from engine.index.fde import FDE

POINT_NAMESPACE = uuid.UUID("6f1c0d8e-7c1a-4c57-9a55-2f0f5d7a9b11")
FULL, ROWS, COLS, MEAN = "colqwen", "rows", "cols", "mean"
BLOCKS, FDE1 = "blocks", "fde1"

# The rerank plan a collection was built for (qdrant-client: told by the named vectors it holds; edge: its
# collection metadata, where a missing key means a collection from before the plan was recorded):
#   fde1       one FDE vector per page -> MaxSim on 2x4 patch blocks -> MaxSim on the full multivector
#   rows-cols  collections built before it: HNSW on row- and column-pooled multivectors -> full MaxSim
FDE_PLAN, ROWS_COLS_PLAN = "fde1", "rows-cols"
FDES = {FDE1: FDE(reps=10, ksim=4, dproj=16)}  # a vector name never changes meaning: new parameters, new name
# Candidates per stage of the fde1 plan (bench/results/search-10k-fde.json chose them; both are settings)
FDE_CANDIDATES, BLOCK_CANDIDATES = 300, 60
# Up to this many pages the FDE stage scans every page's FDE vector (exact; at 10k pages as fast as the HNSW
# search and with fewer misses, bench/results/search-10k-fde.json); above it, HNSW with a 2x wider beam
FDE_EXACT_PAGES = 20_000
BLOCK = (2, 4)  # patch rows x columns pooled into one block vector: text runs horizontally
ROWS_COLS_CANDIDATES = 100
PAYLOAD_INDEXES = {"document_id": "keyword", "page_number": "integer", "source_uri": "keyword"}


BUDGET_MARK = "#tokens="


def with_token_budget(model_id: str, tokens: int) -> str:
    """The model id of pages embedded at a visual-token budget: `<model>#tokens=<n>`."""
    return f"{split_token_budget(model_id)[0]}{BUDGET_MARK}{tokens}"


def split_token_budget(model_id: str) -> tuple[str, int | None]:
    """(model, budget or None for the processor's default)."""
    base, mark, tokens = model_id.partition(BUDGET_MARK)
    return base, int(tokens) if mark and tokens.isdigit() else None


def point_id(document_id: str, page_number: int, model_id: str) -> str:
    """Deterministic: the same page of the same bytes under the same model is always the same point."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{document_id}:{page_number}:{model_id}"))


@dataclass
class PageRecord:
    document_id: str
    page_number: int
    page_count: int
    vectors: np.ndarray  # (n_tokens, dim) float32
    grid: tuple[int, int] | None
    patch_offset: int
    model_id: str
    source_uri: str = ""
    image_key: str = ""
    width: int = 0
    height: int = 0
    ingested_at: float = field(default_factory=time.time)
    text: str = ""  # the page's words (text layer / OCR) for the text channel; never stored as payload

    def sparse(self) -> tuple[list[int], list[float]] | None:
        """The page's BM25 text vector (engine/index/text.py), None when it has no words."""
        from engine.index.text import encode_page

        return encode_page(self.text) if self.text else None

    def pooled(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols, mean): row- and column-pooled patch vectors for the first stage, and one dense mean.

        Pooling over the patch grid keeps each row/column's content while cutting ~700 vectors to ~55,
        which is what makes the HNSW prefetch cheap; families without a grid pool fixed-size chunks.
        """
        if self.grid:
            r, c = self.grid
            patches = self.vectors[self.patch_offset : self.patch_offset + r * c].reshape(r, c, -1)
            rows, cols = patches.mean(axis=1), patches.mean(axis=0)
        else:
            chunks = np.array_split(self.vectors, max(1, len(self.vectors) // 16))
            rows = cols = np.stack([ch.mean(axis=0) for ch in chunks])
        mean = self.vectors.mean(axis=0)
        return _unit(rows), _unit(cols), _unit(mean[None])[0]

    def blocks(self) -> np.ndarray:
        """The page's tokens pooled over blocks of 2 patch rows x 4 columns (BLOCK; the prompt tokens kept as
        they are): an eighth of the vectors, whose MaxSim ranks candidates almost as the full multivector
        does (text lines make neighbouring patches of a row alike); families without a grid pool runs of 8."""
        bh, bw = BLOCK
        if not self.grid:
            v = self.vectors
            return _unit(np.stack([v[i : i + bh * bw].mean(axis=0) for i in range(0, len(v), bh * bw)]))
        r, c = self.grid
        start, stop = self.patch_offset, self.patch_offset + r * c
        patches = self.vectors[start:stop].reshape(r, c, -1)
        # ragged edges padded with zeros: after normalising, a block is the mean direction of what it covers
        patches = np.pad(patches, ((0, -r % bh), (0, -c % bw), (0, 0)))
        h, w, d = patches.shape
        pooled = patches.reshape(h // bh, bh, w // bw, bw, d).sum(axis=(1, 3)).reshape(-1, d)
        return _unit(np.concatenate([self.vectors[:start], pooled, self.vectors[stop:]]))

    def named_vectors(
        self, pool_factor: int = 1, full: np.ndarray | None = None, plan: str = FDE_PLAN
    ) -> dict[str, Any]:
        """The point's named vectors for the collection's plan, as every backend stores them; pool_factor > 1
        stores the full multivector hierarchically pooled (the other vectors come from the unpooled tokens)."""
        full = pool_tokens(self.vectors, pool_factor) if full is None else full
        mean = _unit(self.vectors.mean(axis=0)[None])[0]
        if plan == FDE_PLAN:
            fde = FDES[FDE1].encode(_unit(self.vectors), query=False)
            return {
                FULL: full.tolist(),
                BLOCKS: self.blocks().tolist(),
                FDE1: fde.tolist(),
                MEAN: mean.tolist(),
            }
        rows, cols, _ = self.pooled()
        return {FULL: full.tolist(), ROWS: rows.tolist(), COLS: cols.tolist(), MEAN: mean.tolist()}

    def payload(self, pool_factor: int = 1) -> dict[str, Any]:
        return ({"token_pool_factor": pool_factor} if pool_factor > 1 else {}) | {
            "document_id": self.document_id,
            "page_number": self.page_number,
            "page_count": self.page_count,
            "source_uri": self.source_uri,
            "image_key": self.image_key,
            "grid_rows": self.grid[0] if self.grid else None,
            "grid_cols": self.grid[1] if self.grid else None,
            "patch_offset": self.patch_offset,
            "width": self.width,
            "height": self.height,
            "model_id": self.model_id,
            "visual_token_budget": split_token_budget(self.model_id)[1],
            "ingested_at": self.ingested_at,
        }


def pool_tokens(vectors: np.ndarray, factor: int) -> np.ndarray:
    """Hierarchical token pooling (colpali-engine's HierarchicalTokenPooler: Ward clustering of the page's
    tokens into n // factor clusters, each replaced by its normalised mean). factor 1 returns the vectors."""
    if factor <= 1 or len(vectors) < 2:
        return np.asarray(vectors, dtype=np.float32)
    import torch
    from colpali_engine.compression.token_pooling import HierarchicalTokenPooler

    pooled = HierarchicalTokenPooler().pool_embeddings([torch.from_numpy(np.asarray(vectors, np.float32))],
                                                       pool_factor=factor)  # fmt: skip
    return pooled[0].numpy().astype(np.float32)


def check_pool_factor(stored: int | None, factor: int, where: str) -> None:
    if (stored or 1) != factor:
        raise TokenPoolMismatch(
            f"the index holds pages pooled by a factor of {stored or 1} at index time, this process pools by {factor}; "
            "one collection holds one factor. Set DOCVISION_TOKEN_POOL_FACTOR to match, or use another "
            "DOCVISION_COLLECTION / DOCVISION_INDEX_PATH", document=where,
        )  # fmt: skip


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)).astype(np.float32)


@dataclass
class SearchHit:
    point_id: str
    score: float
    payload: dict[str, Any]

    @property
    def document_id(self) -> str:
        return self.payload["document_id"]

    @property
    def page_number(self) -> int:
        return int(self.payload["page_number"])

    def to_dict(self) -> dict[str, Any]:
        return {"score": round(self.score, 5), "point_id": self.point_id, **self.payload}


class PayloadQueries:
    """Lookups every backend answers the same way from its payload scroll (`_payloads`)."""

    def _payloads(self, field: str, value: str, fields: list[str]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def stored_pages(self, document_id: str) -> set[int]:
        return {int(p["page_number"]) for p in self._payloads("document_id", document_id, ["page_number"])}

    def documents_for_source(self, source_uri: str) -> set[str]:
        return {p["document_id"] for p in self._payloads("source_uri", source_uri, ["document_id"])}


SEARCH_MODES = ("rerank", "exact", "dense", "text", "hybrid")


def hnsw_ef(prefetch_limit: int) -> int:
    """HNSW beam width for a prefetch: at least the number of candidates asked for (Qdrant's default is 100)."""
    return max(128, prefetch_limit)


@dataclass
class Stage:
    """One query of a plan: score the candidates its inner stages pass (or, without inner stages, search the
    whole collection through the vector's HNSW graph) by `using`, keep `limit`."""

    using: str
    vector: list
    limit: int
    inner: list[Stage] = field(default_factory=list)
    exact: bool = False  # without inner stages: scan every page instead of the HNSW graph
    sparse: tuple[list[int], list[float]] | None = None  # a text (BM25) stage: `vector` is unused
    fusion: bool = False  # reciprocal rank fusion of the inner stages' rankings (engine/index/text.py: RRF_K)


def plan_of(vector_names: Any) -> str:
    """The rerank plan of a collection from the named vectors it holds."""
    return FDE_PLAN if FDE1 in vector_names else ROWS_COLS_PLAN


def query_plan(
    query: np.ndarray,
    mode: str,
    *,
    top_k: int,
    plan: str = FDE_PLAN,
    prefetch_limit: int | None = None,
    block_limit: int | None = None,
    prefetch_query: np.ndarray | None = None,
    pages: int | None = None,
    text: str | None = None,
    text_channel: bool = False,
) -> Stage:
    """What every backend runs for a search mode, as nested stages (the outer one returns top_k hits).

    rerank (fde1 collections): the FDE vector, `prefetch_limit` candidates (default 300; every page scanned when
    the collection holds at most FDE_EXACT_PAGES `pages`, else HNSW) -> MaxSim on 2x4 patch blocks keeps
    `block_limit` (default 60) -> MaxSim on the full multivector. rerank (rows-cols collections):
    HNSW on the row- and column-pooled vectors, `prefetch_limit` each (default 100; `prefetch_query` may replace
    the query there) -> full MaxSim. exact: MaxSim over every page's full multivector; dense: one mean vector
    against the pages' mean vectors. text: BM25 over the pages' text vectors (`text`); hybrid: the visual
    rerank plan and the text channel, HYBRID_CANDIDATES each, fused by reciprocal rank (a query with no
    indexable word is the visual plan alone). Both need a collection with the text channel (`text_channel`).
    """
    if mode in ("text", "hybrid"):
        return _text_plan(query, mode, top_k=top_k, plan=plan, prefetch_limit=prefetch_limit,
                          block_limit=block_limit, prefetch_query=prefetch_query, pages=pages, text=text,
                          text_channel=text_channel)  # fmt: skip
    q = np.asarray(query, dtype=np.float32)
    if mode == "dense":
        mean = q.mean(axis=0)
        return Stage(MEAN, (mean / np.linalg.norm(mean)).tolist(), top_k)
    if mode == "exact":
        return Stage(FULL, q.tolist(), top_k)
    if mode == "rerank" and plan == FDE_PLAN:
        keep = max(top_k, block_limit or BLOCK_CANDIDATES)
        first = max(keep, prefetch_limit or FDE_CANDIDATES)
        fde = FDES[FDE1].encode(_unit(q), query=True)
        scan = pages is not None and pages <= FDE_EXACT_PAGES
        blocks = Stage(BLOCKS, q.tolist(), keep, [Stage(FDE1, fde.tolist(), first, exact=scan)])
        return Stage(FULL, q.tolist(), top_k, [blocks])
    if mode == "rerank":
        limit = max(top_k, prefetch_limit or ROWS_COLS_CANDIDATES)
        first = (q if prefetch_query is None else prefetch_query).tolist()
        return Stage(FULL, q.tolist(), top_k, [Stage(ROWS, first, limit), Stage(COLS, first, limit)])
    from engine.errors import ConfigError

    raise ConfigError(f"search mode {mode!r} is not one of {', '.join(SEARCH_MODES)}")


def _text_plan(query: np.ndarray | None, mode: str, *, top_k: int, text: str | None, text_channel: bool,
               **visual: Any) -> Stage:  # fmt: skip
    from engine.errors import BadRequest, TextChannelMissing
    from engine.index.text import HYBRID_CANDIDATES, TEXT, encode_query

    if not text_channel:
        raise TextChannelMissing(
            f"search mode {mode!r} needs the text channel, and this collection was built without it (before "
            "hybrid search); use mode rerank here, or re-ingest into a new DOCVISION_COLLECTION"
        )
    if not text or not text.strip():
        raise BadRequest(f"search mode {mode!r} needs the query text")
    terms = encode_query(text)
    if mode == "text":
        return Stage(TEXT, [], top_k, sparse=terms or ([], []))
    assert query is not None
    keep = max(top_k, HYBRID_CANDIDATES)
    seen = query_plan(query, "rerank", top_k=keep, **visual)
    if terms is None:  # only stop words: nothing to fuse with
        return query_plan(query, "rerank", top_k=top_k, **visual)
    return Stage("", [], top_k, [seen, Stage(TEXT, [], keep, sparse=terms)], fusion=True)


def check_model(
    stored_model: str | None, stored_dim: int | None, model_id: str, dim: int, where: str
) -> None:
    if stored_dim is not None and stored_dim != dim:
        raise ModelMismatch(
            f"the index holds {stored_dim}-d vectors but the model produces {dim}-d; use another collection "
            "(DOCVISION_COLLECTION) or re-ingest", document=where,
        )  # fmt: skip
    if stored_model is not None and stored_model != model_id:
        (stored_base, stored_budget), (base, budget) = (
            split_token_budget(stored_model),
            split_token_budget(model_id),
        )
        if stored_base == base:

            def say(b: int | None) -> str:
                return f"{b} visual tokens per page" if b else "the processor's default visual-token budget"

            raise TokenBudgetMismatch(
                f"the index holds pages embedded at {say(stored_budget)}, this embedder uses {say(budget)}; "
                "one collection holds one budget. Set DOCVISION_MAX_VISUAL_TOKENS to match, or use another "
                "DOCVISION_COLLECTION / DOCVISION_INDEX_PATH", document=where,
            )  # fmt: skip
        raise ModelMismatch(
            f"the index was built with model {stored_model!r}, not {model_id!r}; embeddings of different models "
            "cannot be compared. Use the same DOCVISION_MODEL, or another DOCVISION_COLLECTION", document=where,
        )  # fmt: skip


T = TypeVar("T")


def with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    document_id: str,
    last_safe_page: int,
    attempts: int = 4,
    base_delay: float = 0.2,
    transient: tuple[type[BaseException], ...] = (OSError,),
    retry_if: Callable[[BaseException], bool] | None = None,
) -> T:
    """Exponential backoff on transient errors; after the last attempt a typed error says what is safe."""
    for attempt in range(attempts):
        try:
            return fn()
        except transient as exc:
            if retry_if is not None and not retry_if(exc):
                raise
            if attempt == attempts - 1:
                raise UpsertFailed(
                    f"{what} failed after {attempts} attempts ({exc}); pages up to {last_safe_page} are stored, "
                    "re-run ingest to resume from there", document=document_id, last_safe_page=last_safe_page,
                ) from exc  # fmt: skip
            time.sleep(base_delay * 2**attempt)
    raise AssertionError("unreachable")
