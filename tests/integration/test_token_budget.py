"""Visual-token budget profiles (DOCVISION_MAX_VISUAL_TOKENS): fewer tokens per page, recorded with every
page and in the collection; one collection never mixes budgets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.config import Settings
from engine.embedding import Embedder
from engine.errors import ModelMismatch, TokenBudgetMismatch
from engine.index import PageRecord, open_index
from engine.index.base import check_model, split_token_budget, with_token_budget
from tests.fixtures.documents import text_image

pytestmark = pytest.mark.integration


def test_budget_is_part_of_the_model_id() -> None:
    assert with_token_budget("vidore/colqwen2-v1.0@abc", 384) == "vidore/colqwen2-v1.0@abc#tokens=384"
    assert with_token_budget("m#tokens=384", 256) == "m#tokens=256"
    assert split_token_budget("m#tokens=384") == ("m", 384)
    assert split_token_budget("m") == ("m", None)


def test_mixing_budgets_is_a_typed_error_and_other_models_stay_model_mismatch() -> None:
    with pytest.raises(TokenBudgetMismatch, match="384 visual tokens per page.*default") as err:
        check_model("m#tokens=384", 128, "m", 128, "coll")
    assert err.value.code == "token_budget_mismatch" and isinstance(err.value, ModelMismatch)
    with pytest.raises(TokenBudgetMismatch, match="256"):
        check_model("m", 128, "m#tokens=256", 128, "coll")
    with pytest.raises(ModelMismatch) as other:
        check_model("m1#tokens=256", 128, "m2#tokens=256", 128, "coll")
    assert other.value.code == "model_mismatch"
    check_model("m#tokens=256", 128, "m#tokens=256", 128, "coll")  # same budget: fine


def test_embedder_budget_cuts_tokens_and_is_recorded(baked_tiny: Path) -> None:
    page = [text_image((850, 1100), "INVOICE 1001")]
    full = Embedder(str(baked_tiny))
    small = Embedder(str(baked_tiny), max_visual_tokens=16)
    assert small.visual_token_budget == 16 and full.visual_token_budget is None
    assert small.model_id == full.model_id + "#tokens=16"
    assert small.describe()["visual_token_budget"] == 16
    n_full, n_small = (e.embed_images(page)[0].grid for e in (full, small))
    assert n_full and n_small and n_small[0] * n_small[1] <= 16 < n_full[0] * n_full[1]
    assert small.visual_tokens(850, 1100) == n_small[0] * n_small[1]


@pytest.mark.parametrize("backend", ["edge", "local"])
def test_collection_refuses_another_budget(tmp_path: Path, backend: str) -> None:
    settings = Settings(index_backend=backend, index_path=tmp_path / "q")
    rng = np.random.default_rng(0)
    v = rng.normal(size=(6 + 4 * 5, 128)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    index = open_index("m#tokens=384", 128, settings)
    index.upsert([PageRecord("d1", 1, 1, v, (4, 5), 6, "m#tokens=384")])
    hit = index.search(v[6:10], top_k=1, mode="exact")[0]
    assert hit.payload["visual_token_budget"] == 384 and hit.payload["model_id"] == "m#tokens=384"
    index.close()
    with pytest.raises(TokenBudgetMismatch, match="DOCVISION_MAX_VISUAL_TOKENS"):
        open_index("m", 128, settings)
    open_index("m#tokens=384", 128, settings).close()
