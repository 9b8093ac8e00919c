"""The per-model storage plan (engine/embedding/storage.py) and the `engine models` listing: pure arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.embedding.catalog import catalog, table
from engine.embedding.families import FAMILIES
from engine.embedding.storage import PAGE_BUDGET_BYTES, page_bytes, plan_storage


def test_a_1792_by_320_page_fits_the_budget_by_pooling() -> None:
    plan = plan_storage(1792, 320)
    unpooled = 1792 * 320 * 2
    assert unpooled > 3 * PAGE_BUDGET_BYTES  # 1.1 MiB: what has to be planned
    assert plan.pool_factor == 4 and plan.stored_vectors == 448 and plan.chosen == "budget"
    assert plan.bytes_per_page["full"] == 448 * 320 * 2 <= PAGE_BUDGET_BYTES
    # the smallest factor that fits: one less does not
    assert page_bytes(1792, 320, plan.pool_factor - 1)["full"] > PAGE_BUDGET_BYTES
    parts = plan.bytes_per_page
    assert parts["total"] == parts["full"] + parts["blocks"] + parts["fde"] + parts["mean"]


def test_every_128d_family_stays_unpooled_and_a_setting_wins() -> None:
    for name in ("colqwen2", "colpali", "colidefics3"):
        f = FAMILIES[name]
        assert plan_storage(f.page_vectors, f.dim).pool_factor == 1, name
    explicit = plan_storage(1792, 320, pool_factor=2)
    assert explicit.pool_factor == 2 and explicit.chosen == "setting" and explicit.stored_vectors == 896
    assert plan_storage(10_000_000, 320).pool_factor == 16  # capped at the setting's bound
    with pytest.raises(ValueError):
        plan_storage(10, 0)


def test_models_listing_names_every_family(tmp_path: Path) -> None:
    costs = tmp_path / "models-cost.json"
    costs.write_text(json.dumps({"rows": [{"family": "colqwen3.5", "s_per_page": 1.5, "where": "(here)"}]}))
    rows = {r["family"]: r for r in catalog(costs_path=costs)}
    assert set(rows) == set(FAMILIES)
    assert rows["colqwen2"]["default"] and not rows["colqwen3.5"]["default"]
    assert rows["colqwen3.5"]["dim"] == 320 and rows["colqwen3.5"]["vectors_per_page"] == 1792
    assert rows["colqwen3.5"]["license"] == "Apache-2.0" and rows["colqwen3"]["pool_factor"] == 3
    text = table(list(rows.values()))
    assert "1.5 s/page (here)" in text and "not measured" in text
    assert catalog(costs_path=tmp_path / "absent.json")[0]["measured"] == []
