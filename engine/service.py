"""The core API, one object per process (a Lambda container, the CLI): ingest, search, score, embed, maps.

``bootstrap(settings)`` is the one place the ports (engine.ports: Embedder, PageIndex, BlobStore, JobStore)
are wired from Settings; each is created lazily on first use and then reused (warm Lambda invocations).
Tests hand in real embedded ones or fakes through the constructor.
"""

from __future__ import annotations

import io
import logging
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from engine.config import Settings, get_settings
from engine.errors import NotFound
from engine.ports import BlobStore, Embedder, JobStore, PageIndex

if TYPE_CHECKING:
    from engine.embedding.storage import StoragePlan

log = logging.getLogger(__name__)


class DocVision:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        embedder: Embedder | None = None,
        index: PageIndex | None = None,
        store: BlobStore | None = None,
        jobs: JobStore | None = None,
        s3_client: Any = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.s3_client = s3_client  # optional: the client stores of s3:// locations use (default: boto3's)
        self._documents: dict[str, BlobStore] = {}
        for name, port in (("embedder", embedder), ("index", index), ("store", store), ("jobs", jobs)):
            if port is not None:
                self.__dict__[name] = port

    @cached_property
    def embedder(self) -> Embedder:
        from engine.embedding import Embedder

        s = self.settings
        return Embedder(s.model, family=s.model_family, compute_mode=s.compute, speedups=s.speedups, fp8_layers=s.fp8_layers, threads=s.threads, verify=s.verify_weights,
                        max_visual_tokens=s.max_visual_tokens, memory_budget=s.memory_budget_mb, max_batch_size=s.max_batch_size,
                        lazy_vision=s.lazy_vision)  # fmt: skip

    def model_identity(self) -> tuple[str, int]:
        """(model id, embedding dim) without loading the model when it is baked (its manifest says both)."""
        if "embedder" not in self.__dict__:
            from engine.embedding.manifest import baked_identity

            known = baked_identity(self.settings.model)
            if known:
                return known
        return self.embedder.model_id, self.embedder.dim

    @cached_property
    def storage_plan(self) -> StoragePlan:
        """The collection's storage plan: DOCVISION_TOKEN_POOL_FACTOR when set, else the smallest pool factor
        that keeps the model's page under DOCVISION_PAGE_BYTES_BUDGET (from the baked manifest's page_vectors,
        without loading the model; a model that is not baked is asked)."""
        from engine.embedding.manifest import baked_page_vectors
        from engine.embedding.storage import count_page_vectors, plan_storage

        s = self.settings
        explicit = s.token_pool_factor if "token_pool_factor" in s.model_fields_set else None
        _, dim = self.model_identity()
        vectors = None if "embedder" in self.__dict__ else baked_page_vectors(s.model)
        if vectors is None:
            processor = getattr(self.embedder, "processor", None)
            vectors = count_page_vectors(processor) if processor is not None else 0
        return plan_storage(vectors, dim, pool_factor=explicit, budget_bytes=s.page_bytes_budget)

    @cached_property
    def index(self) -> PageIndex:
        from engine.index import open_index

        model_id, dim = self.model_identity()
        plan = self.storage_plan
        return open_index(model_id, dim, self.settings, token_pool_factor=plan.pool_factor)

    @cached_property
    def store(self) -> BlobStore:
        from engine.storage import open_store

        return open_store(self.settings.store, self.s3_client)

    @cached_property
    def jobs(self) -> JobStore:
        from engine.jobs import DynamoJobStore

        return DynamoJobStore(self.settings.jobs_table, outcomes=self.store)

    @cached_property
    def membership(self) -> Any:
        """Which source key holds which document (engine.index.membership), over DynamoDB or local SQLite."""
        from engine.ingest import open_membership

        return open_membership(self.index, self.store, self.settings)

    def documents(self, bucket: str) -> BlobStore:
        """Where uploaded documents are read from (one store per bucket, reused)."""
        if bucket not in self._documents:
            from engine.storage import open_store

            self._documents[bucket] = open_store(f"s3://{bucket}", self.s3_client)
        return self._documents[bucket]

    # ------------------------------------------------------------------------------------------- ingest
    def ingest(self, source: Any, **kwargs: Any) -> Any:
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

    def remove_source(self, version: Any, deleted_version_id: str | None = None) -> Any:
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
    ) -> dict[str, Any]:
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
        return {
            "query": query,
            "mode": mode,
            "model_id": self.model_identity()[0],
            "hits": [h.to_dict() for h in hits],
            "timing_ms": {
                "query_encode": round(t_embed * 1000, 1),
                "search": round((time.perf_counter() - t - t_embed) * 1000, 1),
            },
        }

    # -------------------------------------------------------------------------------------------- score
    def page_vectors(self, document_id: str, page_number: int) -> tuple[dict[str, Any], np.ndarray]:
        found = self.index.get_page(document_id, page_number)
        if found is None:
            raise NotFound(
                f"page {page_number} is not in the index (ingest the document first)", document=document_id
            )
        return found

    def score(
        self,
        queries: list[str],
        *,
        pages: list[dict[str, Any]] | None = None,
        images: list[Image.Image] | None = None,
    ) -> dict[str, Any]:
        """Late-interaction scores (n_queries × n_pages) against indexed pages and/or ad-hoc images."""
        page_vecs, labels = [], []
        for ref in pages or []:
            _, vec = self.page_vectors(ref["document_id"], int(ref["page_number"]))
            page_vecs.append(vec)
            labels.append({"document_id": ref["document_id"], "page_number": int(ref["page_number"])})
        for i, emb in enumerate(self.embedder.embed_images(images) if images else []):
            page_vecs.append(emb.vectors)
            labels.append({"image": i})
        if not page_vecs:
            raise ValueError("give at least one page reference or image to score against")
        scores = self.embedder.score(self.embedder.embed_queries(queries), page_vecs)
        return {
            "queries": queries,
            "pages": labels,
            "scores": scores.round(5).tolist(),
            "model_id": self.embedder.model_id,
        }

    def embed_multivector(
        self, *, texts: list[str] | None = None, images: list[Image.Image] | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"model_id": self.embedder.model_id, "dim": self.embedder.dim}
        if texts:
            out["queries"] = [
                {"shape": list(v.shape), "dtype": "float32", "data": v.round(6).tolist()}
                for v in self.embedder.embed_queries(texts)
            ]
        if images:
            out["images"] = [e.to_json() for e in self.embedder.embed_images(images)]
        return out

    # ---------------------------------------------------------------------------------- similarity maps
    def similarity_map(self, query: str, document_id: str, page_number: int) -> dict[str, Any]:
        """Per-patch MaxSim contributions mapped to page-pixel boxes.

        MaxSim = Σ over query tokens of the best page token; each query token's best match is credited to
        that patch, so the patch contributions (plus what prompt tokens won) sum to the page score.
        """
        payload, vectors = self.page_vectors(document_id, page_number)
        rows, cols = payload.get("grid_rows"), payload.get("grid_cols")
        if not rows or not cols:
            raise NotFound("this model family has no patch grid, so no similarity map", document=document_id)
        (q,) = self.embedder.embed_queries([query])
        sims = q @ vectors.T  # (query tokens, page tokens)
        best = sims.argmax(axis=1)
        offset, n = int(payload["patch_offset"]), rows * cols
        contrib = np.zeros(n, dtype=np.float32)
        for t, tok in enumerate(best):
            if offset <= tok < offset + n:
                contrib[tok - offset] += sims[t, tok]
        patch_max = sims[:, offset : offset + n].max(axis=0)
        w, h = int(payload["width"]), int(payload["height"])
        patches = []
        for i in np.argsort(-patch_max):
            r, c = divmod(int(i), cols)
            box = [
                round(c * w / cols),
                round(r * h / rows),
                round((c + 1) * w / cols),
                round((r + 1) * h / rows),
            ]
            patches.append(
                {
                    "row": r,
                    "col": c,
                    "box": box,
                    "contribution": round(float(contrib[i]), 5),
                    "max_similarity": round(float(patch_max[i]), 5),
                }
            )
        return {
            "query": query, "document_id": document_id, "page_number": page_number, "grid": [rows, cols],
            "page_size": [w, h], "image_key": payload.get("image_key"), "score": round(float(sims.max(axis=1).sum()), 5),
            "patch_contribution_total": round(float(contrib.sum()), 5), "patches": patches,
        }  # fmt: skip

    def heatmap_png(self, query: str, document_id: str, page_number: int, alpha: float = 0.45) -> bytes:
        return self.render_heatmap(self.similarity_map(query, document_id, page_number), alpha)

    def render_heatmap(self, smap: dict[str, Any], alpha: float = 0.45) -> bytes:
        """The page image with a similarity map laid over it (red = most similar patches)."""
        page = Image.open(io.BytesIO(self.store.get(smap["image_key"]))).convert("RGB")
        rows, cols = smap["grid"]
        grid = np.zeros((rows, cols), dtype=np.float32)
        for p in smap["patches"]:
            grid[p["row"], p["col"]] = p["max_similarity"]
        lo, hi = float(grid.min()), float(grid.max())
        norm = (grid - lo) / (hi - lo) if hi > lo else np.zeros_like(grid)
        heat = np.zeros((rows, cols, 3), dtype=np.uint8)
        heat[..., 0] = (255 * norm).astype(np.uint8)  # red = most similar
        heat[..., 2] = (255 * (1 - norm)).astype(np.uint8)
        overlay = Image.fromarray(heat).resize(page.size, Image.Resampling.NEAREST)
        buf = io.BytesIO()
        Image.blend(page, overlay, alpha).save(buf, format="PNG", compress_level=1)
        return buf.getvalue()

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

        if "embedder" in self.__dict__:
            model = self.embedder.describe()
        else:  # health never loads the model (a cold model load is seconds to minutes)
            model_id, dim = self.model_identity()
            model = {"model_id": model_id, "dim": dim, "loaded": False}
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
    """The one place ports are built from Settings (handlers and the CLI call this once per process)."""
    return DocVision(settings or Settings())
