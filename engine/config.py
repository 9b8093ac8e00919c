"""Every knob in one place, read from the environment (prefix ``DOCVISION_``; Qdrant's own names unprefixed).

The README's configuration table is checked against this class by a test, so the two cannot drift.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOCVISION_", extra="ignore", populate_by_name=True)

    # --- documents -------------------------------------------------------------------------------
    dpi: int = Field(300, ge=36, le=1200, description="Canonical render resolution of page frames.")
    pdf_backend: Literal["pymupdf", "pdf2image"] = Field(
        "pymupdf", description="PDF rasterizer: pymupdf (fast, in-process) or pdf2image (poppler's pdftoppm)."
    )
    max_bytes: int = Field(256 * 1024 * 1024, description="Largest accepted document, in bytes.")
    max_pages: int = Field(2000, description="Largest accepted page count.")
    max_page_pixels: int = Field(
        60_000_000,
        description="Pages larger than this (width*height at the canonical DPI) are rendered at a lower DPI to fit.",
    )
    max_image_pixels: int = Field(
        250_000_000,
        description="Hard decode limit for raster images; larger ones are rejected as decompression bombs.",
    )
    conversion_timeout_s: float = Field(180.0, description="LibreOffice conversion timeout per document.")
    render_isolation: Literal["process", "none"] = Field(
        "process",
        description="Rasterize PDFs/images in a worker process with hard limits (process) or in-process (none).",
    )
    render_memory_mb: int = Field(
        3072, description="Address-space limit (RLIMIT_AS) of the render worker and of LibreOffice, in MiB."
    )
    render_page_timeout_s: float = Field(120.0, description="Wall-clock limit to render one page.")
    render_timeout_s: float = Field(
        900.0, description="Wall-clock and CPU-time limit to render one document (all pages)."
    )
    ocr_languages: str = Field(
        "eng+deu+fra+nld+spa+ita+por",
        description="Tesseract languages for pages and images without a text layer (installed ones are used; empty: no OCR).",
    )
    index_ocr: bool = Field(
        True,
        description="OCR pages without a text layer at ingest, so scans get a text channel (text/hybrid search; needs DOCVISION_OCR_LANGUAGES).",
    )
    soffice: str = Field("soffice", description="LibreOffice binary used for Office/ODF/HTML documents.")
    work_dir: Path | None = Field(
        None, description="Scratch folder for conversions (default: system temp, /tmp on Lambda)."
    )

    # --- model ---------------------------------------------------------------------------------------
    model: str = Field(
        "models/baked", description="Model: a baked directory, a Hugging Face directory, or a hub id."
    )
    model_family: str | None = Field(
        None,
        description="Force the model family (colqwen2, colqwen2.5, colpali, colidefics3, colmodernvbert).",
    )
    compute: str = Field("auto", description="Compute path: auto, bf16, fp32, int8 (CPU) or cuda.")
    embed_backend: str = Field(
        "auto",
        description="CPU inference runtime: auto (the backend A/B recorded in the baked manifest for this CPU "
        "class; torch where none is), torch, or openvino (needs a `models.bake --backend openvino` export).",
    )
    speedups: str = Field(
        "auto",
        description="Model speed patches (engine/embedding/fast.py): auto, none, or a comma list of "
        "linear_patch_embed, batched_attention, prepacked_linear, fp8, fp8_block, fp8_layers, static_pages, "
        "compile, cuda_graphs, int8_onednn.",
    )
    fp8_layers: str = Field(
        "auto",
        description="Layer classes the fp8_layers speedup runs in fp8 (CUDA): auto (vision_fc1), none, or a comma "
        "list of vision_qkv, vision_proj, vision_fc1, vision_fc2, merger, text_qkv, text_o, text_gate_up, text_down.",
    )
    threads: int | None = Field(None, description="CPU threads for the model (default: all available).")
    memory_budget_mb: int | None = Field(
        None,
        description="Memory budget for embedding batches (default: Lambda memory size, else half of RAM).",
    )
    max_batch_size: int | None = Field(
        None, description="Upper bound on pages per embedding batch (default 2 on CPU, 32 on GPU)."
    )
    max_visual_tokens: int | None = Field(
        None, description="Visual tokens per page (default: the processor's, 768 for ColQwen2)."
    )
    verify_weights: Literal["sha256", "size"] = Field(
        "sha256",
        description="Check baked weight files at load: sha256 (every byte) or size (when something stronger pins "
        "them: the Lambda image sets size, its digest covers the weights and its build checks the sha256s).",
    )
    lazy_vision: bool = Field(
        False,
        description="Load the vision tower on the first image, not at start (the API: queries are text-only).",
    )

    # --- index and storage ---------------------------------------------------------------------------
    qdrant_url: str | None = Field(
        None,
        validation_alias=AliasChoices("QDRANT_URL"),
        description="Qdrant server URL; unset = embedded index.",
    )
    qdrant_api_key: str | None = Field(
        None, validation_alias=AliasChoices("QDRANT_API_KEY"), description="Qdrant server API key."
    )
    qdrant_secret_arn: str | None = Field(
        None,
        validation_alias=AliasChoices("QDRANT_SECRET_ARN"),
        description='Secrets Manager secret (JSON {"url", "api_key"}) the Qdrant URL and key are read from when '
        "QDRANT_URL is unset (kept in memory, never written to the environment).",
    )
    secret_ttl_s: float = Field(
        300.0,
        gt=0,
        description="How long a value read from Secrets Manager is reused before it is read again.",
    )
    index_backend: Literal["edge", "local"] = Field(
        "edge", description="Embedded index engine: edge (qdrant-edge, Rust) or local (qdrant-client)."
    )
    index_path: Path = Field(Path(".docvision/qdrant"), description="Folder of the embedded index.")
    collection: str = Field("pages", description="Collection (one per model).")
    store: str = Field(
        ".docvision/store",
        description="Blob store for page images and results: a folder or s3://bucket/prefix.",
    )
    prefetch_limit: int | None = Field(
        None,
        ge=1,
        description="Candidates the rerank's first stage passes on: FDE candidates (default 300), or per pooled "
        "prefetch in collections built before the FDE plan (default 100).",
    )
    block_limit: int | None = Field(
        None,
        ge=1,
        description="Candidates the 2x4-block MaxSim passes to the full MaxSim (FDE plan; default 60).",
    )
    recall_target: float = Field(
        0.95,
        gt=0,
        le=1,
        description="Recall@10 (vs exhaustive MaxSim) that `engine index check` holds the search plan to.",
    )
    recall_check_queries: int = Field(
        50,
        ge=1,
        le=1000,
        description="Pseudo-queries `engine index check` (and ingest's check) samples from the collection.",
    )
    recall_check_growth: float = Field(
        2.0,
        ge=0,
        description="Ingest checks the plan's recall after optimize() when the collection has grown by this factor "
        "since the last check (0: never); the result goes to /health?deep=1 and the SearchRecallEstimate metric.",
    )
    recall_check_min_pages: int = Field(
        1000, ge=1, description="Ingest's recall check waits until the collection holds this many pages."
    )
    side_store: Literal["float16", "float32", "off"] = Field(
        "off",
        description="Embedded edge index: rerank in process (BLAS MaxSim) over a copy of the full multivectors "
        "stored as float16 or float32 (no cast per search, twice the disk), or off (rerank inside the shard).",
    )
    token_pool_factor: int = Field(
        1,
        ge=1,
        le=16,
        description="Hierarchical token pooling of each page's full multivector at index time (colpali-engine's "
        "pooler): 1 = off, k keeps about 1/k of the vectors. Recorded in the collection; another factor is refused. "
        "Unset: the model's storage plan picks it (engine/embedding/storage.py, DOCVISION_PAGE_BYTES_BUDGET).",
    )
    page_bytes_budget: int = Field(
        320 * 1024,
        ge=4096,
        description="Storage plan: float16 bytes a page's full multivector may take; when DOCVISION_TOKEN_POOL_FACTOR "
        "is unset, the smallest pool factor that fits is used (1 for every 128-d family; 3-4 for 320-d "
        "ColQwen3/3.5 pages).",
    )
    prefetch_query_tokens: int = Field(
        0,
        ge=0,
        description="Embedded edge index: the pooled-vector prefetch uses at most this many query-token centroids (0 = all tokens); the rerank always uses every token.",
    )

    # --- Lambda handlers (the template sets these) ---------------------------------------------------
    lambda_memory_mb: int | None = Field(
        None,
        validation_alias=AliasChoices("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
        description="The Lambda function's memory size (Lambda sets it): the embedding batch budget when "
        "DOCVISION_MEMORY_BUDGET_MB is unset.",
    )
    lambda_function_name: str | None = Field(
        None,
        validation_alias=AliasChoices("AWS_LAMBDA_FUNCTION_NAME"),
        description="This Lambda function's name (Lambda sets it): the API invokes itself for 202 extraction jobs.",
    )
    batch_array_index: str | None = Field(
        None,
        validation_alias=AliasChoices("AWS_BATCH_JOB_ARRAY_INDEX"),
        description="The shard of an AWS Batch array job's child (Batch sets it): backfill's --shard when not given.",
    )
    schemas_dir: Path | None = Field(
        None,
        description="Folder of stored schemas the API's schema_name picks from (default: the repository's schemas/).",
    )
    sync_max_pages: int = Field(
        4,
        description="POST /extract mode auto: documents up to this many pages answer 200, larger ones 202 + job id.",
    )
    api_max_image_pixels: int = Field(
        36_000_000, description="Largest image (width*height) the API decodes (A3 at 300 DPI)."
    )
    api_max_request_pixels: int = Field(
        100_000_000, description="Most pixels of all images of one API request together."
    )
    api_max_text_tokens: int = Field(
        1024, description="Most tokens (the model's tokenizer) of one query or text the API embeds."
    )
    api_key_prefixes: str = Field(
        "raw/",
        description="Comma-separated S3 key prefixes a caller may name as document.key (derived/ never, whatever this says).",
    )
    documents_bucket: str | None = Field(
        None, validation_alias=AliasChoices("DOCUMENTS_BUCKET"), description="Bucket of uploaded documents."
    )
    idempotency_table: str = Field(
        "docvision-idempotency",
        validation_alias=AliasChoices("IDEMPOTENCY_TABLE"),
        description="DynamoDB table of Powertools idempotency records (one per object version and pass).",
    )
    idempotency_ttl_s: int = Field(
        7 * 24 * 3600,
        validation_alias=AliasChoices("IDEMPOTENCY_TTL_S"),
        description="How long a finished ingest of one object version is remembered (duplicate deliveries).",
    )
    jobs_table: str = Field(
        "docvision-jobs",
        validation_alias=AliasChoices("JOBS_TABLE"),
        description="DynamoDB table of asynchronous extraction jobs (queued, running, done, failed).",
    )
    job_timeout_s: float = Field(
        960.0,
        description="A queued or running job older than this is reported failed (job_timeout): "
        "the API function's timeout plus a margin.",
    )
    ingest_queue_url: str | None = Field(
        None,
        validation_alias=AliasChoices("INGEST_QUEUE_URL"),
        description="SQS queue where ingest re-queues the rest of a document (continuations).",
    )
    ingest_dlq_url: str | None = Field(
        None,
        validation_alias=AliasChoices("INGEST_DLQ_URL"),
        description="SQS dead-letter queue for documents that can never be ingested (replayable as is).",
    )
    deadline_margin_s: float = Field(
        30.0,
        description="Seconds kept free before the Lambda timeout: ingest checkpoints and re-queues the rest.",
    )
    membership_table: str | None = Field(
        None,
        validation_alias=AliasChoices("MEMBERSHIP_TABLE", "DOCVISION_MEMBERSHIP_TABLE"),
        description="DynamoDB table of which source key holds which document (required with an s3:// store; "
        "a local store keeps it in SQLite beside the store).",
    )
    membership_lease_s: float = Field(
        3600.0,
        gt=0,
        description="How long others leave an unfinished ingest's claim alone (longer than an invocation).",
    )
    max_ingest_passes: int = Field(
        50,
        ge=1,
        description="Continuations of one object version before it goes to the DLQ (ingest_passes_exceeded).",
    )

    # --- extraction ----------------------------------------------------------------------------------
    llm_provider: str = Field(
        "openai-generic", description="LLM provider for extraction: openai-generic, anthropic or aws-bedrock."
    )
    llm_model: str | None = Field(None, description="LLM model id (required to extract).")
    llm_base_url: str | None = Field(
        None, description="Base URL of an OpenAI-compatible endpoint (openai-generic)."
    )
    llm_api_key: str | None = Field(
        None, description="API key for the LLM endpoint (anthropic also reads ANTHROPIC_API_KEY)."
    )
    llm_api_key_ref: str | None = Field(
        None,
        description="The primary client's key by reference instead: env:VARIABLE or secret:<Secrets Manager ARN or name>.",
    )
    llm_fallback: str | None = Field(
        None,
        description="Fallback clients, comma-separated provider|model|base_url|credential; each names its own credential (env:VAR or secret:ID), none inherits the primary's key.",
    )
    llm_timeout_s: float = Field(120.0, description="Timeout of one LLM request.")
    llm_debug: bool = Field(
        False,
        description="Log prompts and answers (BAML_LOG=info). Off by default: documents stay out of logs.",
    )
    extract_attempts: int = Field(
        3, description="Attempts per call when the answer does not parse or does not validate."
    )
    page_budget: int = Field(
        8, description="Most pages sent to the LLM; longer documents are narrowed by retrieval."
    )
    pages_per_call: int = Field(
        4, description="Pages per LLM call; more pages are split over calls and merged."
    )
    list_mode: Literal["auto", "whole", "paged"] = Field(
        "auto",
        description="paged: lists are extracted segment by segment and rows merged (no truncated long lists); whole: pages_per_call pages per call; auto: paged when the schema has a list and the pages need more than one call.",
    )
    list_segment_pages: int = Field(1, ge=1, description="Pages per call in paged mode.")
    list_segment_overlap: int = Field(
        0,
        ge=0,
        description="Pages shared by consecutive segments in paged mode (rows seen twice are merged).",
    )
    llm_image_max_side: int = Field(
        1568, description="Longest side in pixels of page images sent to the LLM."
    )
    cache_ttl_s: int = Field(
        30 * 24 * 3600, description="How long a cached extraction result is reused (seconds)."
    )
    prompt_version: str = Field(
        "extract-v1", description="Part of the cache key; bump when the prompt changes."
    )

    @field_validator("verify_weights", mode="before")
    @classmethod
    def _verify_bool(cls, value: object) -> object:  # the earlier boolean form: true = sha256, false = size
        text = str(value).strip().lower()
        older = {"true": "sha256", "1": "sha256", "yes": "sha256", "on": "sha256"}
        older |= {"false": "size", "0": "size", "no": "size", "off": "size"}
        return older.get(text, text)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def powertools_names() -> tuple[str, str]:
    """(service name, metrics namespace) from Powertools' own POWERTOOLS_SERVICE_NAME and
    POWERTOOLS_METRICS_NAMESPACE (the handlers' Logger/Tracer/Metrics are module objects, made at import)."""
    return (
        os.environ.get("POWERTOOLS_SERVICE_NAME", "docvision"),
        os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "DocVision"),
    )
