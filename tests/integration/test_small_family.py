"""The small families (ColSmol = ColIdefics3, ColModernVBert) through the same registry, bake, Embedder and
index as ColQwen2, on tiny random-weight builds: a page is tiles + a global view, not one patch grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pymupdf
import pytest

from engine.config import Settings
from engine.embedding import Embedder, detect_family
from engine.errors import ConfigError, ModelMismatch, TokenBudgetMismatch
from engine.service import DocVision
from tests.fixtures.documents import text_image
from tests.tolerances import norm_atol

pytestmark = pytest.mark.integration
LETTER = (850, 1100)  # a US-letter page at 100 DPI
# family → (tiny fixture, baked fixture, a hub id, the 128-d projection's weight)
SMALL = {
    "colidefics3": ("tiny_colidefics3", "baked_colsmol", "vidore/colSmol-256M", "linear.weight"),
    "colmodernvbert": (
        "tiny_colmodernvbert", "baked_colmodernvbert", "ModernVBERT/colmodernvbert", "custom_text_proj.weight",
    ),
}  # fmt: skip


@pytest.fixture(params=sorted(SMALL))
def small(request: pytest.FixtureRequest) -> tuple[str, Path, Path]:
    """(family, tiny model dir, baked dir) of each small family."""
    tiny, baked, _, _ = SMALL[request.param]
    return request.param, request.getfixturevalue(tiny), request.getfixturevalue(baked)


def test_tiny_build_and_bake_go_through_the_registry(small: tuple[str, Path, Path]) -> None:
    from engine.embedding import FAMILIES

    family, tiny, baked = small
    assert detect_family(str(tiny)).name == family  # config.json model_type
    assert detect_family(str(baked)).name == family  # manifest.json
    assert detect_family(SMALL[family][2]).name == family
    manifest = json.loads((baked / "manifest.json").read_text())
    assert manifest["family"] == family and manifest["model_class"] == FAMILIES[family].model_class
    assert manifest["tiny_random"] is True and manifest["int8_fraction"] > 0.5
    from safetensors import safe_open

    from engine.embedding.baked import MIN_QUANT_NUMEL

    with safe_open(baked / "model.safetensors", "pt") as f:
        kinds = {k: (f.get_slice(k).get_dtype(), f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    int8 = {k for k, (dtype, _) in kinds.items() if dtype == "I8"}
    assert SMALL[family][3] in int8 and any(".connector." in k for k in int8)
    assert all(k + "_scale" in kinds for k in int8)
    # every large matrix (decoder, connector, projection; the vision tower at full size) is stored int8
    large = {
        k for k, (_, shape) in kinds.items() if len(shape) == 2 and shape[0] * shape[1] >= MIN_QUANT_NUMEL
    }
    assert large and large == int8


def test_page_and_query_embeddings(small: tuple[str, Path, Path]) -> None:
    family, _, baked = small
    emb = Embedder(str(baked))
    assert emb.family.name == family and emb.describe()["baked"] is True
    portrait, landscape = text_image(LETTER, "INVOICE 1001"), text_image(LETTER[::-1], "PACKING LIST")
    pages = emb.embed_images([portrait, landscape])
    image_id = emb.model.config.image_token_id
    for page, img in zip(pages, (portrait, landscape), strict=True):
        assert page.grid is None and page.vectors.shape[1] == 128 and page.vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(page.vectors, axis=1), 1.0, atol=norm_atol(emb))
        # tiles + global view, each 16 image tokens (tiny): what visual_tokens() predicts for batch sizing
        batch = emb.processor.process_images([img])
        assert int((batch["input_ids"][0] == image_id).sum()) == emb.visual_tokens(*img.size) == 80
        with pytest.raises(ValueError, match="no single patch grid"):
            _ = page.patches
    queries = emb.embed_queries(["total weight", "consignee address"])
    assert all(q.shape[1] == 128 for q in queries)
    scores = emb.score(queries, [p.vectors for p in pages])
    assert scores.shape == (2, 2) and np.isfinite(scores).all()
    # the int8 bake stays close to the fp32 weights it came from
    ref = Embedder(str(baked), compute_mode="fp32").embed_images([portrait])[0].vectors
    assert float((ref * pages[0].vectors).sum(-1).mean()) > 0.99


def test_token_budget_picks_fewer_tiles_and_is_recorded(small: tuple[str, Path, Path]) -> None:
    _, _, baked = small
    page = [text_image(LETTER, "INVOICE 1001")]
    full = Embedder(str(baked))
    one_tile = Embedder(str(baked), max_visual_tokens=40)  # < (2² + 1) × 16: one 64-px tile
    assert one_tile.model_id == full.model_id + "#tokens=40" and one_tile.visual_token_budget == 40
    n_full, n_small = (len(e.embed_images(page)[0].vectors) for e in (full, one_tile))
    image_id = full.model.config.image_token_id
    n_image = int((one_tile.processor.process_images(page)["input_ids"][0] == image_id).sum())
    assert n_image == one_tile.visual_tokens(*LETTER) == 16 and n_small < n_full - 64  # and the tile tags
    with pytest.raises(ConfigError, match="below one tile"):
        Embedder(str(baked), max_visual_tokens=8)


def _colour_pages(path: Path) -> Path:
    """Three pages that look different even at the tiny model's 128 pixels."""
    doc = pymupdf.open()
    for i, colour in enumerate([(0.9, 0.1, 0.1), (0.1, 0.6, 0.1), (0.1, 0.1, 0.9)]):
        p = doc.new_page(width=612, height=792)
        p.draw_rect(
            pymupdf.Rect(50 + 150 * i, 80 + 200 * i, 350 + 100 * i, 400 + 150 * i), color=colour, fill=colour
        )
        p.insert_text((72, 60), f"Section {i + 1}", fontsize=28)
    doc.save(path)
    return path


@pytest.mark.slow
def test_ingest_search_and_collection_refuses_other_models(
    baked_colsmol: Path, baked_tiny: Path, tmp_path: Path
) -> None:
    settings = Settings(index_path=tmp_path / "qdrant", store=str(tmp_path / "store"), max_batch_size=2)
    service = DocVision(settings, embedder=Embedder(str(baked_colsmol)))
    r = service.ingest(_colour_pages(tmp_path / "colours.pdf"))
    assert (r.page_count, r.pages_embedded, r.complete) == (3, 3, True)
    found = service.search("total weight", top_k=3).to_dict()
    assert found["model_id"] == service.embedder.model_id and len(found["hits"]) == 3
    assert {h["model_id"] for h in found["hits"]} == {service.embedder.model_id}
    assert all(h["grid_rows"] is None for h in found["hits"])
    # each page's own image tokens find that page first, through the prefetch (chunk-pooled) and the rerank
    for page in (1, 2, 3):
        stored = service.page_vectors(r.document_id, page)
        payload, vectors = stored.payload, stored.vectors
        hits = service.index.search(vectors[payload["patch_offset"] :][:40], top_k=3, mode="rerank")
        assert hits[0].page_number == page
    service.index.close()
    with pytest.raises(ModelMismatch, match="model") as other:
        _ = DocVision(settings, embedder=Embedder(str(baked_tiny))).index  # ColQwen2 on a ColSmol collection
    assert other.value.code == "model_mismatch"
    with pytest.raises(TokenBudgetMismatch):
        _ = DocVision(settings, embedder=Embedder(str(baked_colsmol), max_visual_tokens=16)).index
    reopened = DocVision(settings, embedder=Embedder(str(baked_colsmol)))
    assert reopened.index.count(r.document_id) == 3
