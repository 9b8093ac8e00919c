"""The README's configuration table must list every setting (and nothing that no longer exists)."""

import re
from pathlib import Path

import pytest

from engine.config import Settings

pytestmark = pytest.mark.unit
README = Path(__file__).resolve().parents[2] / "README.md"


def env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names.add(
            alias.choices[0]
            if alias is not None and hasattr(alias, "choices")
            else f"DOCVISION_{name.upper()}"
        )
    return names


def test_every_setting_is_documented() -> None:
    table = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", README.read_text(), flags=re.M))
    assert env_names() - table == set(), "settings missing from the README table"
    assert {n for n in table if n.startswith("DOCVISION_")} - env_names() == set(), (
        "README lists settings that do not exist"
    )
