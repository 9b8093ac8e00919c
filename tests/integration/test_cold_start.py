"""Cold start: handlers import no torch, /health loads no model, only the model family in use is imported,
and a lazy-vision embedder (the API) answers queries exactly like an eager one and loads the vision tower
on the first image. Timings are in bench/coldstart.py, not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.tolerances import same_model_atol

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _probe(code: str, **env: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(REPO), **env},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_handler_modules_import_no_torch() -> None:
    got = _probe(
        "import json, sys, handlers.api, handlers.ingest, engine.embedding, engine.embedding.manifest;"
        "print(json.dumps(sorted(m for m in ('torch', 'transformers', 'colpali_engine') if m in sys.modules)))"
    )
    assert got == []


def test_health_loads_no_model(baked_tiny: Path, tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from engine.config import Settings\n"
        "from engine.service import DocVision\n"
        "dv = DocVision(Settings())\n"
        "h = dv.health()\n"
        "print(json.dumps({'health': h['model'], 'reachable': h['index']['reachable'],"
        " 'torch': 'torch' in sys.modules, 'loaded': dv.services.embedder.loaded}))\n"
    )
    got = _probe(code, DOCVISION_MODEL=str(baked_tiny), DOCVISION_INDEX_PATH=str(tmp_path / "q"))
    assert got["health"]["model_id"] == "tiny-random-colqwen2" and got["health"]["loaded"] is False
    assert got["reachable"] and not got["torch"] and not got["loaded"]


@pytest.mark.slow
def test_only_the_family_in_use_is_imported(baked_tiny: Path) -> None:
    code = (
        "import json, sys\n"
        "from engine.embedding import Embedder\n"
        f"e = Embedder({str(baked_tiny)!r})\n"
        "mods = sorted({m.split('.')[2] for m in sys.modules if m.startswith('colpali_engine.models.')})\n"
        "print(json.dumps(mods))\n"
    )
    assert _probe(code) == ["qwen2"]  # not gemma3, idefics3, modernvbert, paligemma, qwen2_5, qwen3, …
    # whoever asks for the whole package later still gets it, with the same classes
    code = (
        "import json\n"
        "from engine.embedding.families import FAMILIES\n"
        "cls, _ = FAMILIES['colqwen2'].classes()\n"
        "from colpali_engine.models import ColQwen2, ColPali\n"
        "import colpali_engine\n"
        "print(json.dumps([cls is ColQwen2, colpali_engine.ColQwen2 is cls, ColPali.__name__]))\n"
    )
    assert _probe(code) == [True, True, "ColPali"]


def _page() -> Image.Image:
    img = Image.new("RGB", (280, 360), "white")
    ImageDraw.Draw(img).text((20, 40), "TOTAL WEIGHT 1234 kg", fill="black")
    return img


def test_lazy_vision_matches_eager(baked_tiny: Path) -> None:
    from engine.embedding import Embedder

    eager = Embedder(str(baked_tiny))
    lazy = Embedder(str(baked_tiny), lazy_vision=True)
    assert eager.describe()["vision"] == "loaded" and lazy.describe()["vision"] == "deferred"
    visual = dict(lazy.model.named_parameters())
    assert any(n.startswith("visual.") for n in visual)
    queries = ["total weight", "invoice number"]
    for a, b in zip(eager.embed_queries(queries), lazy.embed_queries(queries), strict=True):
        np.testing.assert_array_equal(a, b)
    assert lazy.describe()["vision"] == "deferred"  # queries never load the tower
    pe, pl = eager.embed_images([_page()])[0], lazy.embed_images([_page()])[0]
    assert lazy.describe()["vision"] == "loaded" and lazy.vision_load_seconds is not None
    np.testing.assert_allclose(pe.vectors, pl.vectors, rtol=0, atol=same_model_atol(eager))
    assert pe.grid == pl.grid and pe.patch_offset == pl.patch_offset
    # every parameter now equals the eager model's (nothing left as a placeholder)
    eager_state = eager.model.state_dict()
    for name, tensor in lazy.model.state_dict().items():
        if isinstance(tensor, __import__("torch").Tensor) and tensor.is_floating_point():
            assert __import__("torch").equal(tensor, eager_state[name]), name


def test_lazy_vision_is_refused_for_patches_that_move_weights(baked_tiny: Path) -> None:
    from engine.embedding import Embedder

    emb = Embedder(str(baked_tiny), lazy_vision=True, speedups="prepacked_linear")
    assert emb.describe()["vision"] == "loaded"
