"""The core API, one object per process (a Lambda container, the CLI): ingest, search, score, embed, maps.

Read use cases return typed values (engine.results, engine.similarity); handlers and the CLI turn them into
JSON (``to_dict()``).

The ports (engine.ports: Embedder, PageIndex, BlobStore, JobStore) are wired in one place,
``engine.bootstrap.build(settings)``; each is created lazily on first use and then reused (warm Lambda
invocations). Tests hand in real embedded ones or fakes through the constructor or ``build``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from engine import similarity
from engine.bootstrap import Services, build
from engine.config import Settings, get_settings
from engine.errors import NotFound
from engine.ports import BlobStore, Embedder, JobStore, PageIndex
from engine.results import EmbedResult, PageRef, ScoreResult, SearchResult, StoredPage
from engine.similarity import SimilarityMap

if TYPE_CHECKING:
    from engine.documents.source import DocumentInput
    from engine.embedding.storage import StoragePlan
    from engine.index.membership import Membership, SourceVersion
    from engine.ingest import IngestResult, RemoveResult

log = logging.getLogger(__name__)


class DocVision:
    """The use cases over one process's ports (``engine.bootstrap.Services``)."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        embedder: Embedder | None = None,
        index: PageIndex | None = None,
        store: BlobStore | None = None,
        jobs: JobStore | None = None,
        s3_client: Any = None,
        services: Services | None = None,
    ) -> None:
        """Either ``services`` (engine.bootstrap.build) or the Settings and ports to build them from."""
        if services is None:
            services = build(settings or get_settings(), embedder=embedder, index=index, store=store, jobs=jobs,
                             s3_client=s3_client)  # fmt: skip
        self.services = services

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def s3_client(self) -> Any:
        """The boto3 S3 client of s3:// stores (untyped third-party; None: boto3's default)."""
        return self.services.s3_client

    @property
    def embedder(self) -> Embedder:
        return self.services.embedder.get()

    def model_identity(self) -> tuple[str, int]:
        """(model id, embedding dim) without loading the model when it is baked (its manifest says both)."""
        return self.services.model_identity()

    @property
    def storage_plan(self) -> StoragePlan:
        """The collection's storage plan (engine.bootstrap: make_storage_plan)."""
        return self.services.storage_plan.get()

    @property
    def index(self) -> PageIndex:
        return self.services.index.get()

    @property
    def store(self) -> BlobStore:
        return self.services.store.get()

    @property
    def jobs(self) -> JobStore:
        return self.services.jobs.get()

    @property
    def membership(self) -> Membership:
        """Which source key holds which document (engine.index.membership), over DynamoDB or local SQLite."""
        return self.services.membership.get()

    def documents(self, bucket: str) -> BlobStore:
        """Where uploaded documents are read from (one store per bucket, reused)."""
        return self.services.documents(bucket)

    # ------------------------------------------------------------------------------------------- ingest
    def ingest(self, source: DocumentInput, **kwargs: Any) -> IngestResult:
        """engine.ingest.ingest_document with this process's ports (see there for the arguments)."""
        from engine.ingest import ingest_document

        return ingest_document(
            source,
            embedder=self.embedder,
            index=self.index,
            store=self.store,
            settings=self.settings,
            documents=self.documents,
            members=self.membership,
            **kwargs,
        )

    def remove_source(self, version: SourceVersion, deleted_version_id: str | None = None) -> RemoveResult:
        """engine.ingest.remove_source with this process's index and store (an S3 ObjectRemoved event)."""
        from engine.ingest import remove_source

        return remove_source(
            version,
            index=self.index,
            store=self.store,
            deleted_version_id=deleted_version_id,
            members=self.membership,
        )

    # ------------------------------------------------------------------------------------------- search
    def search(
        self, query: str, *, top_k: int = 10, document_ids: list[str] | None = None, mode: str = "rerank"
    ) -> SearchResult:
        """mode: rerank (the visual plan), exact, dense, text (BM25 over the pages' words) or hybrid (the
        visual plan and the text channel fused by reciprocal rank; engine/index/base.py: query_plan)."""
        t = time.perf_counter()
        # text mode never needs the model: the query's words are the whole query
        q = None if mode == "text" else self.embedder.embed_queries([query])[0]
        t_embed = time.perf_counter() - t
        hits = self.index.search(
            q,  # type: ignore[arg-type]  # None only for text mode, which reads `text`
            top_k=top_k,
            document_ids=document_ids,
            mode=mode,
            prefetch_limit=self.settings.prefetch_limit,
            block_limit=self.settings.block_limit,
            text=query,
        )
        return SearchResult(
            query, mode, self.model_identity()[0], hits, t_embed, time.perf_counter() - t - t_embed
        )

    # -------------------------------------------------------------------------------------------- score
    def page_vectors(self, document_id: str, page_number: int) -> StoredPage:
        found = self.index.get_page(document_id, page_number)
        if found is None:
            raise NotFound(
                f"page {page_number} is not in the index (ingest the document first)", document=document_id
            )
        payload, vectors = found
        return StoredPage(document_id, page_number, payload, vectors)

    def score(
        self,
        queries: list[str],
        *,
        pages: list[dict[str, Any]] | None = None,
        images: list[Image.Image] | None = None,
    ) -> ScoreResult:
        """Late-interaction scores (n_queries × n_pages) against indexed pages and/or ad-hoc images.
        ``pages``: {"document_id", "page_number"} references (the API's and CLI's JSON)."""
        page_vecs: list[np.ndarray] = []
        labels: list[PageRef] = []
        for ref in pages or []:
            stored = self.page_vectors(ref["document_id"], int(ref["page_number"]))
            page_vecs.append(stored.vectors)
            labels.append(PageRef(stored.document_id, stored.page_number))
        for i, emb in enumerate(self.embedder.embed_images(images) if images else []):
            page_vecs.append(emb.vectors)
            labels.append(PageRef(image=i))
        if not page_vecs:
            raise ValueError("give at least one page reference or image to score against")
        scores = self.embedder.score(self.embedder.embed_queries(queries), page_vecs)
        return ScoreResult(queries, labels, scores, self.embedder.model_id)

    def embed_multivector(
        self, *, texts: list[str] | None = None, images: list[Image.Image] | None = None
    ) -> EmbedResult:
        return EmbedResult(
            self.embedder.model_id,
            self.embedder.dim,
            queries=self.embedder.embed_queries(texts) if texts else None,
            images=self.embedder.embed_images(images) if images else None,
        )

    # ---------------------------------------------------------------------------------- similarity maps
    def similarity_map(self, query: str, document_id: str, page_number: int) -> SimilarityMap:
        """Per-patch MaxSim contributions mapped to page-pixel boxes (engine/similarity.py)."""
        page = self.page_vectors(document_id, page_number)
        if not page.payload.get("grid_rows") or not page.payload.get(
            "grid_cols"
        ):  # before embedding the query
            raise NotFound("this model family has no patch grid, so no similarity map", document=document_id)
        (q,) = self.embedder.embed_queries([query])
        return similarity.similarity_map(query, q, page)

    def heatmap_png(self, query: str, document_id: str, page_number: int, alpha: float = 0.45) -> bytes:
        return self.render_heatmap(self.similarity_map(query, document_id, page_number), alpha)

    def render_heatmap(self, smap: SimilarityMap, alpha: float = 0.45) -> bytes:
        """The page image (from the blob store) with a similarity map laid over it (red = most similar)."""
        if smap.image_key is None:
            raise NotFound("the indexed page has no stored image", document=smap.document_id)
        return similarity.render_heatmap(self.store.get(smap.image_key), smap, alpha)

    def check_index(self, *, queries: int | None = None, target: float | None = None, search: bool = True,
                    apply: bool = False) -> Any:  # fmt: skip
        """engine.index.check.check_index on this process's index (recall of the plan vs exhaustive MaxSim)."""
        from engine.index.check import check_index

        s = self.settings
        return check_index(self.index, queries=queries or s.recall_check_queries, target=target or s.recall_target,
                           search=search, apply=apply, collection=s.collection)  # fmt: skip

    def health(self, deep: bool = False) -> dict[str, Any]:
        """deep: also the last recall check of the collection (engine index check; None when never run)."""
        from importlib.metadata import version

        if self.services.embedder.loaded:
            model = self.embedder.describe()
        else:  # health never loads the model (a cold model load is seconds to minutes)
            model_id, dim = self.model_identity()
            model = {"model_id": model_id, "dim": dim, "loaded": False}
            try:  # the backend this CPU class would load, from the manifest's A/B (no model load)
                from pathlib import Path

                from engine.embedding.backends import choose_backend
                from engine.embedding.compute import cpu_class
                from engine.embedding.manifest import read_manifest

                src = Path(self.settings.model)
                manifest = read_manifest(src) if (src / "manifest.json").exists() else None
                model["backend"], model["backend_reason"] = choose_backend(
                    self.settings.embed_backend, manifest, src, cpu_class()
                )
            except Exception as exc:  # health reports, it does not raise
                model["backend"] = {"error": str(exc)}
        try:
            model["storage_plan"] = self.storage_plan.to_dict()
        except Exception as exc:  # health reports, it does not raise
            model["storage_plan"] = {"error": str(exc)}
        info: dict[str, Any] = {
            "model": model,
            "versions": {
                p: version(p) for p in ("qdrant-client", "qdrant-edge-py", "colpali-engine", "torch")
            },
        }
        try:
            info["index"] = {"reachable": True, **self.index.info()}
            if self.settings.qdrant_url:
                info["index"]["server_version"] = self.index.client.info().version  # type: ignore[attr-defined]
        except Exception as exc:  # health reports, it does not raise
            info["index"] = {"reachable": False, "error": str(exc)}
        if deep:
            try:
                info["recall_check"] = self.index.last_check()
            except Exception as exc:  # health reports, it does not raise
                info["recall_check"] = {"error": str(exc)}
        return info


def bootstrap(settings: Settings | None = None) -> DocVision:
    """The use cases over ``engine.bootstrap.build(settings)`` (handlers, the CLI and backfill call this once)."""
    return DocVision(services=build(settings or Settings()))
