"""No document reaches the network or local files: each vector against a 127.0.0.1 listener that must hear nothing.

The rendered pages must not carry local file content either (a red "secret" image, a "TOPSECRET" text file).
The first test is the control: raw LibreOffice (no neutralization, default profile) does fetch the HTML vectors,
so the listener and the vectors are real.
"""

from __future__ import annotations

import contextlib
import io
import os
import socketserver
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pymupdf
import pytest
from PIL import Image

from engine.config import Settings
from engine.documents import detect_type, open_document, to_pdf
from engine.documents.office import find_soffice
from engine.errors import DocVisionError

pytestmark = pytest.mark.integration

SECRET_TEXT = "TOPSECRET-4242"


class _Listener(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self) -> None:
        self.hits: list[bytes] = []
        red = io.BytesIO()
        Image.new("RGB", (64, 64), (255, 0, 0)).save(red, "PNG")
        self.red_png = red.getvalue()

        listener = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(2)
                try:
                    first = self.request.recv(4096)
                except OSError:
                    first = b"<no data>"
                listener.hits.append(first.split(b"\r\n", 1)[0] or b"<connect>")
                body = listener.red_png
                head = f"HTTP/1.0 200 OK\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n"
                with contextlib.suppress(OSError):
                    self.request.sendall(head.encode() + body)

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def listener() -> Iterator[_Listener]:
    server = _Listener()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    """A red PNG and a text file next to (and above) where conversions happen."""
    Image.new("RGB", (64, 64), (255, 0, 0)).save(tmp_path / "secret.png")
    (tmp_path / "secret.txt").write_text(SECRET_TEXT)
    return tmp_path


def _red(img: Image.Image) -> float:
    a = np.asarray(img).astype(int)
    return float(((a[..., 0] > 180) & (a[..., 1] < 90) & (a[..., 2] < 90)).mean())


def _html(port: int, secrets: Path) -> bytes:
    u, f = f"http://127.0.0.1:{port}", secrets.as_uri()
    return f"""<!DOCTYPE html><html><head>
<link rel="stylesheet" href="{u}/link.css">
<style>@import url("{u}/import.css"); body {{ background-image: url('{u}/css-bg.png'); }}
.s {{ background: url({f}/secret.png); width: 300px; height: 300px }}</style>
<script src="{u}/script.js"></script>
</head><body background="{u}/body-bg.png">
<p>Vectors</p>
<img src="{u}/img.png" width="300" height="300">
<img src="{f}/secret.png" width="300" height="300">
<img src="../secret.png" width="300" height="300"><img src="../../secret.png" width="300" height="300">
<img srcset="{u}/srcset.png 1x" width="300" height="300">
<iframe src="{u}/frame.html"></iframe><iframe src="{f}/secret.txt"></iframe>
<object data="{u}/object.png" type="image/png"></object><embed src="{u}/embed.png">
<table background="{u}/table.png"><tr><td background="{f}/secret.png">cell</td></tr></table>
<div class="s" style="background-image:url({u}/style-attr.png)">x</div>
<svg width="300" height="300" xmlns:xlink="http://www.w3.org/1999/xlink"><image href="{u}/svg.png" width="300"
 height="300"/><image xlink:href="{f}/secret.png" width="300" height="300"/></svg>
</body></html>""".encode()


def _zip(files: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in files.items():
            zf.writestr(
                name, body, compress_type=zipfile.ZIP_STORED if name == "mimetype" else zipfile.ZIP_DEFLATED
            )
    return buf.getvalue()


def _patch_zip(data: bytes, edits: dict[str, object]) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    files: dict[str, bytes | str] = {n: src.read(n) for n in src.namelist()}
    for name, edit in edits.items():
        files[name] = edit(files.get(name, b"").decode()) if callable(edit) else edit  # type: ignore[assignment]
    return _zip(files)


def _docx(port: int, secrets: Path, tmp_path: Path) -> bytes:
    import docx

    u, f = f"http://127.0.0.1:{port}", secrets.as_uri()
    document = docx.Document()
    document.add_paragraph("Linked picture and fields")
    blue = tmp_path / "blue.png"
    Image.new("RGB", (32, 32), (0, 0, 255)).save(blue)
    document.add_picture(str(blue))
    document.add_picture(str(blue))
    buf = io.BytesIO()
    document.save(buf)
    fields = (
        f"<w:p><w:fldSimple w:instr=' INCLUDEPICTURE \"{u}/includepicture.png\" \\d '><w:r><w:t>pic</w:t></w:r>"
        f"</w:fldSimple></w:p><w:p><w:fldSimple w:instr=' INCLUDETEXT \"{f}/secret.txt\" '><w:r><w:t>txt</w:t>"
        f'</w:r></w:fldSimple></w:p><w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText '
        f'xml:space="preserve"> INCLUDETEXT "{u}/includetext.txt" </w:instrText></w:r><w:r><w:fldChar '
        f'w:fldCharType="separate"/></w:r><w:r><w:t>old</w:t></w:r><w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
    )

    def doc_xml(x: str) -> str:
        x = x.replace('r:embed="', 'r:link="')  # linked, not embedded, pictures
        x = x.replace("<w:sectPr", fields + "<w:sectPr", 1)
        return x.replace(
            "<w:document ", f'<!DOCTYPE w:document [<!ENTITY xxe SYSTEM "{u}/xxe">]><w:document ', 1
        )

    def rels(x: str) -> str:
        import re

        targets = iter([f"{u}/linked.png", f"{f}/secret.png"])
        return re.sub(
            r'Target="media/([^"]+)"',
            lambda m: f'Target="{next(targets, u + "/x.png")}" TargetMode="External"',
            x,
        )

    return _patch_zip(buf.getvalue(), {"word/document.xml": doc_xml, "word/_rels/document.xml.rels": rels})


def _odt(port: int, secrets: Path) -> bytes:
    u, f = f"http://127.0.0.1:{port}", secrets.as_uri()
    ns = (
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
        'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
        'xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" '
        'xmlns:xlink="http://www.w3.org/1999/xlink" office:version="1.2"'
    )

    def frame(href: str) -> str:
        return (
            f'<draw:frame svg:width="5cm" svg:height="5cm" text:anchor-type="paragraph"><draw:image '
            f'xlink:href="{href}" xlink:type="simple" xlink:show="embed" xlink:actuate="onLoad"/></draw:frame>'
        )

    content = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {ns}><office:body><office:text>'
        f"<text:p>ODT vectors{frame(u + '/odt.png')}{frame(f + '/secret.png')}{frame('../secret.png')}"
        f"{frame('Pictures/evil.svg')}</text:p>"
        f'<text:section text:name="s"><text:section-source xlink:href="{u}/section.odt"/></text:section>'
        "</office:text></office:body></office:document-content>"
    )
    svg = (
        f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "{u}/svg-xxe">]><svg '
        'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="100" height="100">'
        f'<image xlink:href="{u}/svg-image.png" width="100" height="100"/><text y="50">&x;</text></svg>'
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
        'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
        '<manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.text"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        '<manifest:file-entry manifest:full-path="Pictures/evil.svg" manifest:media-type="image/svg+xml"/>'
        "</manifest:manifest>"
    )
    return _zip(
        {
            "mimetype": "application/vnd.oasis.opendocument.text",
            "META-INF/manifest.xml": manifest,
            "content.xml": content,
            "Pictures/evil.svg": svg,
        }
    )


def _xlsx(port: int, secrets: Path) -> bytes:
    import openpyxl

    u = f"http://127.0.0.1:{port}"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws["A1"] = "XLSX vectors"
    ws["A2"] = f'=WEBSERVICE("{u}/webservice")'
    ws["A3"] = f'=FILTERXML(WEBSERVICE("{u}/filterxml"),"//a")'
    ws["A4"] = "=[1]Sheet1!A1"
    buf = io.BytesIO()
    wb.save(buf)
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    ext = (
        '<?xml version="1.0" encoding="UTF-8"?><externalLink xmlns="http://schemas.openxmlformats.org/'
        f'spreadsheetml/2006/main" xmlns:r="{rel}"><externalBook r:id="rId1"><sheetNames><sheetName val="Sheet1"/>'
        '</sheetNames><sheetDataSet><sheetData sheetId="0"><row r="1"><cell r="A1" t="str"><v>cached</v></cell>'
        "</row></sheetData></sheetDataSet></externalBook></externalLink>"
    )
    ext_rels = (
        '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/'
        f'2006/relationships"><Relationship Id="rId1" Type="{rel}/externalLinkPath" Target="{u}/book.xlsx" '
        'TargetMode="External"/></Relationships>'
    )
    return _patch_zip(
        buf.getvalue(),
        {
            "xl/externalLinks/externalLink1.xml": ext,
            "xl/externalLinks/_rels/externalLink1.xml.rels": ext_rels,
            "xl/_rels/workbook.xml.rels": lambda x: x.replace(
                "</Relationships>",
                f'<Relationship Id="rIdExt1" Type="{rel}/externalLink" '
                'Target="externalLinks/externalLink1.xml"/></Relationships>',
            ),
            "xl/workbook.xml": lambda x: x.replace(
                "</sheets>",
                f'</sheets><externalReferences xmlns:r="{rel}"><externalReference r:id="rIdExt1"/>'
                "</externalReferences>",
            ),
            "[Content_Types].xml": lambda x: x.replace(
                "</Types>",
                '<Override PartName="/xl/externalLinks/externalLink1.xml" ContentType="application/'
                'vnd.openxmlformats-officedocument.spreadsheetml.externalLink+xml"/></Types>',
            ),
        },
    )


def _rtf(port: int, secrets: Path) -> bytes:
    u, f = f"http://127.0.0.1:{port}", secrets.as_uri()
    return (
        "{\\rtf1\\ansi{\\fonttbl{\\f0 Helvetica;}}\\f0 RTF vectors\\par"
        f'{{\\field{{\\*\\fldinst INCLUDEPICTURE "{u}/rtf.png" \\\\d}}{{\\fldrslt pic}}}}\\par'
        f'{{\\field{{\\*\\fldinst INCLUDETEXT "{f}/secret.txt"}}{{\\fldrslt txt}}}}\\par}}'
    ).encode()


def test_control_raw_libreoffice_does_fetch_html_resources(
    listener: _Listener, secrets: Path, tmp_path: Path
) -> None:
    """Without our layers the listener hears LibreOffice: the vectors and the listener are real."""
    port = listener.server_address[1]
    src = tmp_path / "raw.html"
    src.write_bytes(_html(port, secrets))
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    subprocess.run(
        [find_soffice("soffice"), "--headless", "--norestore", f"-env:UserInstallation={(tmp_path / 'p').as_uri()}",
         "--infilter=HTML (StarWriter)", "--convert-to", "pdf:writer_pdf_Export", "--outdir", str(tmp_path), str(src)],
        env={**env, "HOME": str(tmp_path)}, capture_output=True, timeout=180, check=False,
    )  # fmt: skip
    assert listener.hits, "raw LibreOffice fetched nothing: the control vector is not exercised"


@pytest.fixture(params=["all-layers", "lambda-like"])
def layers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``lambda-like``: no network namespace (Lambda has none), so the other layers alone must hold."""
    from engine.documents import office

    if request.param == "lambda-like":
        monkeypatch.setenv("DOCVISION_NO_NETNS", "1")
    office.network_namespace_prefix.cache_clear()
    yield request.param
    office.network_namespace_prefix.cache_clear()


@pytest.mark.parametrize("kind", ["html", "docx", "odt", "xlsx", "rtf"])
def test_no_vector_reaches_the_listener_or_local_files(
    kind: str, layers: str, listener: _Listener, secrets: Path, tmp_path: Path
) -> None:
    port = listener.server_address[1]
    build = {
        "html": lambda: _html(port, secrets),
        "docx": lambda: _docx(port, secrets, tmp_path),
        "odt": lambda: _odt(port, secrets),
        "xlsx": lambda: _xlsx(port, secrets),
        "rtf": lambda: _rtf(port, secrets),
    }[kind]
    data = build()
    work = secrets / "work"
    work.mkdir()
    settings = Settings(work_dir=work, dpi=72)
    assert detect_type(data, kind).value == kind
    try:
        pdf = to_pdf(data, kind, f"vectors.{kind}", settings)
    except DocVisionError as exc:  # a typed refusal is acceptable; a request is not
        assert exc.code in ("conversion_failed", "corrupt_document"), exc
        pdf = None
    assert listener.hits == [], f"{kind}: the listener was contacted: {listener.hits}"
    if pdf is not None:
        text = "".join(page.get_text() for page in pymupdf.open(stream=pdf, filetype="pdf"))
        assert SECRET_TEXT not in text
        with open_document(data, name=f"vectors.{kind}", settings=settings, pdf_bytes=pdf) as doc:
            for frame in doc.pages():
                assert _red(frame.image) < 0.001, (
                    f"{kind}: page {frame.page_number} shows the local/remote image"
                )
    assert listener.hits == []
