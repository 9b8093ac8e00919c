"""Builds the files in this folder (see README.md): `.venv/bin/python tests/corpus/built/build.py`.

Plain documents come from python-docx / openpyxl / python-pptx; encryption from msoffcrypto-tool 6.1.0:
ECMA-376 agile encryption with its own encryptor, ECMA-376 standard encryption (AES-128, SHA-1; what Office
2007 writes) with msoffcrypto-tool's key derivation and compound-file writer around the verifier and the
package encrypted here by MS-OFFCRYPTO 2.3.4.7-2.3.4.9 (msoffcrypto-tool has no standard encryptor). Every
output is checked by decrypting it back with msoffcrypto-tool before it is written. Random salts and keys:
a rebuild gives different bytes with the same meaning.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
from hashlib import sha1
from pathlib import Path

import docx
import msoffcrypto
import openpyxl
import pptx
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from msoffcrypto.format.ooxml import OOXMLFile
from msoffcrypto.method.container.ecma376_encrypted import ECMA376Encrypted
from msoffcrypto.method.ecma376_standard import ECMA376Standard

HERE = Path(__file__).resolve().parent
DEFAULT = "VelvetSweatshop"  # Excel's built-in default password (MS-OFFCRYPTO 2.3.7.1)
TEXT = "Quarterly totals 4711"  # what the tests look for on the rendered page


def plain_docx() -> bytes:
    d = docx.Document()
    d.add_paragraph(TEXT)
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def plain_xlsx() -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws["A1"], ws["B1"] = "Quarterly totals", 4711
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def plain_pptx() -> bytes:
    p = pptx.Presentation()
    slide = p.slides.add_slide(p.slide_layouts[1])
    slide.shapes.title.text = TEXT
    buf = io.BytesIO()
    p.save(buf)
    return buf.getvalue()


def agile(plain: bytes, password: str) -> bytes:
    out = io.BytesIO()
    OOXMLFile(io.BytesIO(plain)).encrypt(password, out)
    return out.getvalue()


def standard(plain: bytes, password: str) -> bytes:
    """ECMA-376 standard encryption: EncryptionInfo 3.2 (AES-128 ECB, SHA-1, 50,000 spins)."""
    salt, verifier = os.urandom(16), os.urandom(16)
    alg_id, alg_hash, provider, key_bits = 0x660E, 0x8004, 0x18, 128
    key = ECMA376Standard.makekey_from_password(password, alg_id, alg_hash, provider, key_bits, 16, salt)

    def ecb(data: bytes) -> bytes:
        enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        return enc.update(data) + enc.finalize()

    csp = "Microsoft Enhanced RSA and AES Cryptographic Provider\0".encode("utf-16-le")
    flags = 0x24  # fCryptoAPI | fAES
    header = struct.pack("<IIIIIIII", flags, 0, alg_id, alg_hash, key_bits, provider, 0, 0) + csp
    verifier_block = (
        struct.pack("<I", 16)
        + salt
        + ecb(verifier)
        + struct.pack("<I", 20)
        + ecb(sha1(verifier).digest() + b"\0" * 12)
    )
    info = struct.pack("<HHI", 3, 2, flags) + struct.pack("<I", len(header)) + header + verifier_block
    padded = plain + b"\0" * (-len(plain) % 16)
    package = struct.pack("<Q", len(plain)) + ecb(padded)
    out = io.BytesIO()
    ECMA376Encrypted(package, info).write_to(out)
    return out.getvalue()


def check(encrypted: bytes, password: str, plain: bytes) -> None:
    office = msoffcrypto.OfficeFile(io.BytesIO(encrypted))
    assert office.is_encrypted()
    office.load_key(password=password, verify_password=True)
    out = io.BytesIO()
    office.decrypt(out)
    assert out.getvalue()[: len(plain)] == plain and zipfile.is_zipfile(io.BytesIO(out.getvalue()))


def main() -> None:
    plain = {"docx": plain_docx(), "xlsx": plain_xlsx(), "pptx": plain_pptx()}
    files = {
        "built-velvet-agile.docx": (agile, "docx", DEFAULT),
        "built-velvet-agile.xlsx": (agile, "xlsx", DEFAULT),
        "built-velvet-agile.pptx": (agile, "pptx", DEFAULT),
        "built-velvet-standard.xlsx": (standard, "xlsx", DEFAULT),
        "built-velvet-standard.docx": (standard, "docx", DEFAULT),
        "built-user-agile.xlsx": (agile, "xlsx", "hunter2"),
        "built-user-standard.docx": (standard, "docx", "hunter2"),
    }
    for name, (encrypt, kind, password) in files.items():
        data = encrypt(plain[kind], password)
        check(data, password, plain[kind])
        (HERE / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
