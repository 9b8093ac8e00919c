"""A conversion as long as the audit's 872-page DOCX (175 s) through the ingest handler (issue 23 item 21).

The handler, moto on 127.0.0.1 and the embedded index are real, and so is LibreOffice (a 6-page DOCX). Only the
clock is not: ``time.monotonic`` runs ahead by what the audit measured (175 s for the conversion, 200 s per
page rendered and embedded), so the deadline arithmetic of a 900 s invocation (item 6's machinery: a
conversion deferred to a whole invocation, conversion_timeout, DOCVISION_MAX_INGEST_PASSES) meets the real
numbers without waiting for them.
"""

# ruff: noqa: F811 (the shared fixtures are imported from test_handlers)
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import docx
import pytest

from tests.fixtures import documents as d
from tests.integration.test_handlers import BUCKET, aws, invoke, moto_url  # noqa: F401
from tests.integration.test_ingest_lifecycle import page_pngs, put, s3_event, sqs_event, svc

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CONVERSION_S = 175.0  # the audit's 872-page DOCX
PAGE_S = 200.0  # per page, so that a 900 s invocation cannot render all six after converting


def six_page_docx(path: Path) -> bytes:
    doc = docx.Document()
    for n in range(1, 7):
        doc.add_paragraph(f"Section {n}")
        if n < 6:
            doc.add_page_break()
    doc.save(path)
    return path.read_bytes()


class Clock:
    """time.monotonic, ahead of the real one by ``offset`` seconds."""

    def __init__(self) -> None:
        self.real = time.monotonic
        self.offset = 0.0

    def __call__(self) -> float:
        return self.real() + self.offset


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(time, "monotonic", c)
    return c


@pytest.fixture
def slow_world(aws, clock, monkeypatch):
    """LibreOffice that takes CONVERSION_S (or fails at its timeout like the real one), pages that take PAGE_S."""
    import engine.documents as documents
    from engine.embedding import embedder as embedder_mod
    from engine.errors import ConversionTimeout

    monkeypatch.setenv("DOCVISION_DEADLINE_MARGIN_S", "0")
    monkeypatch.setenv("DOCVISION_CONVERSION_TIMEOUT_S", "400")
    real_to_pdf = documents.to_pdf
    conversions: list[float] = []  # the timeout each conversion was given

    def converting(data: bytes, kind: str, name: str, settings: Any = None) -> bytes:
        conversions.append(settings.conversion_timeout_s)
        started = clock()
        pdf = real_to_pdf(data, kind, name, settings)  # the real conversion
        if settings.conversion_timeout_s < CONVERSION_S:
            clock.offset += settings.conversion_timeout_s - (clock() - started)
            raise ConversionTimeout(
                f"LibreOffice did not finish within {settings.conversion_timeout_s:.0f} s", document=name
            )
        clock.offset += CONVERSION_S - (clock() - started)
        return pdf

    real_embed = embedder_mod.Embedder.embed_images

    def embedding(self, images):
        out = real_embed(self, images)
        clock.offset += PAGE_S * len(images)
        return out

    monkeypatch.setattr(documents, "to_pdf", converting)
    monkeypatch.setattr(embedder_mod.Embedder, "embed_images", embedding)
    return {"conversions": conversions}


def _take(aws) -> list[dict]:
    """What the queue holds, deleted as Lambda's SQS poller deletes what a handler took (else it comes back
    after the visibility timeout and replays an earlier pass)."""
    got = aws["sqs"].receive_message(QueueUrl=aws["queue"], MaxNumberOfMessages=10, WaitTimeSeconds=0)
    for m in got.get("Messages", []):
        aws["sqs"].delete_message(QueueUrl=aws["queue"], ReceiptHandle=m["ReceiptHandle"])
    return got.get("Messages", [])


def _dlq(aws) -> list[dict]:
    got = aws["sqs"].receive_message(QueueUrl=aws["dlq"], MaxNumberOfMessages=10, WaitTimeSeconds=0)
    return [json.loads(m["Body"]) for m in got.get("Messages", [])]


def _emf(capsys) -> list[dict]:
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]


def test_a_175_s_conversion_is_deferred_converted_once_and_continued(
    aws, slow_world, clock, tmp_path, capsys, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="engine.ingest")
    put(aws, "raw/first.pdf", d.long_pdf(tmp_path / "first.pdf", 3).read_bytes())
    put(aws, "raw/big.docx", six_page_docx(tmp_path / "big.docx"))

    # pass 0: the PDF goes first and leaves 900 - 600 = 300 s, less than the conversion's 400 s limit; the DOCX
    # is not this invocation's first job, so it is deferred to a whole invocation, unconverted
    out = invoke("ingest", sqs_event(s3_event("raw/first.pdf", "01"), s3_event("raw/big.docx", "01")))
    pdf, deferred = out["results"]
    assert pdf["complete"] and not deferred["complete"] and out["batchItemFailures"] == []
    assert slow_world["conversions"] == []
    assert any(m.get("ConversionsDeferred") == [1.0] for m in _emf(capsys))
    (msg,) = _take(aws)
    assert json.loads(msg["Body"])["pass"] == 1

    # pass 1: a whole invocation; the conversion (175 s) runs with the full 400 s, the converted PDF is stored,
    # two pages fit in what is left (900 - 175 - 400), then a checkpoint
    caplog.clear()
    first = invoke("ingest", sqs_event(msg["Body"]))["results"][0]
    assert slow_world["conversions"] == [400.0]
    assert first["converted"] and not first["complete"] and first["pages_embedded"] == 2, first
    assert first["page_count"] == 6 and first["next_page"] == 3
    lines = [r.getMessage() for r in caplog.records]
    assert any("converted from docx to 6 pages" in line for line in lines)
    assert any("2 of 6 pages rendered and embedded" in line for line in lines), lines
    assert all("Section" not in line for line in lines)  # counts, never document text

    # passes 2 and 3: the stored PDF is rendered; LibreOffice is not started again
    passes = 1
    while msgs := _take(aws):
        (msg,) = msgs
        passes += 1
        last = invoke("ingest", sqs_event(msg["Body"]))["results"][0]
        assert not last.get("converted"), (last, slow_world["conversions"])
        assert passes <= 4
    assert last["complete"] and slow_world["conversions"] == [400.0]
    doc_id = last["document_id"]
    assert svc().index.stored_pages(doc_id) == set(range(1, 7)) and svc().index.count(doc_id) == 6
    assert len([k for k in page_pngs(aws) if doc_id in k]) == 6
    assert _dlq(aws) == []


def test_passes_are_capped_and_dead_lettered_with_the_setting(
    aws, slow_world, clock, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("DOCVISION_MAX_INGEST_PASSES", "2")
    import handlers.common

    handlers.common.reset_service()
    put(aws, "raw/big.docx", six_page_docx(tmp_path / "big.docx"))
    body: Any = s3_event("raw/big.docx", "01")
    for _ in range(5):  # pass 0 converts + 2 pages, pass 1 two more, pass 2 is refused
        invoke("ingest", sqs_event(body))
        msgs = _take(aws)
        if not msgs:
            break
        body = msgs[0]["Body"]
    (dead,) = _dlq(aws)
    assert dead["error"]["code"] == "ingest_passes_exceeded"
    assert dead["error"]["setting"] == "DOCVISION_MAX_INGEST_PASSES" and dead["job"]["pass"] == 2
    assert slow_world["conversions"] == [400.0]  # converted once


def test_a_conversion_longer_than_a_whole_invocation_is_a_permanent_conversion_timeout(
    aws, slow_world, clock, tmp_path
) -> None:
    put(aws, "raw/big.docx", six_page_docx(tmp_path / "big.docx"))
    # a 150 s function: the conversion gets all of it (150 < 400) and needs 175
    out = invoke("ingest", sqs_event(s3_event("raw/big.docx", "01")), timeout_s=150)
    assert out["batchItemFailures"] == [] and out["results"][0]["error"]["code"] == "conversion_timeout"
    (given,) = slow_world["conversions"]
    assert 120 < given <= 150  # what the invocation had left
    assert _take(aws) == []  # not re-queued: no endless continuation
    (dead,) = _dlq(aws)
    assert (
        dead["error"]["code"] == "conversion_timeout" and dead["error"]["setting"] == "IngestTimeoutSeconds"
    )
