"""Which CPU runtime embeds: torch or OpenVINO, by the in-process A/B recorded in the baked manifest (no torch here:
/health answers from the manifest without loading a model)."""

from __future__ import annotations

from pathlib import Path

OV_DIR = "openvino"
BACKENDS = ("auto", "torch", "openvino")


def available(directory: Path) -> bool:
    return (Path(directory) / OV_DIR / "openvino.json").exists()


def choose_backend(requested: str, manifest: dict | None, directory: Path, cls: str) -> tuple[str, str]:
    """(backend, reason). ``auto`` follows the in-process A/B recorded for this CPU class, torch where none is."""
    from engine.errors import ConfigError

    if requested not in BACKENDS:
        raise ConfigError(f"DOCVISION_EMBED_BACKEND={requested!r} is not one of {', '.join(BACKENDS)}")
    has_export = available(directory)
    if requested == "openvino":
        if not has_export:
            raise ConfigError(
                f"DOCVISION_EMBED_BACKEND=openvino but {directory} has no OpenVINO export; bake it with "
                "`python -m models.bake SRC OUT --backend openvino` or set the backend to torch/auto"
            )
        return "openvino", "set by DOCVISION_EMBED_BACKEND"
    if requested == "torch":
        return "torch", "set by DOCVISION_EMBED_BACKEND"
    if not has_export:
        return "torch", "no OpenVINO export in the model directory"
    ab = ((manifest or {}).get("backend_ab") or {}).get(cls)
    if not ab:
        return (
            "torch",
            f"no backend A/B recorded for CPU class {cls} (models.bake --backend openvino records one)",
        )
    winner = str(ab.get("winner", "torch"))
    return winner, (
        f"A/B on CPU class {cls}: torch {ab.get('torch_s_per_page')} s/page, openvino "
        f"{ab.get('openvino_s_per_page')} s/page, {ab.get('reps')} alternating reps ({ab.get('where', '')})"
    )


def decide(torch_s: list[float], ov_s: list[float], ov_min_cosine: float | None) -> str:
    """openvino wins only beyond the spread (its slowest rep faster than torch's fastest) and at cosine >= 0.995."""
    if ov_min_cosine is not None and ov_min_cosine < 0.995:
        return "torch"
    return "openvino" if max(ov_s) < min(torch_s) else "torch"
