"""Remove installed distributions from a `pip/uv install --target` tree, file by file from their RECORD.

    python infra/prune_dists.py TREE peft accelerate

The image's runtime tree drops the packages only the bake needs: peft (merges LoRA adapters into the base
model, engine/embedding/loader.py, run in Dockerfile.lambda's model stage) and accelerate (pulled in only by
peft; transformers imports it at start-up when it is installed). Dockerfile.lambda runs this on the final
stage's dependencies, tests/integration/test_lambda_sandbox.py on its copy of that tree (so the sandboxed
handlers prove the service runs without them), bench/coldstart.py on the tree it times.

Standard library only (it runs in the Lambda base image). Only paths inside TREE are removed; a name that is
not installed is an error (a typo would otherwise leave the package in the image silently).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def find_dist_info(tree: Path, name: str) -> Path:
    """The `<name>-<version>.dist-info` directory of distribution `name` in `tree`."""
    wanted = _normalize(name)
    found = [d for d in tree.glob("*.dist-info") if _normalize(d.name.split("-", 1)[0]) == wanted]
    if len(found) != 1:
        raise SystemExit(
            f"prune_dists: {name!r} is {'not installed' if not found else 'installed twice'} in {tree}"
        )
    return found[0]


def recorded_files(tree: Path, dist_info: Path) -> list[Path]:
    """The files RECORD lists, resolved; those outside `tree` (a venv's bin/ scripts) are left out."""
    root = tree.resolve()
    files = []
    for line in (dist_info / "RECORD").read_text().splitlines():
        rel = line.rsplit(",", 2)[0] if line.count(",") >= 2 else line
        if not rel:
            continue
        path = (tree / rel).resolve()
        if path.is_relative_to(root) and path != root:
            files.append(path)
    return files


def prune(tree: Path, names: list[str]) -> dict[str, int]:
    """Remove each distribution's recorded files (and their compiled bytecode), its dist-info directory
    and the directories left empty; returns bytes removed per name."""
    removed: dict[str, int] = {}
    for name in names:
        dist_info = find_dist_info(tree, name)
        size, parents = 0, set()
        for path in recorded_files(tree, dist_info):
            if path.suffix == ".py":  # bytecode compiled after the install is not in RECORD
                for pyc in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
                    pyc.unlink()
            if path.is_file() or path.is_symlink():
                size += path.lstat().st_size
                path.unlink()
                parents.add(path.parent)
        shutil.rmtree(dist_info, ignore_errors=True)
        root = tree.resolve()
        for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            while parent != root and parent.is_relative_to(root) and parent.exists():
                cache = parent / "__pycache__"
                if cache.is_dir() and not any(cache.iterdir()):
                    cache.rmdir()
                if any(parent.iterdir()):
                    break
                parent.rmdir()
                parent = parent.parent
        removed[name] = size
    return removed


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    tree = Path(argv[0])
    for name, size in prune(tree, argv[1:]).items():
        print(f"prune_dists: removed {name} from {tree} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main(sys.argv[1:])
