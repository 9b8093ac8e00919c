"""docs/ARCHITECTURE.md stays true: every module and file it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ARCHITECTURE.md"


def named_paths() -> set[str]:
    text = DOC.read_text()
    return set(re.findall(r"`((?:engine|handlers|tests|infra|models|bench)/[\w/]+\.py)", text))


def test_every_module_it_names_exists() -> None:
    names = named_paths()
    assert len(names) >= 20, names  # the page names the modules of both flows
    missing = sorted(n for n in names if not (ROOT / n).is_file())
    assert missing == [], f"docs/ARCHITECTURE.md names modules that do not exist: {missing}"


def test_the_functions_it_names_exist_in_their_module() -> None:
    text = DOC.read_text()
    for module, names in re.findall(r"`((?:engine|handlers)/[\w/]+\.py): ([\w., ]+)`", text):
        source = (ROOT / module).read_text()
        for name in re.split(r"[, ]+", names):
            name = name.split(".")[-1]
            if name:
                assert re.search(rf"^\s*(?:def|class) {name}\b", source, re.M), f"{module} has no {name}"
