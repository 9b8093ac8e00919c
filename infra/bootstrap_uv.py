"""Install the pinned uv binary without pip: `make setup` runs this when no `uv` is on PATH.

    python3 infra/bootstrap_uv.py .stamps/bin        # → .stamps/bin/uv

Standard library only, so it works with a Debian system Python where `pip install` is refused
(PEP 668, "externally-managed-environment") or where pip is not installed at all: it downloads uv's
wheel for this machine from PyPI, checks its sha256 against PyPI's, and unpacks the one binary.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import sys
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

VERSION = "0.13.9"  # the same uv as Dockerfile.lambda
# The package index's JSON simple API (PEP 691); another index (a mirror) through UV_BOOTSTRAP_INDEX_URL.
INDEX = os.environ.get("UV_BOOTSTRAP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
MACHINE_TAGS = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def wheel_for_this_machine(files: list[dict]) -> dict:
    machine = MACHINE_TAGS.get(platform.machine().lower())
    if sys.platform != "linux" or machine is None:
        raise SystemExit(f"no uv wheel known for {sys.platform}/{platform.machine()}; install uv yourself")
    for f in files:
        name = f["filename"]
        if (
            name.startswith(f"uv-{VERSION}-")
            and name.endswith(".whl")
            and "manylinux" in name
            and f"_{machine}" in name
            and "musl" not in name
        ):
            return f
    raise SystemExit(f"PyPI lists no manylinux {machine} wheel of uv {VERSION}; install uv yourself")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    dest = Path(argv[0])
    request = urllib.request.Request(
        f"{INDEX}/uv/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        project = json.load(r)
    wheel = wheel_for_this_machine(project["files"])
    url = urllib.parse.urljoin(f"{INDEX}/uv/", wheel["url"])
    with urllib.request.urlopen(url, timeout=300) as r:
        data = r.read()
    if hashlib.sha256(data).hexdigest() != wheel["hashes"]["sha256"]:
        raise SystemExit(f"{wheel['filename']}: sha256 differs from PyPI's; not installing it")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        binary = z.read(f"uv-{VERSION}.data/scripts/uv")
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / ".uv.partial"
    tmp.write_bytes(binary)
    tmp.chmod(0o755)
    tmp.replace(dest / "uv")
    print(f"installed uv {VERSION} ({wheel['filename']}) to {dest / 'uv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
