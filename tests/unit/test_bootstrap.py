"""engine.bootstrap: one wiring, nothing built before it is asked for; the use cases over fakes of the ports."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.bootstrap import Lazy, build
from engine.config import Settings
from engine.errors import NotFound
from engine.index import PageRecord
from engine.ports import BlobStore, Embedder, PageIndex
from engine.service import DocVision
from tests.fakes import FakeEmbedder, FakeIndex, MemoryStore

pytestmark = pytest.mark.unit


def test_lazy_builds_once_on_first_get() -> None:
    calls: list[int] = []

    def factory() -> int:
        calls.append(1)
        return len(calls)

    lazy = Lazy(factory)
    assert not lazy.loaded and lazy.peek() is None and calls == []
    assert lazy.get() == 1 and lazy.get() == 1 and calls == [1] and lazy.loaded
    lazy.set(7)
    assert lazy.get() == 7 and calls == [1]


def test_build_opens_nothing_and_reads_the_model_identity_from_the_manifest(tmp_path: Path) -> None:
    model = tmp_path / "baked"
    model.mkdir()
    (model / "manifest.json").write_text(json.dumps({"model_id": "m@rev+int8", "embedding_dim": 96}))
    services = build(Settings(model=str(model), index_path=tmp_path / "q", store=str(tmp_path / "s")))
    assert services.model_identity() == ("m@rev+int8", 96)
    for port in (services.embedder, services.index, services.store, services.jobs, services.membership):
        assert not port.loaded  # the model is never loaded to learn its id (health, index opening)
    assert not (tmp_path / "s").exists() and not (tmp_path / "q").exists()


def test_ports_given_are_used_as_they_are(tmp_path: Path) -> None:
    embedder, index, store = FakeEmbedder(), FakeIndex(), MemoryStore()
    # the fakes implement the ports (mypy checks these assignments)
    ports: tuple[Embedder, PageIndex, BlobStore] = (embedder, index, store)
    services = build(Settings(index_path=tmp_path / "q"), embedder=ports[0], index=ports[1], store=ports[2])
    assert (
        services.embedder.get() is embedder
        and services.index.get() is index
        and services.store.get() is store
    )
    assert services.model_identity() == ("fake-embedder", 16)


def _service_with_a_page() -> tuple[DocVision, FakeEmbedder, np.ndarray]:
    embedder, index, store = FakeEmbedder(), FakeIndex(), MemoryStore()
    dv = DocVision(services=build(Settings(), embedder=embedder, index=index, store=store))
    image = Image.new("RGB", (400, 300), "white")
    (page,) = embedder.embed_images([image])
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    store.put("pages/doc/00001.png", buf.getvalue())
    index.upsert([PageRecord("doc", 1, 1, page.vectors, page.grid, page.patch_offset, embedder.model_id,
                             image_key="pages/doc/00001.png", width=400, height=300)])  # fmt: skip
    return dv, embedder, page.vectors


def test_search_score_and_embed_are_typed_and_json_at_the_edge() -> None:
    dv, embedder, vectors = _service_with_a_page()
    found = dv.search("total weight", top_k=3)
    (q,) = embedder.embed_queries(["total weight"])
    expected = float((q @ vectors.T).max(axis=1).sum())
    assert [h.document_id for h in found.hits] == ["doc"] and found.hits[0].score == pytest.approx(expected)
    as_json = found.to_dict()
    assert as_json["hits"][0]["score"] == round(expected, 5) and set(as_json["timing_ms"]) == {
        "query_encode",
        "search",
    }
    scored = dv.score(["total weight"], pages=[{"document_id": "doc", "page_number": 1}])
    assert scored.scores.shape == (1, 1) and scored.to_dict()["pages"] == [
        {"document_id": "doc", "page_number": 1}
    ]
    emb = dv.embed_multivector(texts=["a b"]).to_dict()
    assert emb["queries"][0]["shape"] == [2, 16] and "images" not in emb
    with pytest.raises(NotFound, match="not in the index"):
        dv.page_vectors("doc", 2)


def test_similarity_map_contributions_sum_to_at_most_the_score() -> None:
    dv, _, _ = _service_with_a_page()
    smap = dv.similarity_map("total weight", "doc", 1)
    assert smap.grid == (3, 4) and len(smap.patches) == 12
    assert smap.patch_contribution_total <= smap.score + 1e-5
    assert max(p.box[2] for p in smap.patches) == 400 and max(p.box[3] for p in smap.patches) == 300
    as_json = smap.to_dict()
    assert as_json["grid"] == [3, 4] and as_json["patches"][0]["box"] == list(smap.patches[0].box)
    png = dv.render_heatmap(smap)
    assert Image.open(io.BytesIO(png)).size == (400, 300)


def test_health_never_loads_the_model(tmp_path: Path) -> None:
    model = tmp_path / "baked"
    model.mkdir()
    (model / "manifest.json").write_text(
        json.dumps({"model_id": "m", "embedding_dim": 16, "page_vectors": 12})
    )
    dv = DocVision(services=build(Settings(model=str(model)), index=FakeIndex(), store=MemoryStore()))
    info = dv.health()
    assert info["model"]["loaded"] is False and not dv.services.embedder.loaded
    assert info["index"]["reachable"] is True and info["model"]["storage_plan"]["pool_factor"] == 1


def test_dropping_the_services_frees_their_ports_at_once(tmp_path: Path) -> None:
    """No reference cycle through the factories: a CLI command that drops its DocVision closes the embedded
    index right away (its lock is per process: the next command of the same process opens it again)."""
    import gc
    import weakref

    gc.disable()
    try:
        dv = DocVision(services=build(Settings(store=str(tmp_path / "s"))))
        store = weakref.ref(dv.store)
        assert store() is not None
        del dv
        assert store() is None  # freed by reference counting, before any garbage collection
    finally:
        gc.enable()
