from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import Settings
from tests.fixtures import documents as d


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
