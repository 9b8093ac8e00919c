"""Issue 23 item 2: no SVG route paints a local file into a rendered page, through the real renderer.

Each document carries every vector of tests.fixtures.hostile_svg (file:// and 127.0.0.1 references by
xlink:href, href, entities, <use>, url() fills, <feImage>, relative paths, <style>@import, SVGZ, UTF-16, nested
data: URIs, a DOCTYPE entity), as a picture LibreOffice renders by content. The planted files are one colour
found nowhere else; no pixel of it may reach a frame, and the listener must hear nothing. A benign SVG in the
same document must still be painted, so the test also fails if cleaning just deletes every picture.
Run without the network namespace (as on Lambda): the neutralizer alone must hold.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pymupdf
import pytest

from engine.config import Settings
from engine.documents import detect_type, open_document, to_pdf
from engine.documents.office import find_soffice, network_namespace_prefix
from tests.fixtures import hostile_svg as h
from tests.integration.test_ssrf import _Listener, listener  # noqa: F401 - the fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _pixels(image: np.ndarray, rgb: tuple[int, int, int]) -> int:
    a = image.reshape(-1, 3).astype(int)
    return int((np.abs(a - np.array(rgb)).max(axis=1) < 25).sum())


@pytest.fixture
def no_netns(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DOCVISION_NO_NETNS", "1")
    network_namespace_prefix.cache_clear()
    yield
    network_namespace_prefix.cache_clear()


def _document(kind: str, secrets: Path, port: int) -> tuple[bytes, str]:
    vectors = {f"{name}.png": svg for name, svg in h.svg_vectors(secrets, port).items()}
    vectors["benign.png"] = h.benign_svg()
    if kind == "html":
        return h.html_with_data_svgs(vectors), "html"
    if kind == "docx-media":
        return h.docx_with_media(vectors), "docx"
    if kind == "odt-pictures":
        return h.odt_with_pictures(vectors), "odt"
    if kind == "odt-svg-parts":
        return h.odt_with_pictures({n.replace(".png", ".svg"): b for n, b in vectors.items()}), "odt"
    return h.flat_odt_with_pictures(vectors), "fodt"


def test_control_raw_libreoffice_paints_the_local_file(tmp_path: Path) -> None:
    """Without the neutralizer, an SVG named .png inside a DOCX shows the planted file: the vector is real."""
    secrets = h.plant_secrets(tmp_path)
    src = tmp_path / "raw.docx"
    src.write_bytes(h.docx_with_media({"image1.png": h.svg_vectors(secrets, 9)["entity-href"]}))
    subprocess.run(
        [find_soffice("soffice"), "--headless", f"-env:UserInstallation={(tmp_path / 'p').as_uri()}",
         "--convert-to", "pdf", "--outdir", str(tmp_path), str(src)],
        capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    page = pymupdf.open(tmp_path / "raw.pdf")[0].get_pixmap(dpi=36)
    assert _pixels(np.frombuffer(page.samples, np.uint8), h.SECRET_RGB) > 1000


@pytest.mark.parametrize("kind", ["html", "docx-media", "odt-pictures", "odt-svg-parts", "fodt"])
def test_no_svg_vector_paints_a_local_file(kind: str, no_netns: None, listener: _Listener, tmp_path: Path) -> None:  # noqa: F811
    secrets = h.plant_secrets(tmp_path)
    data, type_ = _document(kind, secrets, listener.server_address[1])
    assert detect_type(data, f"vectors.{type_}").value == type_
    work = tmp_path / "work"
    work.mkdir()
    settings = Settings(work_dir=work, dpi=36)
    pdf = to_pdf(data, type_, f"vectors.{type_}", settings)
    secret = benign = 0
    with open_document(data, name=f"vectors.{type_}", settings=settings, pdf_bytes=pdf) as doc:
        for frame in doc.pages():
            pixels = np.asarray(frame.image)
            secret += _pixels(pixels, h.SECRET_RGB)
            benign += _pixels(pixels, h.BENIGN_RGB)
    assert secret == 0, f"{kind}: {secret} pixels of the planted local file reached the frames"
    assert listener.hits == [], f"{kind}: the listener was contacted: {listener.hits}"
    assert benign > 1000, f"{kind}: the benign SVG was not painted (cleaning deleted it)"
