from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.config import Settings
from tests.fixtures import documents as d

# DOCVISION_COMPUTE=bf16|int8 runs the suite as if this CPU made the compute plan's "auto" pick that path
# (bf16: an AMX / AVX512-BF16 machine; int8: AVX2), so one machine proves the suite on every CPU it may meet.
# Only the plan's choice is simulated: the kernels run are this CPU's own (oneDNN dispatches on the real CPUID).
_FORCED_COMPUTE = os.environ.get("DOCVISION_COMPUTE", "auto").strip().lower()
_FLAGS_FOR = {"bf16": {"amx_bf16", "amx_tile", "avx512f", "avx512_bf16"}, "int8": set()}


def pytest_configure(config: pytest.Config) -> None:
    if _FORCED_COMPUTE in ("", "auto"):
        return
    if _FORCED_COMPUTE not in _FLAGS_FOR:
        raise pytest.UsageError(
            f"DOCVISION_COMPUTE={_FORCED_COMPUTE!r}: the suite simulates bf16 or int8 (auto never picks fp32)"
        )
    from engine.embedding import compute

    real = compute.cpu_flags
    strip = {"amx_bf16", "avx512_bf16"}  # int8: this machine must look like one without native bf16
    forced = _FLAGS_FOR[_FORCED_COMPUTE]
    compute.cpu_flags = lambda: (real() - strip) | forced  # type: ignore[assignment]


@pytest.fixture(scope="session")
def docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every generated fixture document, written once per test session."""
    root = tmp_path_factory.mktemp("docs")
    return {
        "multipage_pdf": d.multipage_pdf(root / "multipage.pdf"),
        "scanned_pdf": d.scanned_pdf(root / "scanned.pdf"),
        "docx": d.docx(root / "invoice.docx"),
        "xlsx": d.xlsx(root / "lines.xlsx"),
        "pptx": d.pptx(root / "deck.pptx"),
        "html": d.html(root / "note.html"),
        "png": d.image_file(root / "receipt.png", "PNG"),
        "jpeg": d.image_file(root / "receipt.jpg", "JPEG"),
        "webp": d.image_file(root / "receipt.webp", "WEBP", dpi=None),
        "bmp": d.image_file(root / "receipt.bmp", "BMP", dpi=None),
        "gif": d.image_file(root / "receipt.gif", "GIF", dpi=None),
        "tiff": d.multipage_tiff(root / "fax.tiff"),
    }


@pytest.fixture
def settings() -> Settings:
    return Settings()


REPO = Path(__file__).resolve().parents[1]


def _tiny(family: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model `make setup` builds under models/, or a fresh one when it is missing."""
    from models.tiny import BUILDERS

    built = REPO / "models" / f"tiny-{family}"
    if (built / "config.json").exists():
        return built
    return BUILDERS[family](tmp_path_factory.mktemp(f"tiny-{family}") / "model")


@pytest.fixture(scope="session")
def tiny_colqwen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny("colqwen2", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_colpali(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny("colpali", tmp_path_factory)


def _baked(source: Path, name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model baked int8 (models/bake.py, the image's path) into a session temp dir."""
    from models.bake import bake

    out = tmp_path_factory.mktemp("baked") / name
    bake(str(source), out)
    return out


@pytest.fixture(scope="session")
def baked_tiny(tiny_colqwen2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _baked(tiny_colqwen2, "colqwen2", tmp_path_factory)


@pytest.fixture(scope="session")
def embedder(baked_tiny: Path):
    """The production path on the tiny model: baked int8 dir, auto compute plan."""
    from engine.embedding import Embedder

    return Embedder(str(baked_tiny))


@pytest.fixture(scope="session")
def tiny_colidefics3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny("colidefics3", tmp_path_factory)


@pytest.fixture(scope="session")
def baked_colsmol(tiny_colidefics3: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small family (ColSmol / ColIdefics3), tiny and random, baked int8 like ColQwen2."""
    return _baked(tiny_colidefics3, "colidefics3", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_colmodernvbert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny("colmodernvbert", tmp_path_factory)


@pytest.fixture(scope="session")
def baked_colmodernvbert(tiny_colmodernvbert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _baked(tiny_colmodernvbert, "colmodernvbert", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_colqwen3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny("colqwen3", tmp_path_factory)


@pytest.fixture(scope="session")
def baked_colqwen3(tiny_colqwen3: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ColQwen3 (Qwen3-VL backbone, 320-d head), tiny and random, baked int8 like ColQwen2."""
    return _baked(tiny_colqwen3, "colqwen3", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_colqwen3_5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny("colqwen3.5", tmp_path_factory)


@pytest.fixture(scope="session")
def baked_colqwen3_5(tiny_colqwen3_5: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ColQwen3.5 (Qwen3.5: Gated DeltaNet + attention, 320-d head), tiny and random, baked int8."""
    return _baked(tiny_colqwen3_5, "colqwen3.5", tmp_path_factory)
