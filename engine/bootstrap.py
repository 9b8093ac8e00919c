"""The one wiring: ``build(settings) -> Services``, the ports this process uses, each built on first use.

The CLI, both Lambda handlers (through handlers.common) and the Batch backfill call ``build`` once per process
and hand the result to ``engine.service.DocVision`` (the use cases). Nothing is opened here: a port is built
the first time it is asked for (``Lazy.get``) and reused after (warm Lambda invocations), and whether it was
built is asked explicitly (``Lazy.loaded``: /health never loads the model). Tests hand in real embedded ports
or fakes (tests/fakes.py) through ``build(..., embedder=…, index=…)`` or ``Lazy.set``.

Where configuration comes from: ``Settings`` (engine/config.py) only; secrets through ``engine.secrets``
(the Qdrant URL and key from ``QDRANT_SECRET_ARN`` are merged into the Settings built here, never into
``os.environ``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from engine.config import Settings
from engine.ports import BlobStore, Embedder, JobStore, PageIndex
from engine.secrets import SecretReader, default_reader

if TYPE_CHECKING:
    from engine.embedding.storage import StoragePlan
    from engine.index.membership import Membership

T = TypeVar("T")


class Lazy(Generic[T]):
    """A port built by ``factory`` on the first ``get()`` and the same object after."""

    __slots__ = ("_factory", "_value", "_loaded")

    def __init__(self, factory: Callable[[], T], value: T | None = None) -> None:
        self._factory = factory
        self._value = value
        self._loaded = value is not None

    @property
    def loaded(self) -> bool:
        return self._loaded

    def get(self) -> T:
        if not self._loaded:
            self._value = self._factory()
            self._loaded = True
        return self._value  # type: ignore[return-value]

    def peek(self) -> T | None:
        """The port if it was built, else None (never builds it)."""
        return self._value if self._loaded else None

    def set_unloaded(self) -> None:
        """Forget the built port (after closing it): the next get() builds a new one."""
        self._value, self._loaded = None, False

    def set(self, value: T) -> None:
        """Put a port in (a test's counting embedder around the real one)."""
        self._value, self._loaded = value, True


class DocumentStores:
    """Where uploaded documents are read from: one blob store per bucket, created on first use and reused."""

    def __init__(self, s3_client: Any = None) -> None:
        self._s3_client = s3_client
        self._stores: dict[str, BlobStore] = {}

    def __call__(self, bucket: str) -> BlobStore:
        if bucket not in self._stores:
            from engine.storage import open_store

            self._stores[bucket] = open_store(f"s3://{bucket}", self._s3_client)
        return self._stores[bucket]


@dataclass(frozen=True)
class Services:
    """The ports of one process. Fields are Lazy: ``services.index.get()`` opens the index on first use."""

    settings: Settings
    embedder: Lazy[Embedder]
    storage_plan: Lazy[StoragePlan]
    index: Lazy[PageIndex]
    store: Lazy[BlobStore]
    jobs: Lazy[JobStore]
    membership: Lazy[Membership]
    documents: DocumentStores
    secrets: SecretReader
    # the boto3 S3 client that s3:// stores and the backfill use (untyped third-party; None: boto3's default)
    s3_client: Any = None

    def close(self) -> None:
        """Release what holds the process's resources: the embedded index's lock and files (a CLI command that
        ends, or a test, may open the same path again in this process)."""
        index = self.index.peek()
        if index is not None:
            index.close()
            self.index.set_unloaded()

    def model_identity(self) -> tuple[str, int]:
        """(model id, embedding dim) without loading the model when it is baked (its manifest says both)."""
        return model_identity(self.settings, self.embedder)


def model_identity(settings: Settings, embedder: Lazy[Embedder]) -> tuple[str, int]:
    if not embedder.loaded:
        from engine.embedding.manifest import baked_identity

        known = baked_identity(settings.model)
        if known:
            return known
    model = embedder.get()
    return model.model_id, model.dim


def with_secrets(settings: Settings, secrets: SecretReader) -> Settings:
    """Settings with the Qdrant URL and key of ``QDRANT_SECRET_ARN`` (Secrets Manager JSON {"url", "api_key"})
    when no QDRANT_URL is set; the values stay in this Settings object, never in the environment."""
    if not settings.qdrant_secret_arn or settings.qdrant_url:
        return settings
    secret = secrets.get_json(settings.qdrant_secret_arn, what="Qdrant connection")
    update: dict[str, object] = {"qdrant_url": secret["url"]}
    if secret.get("api_key"):
        update["qdrant_api_key"] = secret["api_key"]
    return settings.model_copy(update=update)


def build(
    settings: Settings | None = None,
    *,
    embedder: Embedder | None = None,
    index: PageIndex | None = None,
    store: BlobStore | None = None,
    jobs: JobStore | None = None,
    s3_client: Any = None,
    secrets: SecretReader | None = None,
) -> Services:
    """The ports from Settings; any port given is used as is (tests, the CLI's extraction output store)."""
    s = settings or Settings()
    secrets = secrets or default_reader(s.secret_ttl_s)
    s = with_secrets(s, secrets)
    # The factories capture the Lazy ports they need, never `services`: no reference cycle, so a process that
    # drops its Services (a CLI command) closes the embedded index at once, as before (its lock is per process).

    def make_embedder() -> Embedder:
        from engine.embedding import Embedder as ModelEmbedder

        return ModelEmbedder(s.model, family=s.model_family, compute_mode=s.compute, backend=s.embed_backend, speedups=s.speedups, fp8_layers=s.fp8_layers,
                             threads=s.threads, verify=s.verify_weights, max_visual_tokens=s.max_visual_tokens,
                             memory_budget=s.memory_budget_mb or s.lambda_memory_mb, max_batch_size=s.max_batch_size,
                             lazy_vision=s.lazy_vision)  # fmt: skip

    def make_storage_plan() -> StoragePlan:
        """The collection's storage plan: DOCVISION_TOKEN_POOL_FACTOR when set, else the smallest pool factor
        that keeps the model's page under DOCVISION_PAGE_BYTES_BUDGET (from the baked manifest's page_vectors,
        without loading the model; a model that is not baked is asked)."""
        from engine.embedding.manifest import baked_page_vectors
        from engine.embedding.storage import count_page_vectors, plan_storage

        explicit = s.token_pool_factor if "token_pool_factor" in s.model_fields_set else None
        _, dim = model_identity(s, embedder_port)
        vectors = None if embedder_port.loaded else baked_page_vectors(s.model)
        if vectors is None:
            processor = getattr(embedder_port.get(), "processor", None)
            vectors = count_page_vectors(processor) if processor is not None else 0
        return plan_storage(vectors, dim, pool_factor=explicit, budget_bytes=s.page_bytes_budget)

    def make_index() -> PageIndex:
        from engine.index import open_index

        model_id, dim = model_identity(s, embedder_port)
        return open_index(model_id, dim, s, token_pool_factor=plan_port.get().pool_factor)

    def make_store() -> BlobStore:
        from engine.storage import open_store

        return open_store(s.store, s3_client)

    def make_jobs() -> JobStore:
        from engine.jobs import DynamoJobStore

        return DynamoJobStore(s.jobs_table, outcomes=store_port.get())

    def make_membership() -> Membership:
        from engine.ingest import open_membership

        return open_membership(index_port.get(), store_port.get(), s)

    embedder_port: Lazy[Embedder] = Lazy(make_embedder, embedder)
    plan_port: Lazy[StoragePlan] = Lazy(make_storage_plan)
    index_port: Lazy[PageIndex] = Lazy(make_index, index)
    store_port: Lazy[BlobStore] = Lazy(make_store, store)
    return Services(
        settings=s,
        embedder=embedder_port,
        storage_plan=plan_port,
        index=index_port,
        store=store_port,
        jobs=Lazy(make_jobs, jobs),
        membership=Lazy(make_membership),
        documents=DocumentStores(s3_client),
        secrets=secrets,
        s3_client=s3_client,
    )
