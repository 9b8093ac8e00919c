"""Every knob in one place, read from the environment (prefix ``DOCVISION_``; Qdrant's own names unprefixed).

The README's configuration table is checked against this class by a test, so the two cannot drift.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOCVISION_", extra="ignore", populate_by_name=True)

    # --- documents -------------------------------------------------------------------------------
    dpi: int = Field(300, ge=36, le=1200, description="Canonical render resolution of page frames.")
    pdf_backend: Literal["pymupdf", "pdf2image"] = Field(
        "pymupdf", description="PDF rasterizer: pymupdf (fast, in-process) or pdf2image (poppler's pdftoppm)."
    )
    max_bytes: int = Field(256 * 1024 * 1024, description="Largest accepted document, in bytes.")
    max_pages: int = Field(2000, description="Largest accepted page count.")
    max_page_pixels: int = Field(
        60_000_000,
        description="Pages larger than this (width*height at the canonical DPI) are rendered at a lower DPI to fit.",
    )
    max_image_pixels: int = Field(
        250_000_000,
        description="Hard decode limit for raster images; larger ones are rejected as decompression bombs.",
    )
    conversion_timeout_s: float = Field(180.0, description="LibreOffice conversion timeout per document.")
    soffice: str = Field("soffice", description="LibreOffice binary used for Office/ODF/HTML documents.")
    work_dir: Path | None = Field(
        None, description="Scratch folder for conversions (default: system temp, /tmp on Lambda)."
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
