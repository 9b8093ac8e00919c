import json
from pathlib import Path

import pytest

from engine.cli import main

pytestmark = pytest.mark.integration


def test_render_writes_frames_and_manifest_and_fails_cleanly(
    docs: dict[str, Path], tmp_path: Path, capsys
) -> None:
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.7\n" + b"\x00garbage" * 100)
    out = tmp_path / "out"
    rc = main(["render", str(docs["multipage_pdf"]), str(bad), str(docs["png"]), "--out", str(out)])
    assert rc == 1
    captured = capsys.readouterr()
    assert "corrupt_document" in captured.err and "bad.pdf" in captured.err
    assert "rendered 5 pages from 2 of 3 documents" in captured.out
    folders = sorted(p.name for p in out.iterdir())
    assert len(folders) == 2 and not any(f.endswith(".partial") for f in folders)
    pdf_dir = next(out.glob("multipage-*"))
    manifest = json.loads((pdf_dir / "manifest.json").read_text())
    assert manifest["page_count"] == 4 and len(manifest["pages"]) == 4
    assert (pdf_dir / "page-0001.png").stat().st_size > 1000
    assert manifest["pages"][0]["width"] == 2550


def test_render_exit_zero_when_all_succeed(docs: dict[str, Path], tmp_path: Path) -> None:
    assert main(["render", str(docs["tiff"]), "--out", str(tmp_path)]) == 0


def test_ingest_and_search_cli_report_failures_without_stopping(
    docs, baked_tiny, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("DOCVISION_MODEL", str(baked_tiny))
    monkeypatch.setenv("DOCVISION_INDEX_PATH", str(tmp_path / "q"))
    monkeypatch.setenv("DOCVISION_STORE", str(tmp_path / "store"))
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\n" + b"\x00junk" * 100)
    (folder / "a.tiff").write_bytes(docs["tiff"].read_bytes())
    (folder / "b.png").write_bytes(docs["png"].read_bytes())
    assert main(["ingest", str(folder)]) == 1
    captured = capsys.readouterr()
    assert "2 of 3 documents, 4 pages embedded" in captured.out
    assert (
        "corrupt_document" in captured.err and "broken.pdf" in captured.err and "meaningless" in captured.err
    )
    assert main(["search", "receipt", "--json", "--top-k", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["hits"]) == 2 and result["model_id"] == "tiny-random-colqwen2"
