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
    assert [p for p in tmp_path.rglob("*") if not p.is_dir()] == []


def test_a_document_that_fails_to_open_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(DocVisionError):
        open_document(
            b"%PDF-1.7\n" + bytes(range(256)) * 20, name="bad.pdf", settings=Settings(work_dir=tmp_path)
        )
    assert [p for p in tmp_path.rglob("*") if not p.is_dir()] == []


# Issue 23 item 9: a worker killed from outside (OOM killer, SIGKILL) is not a malformed document.
def test_an_externally_killed_worker_is_started_again(docs: dict[str, Path]) -> None:
    with open_document(docs["multipage_pdf"], settings=Settings(dpi=72)) as doc:
        pages = doc.pages()
        assert next(pages).page_number == 1
        os.kill(doc._renderer.proc.pid, signal.SIGKILL)
        rest = [f.page_number for f in pages]
    assert rest == list(range(2, doc.page_count + 1))  # every page, none twice


def test_a_worker_killed_twice_is_transient_not_a_document_error(docs: dict[str, Path]) -> None:
    from engine.errors import DocumentError

    with open_document(docs["multipage_pdf"], settings=Settings(dpi=72)) as doc:
        pages = doc.pages()
        next(pages)
        os.kill(doc._renderer.proc.pid, signal.SIGKILL)
        next(pages)
        os.kill(doc._renderer.proc.pid, signal.SIGKILL)
        with pytest.raises(DocVisionError) as info:
            list(pages)
    assert info.value.code == "renderer_killed" and not isinstance(info.value, DocumentError)
    assert "OOM" in str(info.value) and "malformed" not in str(info.value)


# Issue 23 item 14: a SIGKILLed parent's frames (raw page pixels) do not stay in /dev/shm.
def test_a_killed_parents_frame_folder_is_removed_by_the_next_start(
    docs: dict[str, Path], tmp_path: Path
) -> None:
    import subprocess
    import sys

    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm")
    script = (
        "import os, signal, sys\n"
        "from engine.config import Settings\n"
        "from engine.documents import open_document\n"
        "doc = open_document(sys.argv[1], settings=Settings(dpi=72))\n"
        "next(doc.pages())\n"
        "print(doc._renderer._frames_dir, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(docs["multipage_pdf"])],
        capture_output=True,
        timeout=120,
        text=True,
    )
    frames = Path(out.stdout.strip())
    assert out.returncode == -signal.SIGKILL and str(frames).startswith("/dev/shm/docvision-frames-")
    assert frames.is_dir() and any(frames.iterdir()), "the killed parent left its frames (the defect's setup)"
    with open_document(docs["png"], settings=Settings(dpi=72)) as doc:  # the next start, in this process
        assert doc.page_count == 1
    assert not frames.exists()
    assert not frames.parent.exists() or frames.parent.name.split("-")[2] != str(os.getpid())
