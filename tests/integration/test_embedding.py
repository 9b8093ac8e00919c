"""Embedding engine on the tiny random-weight models: loading, baking, registry, fidelity, scoring, batching."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.embedding import Embedder, compute, detect_family, score_multi_vector
from engine.errors import ConfigError, ModelIntegrityError
from tests.fixtures.documents import text_image
from tests.tolerances import norm_atol

pytestmark = pytest.mark.integration


def pages(n: int = 6) -> list[Image.Image]:
    colours = ["white", "red", "navy", "yellow", "green", "grey", "black", "orange"]
    out = []
    for i in range(n):
        img = text_image(size=(850 + 40 * i, 1100), text=f"PAGE {i} {'X' * i}")
        img.paste(Image.new("RGB", (300, 200 + 30 * i), colours[i % len(colours)]), (100, 400))
        out.append(img)
    return out


QUERIES = ["total weight", "consignee address", "invoice number", "port of loading"]


# ------------------------------------------------------------------------------------------- registry
@pytest.mark.parametrize(
    ("source", "family"),
    [
        ("vidore/colqwen2-v1.0", "colqwen2"),
        ("vidore/colqwen2.5-v0.2", "colqwen2.5"),
        ("vidore/colpali-v1.3", "colpali"),
        ("vidore/colpali-v1.2", "colpali"),
        ("vidore/colSmol-256M", "colidefics3"),
    ],
)
def test_family_from_hub_id(source: str, family: str) -> None:
    assert detect_family(source).name == family


def test_family_from_model_directory(tiny_colqwen2: Path, tiny_colpali: Path) -> None:
    assert detect_family(str(tiny_colqwen2)).name == "colqwen2"
    assert detect_family(str(tiny_colpali)).name == "colpali"


def test_unknown_family_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DOCVISION_MODEL_FAMILY"):
        detect_family("someone/unknown-model")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="cannot tell the model family"):
        detect_family(str(tmp_path))


def test_second_family_runs_through_the_same_interface(tiny_colpali: Path) -> None:
    emb = Embedder(str(tiny_colpali), compute_mode="fp32")
    result = emb.embed_images(pages(2))
    assert emb.family.name == "colpali"
    assert all(p.vectors.shape[1] == 128 and p.grid == (4, 4) for p in result)
    assert result[0].patches.shape == (4, 4, 128)
    scores = emb.score(emb.embed_queries(QUERIES[:2]), [p.vectors for p in result])
    assert scores.shape == (2, 2) and np.isfinite(scores).all()


# ----------------------------------------------------------------------------------------- compute plan
def test_compute_plan_follows_cpu_features(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(compute, "cpu_flags", lambda: {"avx512f", "amx_bf16", "amx_tile"})
    assert compute.choose("auto", 2).name == "cpu-bfloat16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    assert compute.choose("auto", 2).name == "cpu-float32-int8"
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(compute, "cpu_flags", lambda: {"avx2"})
    plan = compute.choose("auto", 2)
    assert plan.name == "cpu-float32-int8" and "AVX2" in plan.reason
    assert compute.choose("fp32", 1).threads == 1
    with pytest.raises(ConfigError):
        compute.choose("fp8")


# ---------------------------------------------------------------------------------------------- bake
def test_baked_manifest(baked_tiny: Path) -> None:
    manifest = json.loads((baked_tiny / "manifest.json").read_text())
    assert manifest["family"] == "colqwen2" and manifest["embedding_dim"] == 128
    assert manifest["quantization"] == "int8-weight-only-symmetric-per-output-channel"
    assert set(manifest["files"]) >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    from safetensors import safe_open

    with safe_open(baked_tiny / "model.safetensors", "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    assert "I8" in dtypes


def tampered_copy(baked_tiny: Path, tmp_path: Path) -> tuple[Path, Path, bytearray]:
    """A copy of the baked model whose weights file has one byte flipped (same size): (dir, weights, bytes)."""
    copy = tmp_path / "baked"
    shutil.copytree(baked_tiny, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    return copy, weights, data


def test_tampered_and_truncated_files_are_refused(baked_tiny: Path, tmp_path: Path) -> None:
    copy, weights, data = tampered_copy(baked_tiny, tmp_path)
    with pytest.raises(ModelIntegrityError, match=r"model\.safetensors.*sha256"):
        Embedder(str(copy))
    weights.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ModelIntegrityError, match=r"model\.safetensors.*truncated"):
        Embedder(str(copy))
    shutil.copy(baked_tiny / "model.safetensors", weights)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(ModelIntegrityError, match="tokenizer.json"):
        Embedder(str(copy))


def test_size_level_checks_sizes_only(baked_tiny: Path, tmp_path: Path) -> None:
    """DOCVISION_VERIFY_WEIGHTS=size (the Lambda image, whose digest pins the bytes): a same-size change passes,
    a truncation still does not; the default level refuses both."""
    copy, weights, data = tampered_copy(baked_tiny, tmp_path)
    Embedder(str(copy), verify="size")
    with pytest.raises(ModelIntegrityError, match=r"model\.safetensors.*sha256"):
        Embedder(str(copy), verify="sha256")
    weights.write_bytes(bytes(data[:-1]))
    with pytest.raises(ModelIntegrityError, match=r"model\.safetensors.*truncated"):
        Embedder(str(copy), verify="size")


def test_verify_setting_accepts_levels_and_the_old_booleans(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from engine.config import Settings

    cases = (
        ("size", "size"),
        ("sha256", "sha256"),
        ("true", "sha256"),
        ("false", "size"),
        ("No", "size"),
        ("on", "sha256"),
    )
    for value, level in cases:
        monkeypatch.setenv("DOCVISION_VERIFY_WEIGHTS", value)
        assert Settings().verify_weights == level
    monkeypatch.setenv("DOCVISION_VERIFY_WEIGHTS", "md5")
    with pytest.raises(ValidationError):
        Settings()


def test_prefetch_prepacks_before_the_model_exists_and_loads_the_same_model(
    baked_tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cold-start path (weights read and prepacked in a thread, from the manifest's word on which int8
    weights are embeddings) gives exactly the model of the model-first path (an older manifest without it)."""
    import torch

    from engine.embedding.baked import prefetch

    manifest = json.loads((baked_tiny / "manifest.json").read_text())
    assert manifest["embedding_weights"] and all("embed" in w for w in manifest["embedding_weights"])
    ready = prefetch(baked_tiny, dtype=torch.float32, int8_gemm=True).result()
    assert ready.int8_modules and not any(k.endswith("_scale") for k in ready.state)
    assert not {f"{m}.weight" for m in ready.int8_modules} & set(manifest["embedding_weights"])
    from engine.embedding import baked

    monkeypatch.setattr(  # a Lambda's 6 vCPUs: prepacked in a pool that grows on boost()
        baked, "_prepack_workers", lambda threads=None, all_cpus=False: 6 if all_cpus else 5
    )
    pending = prefetch(baked_tiny, dtype=torch.float32, int8_gemm=True)
    pending.boost()
    pooled = pending.result()
    assert list(pooled.int8_modules) == list(ready.int8_modules)
    for name, layer in pooled.int8_modules.items():
        assert torch.equal(layer.weight().int_repr(), ready.int8_modules[name].weight().int_repr()), name
    monkeypatch.undo()

    old = tmp_path / "old-manifest"
    shutil.copytree(baked_tiny, old)
    del manifest["embedding_weights"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert prefetch(old, dtype=torch.float32, int8_gemm=True).result().int8_modules == {}
    page = text_image(text="Invoice 42 total 17.50")
    query = "total weight of the containers"
    prefetched, model_first = (
        Embedder(str(baked_tiny), compute_mode="int8"),
        Embedder(str(old), compute_mode="int8"),
    )
    np.testing.assert_array_equal(
        prefetched.embed_images([page])[0].vectors, model_first.embed_images([page])[0].vectors
    )
    np.testing.assert_array_equal(prefetched.embed_queries([query])[0], model_first.embed_queries([query])[0])


def test_prefetch_can_be_abandoned_and_must_match_its_load(baked_tiny: Path) -> None:
    """A prefetch stops between layers when abandoned (the model classes failed to import), and a prefetch
    made for another plan is refused instead of installing weights in the wrong form."""
    import threading
    from concurrent.futures import CancelledError

    import torch

    from engine.embedding import baked
    from engine.embedding.families import detect_family

    state = baked._read_tensors(baked_tiny / "model.safetensors", lambda k: True)
    stop = threading.Event()
    stop.set()
    with pytest.raises(CancelledError):
        baked._materialize(state, lambda n: "linear", torch.float32, True, stop=stop)
    cpus = len(__import__("os").sched_getaffinity(0))
    assert baked._prepack_workers(threads=1) == 1 == baked._prepack_workers(threads=1, all_cpus=True)
    assert baked._prepack_workers(threads=64) == max(1, cpus - 1)
    assert baked._prepack_workers(threads=64, all_cpus=True) == cpus

    model_cls, _ = detect_family(str(baked_tiny)).classes()
    other_plan = baked.prefetch(baked_tiny, dtype=torch.float32, int8_gemm=False)
    with pytest.raises(ValueError, match="prefetch made for"):
        baked.load_baked(baked_tiny, model_cls, dtype=torch.float32, int8_gemm=True, prefetched=other_plan)


def test_the_prepack_pool_widens_on_boost_and_stops_on_cancel(
    baked_tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prefetch prepacks on all CPUs but one while the imports run, on all of them once boost() says the
    importing thread only waits; cancel() stops every worker between layers. Layers are slowed down (sleep,
    which releases the GIL like fbgemm's prepack) so the pool's width can be observed."""
    import threading
    import time
    from concurrent.futures import CancelledError

    import torch

    from engine.embedding import baked

    state = baked._read_tensors(baked_tiny / "model.safetensors", lambda k: True)
    kind = lambda n: "other" if "embed_tokens" in n else "linear"  # noqa: E731
    serial = baked._materialize(dict(state), kind, torch.float32, True, threads=1)  # one thread
    real = baked._int8_linear
    lock, running, log = threading.Lock(), [0], []  # log: (layers done so far, layers running now)

    def slow_layer(*args: object) -> torch.nn.Module:
        with lock:
            running[0] += 1
            log.append((len(log), running[0]))
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(baked, "_int8_linear", slow_layer)
    monkeypatch.setattr(baked, "_prepack_workers", lambda threads=None, all_cpus=False: 3 if all_cpus else 1)
    layers = sum(k.endswith(baked.SCALE_SUFFIX) for k in state) - 1  # all but the token embedding
    assert layers >= 12
    wide, stop = threading.Event(), threading.Event()
    boost = threading.Timer(0.13, wide.set)  # after ~6 of the layers
    boost.start()
    modules = baked._materialize(dict(state), kind, torch.float32, True, wide=wide, stop=stop)
    boost.join()
    assert len(modules) == layers
    narrow = [r for i, r in log if i < 4]
    assert max(narrow) == 1, log  # one worker while the imports run
    assert max(r for _, r in log) == 3, log  # all three once boosted
    assert list(serial) == list(modules)  # same layers, same order, same packed weights
    for name, layer in modules.items():
        assert torch.equal(layer.weight().int_repr(), serial[name].weight().int_repr()), name

    log.clear()
    cancel = threading.Timer(0.05, stop.set)
    cancel.start()
    with pytest.raises(CancelledError):
        baked._materialize(dict(state), kind, torch.float32, True, wide=None, stop=stop)
    started_then = len(log)
    time.sleep(0.1)
    assert len(log) == started_then < layers  # stopped between layers; no worker left running
    assert running[0] == 0


def test_a_manifest_that_hides_an_embedding_is_refused(baked_tiny: Path, tmp_path: Path) -> None:
    """Prepacking follows the manifest; the model must agree, or the load fails with a typed error."""
    copy = tmp_path / "lying"
    shutil.copytree(baked_tiny, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["embedding_weights"] = []  # the token embedding would be prepacked as a Linear
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="baked as a Linear layer but the model has Embedding"):
        Embedder(str(copy), compute_mode="int8")
    Embedder(str(copy), compute_mode="fp32")  # no int8 GEMMs: nothing is prepacked, the weights dequantize


def test_lora_adapter_is_merged_when_baking(tiny_colqwen2: Path, tmp_path: Path) -> None:
    """A LoRA adapter directory bakes into a model that reproduces the adapter's outputs."""
    from colpali_engine.models import ColQwen2, ColQwen2Processor
    from peft import LoraConfig, get_peft_model

    from models.bake import bake

    torch.manual_seed(1)
    base = ColQwen2.from_pretrained(tiny_colqwen2, dtype=torch.float32).eval()
    peft_model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tiny_colqwen2)
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    ColQwen2Processor.from_pretrained(tiny_colqwen2).save_pretrained(adapter)

    baked = tmp_path / "baked"
    bake(str(adapter), baked)
    processor = ColQwen2Processor.from_pretrained(tiny_colqwen2)
    batch = processor.process_images(pages(2))
    with torch.no_grad():
        with_adapter = peft_model(**batch)
    merged = Embedder(str(baked), compute_mode="fp32").embed_images(pages(2))
    mask = batch["attention_mask"].bool()
    ref = with_adapter[0][mask[0]].numpy()
    cos = (ref * merged[0].vectors).sum(-1).mean()
    assert cos > 0.995


def test_an_adapter_without_peft_says_to_bake_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Lambda image prunes peft (infra/prune_dists.py): pointing it at a LoRA adapter directory is a
    configuration error that says what to do, not an ImportError."""
    from engine.embedding.loader import load_source

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "vidore/colqwen2-base"})
    )
    monkeypatch.setitem(__import__("sys").modules, "peft", None)  # as if not installed: import fails
    with pytest.raises(ConfigError, match="bake the model instead"):
        load_source(str(adapter), family_name="colqwen2")


# ------------------------------------------------------------------------------------------ fidelity
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["int8", "bf16", "fp32"])
def test_baked_paths_match_the_fp32_reference(tiny_colqwen2: Path, baked_tiny: Path, mode: str) -> None:
    """Per-token cosine and MaxSim ranking of each compute path against stock fp32 colpali-engine."""
    from colpali_engine.models import ColQwen2, ColQwen2Processor

    imgs = pages(6)
    model = ColQwen2.from_pretrained(tiny_colqwen2, dtype=torch.float32).eval()
    processor = ColQwen2Processor.from_pretrained(tiny_colqwen2)
    with torch.no_grad():
        b = processor.process_images(imgs)
        ref = model(**b)
        qb = processor.process_queries(QUERIES)
        ref_q = model(**qb)
    ref_pages = [ref[i][b["attention_mask"][i].bool()].numpy() for i in range(len(imgs))]
    ref_queries = [ref_q[i][qb["attention_mask"][i].bool()].numpy() for i in range(len(QUERIES))]

    emb = Embedder(str(baked_tiny), compute_mode=mode)
    ours = emb.embed_images(imgs)
    ours_q = emb.embed_queries(QUERIES)
    cos = np.mean([(a * p.vectors).sum(-1).mean() for a, p in zip(ref_pages, ours, strict=True)])
    assert cos >= 0.995, f"{mode}: mean per-token cosine {cos:.5f}"
    s_ref = score_multi_vector(ref_queries, ref_pages)
    s_ours = emb.score(ours_q, [p.vectors for p in ours])
    assert (s_ref.argmax(1) == s_ours.argmax(1)).all()
    assert np.abs(s_ref - s_ours).max() < 0.05 * np.abs(s_ref).max()


# ------------------------------------------------------------------------------------------- scoring
def test_score_equals_colpali_engine_and_plain_maxsim(embedder: Embedder) -> None:
    from colpali_engine.models import ColQwen2Processor

    ps = [p.vectors for p in embedder.embed_images(pages(3))]
    qs = embedder.embed_queries(QUERIES)
    ours = embedder.score(qs, ps)
    stock = ColQwen2Processor.score_multi_vector(
        [torch.tensor(q) for q in qs], [torch.tensor(p) for p in ps]
    ).numpy()
    plain = np.array([[(q @ p.T).max(axis=1).sum() for p in ps] for q in qs])
    np.testing.assert_allclose(ours, stock, rtol=1e-5)
    np.testing.assert_allclose(ours, plain, rtol=1e-4)


def test_page_embedding_shape_grid_and_json(embedder: Embedder) -> None:
    (page,) = embedder.embed_images([Image.new("RGB", (2550, 3300), "white")])
    rows, cols = page.grid
    assert rows * cols <= 64 and rows > cols  # portrait page → more rows than columns
    assert page.patches.shape == (rows, cols, 128)
    norms = np.linalg.norm(page.vectors, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=norm_atol(embedder))  # bf16 on AMX CPUs, fp32 elsewhere
    as_json = page.to_json()
    assert as_json["shape"] == list(page.vectors.shape) and len(as_json["data"]) == page.vectors.shape[0]
    assert embedder.describe()["model_id"] == "tiny-random-colqwen2"


def test_queries_have_no_padding_rows(embedder: Embedder) -> None:
    short, long = embedder.embed_queries(["a", "a much longer query about container weights and ports"])
    assert short.shape[0] < long.shape[0]
    assert np.isfinite(short).all() and np.isfinite(long).all()


# ------------------------------------------------------------------------------------------ batching
def test_embed_pages_streams_in_bounded_batches(embedder: Embedder) -> None:
    from engine.documents.frames import PageFrame

    pulled: list[int] = []

    def frames():
        for i, img in enumerate(pages(5) * 2, 1):
            pulled.append(i)
            yield PageFrame("d" * 64, i, 10, 300, "png", img)

    seen = []
    for frame, emb in embedder.embed_pages(frames(), batch_size=3):
        seen.append(frame.page_number)
        assert len(pulled) - len(seen) <= 2  # never more than one batch ahead
        assert emb.vectors.shape[1] == 128
    assert seen == list(range(1, 11))


def test_batch_size_follows_the_memory_budget(baked_tiny: Path) -> None:
    probe = Embedder(str(baked_tiny))
    per_page, model_mb = probe.page_activation_mb(744), probe.model_bytes() / 2**20
    small = Embedder(str(baked_tiny), memory_budget=int(768 + model_mb + 1.5 * per_page) + 1)
    large = Embedder(str(baked_tiny), memory_budget=64_000, max_batch_size=16)
    assert small.batch_size_for(744) == 1
    assert (
        Embedder(
            str(baked_tiny), memory_budget=int(768 + model_mb + 3.5 * per_page) + 1, max_batch_size=16
        ).batch_size_for(744)
        == 3
    )
    assert probe.max_batch_size == 2  # CPU default: a batch of 8 measured slower per page than 1
    assert large.batch_size_for(744) == 16
    assert small.visual_tokens(2550, 3300) <= 64
