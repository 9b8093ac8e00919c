"""The render worker: limits become typed errors, a dead worker never takes the caller with it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from engine.config import Settings
from engine.documents import open_document
from engine.errors import DocVisionError

pytestmark = pytest.mark.integration


def _code(fn) -> str:  # noqa: ANN001
    with pytest.raises(DocVisionError) as info:
        fn()
    return info.value.code


def test_isolated_and_in_process_frames_are_identical(docs: dict[str, Path]) -> None:
    for kind in ("multipage_pdf", "tiff", "png"):
        with open_document(docs[kind], settings=Settings(dpi=72)) as iso:
            a = [(f.page_number, f.dpi, np.asarray(f.image)) for f in iso.pages()]
        with open_document(docs[kind], settings=Settings(dpi=72, render_isolation="none")) as inproc:
            b = [(f.page_number, f.dpi, np.asarray(f.image)) for f in inproc.pages()]
        assert [x[:2] for x in a] == [x[:2] for x in b]
        assert all(np.array_equal(x[2], y[2]) for x, y in zip(a, b, strict=True))


def test_a_crashing_worker_is_a_typed_error_naming_the_page(docs: dict[str, Path]) -> None:
    with open_document(docs["multipage_pdf"], settings=Settings(dpi=72)) as doc:
        pages = doc.pages()
        first = next(pages)
        assert first.page_number == 1
        os.kill(doc._renderer.proc.pid, signal.SIGSEGV)  # what a MuPDF heap corruption does
        with pytest.raises(DocVisionError) as info:
            list(pages)
    assert info.value.code == "renderer_crashed"
    assert "SIGSEGV" in str(info.value) and "multipage.pdf" in str(info.value)
    assert info.value.details.get("page_number") in (2, 3, 4)
    # The caller keeps working.
    with open_document(docs["multipage_pdf"], settings=Settings(dpi=72)) as doc:
        assert len(list(doc.pages())) == doc.page_count


def test_a_hanging_worker_times_out_per_page(docs: dict[str, Path]) -> None:
    with open_document(docs["multipage_pdf"], settings=Settings(dpi=72, render_page_timeout_s=1)) as doc:
        os.kill(doc._renderer.proc.pid, signal.SIGSTOP)  # a page that never finishes
        with pytest.raises(DocVisionError) as info:
            list(doc.pages())
        assert doc._renderer.proc.poll() is not None, "the hung worker is killed"
    assert info.value.code == "render_timeout" and "RENDER_PAGE_TIMEOUT_S" in str(info.value)


def test_memory_limit_is_document_too_complex(docs: dict[str, Path]) -> None:
    settings = Settings(dpi=1200, max_page_pixels=500_000_000, render_memory_mb=300)  # a 400 MB pixmap
    code = _code(lambda: list(open_document(docs["multipage_pdf"], settings=settings).pages()))
    assert code == "document_too_complex"


def test_worker_gets_no_credentials(docs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    with open_document(docs["png"]) as doc:
        environ = Path(f"/proc/{doc._renderer.proc.pid}/environ").read_bytes()
        assert doc.page_count == 1
    assert b"do-not-leak" not in environ and b"AWS_" not in environ


def test_no_worker_or_temp_file_outlives_the_document(docs: dict[str, Path], tmp_path: Path) -> None:
    with open_document(docs["multipage_pdf"], settings=Settings(dpi=72, work_dir=tmp_path)) as doc:
        proc = doc._renderer.proc
        next(doc.pages())
    assert proc.poll() is not None
    assert list(tmp_path.iterdir()) == []


def test_a_document_that_fails_to_open_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(DocVisionError):
        open_document(
            b"%PDF-1.7\n" + bytes(range(256)) * 20, name="bad.pdf", settings=Settings(work_dir=tmp_path)
        )
    assert list(tmp_path.iterdir()) == []
