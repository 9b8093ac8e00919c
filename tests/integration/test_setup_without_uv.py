"""`make setup` on a machine where uv is not installed: the first run must build a working .venv.

The setup runs in a copy of this checkout with a PATH that has no uv (only /usr/bin:/bin), so the Makefile
must bootstrap uv itself (infra/bootstrap_uv.py, no pip: Debian's system Python refuses `pip install`
under PEP 668). Packages come from uv's cache when CI's own setup already filled it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
BARE_PATH = "/usr/bin:/bin"


def _checkout_copy(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_symlink() or not src.is_file():  # .venv is a symlink in helper worktrees
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the setup targets Debian/Linux")
def test_make_setup_bootstraps_uv_when_path_has_none(tmp_path: Path) -> None:
    if shutil.which("uv", path=BARE_PATH):
        pytest.skip(f"uv is installed system-wide ({shutil.which('uv', path=BARE_PATH)}); cannot hide it")
    for tool in ("make", "python3", "git"):
        assert shutil.which(tool, path=BARE_PATH), f"{tool} missing from {BARE_PATH}"
    clone = tmp_path / "clone"
    _checkout_copy(clone)
    # The caller's environment (certificates, proxies, HOME: uv's cache is reused) with a PATH without uv,
    # and nothing that points Python at this checkout instead of the copy.
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYENV_VERSION", "UV_PYTHON", "MAKEFLAGS", "MAKELEVEL"}
    env = {k: v for k, v in os.environ.items() if k not in drop} | {"PATH": BARE_PATH}
    # the Debian-package stamp: those are a root/apt concern this test does not repeat
    (clone / ".stamps").mkdir()
    (clone / ".stamps" / "system").touch()
    system_before = subprocess.run(
        ["python3", "-m", "pip", "list", "--format=freeze"], env=env, capture_output=True, text=True
    ).stdout
    proc = subprocess.run(["make", "setup"], cwd=clone, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (clone / ".stamps" / "bin" / "uv").exists(), "uv should have been bootstrapped into .stamps/bin"
    venv = clone / ".venv"
    assert (venv / "bin" / "baml-cli").exists() and (clone / "baml_client" / "__init__.py").exists()
    assert (clone / "models" / "tiny-colqwen2-baked" / "manifest.json").exists()
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import engine, torch, colpali_engine; print(engine.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip().startswith(str(clone)), check.stdout  # the editable install is this copy
    system_after = subprocess.run(
        ["python3", "-m", "pip", "list", "--format=freeze"], env=env, capture_output=True, text=True
    ).stdout
    assert system_after == system_before, "setup installed packages into the system Python"
    # a second run is a no-op that still works (the first no longer leaves uv on PATH for it)
    again = subprocess.run(["make", "setup"], cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    shutil.rmtree(clone)  # a few GB of (mostly hard-linked) packages; pytest keeps tmp dirs otherwise
