"""Office, ODF, RTF and HTML documents → PDF through LibreOffice headless.

Each conversion gets its own profile directory (-env:UserInstallation) and output folder, so parallel
conversions never share LibreOffice's lock files or state; the whole process group is killed on timeout.

Nothing a document contains may reach the network or local files. Layers, outermost last:
1. external references are removed before conversion (engine.documents.neutralize);
2. the profile tells LibreOffice never to update links, to block linked resources (BlockUntrustedRefererLinks),
   never to recalculate on load, never to run macros, and to use a proxy that points nowhere;
3. soffice runs with a minimal environment (no credentials), proxy variables pointing nowhere, an address-space
   limit (RLIMIT_AS) and no core dumps;
4. where the kernel allows unprivileged user namespaces (CI, developer machines; not Lambda), soffice runs in
   its own empty network namespace (``unshare -rn``), so even a missed reference has no network at all.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.documents.neutralize import neutralize
from engine.errors import (
    ConversionFailed,
    ConversionOutOfMemory,
    ConversionTimeout,
    CorruptDocument,
    DocumentError,
)

_NOWHERE = "http://127.0.0.1:9"  # the discard port: connections are refused at once
_PROFILE = """<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry" xmlns:xs="http://www.w3.org/2001/XMLSchema"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
{items}
</oor:items>
"""
_SETTINGS = [
    ("/org.openoffice.Office.Common/Security/Scripting", "BlockUntrustedRefererLinks", "true"),
    ("/org.openoffice.Office.Common/Security/Scripting", "MacroSecurityLevel", "3"),
    ("/org.openoffice.Office.Common/Security/Scripting", "DisableMacrosExecution", "true"),
    ("/org.openoffice.Office.Writer/Content/Update", "Link", "0"),  # Writer: 0 = never update links
    ("/org.openoffice.Office.Calc/Content/Update", "Link", "1"),  # Calc: 1 = never update links
    ("/org.openoffice.Office.Calc/Formula/Load", "OOXMLRecalcMode", "1"),  # never recalculate on load
    ("/org.openoffice.Office.Calc/Formula/Load", "ODFRecalcMode", "1"),
    ("/org.openoffice.Inet/Settings", "ooInetProxyType", "2"),
    ("/org.openoffice.Inet/Settings", "ooInetHTTPProxyName", "127.0.0.1"),
    ("/org.openoffice.Inet/Settings", "ooInetHTTPProxyPort", "9"),
    ("/org.openoffice.Inet/Settings", "ooInetHTTPSProxyName", "127.0.0.1"),
    ("/org.openoffice.Inet/Settings", "ooInetHTTPSProxyPort", "9"),
    ("/org.openoffice.Inet/Settings", "ooInetFTPProxyName", "127.0.0.1"),
    ("/org.openoffice.Inet/Settings", "ooInetFTPProxyPort", "9"),
    ("/org.openoffice.Inet/Settings", "ooInetNoProxy", ""),
]
# Runs before soffice: limits, then exec (no preexec_fn, which is unsafe in a threaded parent).
_LIMITER = (
    "import os,resource,sys;m=int(sys.argv[1]);"
    "m>0 and resource.setrlimit(resource.RLIMIT_AS,(m,m));"
    "resource.setrlimit(resource.RLIMIT_CORE,(0,0));os.execvp(sys.argv[2],sys.argv[2:])"
)


def write_profile(profile: Path) -> None:
    """A fresh LibreOffice user profile with the hardened settings above."""
    user = profile / "user"
    user.mkdir(parents=True, exist_ok=True)
    items = "\n".join(
        f'<item oor:path="{path}"><prop oor:name="{name}" oor:op="fuse"><value>{value}</value></prop></item>'
        for path, name, value in _SETTINGS
    )
    (user / "registrymodifications.xcu").write_text(_PROFILE.format(items=items))


def minimal_env(home: str) -> dict[str, str]:
    """What soffice gets instead of our environment: no credentials, every proxy variable pointing nowhere."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"}
    for var in ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy"):
        env[var] = env[var.upper()] = _NOWHERE
    env["no_proxy"] = env["NO_PROXY"] = ""
    env["SAL_USE_VCLPLUGIN"] = "svp"
    if "LD_LIBRARY_PATH" in os.environ:  # the Lambda image's LibreOffice may need it
        env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
    return env


@functools.cache
def network_namespace_prefix() -> tuple[str, ...]:
    """``unshare -rn`` when this kernel lets an unprivileged process create a user+network namespace, else ()."""
    if os.environ.get("DOCVISION_NO_NETNS") == "1":
        return ()
    unshare = shutil.which("unshare")
    if not unshare:
        return ()
    try:
        ok = subprocess.run([unshare, "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return (unshare, "-rn") if ok else ()


log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 15.0  # a log line this often while a conversion runs
_POLL_S = 0.5  # how often the converter's memory is looked at
_AT_LIMIT_MB = 48  # a peak this close to RLIMIT_AS means an allocation was refused

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
    data: bytes,
    type_: str,
    name: str,
    *,
    soffice: str,
    timeout_s: float,
    work_dir: Path | None = None,
    memory_mb: int = 3072,
) -> bytes:
    """Office/ODF/RTF/HTML bytes (``type_`` = the sniffed type's value) → PDF bytes, or a typed error."""
    binary = find_soffice(soffice)
    try:
        data = neutralize(data, type_)
    except DocumentError:
        raise
    except Exception as exc:  # noqa: BLE001 - a container we cannot rewrite is not a document we convert
        raise CorruptDocument(
            f"the {type_.upper()} cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})",
            document=name,
        ) from exc
    with tempfile.TemporaryDirectory(prefix="docvision-lo-", dir=work_dir) as tmp:
        root = Path(tmp)
        # Only the document is in this folder: a relative reference that slipped through finds nothing.
        doc_dir = root / "in"
        doc_dir.mkdir()
        source = doc_dir / f"document.{type_}"  # extension from the sniffed type, never the caller's name
        source.write_bytes(data)
        write_profile(root / "profile")
        out_dir = root / "out"
        out_dir.mkdir()
        cmd = [
            sys.executable,
            "-I",
            "-S",
            "-c",
            _LIMITER,
            str(memory_mb << 20),
            *network_namespace_prefix(),
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
            env=minimal_env(tmp),
            cwd=doc_dir,
        )
        peak_mb = 0  # the largest address space any process of the conversion reached (VmPeak)
        next_report = started + PROGRESS_EVERY_S
        while True:
            left = timeout_s - (time.monotonic() - started)
            try:
                stdout, stderr = proc.communicate(timeout=max(0.0, min(_POLL_S, left)))
                break
            except subprocess.TimeoutExpired as exc:
                peak_mb = max(peak_mb, session_peak_mb(proc.pid))
                now = time.monotonic()
                if now - started >= timeout_s:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.communicate()
                    log.warning(
                        "conversion of %s (%s) stopped at the %.0f s limit, converter peak %d MB",
                        name, type_, timeout_s, peak_mb,
                    )  # fmt: skip
                    raise ConversionTimeout(
                        f"LibreOffice did not finish converting the {type_.upper()} within {timeout_s:.0f} s "
                        "(DOCVISION_CONVERSION_TIMEOUT_S); the document may be very large or malformed",
                        document=name,
                    ) from exc
                if now >= next_report:  # a long conversion says it is alive (no document content)
                    log.info(
                        "converting %s (%s): %.0f s of at most %.0f s, converter peak %d MB of %d MB",
                        name, type_, now - started, timeout_s, peak_mb, memory_mb,
                    )  # fmt: skip
                    next_report = now + PROGRESS_EVERY_S
        result = out_dir / "document.pdf"
        if proc.returncode != 0 or not result.exists() or result.stat().st_size == 0:
            detail = (stderr or stdout).decode(errors="replace").strip().splitlines()
            if memory_mb > 0 and peak_mb >= memory_mb - _AT_LIMIT_MB:
                # LibreOffice answers an allocation its limit refused with "source file could not be loaded"
                # (exit 0) or an abort: what failed is the memory, not the file
                raise ConversionOutOfMemory(
                    f"LibreOffice reached its memory limit ({memory_mb} MB, DOCVISION_RENDER_MEMORY_MB) while "
                    f"converting the {type_.upper()} and gave up; raise DOCVISION_RENDER_MEMORY_MB (and the "
                    "function's MemorySize with it), or split the document (fewer sheets/rows) and upload the parts",
                    document=name,
                    limit_mb=memory_mb,
                    setting="DOCVISION_RENDER_MEMORY_MB",
                )
            raise ConversionFailed(
                f"LibreOffice could not convert the {type_.upper()} to PDF (exit {proc.returncode}"
                f"{': ' + detail[-1] if detail else ''}); the file may be corrupt or password-protected",
                document=name,
            )
        pdf = result.read_bytes()
        if not pdf.startswith(b"%PDF-"):
            raise ConversionFailed("LibreOffice produced something that is not a PDF", document=name)
        log.info(
            "converted %s (%s) to PDF in %.2f s (%d KB, converter peak %d MB)",
            name, type_, time.monotonic() - started, len(pdf) >> 10, peak_mb,
        )  # fmt: skip
        return pdf


def session_peak_mb(session: int) -> int:
    """The largest VmPeak (MB) among live processes of this session (soffice runs as oosplash → soffice.bin)."""
    peak = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                if int(f.read().rsplit(b")", 1)[1].split()[3]) != session:
                    continue
            with open(f"/proc/{entry.name}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmPeak:"):
                        peak = max(peak, int(line.split()[1]) >> 10)
                        break
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
    return peak
