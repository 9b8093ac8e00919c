"""Isolated rendering: PDFs and images are rasterized in a child process with hard limits.

A hostile document can corrupt MuPDF's heap (SIGSEGV/SIGABRT), decode to gigabytes or spin for minutes. Here
that happens in a worker process, one per document, started with

- RLIMIT_AS (``DOCVISION_RENDER_MEMORY_MB``): allocations past it fail inside the worker (document_too_complex);
- RLIMIT_CPU (``DOCVISION_RENDER_TIMEOUT_S``): CPU seconds for the whole document (SIGXCPU → render_timeout);
- a wall-clock limit per page (``DOCVISION_RENDER_PAGE_TIMEOUT_S``) and per document, enforced by the parent,
  which kills the worker's process group;
- RLIMIT_CORE 0 and a minimal environment (no credentials).

It is a plain subprocess (no namespaces, no root), so it works on Lambda. Frames stream back one at a time over
a pipe: a length-prefixed JSON header, then the raw RGB bytes. The pipe's back-pressure keeps at most one frame
in flight, so memory stays flat in the page count. A crash, a signal or a limit becomes a typed error naming the
document and the page; the calling process keeps working.

    python -m engine.documents.worker MEMORY_MB CPU_S   (spoken to over stdin/stdout; see RenderWorker)
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from PIL import Image

from engine.errors import (
    CorruptDocument,
    DocumentTooComplex,
    DocVisionError,
    RendererCrashed,
    RendererKilled,
    RenderTimeout,
    error_class,
)

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<I")
_START_ALLOWANCE_S = 30.0
_F_SETPIPE_SZ = 1031  # Linux fcntl
# Variables the worker needs; nothing else of the parent's environment (credentials!) is passed on.
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LD_LIBRARY_PATH")

Frame = tuple[int, Image.Image, int, bool]  # (page_number, image, effective_dpi, downscaled)


# ------------------------------------------------------------------------------------------ the child
def _send(out: IO[bytes], header: dict[str, Any], payload: bytes | memoryview = b"") -> None:
    raw = json.dumps(header).encode()
    out.write(_HEADER.pack(len(raw)) + raw)
    if payload:
        out.write(payload)
    out.flush()


def _error_header(exc: BaseException, name: str, page: int | None) -> dict[str, Any]:
    if isinstance(exc, DocVisionError):
        err = exc
    elif isinstance(exc, MemoryError):
        where = f"page {page}" if page else "the document"
        err = DocumentTooComplex(
            f"rendering {where} needs more memory than the render limit (DOCVISION_RENDER_MEMORY_MB); "
            "simplify the document or raise the limit",
            document=name,
        )
    else:
        # Anything else a parser throws is a document it cannot read; the class name, never document text.
        where = f"page {page}" if page else "the document"
        err = CorruptDocument(f"{where} cannot be rendered ({type(exc).__name__})", document=name)
    details = {k: v for k, v in err.details.items() if isinstance(v, str | int | float | bool | None)}
    return {"error": {"code": err.code, "reason": err.reason, "details": details}}


def serve(memory_mb: int, cpu_s: int) -> None:  # pragma: no cover - runs in the child process
    import resource

    if memory_mb > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    if cpu_s > 0:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # The protocol owns fd 1; anything a library prints goes to stderr instead.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    from engine.documents import native

    opened: native.Renderable | None = None
    name = "<document>"
    inp = sys.stdin.buffer
    while line := inp.readline():
        if not line.strip():
            continue  # a late frame acknowledgement
        cmd = json.loads(line)
        page: int | None = None
        try:
            if cmd["op"] == "open":
                name = cmd["name"]
                data = Path(cmd["path"]).read_bytes()
                opened = native.open_renderable(data, cmd["type"], name, cmd["limits"])
                reply: dict[str, Any] = {"page_count": opened.page_count}
                if cmd.get("check_content"):
                    reply["visible"] = native.has_visible_content(opened)
                _send(out, reply)
            elif cmd["op"] == "render":
                assert opened is not None
                page = cmd["start"]
                slots: list[str] | None = cmd.get("slots")
                acked = 0
                for sent, (page_number, w, h, raw, dpi, downscaled) in enumerate(
                    opened.iter_raw(cmd["start"])
                ):
                    head = {"page": page_number, "w": w, "h": h, "dpi": dpi, "downscaled": downscaled}
                    if slots:
                        # Two frame files used in turn: one write here, one read there, one small message on
                        # the pipe (instead of a 25 MB frame squeezed through it in 1 MiB turns).
                        if sent - acked >= len(slots):
                            inp.readline()  # the caller has copied the frame that used this slot
                            acked += 1
                        slot = sent % len(slots)
                        fd = os.open(slots[slot], os.O_WRONLY | os.O_CREAT, 0o600)
                        try:
                            os.pwrite(fd, raw, 0)
                        finally:
                            os.close(fd)
                        _send(out, {**head, "size": len(raw), "slot": slot})
                    else:
                        _send(out, {**head, "size": len(raw)}, raw)
                    page = page_number + 1
                    del raw
                _send(out, {"done": True})
            elif cmd["op"] == "ocr":  # Tesseract on a frame the caller wrote, under this process's limits
                from engine.documents.ocr import ocr_op

                _send(out, ocr_op(cmd))
        except BaseException as exc:  # noqa: BLE001 - every failure crosses the pipe as a typed error
            _send(out, _error_header(exc, name, page))


# ----------------------------------------------------------------------------------------- the parent
# One spare worker is started ahead of need, so the next document does not wait for the interpreter to start
# and import MuPDF (0.3-3 s depending on load): the spare's start overlaps with the current document's work.
_spare: tuple[tuple[int, int, str], subprocess.Popen[bytes]] | None = None


def _spawn(memory_mb: int, cpu_s: int) -> subprocess.Popen[bytes]:
    env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
    env["HOME"] = env["TMPDIR"] = tempfile.gettempdir()
    env["OMP_NUM_THREADS"] = "1"
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "engine.documents.worker", str(memory_mb), str(cpu_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd="/",
        start_new_session=True,
    )


def _take_worker(memory_mb: int, cpu_s: int) -> subprocess.Popen[bytes]:
    global _spare
    key = (memory_mb, cpu_s, os.environ.get("PYTHONPATH", ""))
    proc = None
    if _spare is not None:
        spare_key, spare = _spare
        _spare = None
        if spare_key == key and spare.poll() is None:
            proc = spare
        else:
            _discard(spare)
    proc = proc or _spawn(memory_mb, cpu_s)
    _spare = (key, _spawn(memory_mb, cpu_s))
    return proc


def _discard(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for f in (proc.stdin, proc.stdout):
        if f:
            with contextlib.suppress(OSError):
                f.close()


_open_dirs: set[str] = set()  # scratch and frame folders of workers not closed yet
# Signals a worker gets from outside (the kernel's OOM killer, a person, a stopping host), not from its document.
_EXTERNAL_SIGNALS = {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_PROCESS_DIR_PREFIX = "docvision-frames-"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (/proc/PID/stat field 22): a PID reused later differs in it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


_process_dirs: dict[str, str] = {}


def process_dir(base: str) -> str:
    """This process's folder under ``base`` (``docvision-frames-PID-START``), made once; folders of processes
    that are gone (a SIGKILLed parent never cleans up, and frames are raw page pixels) are removed first."""
    # Every worker start looks (a few directory entries): a long-lived parent also sweeps up after others.
    for old in Path(base).glob(_PROCESS_DIR_PREFIX + "*-*"):
        pid, _, start = old.name.removeprefix(_PROCESS_DIR_PREFIX).partition("-")
        if pid.isdigit() and start.isdigit() and _start_time(int(pid)) != start:
            shutil.rmtree(old, ignore_errors=True)
    if base in _process_dirs and Path(_process_dirs[base]).is_dir():
        return _process_dirs[base]
    mine = Path(base) / f"{_PROCESS_DIR_PREFIX}{os.getpid()}-{_start_time(os.getpid()) or 0}"
    mine.mkdir(mode=0o700, exist_ok=True)
    _process_dirs[base] = str(mine)
    _open_dirs.add(str(mine))
    return str(mine)


def _shm_fits(frame_bytes: int) -> bool:
    """/dev/shm holds both frame slots of the largest page now (Docker's default is 64 MiB)."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return False
    return os.access("/dev/shm", os.W_OK) and st.f_bavail * st.f_frsize >= 2 * frame_bytes + (8 << 20)


@atexit.register
def _discard_spare() -> None:
    global _spare
    if _spare is not None:
        _discard(_spare[1])
        _spare = None
    for folder in list(_open_dirs):
        shutil.rmtree(folder, ignore_errors=True)


class RenderWorker:
    """One document in one worker process. ``open`` reports the page count; ``pages`` streams frames."""

    def __init__(
        self,
        data: bytes,
        type_: str,
        name: str,
        *,
        limits: dict[str, Any],
        memory_mb: int,
        page_timeout_s: float,
        document_timeout_s: float,
        work_dir: Path | None = None,
        check_content: bool = False,
    ) -> None:
        self.name = name
        self.visible = True  # with check_content: whether any page shows something (text or non-white pixels)
        self.page_timeout_s = page_timeout_s
        self.document_timeout_s = document_timeout_s
        self.waited = 0.0  # wall seconds spent waiting for the worker (not for our own consumer)
        self._frame = bytearray()
        # Scratch (the document's bytes) and frames live in this process's own folder, which the next process
        # removes if this one is SIGKILLed before it can clean up.
        self._tmp = tempfile.mkdtemp(
            prefix="render-", dir=process_dir(str(work_dir or tempfile.gettempdir()))
        )
        # Frames travel through files in memory-backed /dev/shm where both slots of the largest page fit, else
        # next to the document (on disk).
        frame_bytes = 3 * int(limits.get("max_page_pixels", 60_000_000))
        self._frames_dir = (
            tempfile.mkdtemp(prefix="frames-", dir=process_dir("/dev/shm"))
            if work_dir is None and _shm_fits(frame_bytes)
            else self._tmp
        )
        _open_dirs.update((self._tmp, self._frames_dir))
        path = Path(self._tmp) / "document"
        path.write_bytes(data)
        self._open_cmd: dict[str, Any] = {
            "op": "open",
            "path": str(path),
            "type": type_,
            "name": name,
            "limits": limits,
        }
        if check_content:
            self._open_cmd["check_content"] = True
        self._limits = (memory_mb, int(document_timeout_s) + 1)
        self.restarts = 0  # workers started again after an external kill (one is allowed per document)
        try:
            self._start(_take_worker(*self._limits))
        except BaseException:
            self.close()  # a document that fails to open leaves no process and no files behind
            raise

    def _start(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self._fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        with contextlib.suppress(OSError):  # 1 MiB pipe: a 25 MB frame in 25 reads instead of 400
            fcntl.fcntl(self._fd, _F_SETPIPE_SZ, 1 << 20)
        while True:
            try:
                self._command(self._open_cmd)
                reply = self._read_header(None)
                break
            except RendererKilled:
                self._restart_after_kill(None)
        self.page_count = int(reply["page_count"])
        self.visible = bool(reply.get("visible", True))

    def _restart_after_kill(self, page: int | None) -> None:
        """An externally killed worker (OOM killer, SIGKILL) is started once more; a second kill is final."""
        if self.restarts >= 1:
            raise RendererKilled(
                f"the renderer was killed twice on {self._where(page)} by a signal the document did not send "
                "(the kernel's OOM killer or an external SIGKILL/SIGTERM); the job is retried later. If it "
                "recurs, give the function more memory (MemorySize) or lower DOCVISION_RENDER_MEMORY_MB",
                document=self.name,
                **({"page_number": page} if page else {}),
            )
        self.restarts += 1
        log.warning("render worker killed from outside on %s; starting it again", self._where(page))
        if self.proc.stdout:
            self.proc.stdout.close()
        if self.proc.stdin:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self.proc = _spawn(*self._limits)
        self._fd = self.proc.stdout.fileno()  # type: ignore[union-attr]

    # ---- protocol
    def _command(self, cmd: dict[str, Any], ack: bool = False) -> None:
        try:
            self.proc.stdin.write(b"\n" if ack else json.dumps(cmd).encode() + b"\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError):
            self._died(None)

    def _read_exact(self, n: int, page: int | None, into: bytearray | None = None) -> bytearray:
        buf = into if into is not None else bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            # Opening also pays for the interpreter's start (imports), so it gets a fixed allowance on top.
            per = self.page_timeout_s + (_START_ALLOWANCE_S if page is None else 0)
            budget = min(per, self.document_timeout_s + _START_ALLOWANCE_S - self.waited)
            started = time.monotonic()
            ready, _, _ = select.select([self._fd], [], [], max(budget, 0))
            self.waited += time.monotonic() - started
            if not ready:
                self._timeout(page)
            chunk = os.readv(self._fd, [view[got:n]])
            if chunk == 0:
                self._died(page)
            got += chunk
        return buf

    def _read_header(self, page: int | None) -> dict[str, Any]:
        size = _HEADER.unpack(self._read_exact(_HEADER.size, page))[0]
        header: dict[str, Any] = json.loads(bytes(self._read_exact(size, page)))
        if "error" in header:
            err = header["error"]
            exc = error_class(err["code"])(err["reason"], document=self.name, **err.get("details", {}))
            exc.code = err["code"]
            raise exc
        return header

    def _kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def _where(self, page: int | None) -> str:
        return f"page {page}" if page else "opening the document"

    def _timeout(self, page: int | None) -> None:
        self._kill()
        limit = (
            f"{self.page_timeout_s:.0f} s per page (DOCVISION_RENDER_PAGE_TIMEOUT_S)"
            if self.waited < self.document_timeout_s
            else f"{self.document_timeout_s:.0f} s per document (DOCVISION_RENDER_TIMEOUT_S)"
        )
        extra = {"page_number": page} if page else {}
        raise RenderTimeout(
            f"{self._where(page)} did not render within {limit}; the document may be malformed or too complex",
            document=self.name,
            **extra,
        )

    def _died(self, page: int | None) -> None:
        self.proc.wait()
        rc = self.proc.returncode
        extra = {"page_number": page} if page else {}
        if rc == -signal.SIGXCPU or rc == -signal.SIGKILL and self.waited >= self.document_timeout_s:
            raise RenderTimeout(
                f"{self._where(page)} used up the CPU time of the document "
                f"({self.document_timeout_s:.0f} s, DOCVISION_RENDER_TIMEOUT_S)",
                document=self.name,
                **extra,
            )
        how = (
            f"signal {signal.Signals(-rc).name}" if rc < 0 and -rc in signal.valid_signals() else f"exit {rc}"
        )
        if rc < 0 and -rc in _EXTERNAL_SIGNALS:  # not the document's doing: RenderWorker starts it again
            raise RendererKilled(
                f"the renderer was killed ({how}) on {self._where(page)}", document=self.name
            )
        raise RendererCrashed(
            f"the renderer crashed on {self._where(page)} ({how}); the file is probably malformed: "
            "re-save or print it to PDF and upload again",
            document=self.name,
            **extra,
        )

    # ---- public
    def pages(self, start_page: int = 1) -> Iterator[Frame]:
        page = start_page
        while True:
            try:
                for frame in self._pages(page):
                    yield frame
                    page = frame[0] + 1
                return
            except RendererKilled:
                self._restart_after_kill(page)
                self._start(self.proc)  # the new worker opens the document; frames go on from ``page``

    def _pages(self, start_page: int) -> Iterator[Frame]:
        slots = [str(Path(self._frames_dir) / f"frame-{i}") for i in range(2)]
        self._command({"op": "render", "start": start_page, "slots": slots})
        page = start_page
        while True:
            header = self._read_header(page)
            if header.get("done"):
                return
            w, h, size = int(header["w"]), int(header["h"]), int(header["size"])
            if size != w * h * 3:
                self._kill()
                raise RendererCrashed(
                    f"the renderer sent a malformed frame for page {page}", document=self.name
                )
            if len(self._frame) < size:  # one receive buffer, reused page after page
                self._frame = bytearray(size)
            if "slot" in header:
                fd = os.open(slots[int(header["slot"])], os.O_RDONLY)
                try:
                    got = os.preadv(fd, [memoryview(self._frame)[:size]], 0)
                finally:
                    os.close(fd)
                if got != size:
                    self._kill()
                    raise RendererCrashed(
                        f"the renderer wrote a short frame for page {page}", document=self.name
                    )
                self._command({"op": "ack"}, ack=True)
            else:
                self._read_exact(size, page, into=self._frame)
            image = Image.frombytes("RGB", (w, h), memoryview(self._frame)[:size])
            yield int(header["page"]), image, int(header["dpi"]), bool(header["downscaled"])
            page = int(header["page"]) + 1

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        self._kill()
        for f in (self.proc.stdout,):
            if f:
                f.close()
        shutil.rmtree(self._tmp, ignore_errors=True)
        shutil.rmtree(self._frames_dir, ignore_errors=True)
        _open_dirs.discard(self._tmp)
        _open_dirs.discard(self._frames_dir)

    def __del__(self) -> None:  # a Document nobody closed must not leave a process or frame files behind
        with contextlib.suppress(Exception):
            self.close()


if __name__ == "__main__":  # pragma: no cover
    serve(int(sys.argv[1]), int(sys.argv[2]))
