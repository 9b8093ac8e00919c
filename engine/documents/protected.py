"""Office files "protected" only with Excel's built-in default password, opened as Office opens them.

Excel encrypts a workbook whose only protection is a write-reservation or workbook-structure password with the
fixed password ``VelvetSweatshop`` (MS-OFFCRYPTO 2.3.7.1, MS-XLS 2.2.10), and opens it without asking; the same
holds for any Office file encrypted with that password. Such a file is decrypted here (msoffcrypto-tool: ECMA-376
agile and standard encryption of DOCX/XLSX/PPTX, RC4 / RC4 CryptoAPI / XOR of DOC/XLS/PPT), and the plain bytes
are then sniffed, neutralized and converted like any upload. A file that needs any other password stays
``encrypted_document``.

The decryption runs inside the render worker (engine.documents.worker, op ``decrypt``) under its limits:
RLIMIT_AS (``DOCVISION_RENDER_MEMORY_MB``), RLIMIT_CPU and a wall-clock limit (``DOCVISION_RENDER_TIMEOUT_S``),
a minimal environment; a hostile container that makes the decryptor spin or balloon costs that process only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import DocumentTooComplex, RenderTimeout, error_class

if TYPE_CHECKING:
    from engine.config import Settings

log = logging.getLogger(__name__)

DEFAULT_PASSWORD = "VelvetSweatshop"
_START_ALLOWANCE_S = 30.0  # the worker's interpreter start and imports


def decrypt_op(cmd: dict[str, Any]) -> dict[str, Any]:  # runs in the render worker (op "decrypt")
    """Decrypt ``cmd["path"]`` with the default password into ``cmd["out"]``.

    Reply ``{"decrypted": true, "size": n}``, or ``{"decrypted": false, "why": ...}`` when the file needs
    another password or uses a method the decryptor does not know (never document content).
    """
    import msoffcrypto
    from msoffcrypto import exceptions

    with open(cmd["path"], "rb") as src:
        try:
            office = msoffcrypto.OfficeFile(src)
            if not office.is_encrypted():
                return {"decrypted": False, "why": "not encrypted"}
            kwargs: dict[str, Any] = {"password": DEFAULT_PASSWORD}
            if type(office).__name__ == "OOXMLFile":
                kwargs["verify_password"] = True  # agile/standard: check the verifier before decrypting
            office.load_key(**kwargs)
            with open(cmd["out"], "wb") as out:
                office.decrypt(out)
        except exceptions.InvalidKeyError:
            return {"decrypted": False, "why": "another password"}
        except (exceptions.DecryptionError, exceptions.FileFormatError, exceptions.ParseError) as exc:
            return {"decrypted": False, "why": f"not decryptable here ({type(exc).__name__})"}
        except MemoryError:
            raise  # document_too_complex, from the worker's limit
        except Exception as exc:  # noqa: BLE001 - XML, struct, OLE errors of a damaged header
            # a damaged encryption header: as far as we can tell, a file we cannot open without a password
            return {"decrypted": False, "why": f"unreadable encryption header ({type(exc).__name__})"}
    return {"decrypted": True, "size": os.path.getsize(cmd["out"])}


def unlock_default_password(data: bytes, name: str, settings: Settings) -> bytes | None:
    """The plain bytes of an Office file encrypted with the default password, or None (another password)."""
    from engine.documents import worker

    base = worker.process_dir(str(settings.work_dir or tempfile.gettempdir()))
    tmp = tempfile.mkdtemp(prefix="decrypt-", dir=base)
    timeout_s = float(settings.render_timeout_s)
    proc = worker._spawn(settings.render_memory_mb, int(timeout_s) + 1)
    try:
        src, out = Path(tmp) / "encrypted", Path(tmp) / "plain"
        src.write_bytes(data)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps({"op": "decrypt", "path": str(src), "out": str(out)}).encode() + b"\n")
        proc.stdin.flush()
        reply = _read_reply(proc.stdout.fileno(), time.monotonic() + timeout_s + _START_ALLOWANCE_S)
        if reply is None:
            proc.poll()
            if proc.returncode is None or proc.returncode == -signal.SIGXCPU:
                raise RenderTimeout(
                    f"decrypting the Office file (Excel's default password) did not finish within "
                    f"{timeout_s:.0f} s (DOCVISION_RENDER_TIMEOUT_S); the file may be malformed",
                    document=name,
                )
            raise DocumentTooComplex(
                f"decrypting the Office file (Excel's default password) stopped the worker (exit "
                f"{proc.returncode}); it may need more memory than DOCVISION_RENDER_MEMORY_MB allows",
                document=name,
            )
        if "error" in reply:
            err = reply["error"]
            exc = error_class(err["code"])(err["reason"], document=name, **err.get("details", {}))
            exc.code = err["code"]
            raise exc
        if not reply.get("decrypted"):
            log.info("%s: encrypted with a password other than Excel's default (%s)", name, reply.get("why"))
            return None
        log.info(
            "%s: encrypted with Excel's default password only; decrypted (%d bytes)", name, reply["size"]
        )
        return out.read_bytes()
    finally:
        worker._discard(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def _read_reply(fd: int, deadline: float) -> dict[str, Any] | None:
    """One length-prefixed JSON header from the worker; None when it timed out or died first."""
    from engine.documents.worker import _HEADER

    def read(n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
            chunk = os.read(fd, n - len(buf)) if ready else b""
            if not chunk:
                return None
            buf += chunk
        return buf

    with contextlib.suppress(OSError, ValueError):
        head = read(_HEADER.size)
        body = read(_HEADER.unpack(head)[0]) if head is not None else None
        if body is not None:
            reply: dict[str, Any] = json.loads(body)
            return reply
    return None
