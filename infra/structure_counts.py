"""Counts that say how the code's seams hold up (issue 26): lines per package, ``Any`` in public signatures of
engine/, ``os.environ`` reads outside engine/config.py and engine/bootstrap.py, files over 400 lines, tests per
reach. Reads the source as text (nothing is imported or run). Usage: python infra/structure_counts.py [OUT.json]
"""

from __future__ import annotations

import ast
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "handlers", "models", "bench", "infra", "tests")
ENV_ALLOWED = {"engine/config.py", "engine/bootstrap.py"}


def _py(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if ".venv" not in p.parts)


def _names_any(node: ast.AST | None) -> bool:
    if node is None:
        return False
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and sub.id == "Any":
            return True
        if isinstance(sub, ast.Attribute) and sub.attr == "Any":
            return True
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and re.search(r"\bAny\b", sub.value):
            return True
    return False


def _bare(node: ast.AST | None) -> bool:
    """Any itself (or Any | None), not Any inside a container such as dict[str, Any] (a JSON value)."""
    if isinstance(node, ast.Name | ast.Attribute):
        return getattr(node, "id", getattr(node, "attr", "")) == "Any"
    if isinstance(node, ast.BinOp):
        return _bare(node.left) or _bare(node.right)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return bool(re.fullmatch(r"\s*Any\s*(\|\s*None\s*)?", node.value))
    return False


def _public_any(path: Path) -> list[str]:
    """Public functions/methods (no leading underscore, in a public class or at module level) whose parameter or
    return annotations name Any."""
    tree = ast.parse(path.read_text())
    found: list[str] = []

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.name.startswith("_") and node.name != "__init__":
                    continue
                a = node.args
                params = a.posonlyargs + a.args + a.kwonlyargs + [x for x in (a.vararg, a.kwarg) if x]
                hits = [(p.arg, p.annotation) for p in params if _names_any(p.annotation)]
                if _names_any(node.returns):
                    hits.append(("->", node.returns))
                found.extend(f"{prefix}{node.name}({h}){'' if _bare(a) else ' [json]'}" for h, a in hits)

    visit(tree.body, "")
    return found


def _env_reads(path: Path) -> int:
    tree = ast.parse(path.read_text())
    n = 0
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "environ"
            or isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "getenv"
        ):
            n += 1
    return n


def _tests(path: Path) -> tuple[int, int]:
    """(test functions, of them marked slow) in one file; a module-level pytestmark = slow marks all."""
    tree = ast.parse(path.read_text())
    module_slow = any(
        isinstance(n, ast.Assign)
        and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
        and "slow" in ast.unparse(n.value)
        for n in tree.body
    )
    total = slow = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            total += 1
            if module_slow or any("slow" in ast.unparse(d) for d in node.decorator_list):
                slow += 1
    return total, slow


def counts() -> dict[str, object]:
    lines = {
        pkg: sum(len(p.read_text().splitlines()) for p in _py(pkg))
        for pkg in PACKAGES
        if (ROOT / pkg).exists()
    }
    sub = Counter()
    for p in _py("engine"):
        rel = p.relative_to(ROOT / "engine")
        sub["engine/" + (rel.parts[0] if len(rel.parts) > 1 else rel.name)] += len(p.read_text().splitlines())
    anys = {str(p.relative_to(ROOT)): _public_any(p) for p in _py("engine")}
    anys = {k: v for k, v in anys.items() if v}
    env = {str(p.relative_to(ROOT)): _env_reads(p) for p in _py("engine") + _py("handlers")}
    env = {k: v for k, v in env.items() if v and k not in ENV_ALLOWED}
    big = {
        str(p.relative_to(ROOT)): len(p.read_text().splitlines())
        for p in _py("engine") + _py("handlers")
        if len(p.read_text().splitlines()) > 400
    }
    reach: dict[str, dict[str, int]] = {}
    for folder in ("unit", "integration"):
        files = [p for p in _py(f"tests/{folder}") if p.name.startswith("test_")]
        t = [_tests(p) for p in files]
        reach[folder] = {"files": len(files), "tests": sum(a for a, _ in t), "slow": sum(b for _, b in t)}
    return {
        "lines": lines,
        "lines_engine": dict(sorted(sub.items())),
        "any_in_public_signatures": sum(len(v) for v in anys.values()),
        "bare_any_in_public_signatures": sum(1 for v in anys.values() for h in v if not h.endswith("[json]")),
        "any_by_file": {k: len(v) for k, v in sorted(anys.items())},
        "bare_any": {k: [h for h in v if not h.endswith("[json]")] for k, v in sorted(anys.items())},
        "env_reads_outside_config": sum(env.values()),
        "env_reads_by_file": dict(sorted(env.items())),
        "files_over_400_lines": dict(sorted(big.items(), key=lambda kv: -kv[1])),
        "tests_by_reach": reach,
    }


if __name__ == "__main__":
    result = counts()
    text = json.dumps(result, indent=1)
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text + "\n")
    print(text)
