"""Backend choice from the manifest's A/B, the CPU class it is keyed by, and the win-beyond-the-spread rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.embedding.backends import choose_backend, decide
from engine.embedding.compute import cpu_class
from engine.errors import ConfigError


def _export(tmp_path: Path) -> Path:
    (tmp_path / "openvino").mkdir()
    (tmp_path / "openvino" / "openvino.json").write_text("{}")
    return tmp_path


def test_cpu_class_follows_flags_and_the_onednn_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    spr = {"amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2"}
    assert cpu_class(spr) == "amx"
    assert cpu_class({"avx512_bf16", "avx512_vnni", "avx512f", "avx2"}) == "avx512-bf16"
    assert cpu_class({"avx512_vnni", "avx512f", "avx2"}) == "avx512-vnni"
    assert cpu_class({"avx2"}) == "avx2"
    assert cpu_class(set()) == "other"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    assert cpu_class(spr) == "avx512-vnni"  # AMX present but capped: the benchmark's "AMX off"


def test_auto_uses_the_recorded_winner_for_this_class_only(tmp_path: Path) -> None:
    d = _export(tmp_path)
    manifest = {"backend_ab": {"amx": {"winner": "openvino", "torch_s_per_page": 3.5, "openvino_s_per_page": 1.9,
                                       "reps": 3}}}  # fmt: skip
    assert choose_backend("auto", manifest, d, "amx")[0] == "openvino"
    backend, why = choose_backend("auto", manifest, d, "avx2")
    assert backend == "torch" and "no backend A/B recorded for CPU class avx2" in why
    assert choose_backend("torch", manifest, d, "amx")[0] == "torch"


def test_no_export_means_torch_and_forcing_openvino_is_a_typed_error(tmp_path: Path) -> None:
    manifest = {"backend_ab": {"amx": {"winner": "openvino"}}}
    assert choose_backend("auto", manifest, tmp_path, "amx") == (
        "torch",
        "no OpenVINO export in the model directory",
    )
    with pytest.raises(ConfigError, match="no OpenVINO export"):
        choose_backend("openvino", manifest, tmp_path, "amx")
    with pytest.raises(ConfigError, match="not one of"):
        choose_backend("tensorrt", manifest, tmp_path, "amx")


def test_a_win_must_clear_the_spread_and_the_fidelity_floor() -> None:
    assert decide([3.0, 3.1, 3.2], [2.0, 2.1, 2.2], 0.999) == "openvino"
    assert (
        decide([3.0, 3.1, 3.2], [2.0, 2.1, 3.05], 0.999) == "torch"
    )  # slowest OV rep not beyond torch's fastest
    assert decide([3.0, 3.1, 3.2], [1.0, 1.0, 1.0], 0.99) == "torch"  # fast but below cosine 0.995
