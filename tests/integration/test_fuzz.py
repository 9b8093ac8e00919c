"""Bounded fuzzing: mutated real PDFs, DOCX and PNGs (fixed seed and count) end as pages or typed errors only.

Every case runs through open_document + all pages in this (parent) process; rendering happens in the worker,
so a crash there is a `renderer_crashed` here. After all cases the parent still renders a good document.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine.config import Settings
from engine.documents import open_document
from engine.errors import DocVisionError

pytestmark = pytest.mark.integration
CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "files"
SEED, COUNTS = (
    20261125,
    {
        "pdfjs-Embedded_font.pdf": 24,
        "pillow-bmp_g_pal8.bmp": 8,
    },
)
SETTINGS = Settings(dpi=50, conversion_timeout_s=60, render_page_timeout_s=30, render_timeout_s=60)


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    kind = rng.choice(["flip", "truncate", "splice", "zero", "dup"])
    if kind == "flip":
        for _ in range(rng.randint(1, 40)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif kind == "truncate":
        del buf[rng.randrange(16, len(buf)) :]
    elif kind == "splice":
        a, b = sorted(rng.randrange(len(buf)) for _ in range(2))
        buf[a:a] = buf[b : b + rng.randint(1, 512)]
    elif kind == "zero":
        a = rng.randrange(len(buf))
        buf[a : a + rng.randint(1, 256)] = bytes(min(len(buf) - a, 256))
    else:
        a = rng.randrange(len(buf))
        buf[a:a] = bytes([rng.randrange(256)]) * rng.randint(100, 5000)
    return bytes(buf)


def _docx_seed(tmp_path: Path) -> bytes:
    from tests.fixtures import documents as d

    return d.docx(tmp_path / "seed.docx").read_bytes()


def test_mutations_end_in_typed_errors_only(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    seeds = {name: (CORPUS / name).read_bytes() for name in COUNTS}
    cases = [(name, n) for name, n in COUNTS.items() for _ in range(n)]
    cases += [("generated.docx", 1)] * 6
    seeds["generated.docx"] = _docx_seed(tmp_path)
    outcomes: dict[str, int] = {}
    for i, (name, _) in enumerate(cases):
        data = mutate(seeds[name], rng)
        label = f"fuzz-{i}-{name}"
        try:
            with open_document(data, name=label, settings=SETTINGS) as doc:
                for _ in doc.pages():
                    pass
            code = "ok"
        except DocVisionError as exc:
            assert label in str(exc) and exc.code != "docvision_error", exc
            code = exc.code
        # anything else (a traceback from MuPDF, Pillow, zipfile ...) fails the test here
        outcomes[code] = outcomes.get(code, 0) + 1
    assert sum(outcomes.values()) == len(cases)
    print("fuzz outcomes:", outcomes)
    good = CORPUS / "pdfjs-Embedded_font.pdf"
    with open_document(good, settings=SETTINGS) as doc:
        assert len(list(doc.pages())) == 1
