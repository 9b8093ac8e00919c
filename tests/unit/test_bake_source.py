"""models.bake tells a missing local model folder from a hub id (issue 21: .dockerignore left models/tiny-*
out of the build context, and the bake then failed offline with a hub error that never named the folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.bake import main, missing_local_source

pytestmark = pytest.mark.unit


def test_a_missing_folder_under_an_existing_parent_is_named(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert main(["models/tiny-colqwen2", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "model_source_missing" in err and "'models/tiny-colqwen2'" in err and ".dockerignore" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("source", ["./nowhere", "/nonexistent/model"])
def test_explicit_paths_that_do_not_exist_are_missing(source: str) -> None:
    assert missing_local_source(source)


def test_hub_ids_and_existing_folders_are_not_flagged(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert missing_local_source("vidore/colqwen2-v1.0") is None  # no folder "vidore" here: a hub id
    (tmp_path / "m").mkdir()
    assert missing_local_source("m") is None and missing_local_source(str(tmp_path / "m")) is None
