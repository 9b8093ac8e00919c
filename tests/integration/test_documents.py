"""engine.documents end to end with real renderers (pymupdf, poppler, LibreOffice) on generated files."""

from __future__ import annotations

import gc
import io
import shutil
import weakref
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.config import Settings
from engine.documents import open_document, render_pages
from engine.errors import DocVisionError
from tests.fixtures import documents as d

pytestmark = pytest.mark.integration


def px(pt: float, dpi: int = 300) -> int:
    return round(pt * dpi / 72)


def dark_fraction(img: Image.Image, box: tuple[int, int, int, int]) -> float:
    a = np.asarray(img.crop(box).convert("L"))
    return float((a < 128).mean())


def red_fraction(img: Image.Image, box: tuple[int, int, int, int] | None = None) -> float:
    a = np.asarray(img.crop(box) if box else img).astype(int)
    red = (a[..., 0] > 180) & (a[..., 1] < 90) & (a[..., 2] < 90)
    return float(red.mean())


def frames(path: Path, **settings: object):
    return list(render_pages(path, settings=Settings(**settings)))


# ------------------------------------------------------------------------------------------------ PDF
def test_multipage_pdf_sizes_rotation_and_content(docs: dict[str, Path]) -> None:
    pages = frames(docs["multipage_pdf"])
    assert [f.page_number for f in pages] == [1, 2, 3, 4]
    assert all(f.page_count == 4 and f.dpi == 300 and f.source_type == "pdf" for f in pages)
    sizes = [(f.width, f.height) for f in pages]
    assert sizes[0] == (2550, 3300)  # US letter at 300 DPI
    assert abs(sizes[1][0] - 2480) <= 1 and abs(sizes[1][1] - 3508) <= 1  # A4
    assert sizes[2] == (3300, 2550)  # /Rotate 90 → landscape
    assert sizes[3] == (2550, 4200)  # legal
    p1 = pages[0].image
    assert dark_fraction(p1, (px(72), px(70), px(400), px(95))) > 0.02  # heading text rendered
    assert dark_fraction(p1, (px(72), px(160), px(522), px(256))) > 0.01  # table lines and cells
    assert red_fraction(p1, (px(410), px(510), px(530), px(630))) > 0.95  # embedded image keeps its colour
    assert dark_fraction(p1, (px(72), px(300), px(380), px(480))) == 0.0  # empty area stays white
    assert all(f.document_id == pages[0].document_id and len(f.document_id) == 64 for f in pages)


def test_pymupdf_and_poppler_render_nearly_the_same_pixels(docs: dict[str, Path]) -> None:
    a = frames(docs["multipage_pdf"])[0].image
    b = frames(docs["multipage_pdf"], pdf_backend="pdf2image")[0].image
    assert abs(a.width - b.width) <= 1 and abs(a.height - b.height) <= 1
    b = b.resize(a.size)
    diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
    assert diff.mean() < 2.0  # anti-aliasing differs at glyph edges only
    assert (diff.max(axis=2) > 64).mean() < 0.01


def test_scanned_pdf_is_an_image_page(docs: dict[str, Path]) -> None:
    (page,) = frames(docs["scanned_pdf"])
    assert (page.width, page.height) == (2550, 3300)
    assert dark_fraction(page.image, (225, 225, 1400, 330)) > 0.03


def test_wrong_extension_is_handled_by_content(docs: dict[str, Path], tmp_path: Path) -> None:
    disguised = tmp_path / "photo.jpg"
    shutil.copy(docs["multipage_pdf"], disguised)
    with open_document(disguised) as doc:
        assert doc.type == "pdf" and doc.page_count == 4


def test_bytes_input_and_start_page(docs: dict[str, Path]) -> None:
    with open_document(docs["multipage_pdf"].read_bytes(), name="upload.bin") as doc:
        assert [f.page_number for f in doc.pages(start_page=3)] == [3, 4]


def test_oversized_pages_are_rendered_at_a_lower_dpi(docs: dict[str, Path]) -> None:
    page = frames(docs["multipage_pdf"], max_page_pixels=1_000_000)[0]
    assert page.downscaled and page.dpi < 300 and page.width * page.height <= 1_000_000
    assert page.width == px(612, page.dpi)


def test_owner_password_only_pdf_renders(tmp_path: Path) -> None:
    (page,) = frames(d.encrypted_pdf(tmp_path / "owner.pdf", user_password=None))
    assert dark_fraction(page.image, (px(72), px(70), px(200), px(95))) > 0.02


def test_frames_are_produced_lazily_and_released(tmp_path: Path) -> None:
    """Iteration must not keep earlier pages alive: at most a constant number exist at once."""
    path = d.long_pdf(tmp_path / "long.pdf", 40)
    refs: list[weakref.ref] = []
    max_alive = 0
    for frame in render_pages(path, settings=Settings(dpi=72)):
        refs.append(weakref.ref(frame.image))
        del frame
        gc.collect()
        max_alive = max(max_alive, sum(r() is not None for r in refs))
    assert len(refs) == 40 and max_alive <= 2


# -------------------------------------------------------------------------------------------- images
@pytest.mark.parametrize("kind", ["png", "jpeg", "webp", "bmp", "gif"])
def test_single_images(docs: dict[str, Path], kind: str) -> None:
    (page,) = frames(docs[kind])
    assert (page.width, page.height) == (1275, 1650) and page.image.mode == "RGB"
    assert page.source_type == kind
    assert dark_fraction(page.image, (60, 60, 500, 120)) > 0.03
    assert red_fraction(page.image, (1275 - 250, 1650 - 250, 1275 - 70, 1650 - 70)) > 0.9


def test_images_keep_their_declared_dpi_and_are_not_upsampled(docs: dict[str, Path]) -> None:
    (page,) = frames(docs["png"])
    assert page.dpi == 150 and (page.width, page.height) == (1275, 1650)


def test_high_dpi_images_are_downsampled_to_the_canonical_dpi(tmp_path: Path) -> None:
    path = tmp_path / "600dpi.png"
    Image.new("RGB", (2000, 1000), "white").save(path, dpi=(600, 600))
    (page,) = frames(path)
    assert (page.width, page.height, page.dpi) == (1000, 500, 300)


def test_transparent_png_is_composited_on_white(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    Image.new("RGBA", (100, 100), (0, 0, 0, 0)).save(path)
    (page,) = frames(path)
    assert np.asarray(page.image).min() == 255


def test_multipage_tiff(docs: dict[str, Path]) -> None:
    pages = frames(docs["tiff"])
    assert len(pages) == 3 and all(p.page_count == 3 and (p.width, p.height) == (1275, 1650) for p in pages)
    assert pages[0].image.tobytes() != pages[2].image.tobytes()  # each page is its own frame


# ------------------------------------------------------------------------------------ Office and HTML
@pytest.mark.parametrize(
    ("kind", "pages", "size"),
    [("docx", 2, (2550, 3300)), ("xlsx", 1, None), ("pptx", 2, (3000, 2250)), ("html", None, None)],
)
def test_office_and_html_through_libreoffice(
    docs: dict[str, Path], kind: str, pages: int | None, size: tuple[int, int] | None
) -> None:
    result = frames(docs[kind])
    assert result and all(f.source_type == kind for f in result)
    if pages:
        assert len(result) == pages
    if size:
        assert (result[0].width, result[0].height) == size
    first = result[0].image
    assert dark_fraction(first, (0, 0, first.width, first.height // 3)) > 0.001  # text made it through
    assert red_fraction(first) > 0.00005  # the red run / fill / heading survives conversion


def test_legacy_and_odf_formats_convert(docs: dict[str, Path], tmp_path: Path, settings: Settings) -> None:
    """DOC and ODT produced by LibreOffice itself are sniffed from content and render."""
    import subprocess

    from engine.documents.office import find_soffice

    for fmt in ("doc", "odt"):
        subprocess.run(
            [
                find_soffice("soffice"),
                "--headless",
                f"-env:UserInstallation={(tmp_path / 'p').as_uri()}",
                "--convert-to",
                fmt,
                "--outdir",
                str(tmp_path),
                str(docs["docx"]),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        blob = (tmp_path / f"invoice.{fmt}").read_bytes()
        with open_document(blob, name=f"legacy.{fmt}") as doc:
            assert doc.type == fmt and doc.page_count == 2


# --------------------------------------------------------------------------------------- bad inputs
def _bad(path_or_bytes, code: str, name_in_message: str, **settings: object) -> DocVisionError:
    with pytest.raises(DocVisionError) as info:
        frames(path_or_bytes, **settings) if isinstance(path_or_bytes, Path) else list(
            render_pages(path_or_bytes, name=name_in_message, settings=Settings(**settings))
        )
    assert info.value.code == code, info.value
    assert name_in_message in str(info.value)
    return info.value


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.pdf").write_bytes(b"")
    _bad(tmp_path / "empty.pdf", "empty_document", "empty.pdf")
    _bad(b"  \n\t ", "empty_document", "blank.txt")


def test_unknown_type(tmp_path: Path) -> None:
    (tmp_path / "notes.pdf").write_text("plain text pretending to be a PDF")
    err = _bad(tmp_path / "notes.pdf", "unsupported_type", "notes.pdf")
    assert "Supported:" in str(err)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.txt", "x")
    _bad(buf.getvalue(), "unsupported_type", "archive.zip")


def test_truncated_and_corrupt_pdf(docs: dict[str, Path], tmp_path: Path) -> None:
    data = docs["multipage_pdf"].read_bytes()
    for frac in (0.3, 0.6, 0.9):
        _bad(data[: int(len(data) * frac)], "corrupt_document", f"cut{frac}.pdf")
    _bad(b"%PDF-1.7\n" + bytes(range(256)) * 20, "corrupt_document", "garbage.pdf")


def test_encrypted_pdf_needs_user_password(tmp_path: Path) -> None:
    err = _bad(
        d.encrypted_pdf(tmp_path / "locked.pdf", user_password="s3cret"), "encrypted_document", "locked.pdf"
    )
    assert "password" in str(err)


def test_encrypted_office_document() -> None:
    corpus = Path(__file__).resolve().parents[1] / "corpus" / "files"
    _bad((corpus / "poi-protected_agile.docx").read_bytes(), "encrypted_document", "locked.docx")


def test_zero_page_pdf(tmp_path: Path) -> None:
    _bad(d.zero_page_pdf(tmp_path / "zero.pdf"), "no_pages", "zero.pdf")


def test_corrupt_image(docs: dict[str, Path]) -> None:
    data = docs["png"].read_bytes()
    _bad(data[: len(data) // 2], "corrupt_document", "half.png")
    _bad(b"\xff\xd8\xff\xe0" + b"\x00" * 64, "corrupt_document", "broken.jpg")


def test_image_bomb_is_rejected_before_decoding(tmp_path: Path) -> None:
    err = _bad(d.png_bomb(tmp_path / "bomb.png"), "image_too_large", "bomb.png")
    assert "decompression bomb" in str(err)


def test_oversize_document_and_too_many_pages(docs: dict[str, Path]) -> None:
    _bad(docs["multipage_pdf"], "document_too_large", "multipage.pdf", max_bytes=1000)
    _bad(docs["multipage_pdf"], "too_many_pages", "multipage.pdf", max_pages=3)
    _bad(docs["tiff"], "too_many_pages", "fax.tiff", max_pages=2)


def test_libreoffice_failure_on_corrupt_office_file(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("[Content_Types].xml", "<not xml")
        zf.writestr("word/document.xml", b"\x00\x01garbage")
    _bad(buf.getvalue(), "conversion_failed", "broken.docx")


def test_libreoffice_timeout(docs: dict[str, Path]) -> None:
    err = _bad(docs["docx"], "conversion_timeout", "invoice.docx", conversion_timeout_s=0.05)
    assert "DOCVISION_CONVERSION_TIMEOUT_S" in str(err)


def test_missing_libreoffice_says_what_to_do(docs: dict[str, Path]) -> None:
    err = _bad(docs["docx"], "conversion_failed", "", soffice="no-such-soffice")
    assert "make setup" in str(err)
