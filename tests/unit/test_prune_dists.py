"""infra/prune_dists.py: removing installed distributions from a --target tree by their RECORD files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from infra.prune_dists import prune

pytestmark = pytest.mark.unit
SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "prune_dists.py"


def _install(tree: Path, dist: str, files: dict[str, str], extra_record: tuple[str, ...] = ()) -> None:
    """A distribution as an installer leaves it: its files and a dist-info whose RECORD lists them."""
    info = tree / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Name: {dist}\nVersion: 1.0\n")
    for rel, text in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    rows = [f"{rel},sha256=x,{len(text)}" for rel, text in files.items()]
    rows += [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,", *extra_record]
    (info / "RECORD").write_text("\n".join(rows) + "\n")


def test_removes_only_the_named_distributions_and_nothing_outside_the_tree(tmp_path: Path) -> None:
    tree, outside = tmp_path / "tree", tmp_path / "outside.txt"
    outside.write_text("not the tree's")
    _install(tree, "Bake_Only", {"bake_only/__init__.py": "x = 1\n", "bake_only/sub/mod.py": "y = 2\n",
                                 "bin/bake-cli": "#!/bin/sh\n"}, extra_record=("../outside.txt,,",))  # fmt: skip
    _install(tree, "keep", {"keep/__init__.py": "z = 3\n", "bin/keep-cli": "#!/bin/sh\n"})
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(tree)], check=True
    )  # bytecode after install
    assert list((tree / "bake_only" / "__pycache__").glob("*.pyc"))

    info = tree / "Bake_Only-1.0.dist-info"
    listed = ["bake_only/__init__.py", "bake_only/sub/mod.py", "bin/bake-cli", f"{info.name}/METADATA",
              f"{info.name}/RECORD"]  # fmt: skip
    expected = sum((tree / rel).stat().st_size for rel in listed)
    assert prune(tree, ["bake-only"]) == {"bake-only": expected}  # names compare normalised
    assert not (tree / "bake_only").exists() and not (tree / "Bake_Only-1.0.dist-info").exists()
    assert not (tree / "bin" / "bake-cli").exists()
    assert outside.read_text() == "not the tree's"  # RECORD paths that leave the tree are not followed
    assert (tree / "keep" / "__init__.py").exists() and (tree / "bin" / "keep-cli").exists()
    assert list((tree / "keep" / "__pycache__").glob("*.pyc"))


def test_a_name_that_is_not_installed_is_an_error(tmp_path: Path) -> None:
    _install(tmp_path, "keep", {"keep/__init__.py": ""})
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "peft"], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "'peft' is not installed" in proc.stderr
    assert (tmp_path / "keep" / "__init__.py").exists()
