"""The neutralizer's rules, byte level (the real-renderer proof is tests/integration/test_svg_local_files.py)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from engine.documents.neutralize import (
    _clean_rels,
    _odf_xml,
    _ooxml_xml,
    clean_data_uri,
    clean_embedded,
    content_kind,
    neutralize_html,
)
from tests.fixtures import hostile_svg as h

pytestmark = pytest.mark.unit


def _decoded(data: bytes) -> bytes:
    """Everything a reader could decode out of the bytes: gzip, UTF-16, base64 data: payloads, recursively."""
    import gzip

    if data.startswith(b"\x1f\x8b"):
        data = gzip.decompress(data)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        data = data.decode("utf-16").encode()
    nested = [_decoded(base64.b64decode(m)) for m in re.findall(rb"base64,([A-Za-z0-9+/=]+)", data)]
    return data + b"".join(nested)


@pytest.mark.parametrize("name", list(h.svg_vectors(Path("/planted"), 9)))
def test_no_svg_vector_keeps_a_reference(name: str) -> None:
    svg = h.svg_vectors(Path("/planted"), 9)[name]
    assert content_kind(svg) == "svg"
    out = _decoded(clean_embedded(svg))
    assert b"planted" not in out and b"127.0.0.1" not in out and b"&#" not in out, out[:400]
    assert b"<svg" in out  # still a picture


def test_data_uris_are_judged_by_payload() -> None:
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    )
    assert clean_data_uri(h.data_uri(png, "image/png")) == h.data_uri(png, "image/png")
    labelled_png = h.data_uri(h.svg_vectors(Path("/planted"), 9)["href-image"], "image/png")
    cleaned = clean_data_uri(labelled_png)
    assert (
        cleaned and cleaned.startswith("data:image/svg+xml") and b"planted" not in _decoded(cleaned.encode())
    )
    assert clean_data_uri("data:text/html;base64," + base64.b64encode(b"<html><img src=x>").decode()) is None


def test_html_data_svg_is_cleaned() -> None:
    svg = h.svg_vectors(Path("/planted"), 9)["nested-data"]
    out = neutralize_html(
        f'<img src="{h.data_uri(svg)}"><p style="background:url({h.data_uri(svg)})">'.encode()
    )
    assert b"planted" not in _decoded(out) and b"data:image/svg+xml" in out


def test_entity_encoded_external_relationship_is_dropped() -> None:
    rels = (
        b'<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        b'<Relationship Id="rId1" Type="t/image" Target="&#102;ile:///etc/x.png" TargetMode="&#69;xternal"/>'
        b'<Relationship Id="rId2" Type="t/image" Target="media/image1.png"/></Relationships>'
    )
    out = _clean_rels(rels)
    assert b"rId1" not in out and b'Target="media/image1.png"' in out and out.count(b"<Relationships") == 1


def test_internal_part_names_stay_and_outside_targets_go() -> None:
    """Package-absolute (/xl/…, as openpyxl writes) and ../ part names are inside the ZIP; schemes, UNC paths go."""
    keep = ["/xl/worksheets/sheet1.xml", "../media/image1.png", "worksheets/sheet2.xml"]
    drop = [
        "file:///etc/passwd",
        "//host/share/x.png",
        "\\\\host\\share\\x.png",
        "C:/x.png",
        "http://127.0.0.1/x",
    ]
    rels = (
        b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        + b"".join(
            b'<Relationship Id="k%d" Type="t" Target="%s"/>' % (i, t.encode()) for i, t in enumerate(keep)
        )
        + b"".join(
            b'<Relationship Id="d%d" Type="t" Target="%s"/>' % (i, t.encode()) for i, t in enumerate(drop)
        )
        + (b"</Relationships>")
    )
    out = _clean_rels(rels)
    assert all(b'Target="%s"' % t.encode() in out for t in keep)
    assert not any(b'Id="d%d"' % i in out for i in range(len(drop)))


def test_field_split_over_runs_and_entities_is_blanked() -> None:
    xml = (
        b'<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText> INCLUDE</w:instrText></w:r>'
        b'<w:r><w:instrText>PICTURE "file:///etc/x.png"</w:instrText></w:r><w:r><w:fldChar w:fldCharType="separate"/>'
        b'</w:r><w:r><w:instrText>&#73;NCLUDETEXT "file:///etc/passwd"</w:instrText></w:r></w:p>'
        b'<v:imagedata src="&#102;ile:///etc/x.png"/><f>WEB&#83;ERVICE("http://127.0.0.1/")</f>'
    )
    out = _ooxml_xml(xml)
    assert b"file" not in out and b"127.0.0.1" not in out, out


def test_odf_href_with_any_prefix_and_inline_svg() -> None:
    svg = base64.b64encode(h.svg_vectors(Path("/planted"), 9)["xlink-href-image"])
    xml = (
        b'<draw:image xmlns:q="http://www.w3.org/1999/xlink" q:href="&#102;ile:///planted/secret.png"/>'
        b"<draw:image><office:binary-data>" + svg + b"</office:binary-data></draw:image>"
    )
    assert b"planted" not in _decoded(_odf_xml(xml))
