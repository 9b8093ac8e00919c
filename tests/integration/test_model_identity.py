"""The model id stored with every point comes from the baked manifest (what the weights are), never from
where the directory sits: a baked model moved, mounted elsewhere or baked again from another path opens
the same index; different weights do not."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.embedding import Embedder
from engine.errors import DocVisionError
from engine.index.base import PageRecord
from engine.index.edge import EdgeIndex
from models.bake import bake

pytestmark = pytest.mark.integration


def _untiny_source(tiny: Path, dest: Path) -> Path:
    """The tiny model as an ordinary local model (tiny models get a fixed test id instead)."""
    shutil.copytree(tiny, dest)
    (dest / "TINY_MODEL.json").unlink(missing_ok=True)
    return dest


def test_moved_baked_model_reopens_its_index(tiny_colqwen2: Path, tmp_path: Path, monkeypatch) -> None:
    source = _untiny_source(tiny_colqwen2, tmp_path / "src" / "my-model")
    baked = tmp_path / "first" / "baked"
    manifest = bake(str(source), baked)
    assert manifest["source"]["kind"] == "local"
    model_id = manifest["model_id"]
    assert model_id.startswith("colqwen2-sha256:") and model_id.endswith("+int8")
    assert str(tmp_path) not in model_id and "my-model" not in model_id

    emb = Embedder(str(baked), verify=True)
    assert emb.model_id == model_id
    page = emb.embed_images([Image.new("RGB", (200, 280), "white")])[0]
    index = EdgeIndex(tmp_path / "index", model_id=emb.model_id, dim=emb.dim)
    index.upsert([PageRecord("d" * 64, 1, 1, page.vectors, page.grid, page.patch_offset, emb.model_id)])
    index.close()

    # moved to another directory, opened from another working directory by a relative path
    moved = tmp_path / "mounted" / "elsewhere" / "model"
    moved.parent.mkdir(parents=True)
    shutil.move(baked, moved)
    monkeypatch.chdir(moved.parent)
    again = Embedder("model", verify=True)
    assert again.model_id == model_id
    reopened = EdgeIndex(tmp_path / "index", model_id=again.model_id, dim=again.dim)
    q = again.embed_queries(["total weight"])[0]
    assert reopened.count() == 1 and reopened.search(q, top_k=1)[0].document_id == "d" * 64
    reopened.close()

    # the same weights baked again from another path (another machine's layout) → the same id
    source2 = shutil.copytree(source, tmp_path / "other-machine" / "weights")
    torch.manual_seed(12345)  # (safetensors' header order once varied with the process's hash seed)
    assert bake(str(source2), tmp_path / "rebaked")["model_id"] == model_id

    # different weights → a different id, and the index refuses them instead of mixing embeddings
    other_src = _untiny_source(tiny_colqwen2, tmp_path / "src2" / "my-model")
    from safetensors.torch import load_file, save_file

    weights = next(other_src.glob("*.safetensors"))
    state = load_file(weights)
    name = next(k for k, t in state.items() if t.is_floating_point() and t.ndim == 2)
    state[name] = state[name] * 1.5
    save_file(state, weights, metadata={"format": "pt"})
    other = bake(str(other_src), tmp_path / "other-baked")
    assert other["model_id"] != model_id
    with pytest.raises(DocVisionError, match="model"):
        EdgeIndex(tmp_path / "index", model_id=other["model_id"], dim=emb.dim)


def test_model_id_of_manifests_baked_before_it_was_recorded(baked_tiny: Path, tmp_path: Path) -> None:
    """Images baked before the manifest carried model_id: derived the same way, never from a path."""
    from engine.embedding.baked import model_identity

    manifest = json.loads((baked_tiny / "manifest.json").read_text())
    assert model_identity(manifest) == "tiny-random-colqwen2"
    hub = {**manifest, "tiny_random": False, "source": {"id": "vidore/colqwen2-v1.0", "revision": "abc123"}}
    hub.pop("model_id", None)
    assert model_identity(hub) == "vidore/colqwen2-v1.0@abc123+int8"
    local = {**hub, "source": {"id": os.fspath(tmp_path / "x"), "revision": None, "kind": "local"}}
    assert model_identity(local) == f"colqwen2-sha256:{manifest['weights_digest'][:16]}+int8"
    del local["weights_digest"]  # baked before the digest was recorded: the weights file's sha256
    sha = manifest["files"]["model.safetensors"]["sha256"]
    assert model_identity(local) == f"colqwen2-sha256:{sha[:16]}+int8"
    assert np.char.find(model_identity(local), str(tmp_path)) == -1
