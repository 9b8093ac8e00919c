"""Files users can open are opened; refusals give the right code (issue 23 items 17 and 20).

- Office files encrypted only with Excel's built-in default password (VelvetSweatshop), agile and standard
  ECMA-376 encryption (tests/corpus/built, made by its build.py), are decrypted in the render worker and
  converted; any other password stays encrypted_document.
- PDFs whose attachments alone are encrypted (pdf.js corpus files) render; their text layer is read too.
- A user-password PDF with a damaged owner key is encrypted_document, not corrupt_document.
- A valid 12-bit JPEG is unsupported_type with the reason (tests/corpus: libjpegturbo-monkey12.jpg).
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import olefile
import pymupdf
import pytest

from engine.config import Settings
from engine.documents import open_document
from engine.errors import DocVisionError

pytestmark = pytest.mark.integration
CORPUS = Path(__file__).resolve().parents[1] / "corpus"
BUILT = CORPUS / "built"
SETTINGS = Settings(dpi=72, conversion_timeout_s=120)


def _open(data: bytes | Path, name: str, settings: Settings = SETTINGS) -> tuple[str, str]:
    """("ok", text of the converted PDF or of the PDF) or (code, message)."""
    try:
        with open_document(data, name=name, settings=settings) as doc:
            frames = list(doc.pages())
            assert len(frames) == doc.page_count >= 1
            pdf = doc.pdf_bytes or (data.read_bytes() if isinstance(data, Path) else data)
            with pymupdf.open(stream=pdf, filetype="pdf") as shown:
                text = " ".join(p.get_text() for p in shown) if not shown.needs_pass else ""
            return "ok", " ".join(text.split())
    except DocVisionError as exc:
        return exc.code, str(exc)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "built-velvet-agile.docx",
        "built-velvet-standard.docx",
        "built-velvet-agile.xlsx",
        "built-velvet-standard.xlsx",
        "built-velvet-agile.pptx",
    ],
)
def test_default_password_office_files_are_converted(name: str) -> None:
    code, text = _open(BUILT / name, name)
    assert code == "ok", text
    assert "4711" in text and "Quarterly" in text


@pytest.mark.parametrize("name", ["built-user-agile.xlsx", "built-user-standard.docx"])
def test_other_passwords_stay_encrypted(name: str) -> None:
    code, message = _open(BUILT / name, name)
    assert code == "encrypted_document", message
    assert "hunter2" not in message and "VelvetSweatshop" not in message


def test_decryption_happens_in_the_worker_not_in_this_process() -> None:
    # A fresh interpreter: after the whole open, msoffcrypto was never imported by the caller.
    script = (
        "import sys; from engine.config import Settings; from engine.documents import open_document\n"
        f"d = open_document({str(BUILT / 'built-velvet-agile.docx')!r}, settings=Settings(dpi=72))\n"
        "print(d.page_count, 'msoffcrypto' in sys.modules); d.close()"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, check=True
    )
    assert out.stdout.split() == ["1", "False"], out.stderr[-2000:]


def _with_spin_count(data: bytes, spins: int) -> bytes:
    """The agile file with its password hash's spin count changed (a CPU bomb for whoever verifies it)."""
    from msoffcrypto.method.container.ecma376_encrypted import ECMA376Encrypted

    ole = olefile.OleFileIO(io.BytesIO(data))
    info, package = ole.openstream("EncryptionInfo").read(), ole.openstream("EncryptedPackage").read()
    head, xml = info[:8], info[8:]
    xml = re.sub(rb'(<p:encryptedKey spinCount=")\d+', rb"\g<1>" + str(spins).encode(), xml)
    out = io.BytesIO()
    ECMA376Encrypted(package, head + xml).write_to(out)
    return out.getvalue()


@pytest.mark.slow
def test_a_spin_count_bomb_costs_the_worker_its_cpu_limit_only() -> None:
    # 10,000,000 is the most MS-OFFCRYPTO (and msoffcrypto-tool) allows: ~15 s of SHA-512 in Python
    bomb = _with_spin_count((BUILT / "built-velvet-agile.docx").read_bytes(), 10_000_000)
    code, message = _open(bomb, "spin.docx", Settings(dpi=72, render_timeout_s=3))
    assert code == "render_timeout", message
    assert "DOCVISION_RENDER_TIMEOUT_S" in message


def test_a_damaged_encryption_header_is_encrypted_not_a_crash() -> None:
    data = bytearray((BUILT / "built-velvet-agile.docx").read_bytes())
    at = data.find(b"<?xml")  # the EncryptionInfo XML, cut in half
    data[at + 40 : at + 400] = b"\0" * 360
    code, message = _open(bytes(data), "damaged.docx")
    assert code == "encrypted_document", message


@pytest.mark.parametrize("name", ["pdfjs-encrypted-attachment.pdf", "pdfjs-auth-event-ef-open.pdf"])
def test_pdf_with_only_its_attachments_encrypted_renders(name: str) -> None:
    path = CORPUS / "files" / name
    with pymupdf.open(path) as raw:  # as MuPDF sees it: asks for a password
        assert raw.needs_pass and not raw.authenticate("")
    code, _ = _open(path, name)
    assert code == "ok"
    from engine.extraction.textlayer import layer_isolated, page_count_isolated

    assert page_count_isolated(path.read_bytes(), SETTINGS) == 1
    words = layer_isolated(path.read_bytes(), [1], SETTINGS)[1]["words"]
    assert [w[4] for w in words] == ["Example"]


def _user_password_pdf(cipher: int) -> bytes:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "secret page")
    return doc.tobytes(encryption=cipher, user_pw="user", owner_pw="owner")


@pytest.mark.parametrize("cipher", [pymupdf.PDF_ENCRYPT_AES_256, pymupdf.PDF_ENCRYPT_RC4_128])
def test_user_password_pdf_with_a_damaged_owner_key_is_encrypted(cipher: int) -> None:
    data = _user_password_pdf(cipher)
    assert _open(data, "intact.pdf")[0] == "encrypted_document"
    owner = re.search(rb"/O\s*<([0-9A-Fa-f]+)>", data)
    assert owner is not None
    s, e = owner.span(1)
    damaged = data[:s] + b"00" * 3 + b" " * (e - s - 6) + data[e:]  # /O cut to 3 bytes, offsets kept
    with pytest.raises(pymupdf.FileDataError):
        pymupdf.open(stream=damaged, filetype="pdf")  # MuPDF refuses the file outright
    code, message = _open(damaged, "damaged-owner.pdf")
    assert code == "encrypted_document", message
    # a PDF that is simply unreadable (no /Encrypt) stays corrupt
    assert _open(b"%PDF-1.7\n" + b"\0" * 600, "junk.pdf")[0] == "corrupt_document"


def test_twelve_bit_jpeg_is_unsupported_with_the_reason() -> None:
    code, message = _open(CORPUS / "files" / "libjpegturbo-monkey12.jpg", "monkey12.jpg")
    assert code == "unsupported_type"
    assert "12-bit extended sequential JPEG" in message
    # an 8-bit JPEG cut short is still corrupt, not unsupported
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="JPEG")
    assert _open(buf.getvalue()[:200], "cut.jpg")[0] == "corrupt_document"
