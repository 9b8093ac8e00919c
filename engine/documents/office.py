"""Office, ODF, RTF and HTML documents → PDF through LibreOffice headless.

Each conversion gets its own profile directory (-env:UserInstallation) and output folder, so parallel
conversions never share LibreOffice's lock files or state; the whole process group is killed on timeout.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from engine.errors import ConversionFailed, ConversionTimeout

log = logging.getLogger(__name__)

# HTML is opened in Writer (not Writer/Web, whose PDF export starts with a blank page) with the HTML import filter.
_EXTRA_ARGS = {"html": ["--infilter=HTML (StarWriter)", "--convert-to", "pdf:writer_pdf_Export"]}


def find_soffice(configured: str) -> str:
    found = shutil.which(configured)
    if not found:
        raise ConversionFailed(
            f"LibreOffice ({configured!r}) is not installed; run `make setup` or set DOCVISION_SOFFICE to its path"
        )
    return found


def convert_to_pdf(
    data: bytes, type_: str, name: str, *, soffice: str, timeout_s: float, work_dir: Path | None = None
) -> bytes:
    binary = find_soffice(soffice)
    with tempfile.TemporaryDirectory(prefix="docvision-lo-", dir=work_dir) as tmp:
        root = Path(tmp)
        source = root / f"document.{type_}"  # extension from the sniffed type, never the caller's name
        source.write_bytes(data)
        out_dir = root / "out"
        out_dir.mkdir()
        cmd = [
            binary,
            "--headless",
            "--norestore",
            "--nologo",
            "--nodefault",
            "--nolockcheck",
            f"-env:UserInstallation={(root / 'profile').as_uri()}",
            *_EXTRA_ARGS.get(type_, ["--convert-to", "pdf"]),
            "--outdir",
            str(out_dir),
            str(source),
        ]
        started = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env={**os.environ, "HOME": tmp},
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise ConversionTimeout(
                f"LibreOffice did not finish converting the {type_.upper()} within {timeout_s:.0f} s "
                "(DOCVISION_CONVERSION_TIMEOUT_S); the document may be very large or malformed",
                document=name,
            ) from exc
        result = out_dir / "document.pdf"
        if proc.returncode != 0 or not result.exists() or result.stat().st_size == 0:
            detail = (stderr or stdout).decode(errors="replace").strip().splitlines()
            raise ConversionFailed(
                f"LibreOffice could not convert the {type_.upper()} to PDF (exit {proc.returncode}"
                f"{': ' + detail[-1] if detail else ''}); the file may be corrupt or password-protected",
                document=name,
            )
        pdf = result.read_bytes()
        if not pdf.startswith(b"%PDF-"):
            raise ConversionFailed("LibreOffice produced something that is not a PDF", document=name)
        log.info("converted %s (%s) to PDF in %.2f s", name, type_, time.monotonic() - started)
        return pdf
