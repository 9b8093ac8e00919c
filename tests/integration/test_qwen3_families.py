"""ColQwen3 (Qwen3-VL) and ColQwen3.5 (Qwen3.5) through the registry, bake, Embedder, index and service on
tiny random-weight builds: 320-d vectors (and any other width), 32-px visual tokens, and the storage plan
that pools a page's full multivector under the byte budget, recorded in the collection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pymupdf
import pytest

from engine.config import Settings
from engine.embedding import Embedder, detect_family
from engine.embedding.storage import count_page_vectors
from engine.errors import ModelMismatch, TokenPoolMismatch
from engine.service import DocVision
from tests.fixtures.documents import text_image
from tests.tolerances import norm_atol

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LETTER = (850, 1100)
# family → (tiny fixture, baked fixture, a hub id)
QWEN3 = {
    "colqwen3": ("tiny_colqwen3", "baked_colqwen3", "TomoroAI/tomoro-colqwen3-embed-4b"),
    "colqwen3.5": ("tiny_colqwen3_5", "baked_colqwen3_5", "someone/VultronRetriever-Flash-0.8B"),
}


@pytest.fixture(params=sorted(QWEN3))
def fam(request: pytest.FixtureRequest) -> tuple[str, Path, Path]:
    tiny, baked, _ = QWEN3[request.param]
    return request.param, request.getfixturevalue(tiny), request.getfixturevalue(baked)


def test_registry_bake_and_manifest(fam: tuple[str, Path, Path]) -> None:
    family, tiny, baked = fam
    assert detect_family(str(tiny)).name == family  # config.json model_type (qwen3_vl / qwen3_5)
    assert detect_family(str(baked)).name == family  # manifest.json
    assert detect_family(QWEN3[family][2]).name == family  # hub id, as models.bake gets it
    assert detect_family("vidore/colqwen2-v1.0").name == "colqwen2"  # the longer hint does not steal it
    manifest = json.loads((baked / "manifest.json").read_text())
    assert manifest["family"] == family and manifest["embedding_dim"] == 320
    assert manifest["int8_fraction"] > 0.5
    emb = Embedder(str(baked))
    assert manifest["page_vectors"] == count_page_vectors(emb.processor) > 0
    from safetensors import safe_open

    with safe_open(baked / "model.safetensors", "pt") as f:
        int8 = {k for k in f.keys() if f.get_slice(k).get_dtype() == "I8"}  # noqa: SIM118
    assert "custom_text_proj.weight" in int8 and any(k.startswith("language_model.") for k in int8)
    assert any(k.startswith("visual.") for k in int8)


def test_pages_and_queries_are_320d_on_a_32px_grid(fam: tuple[str, Path, Path]) -> None:
    family, _, baked = fam
    emb = Embedder(str(baked))
    assert emb.family.name == family and emb.dim == 320 and emb.speedups == []  # untuned: stock forward
    portrait, landscape = text_image(LETTER, "INVOICE 1001"), text_image(LETTER[::-1], "PACKING LIST")
    pages = emb.embed_images([portrait, landscape])
    image_id = emb.model.config.image_token_id
    for page, img in zip(pages, (portrait, landscape), strict=True):
        assert page.vectors.shape[1] == 320 and page.vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(page.vectors, axis=1), 1.0, atol=norm_atol(emb))
        n_image = int((emb.processor.process_images([img])["input_ids"][0] == image_id).sum())
        rows, cols = page.grid  # type: ignore[misc]
        # 16-px patches merged 2x2: 32 px a token (a 28-px assumption would count other numbers)
        assert rows * cols == n_image == emb.visual_tokens(*img.size) and page.patches.shape == (
            rows,
            cols,
            320,
        )
    assert pages[0].grid == pages[1].grid[::-1]  # type: ignore[index]
    queries = emb.embed_queries(["total weight", "consignee address"])
    assert all(q.shape[1] == 320 for q in queries)
    assert emb.score(queries, [p.vectors for p in pages]).shape == (2, 2)
    ref = Embedder(str(baked), compute_mode="fp32").embed_images([portrait])[0].vectors
    int8 = Embedder(str(baked), compute_mode="int8").embed_images([portrait])[0].vectors
    assert float((ref * int8).sum(-1).min()) > 0.99  # the int8 path stays close to fp32, token by token
    small = Embedder(str(baked), max_visual_tokens=24)
    assert small.visual_tokens(*LETTER) <= 24 < emb.visual_tokens(*LETTER)
    r, c = small.embed_images([portrait])[0].grid  # type: ignore[misc]
    assert r * c == small.visual_tokens(*LETTER) and small.model_id.endswith("#tokens=24")


def test_any_vector_width(tmp_path: Path) -> None:
    """ColQwen3.5 reads its head width from config.dim: a 96-d build embeds, bakes and indexes as 96-d."""
    from models.bake import bake
    from models.tiny import build_colqwen3_5

    baked = tmp_path / "baked"
    bake(str(build_colqwen3_5(tmp_path / "tiny", dim=96)), baked)
    service = DocVision(
        Settings(index_path=tmp_path / "q", store=str(tmp_path / "s")), embedder=Embedder(str(baked))
    )
    assert service.embedder.dim == 96 and service.model_identity()[1] == 96
    r = service.ingest(_pages(tmp_path / "p.pdf", 2))
    hits = service.search("Section 1", top_k=2).hits
    assert r.pages_embedded == 2 and len(hits) == 2
    stored = service.page_vectors(r.document_id, 1).vectors
    assert stored.shape[1] == 96


def _pages(path: Path, n: int = 3) -> Path:
    doc = pymupdf.open()
    for i in range(n):
        p = doc.new_page(width=612, height=792)
        colour = [(0.9, 0.1, 0.1), (0.1, 0.6, 0.1), (0.1, 0.1, 0.9)][i % 3]
        p.draw_rect(
            pymupdf.Rect(50 + 150 * i, 80 + 200 * i, 350 + 100 * i, 400 + 150 * i), color=colour, fill=colour
        )
        p.insert_text((72, 60), f"Section {i + 1}", fontsize=28)
    doc.save(path)
    return path


@pytest.mark.parametrize("backend", ["edge", "local"])
def test_ingest_search_score_with_a_storage_plan(
    backend: str, baked_colqwen3_5: Path, baked_colqwen3: Path, baked_tiny: Path, tmp_path: Path
) -> None:
    # a budget below the tiny page's 79 x 320 x 2 bytes: the plan must pool (as a 1,792 x 320 page is)
    budget = 20 * 1024
    settings = Settings(index_backend=backend, index_path=tmp_path / "q", store=str(tmp_path / "s"),
                        page_bytes_budget=budget, max_batch_size=2)  # fmt: skip
    service = DocVision(settings)
    service.services.embedder.set(Embedder(str(baked_colqwen3_5)))
    plan = service.storage_plan
    n = service.embedder.embed_images([text_image(LETTER, "x")])[0].vectors.shape[0]
    assert plan.page_vectors == n and plan.pool_factor == -(-n * 320 * 2 // budget) > 1
    assert plan.bytes_per_page["full"] <= budget and plan.chosen == "budget"
    r = service.ingest(_pages(tmp_path / "colours.pdf"))
    assert (r.page_count, r.pages_embedded, r.complete) == (3, 3, True)
    page = service.page_vectors(r.document_id, 2)
    payload, stored = page.payload, page.vectors
    assert payload["token_pool_factor"] == plan.pool_factor and stored.shape == (plan.stored_vectors, 320)
    found = service.search("Section 2", top_k=3).to_dict()
    assert len(found["hits"]) == 3 and {h["model_id"] for h in found["hits"]} == {service.embedder.model_id}
    assert service.health()["model"]["storage_plan"]["pool_factor"] == plan.pool_factor
    # each page's own image tokens find that page first through the whole fde1 plan
    for page in (1, 2, 3):
        full = service.embedder.embed_images([_render(tmp_path / "colours.pdf", page)])[0]
        hits = service.index.search(full.vectors[full.patch_offset :][:24], top_k=3, mode="rerank")
        assert hits[0].page_number == page
    scores = service.score(["Section 1"], pages=[{"document_id": r.document_id, "page_number": 1}])
    assert np.isfinite(scores.scores).all()
    service.index.close()
    # the collection holds this model at this plan: another model, or another factor, is refused
    for other in (baked_colqwen3, baked_tiny):
        with pytest.raises(ModelMismatch):
            _ = DocVision(settings, embedder=Embedder(str(other))).index
    with pytest.raises(TokenPoolMismatch):
        _ = DocVision(
            settings.model_copy(update={"token_pool_factor": 1}), embedder=Embedder(str(baked_colqwen3_5))
        ).index
    # the same model from its manifest alone (no model load) reopens the collection at the recorded plan
    again = DocVision(settings.model_copy(update={"model": str(baked_colqwen3_5)}))
    assert again.storage_plan.pool_factor == plan.pool_factor and not again.services.embedder.loaded
    assert again.index.count(r.document_id) == 3
    again.index.close()


def _render(pdf: Path, page: int):
    from PIL import Image

    pix = pymupdf.open(pdf)[page - 1].get_pixmap(dpi=300)
    return Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
