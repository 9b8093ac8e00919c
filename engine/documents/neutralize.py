"""Remove every external reference from a document before LibreOffice sees it (first of several layers).

A document must not make the converter reach the network (SSRF from inside the VPC) or read local files into
the rendered page. Here, before conversion:

- Embedded content is judged by what it is, never by its name or label: every ZIP part and every ``data:``
  payload is sniffed (an SVG stored as ``image1.png``, an SVG in a ``data:image/png`` URI, a gzipped SVGZ, a
  UTF-16 SVG are all SVGs). Raster images (PNG, JPEG, GIF, BMP, TIFF, WebP) cannot reference anything and pass
  unchanged; an SVG is parsed (entities decoded by the XML parser, so ``&#102;ile:`` is ``file:``) and
  re-serialized with every reference that is not ``#fragment`` removed (href/xlink:href on any element,
  ``url()`` and ``@import`` in CSS, <script>/<foreignObject>); a ``data:`` URI inside it is cleaned the same
  way, recursively (nesting is capped); any other ``data:`` payload is dropped. An SVG that does not parse
  becomes an empty SVG.
- HTML: re-serialized through a real HTML parser (html.parser): scripts, frames, objects, embeds, <link>, <base>
  and refresh <meta> are dropped; every resource attribute (src, href outside <a>, background, poster, data,
  srcset, xlink:href, ...) that is not a ``#fragment`` or a ``data:`` URI that survives the cleaning above is
  removed (relative paths too: they resolve against the conversion folder, and ``../`` walks out of it); CSS
  ``url()`` and ``@import`` are removed from style attributes and <style> blocks. The result is UTF-8 whatever
  the input encoding.
- OOXML (DOCX/XLSX/PPTX): relationships with ``TargetMode="External"`` (linked pictures, external workbooks,
  remote templates) are dropped; INCLUDEPICTURE/INCLUDETEXT/LINK/DDE/IMPORT field instructions are blanked;
  WEBSERVICE/FILTERXML/RTD formulas are removed (their cached values stay); DOCTYPEs (XXE) are stripped from
  every XML part. Relationship parts are parsed (so an entity-encoded ``TargetMode``/``Target`` is seen as
  Office sees it); field instructions and attribute values are entity-decoded before they are matched.
- ODF (ODT/ODS/ODP, and flat FODT/FODS/FODP): ``href`` values (any namespace prefix) outside the package
  (URLs, absolute or ``../`` paths) are emptied after entity decoding; inline ``binary-data`` pictures are
  decoded and cleaned like parts; DOCTYPEs are stripped.
- RTF: INCLUDEPICTURE/INCLUDETEXT/LINK/DDE/IMPORT field instructions are blanked.

Legacy binary DOC/XLS/PPT cannot be rewritten here; the other layers (LibreOffice configured never to update
links or load remote resources, a proxy pointing nowhere, a network namespace where the kernel allows) cover
them and everything this layer misses. See engine.documents.office.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import html
import io
import re
import xml.etree.ElementTree as ET
import zipfile
import zlib
from html.parser import HTMLParser
from urllib.parse import unquote_to_bytes

from engine.documents.sniff import DocumentType, sniff, text_encoding

_DROP_WITH_CONTENT = {"script", "noscript", "template"}
_DROP_TAG = {"iframe", "frame", "frameset", "object", "embed", "applet", "link", "base", "portal", "param"}
_RESOURCE_ATTRS = {
    "src",
    "href",
    "background",
    "lowsrc",
    "dynsrc",
    "poster",
    "data",
    "srcset",
    "xlink:href",
    "action",
    "formaction",
    "codebase",
    "longdesc",
    "usemap",
    "archive",
    "classid",
    "profile",
    "manifest",
    "icon",
    "imagesrcset",
}
# url( "..." ) / url( '...' ) / url( ... ): the argument up to its closing quote, or up to ")".
_CSS_URL = re.compile(r"""url\s*\(\s*(?:"([^"]*)"|'([^']*)'|([^)]*?))\s*\)""", re.I | re.S)
_CSS_IMPORT = re.compile(r"@import[^;]*;?", re.I)
_CSS_IMAGE_SET = re.compile(r"image-set\s*\([^)]*\)", re.I)
# CSS escapes of letters, digits and URL punctuation (``\66 ile:``, ``u\72l(``): decoded before matching.
_CSS_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})\s?")
MAX_DATA_DEPTH = 4  # data: inside SVG inside data: ...: deeper than this is dropped, not followed
MAX_SVG_BYTES = 32 << 20  # an SVG (or SVGZ inflating) past this is not a picture we keep
_EMPTY_SVG = (
    b'<?xml version="1.0" encoding="UTF-8"?><svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'
)


def _css_unescape(css: str) -> str:
    def one(m: re.Match[str]) -> str:
        code = int(m.group(1), 16)
        ch = chr(code) if code < 0x110000 else ""
        return ch if ch.isascii() and (ch.isalnum() or ch in ":/.-_()") else m.group(0)

    return _CSS_ESCAPE.sub(one, css)


def _clean_ref(value: str, depth: int) -> str | None:
    """A reference kept as it is (``#fragment``, empty), a ``data:`` URI cleaned, or None (remove it)."""
    v = value.strip()
    if v == "" or v.startswith("#"):
        return value
    if v[:5].lower() == "data:":
        return clean_data_uri(v, depth)
    return None


def clean_css(css: str, depth: int = 0) -> str:
    css = _css_unescape(css)
    css = _CSS_IMPORT.sub("", css)
    css = _CSS_IMAGE_SET.sub("none", css)

    def url(m: re.Match[str]) -> str:
        arg = next((g for g in m.groups() if g is not None), "")
        kept = _clean_ref(arg, depth)
        if kept == arg:
            return m.group(0)
        return "none" if kept is None or kept.strip() == "" else f'url("{kept}")'

    return _CSS_URL.sub(url, css)


def clean_data_uri(uri: str, depth: int = 0) -> str | None:
    """A ``data:`` URI judged by its payload, not its label: a raster image unchanged, an SVG cleaned (as base64),
    anything else (HTML, fonts, unknown bytes, payloads nested too deep) None."""
    head, sep, body = uri.partition(",")
    if not sep or depth >= MAX_DATA_DEPTH:
        return None
    try:
        if head.lower().rstrip().endswith(";base64"):
            payload = base64.b64decode(re.sub(r"\s+", "", body), validate=True)
        else:
            payload = unquote_to_bytes(body)
    except (binascii.Error, ValueError):
        return None
    kind = content_kind(payload)
    if kind == "raster":
        return uri
    if kind == "svg":
        return "data:image/svg+xml;base64," + base64.b64encode(neutralize_svg(payload, depth + 1)).decode()
    return None


class _Sanitizer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.out: list[str] = []
        self.skip_depth = 0
        self.in_style = False

    def _attrs(self, tag: str, attrs: list[tuple[str, str | None]]) -> str:
        kept = []
        for name, value in attrs:
            name = name.lower()
            v = value or ""
            if name.startswith("on"):
                continue  # event handlers
            if name in _RESOURCE_ATTRS and not (tag == "a" and name == "href"):
                kept_ref = None if name in ("srcset", "imagesrcset") else _clean_ref(v, 0)
                if kept_ref is None:
                    continue
                v = kept_ref
            if (
                tag == "a"
                and name == "href"
                and v.strip().lower().startswith(("file:", "javascript:", "data:"))
            ):
                continue
            if name == "style":
                v = clean_css(v)
            kept.append(f' {name}="{html.escape(v, quote=True)}"' if value is not None else f" {name}")
        return "".join(kept)

    def _dropped(self, tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        if tag in _DROP_TAG:
            return True
        if tag == "meta":
            a = {k.lower(): (v or "").lower() for k, v in attrs}
            return "charset" in a or a.get("http-equiv") in ("refresh", "content-type", "set-cookie")
        return False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROP_WITH_CONTENT:
            self.skip_depth += 1
            return
        if self.skip_depth or self._dropped(tag, attrs):
            return
        self.in_style = tag == "style"
        self.out.append(f"<{tag}{self._attrs(tag, attrs)}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skip_depth or tag in _DROP_WITH_CONTENT or self._dropped(tag, attrs):
            return
        self.out.append(f"<{tag}{self._attrs(tag, attrs)}/>")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROP_WITH_CONTENT:
            self.skip_depth = max(0, self.skip_depth - 1)
            return
        if self.skip_depth or tag in _DROP_TAG or tag == "meta":
            return
        if tag == "style":
            self.in_style = False
        self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        self.out.append(clean_css(data) if self.in_style else data.replace("<", "&lt;"))

    def handle_entityref(self, name: str) -> None:
        if not self.skip_depth:
            self.out.append(f"&{name};")

    def handle_charref(self, name: str) -> None:
        if not self.skip_depth:
            self.out.append(f"&#{name};")

    def handle_decl(self, decl: str) -> None:
        if decl.lower().startswith("doctype html"):
            self.out.append("<!DOCTYPE html>")

    # comments (incl. IE conditional comments), processing instructions and CDATA are dropped
    def handle_comment(self, data: str) -> None:
        return

    def handle_pi(self, data: str) -> None:
        return

    def unknown_decl(self, data: str) -> None:
        return


def decode_html(data: bytes) -> str:
    codec = text_encoding(data)
    if codec is None:
        m = re.search(rb"""charset\s*=\s*["']?([A-Za-z0-9_.:-]{1,40})""", data[:4096], re.I)
        codec = m.group(1).decode() if m else "utf-8"
    try:
        return data.decode(codec)
    except (LookupError, UnicodeDecodeError):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("cp1252", errors="replace")


def neutralize_html(data: bytes) -> bytes:
    parser = _Sanitizer()
    parser.feed(decode_html(data).lstrip("\ufeff"))
    parser.close()
    body = "".join(parser.out)
    head = '<meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
    if body.startswith("<!DOCTYPE html>"):
        return ("<!DOCTYPE html>" + head + body[len("<!DOCTYPE html>") :]).encode("utf-8")
    return (head + body).encode("utf-8")


# --------------------------------------------------------------------------------------------- XML
_DOCTYPE = re.compile(rb"<!DOCTYPE[^\[>]*(\[.*?\])?\s*>", re.S | re.I)
_ENTITY = re.compile(rb"<!ENTITY[^>]*>", re.I)
_CHAR_REF = re.compile(rb"&(?:#(\d{1,8})|#[xX]([0-9a-fA-F]{1,8})|(amp|lt|gt|quot|apos));")
_NAMED = {b"amp": b"&", b"lt": b"<", b"gt": b">", b"quot": b'"', b"apos": b"'"}
_FIELD_WORDS = rb"(?:INCLUDEPICTURE|INCLUDETEXT|INCLUDE|LINK|DDEAUTO|DDE|IMPORT|AUTOTEXTLIST)"
_FIELD_WORD = re.compile(rb"\b" + _FIELD_WORDS + rb"\b", re.I)
_INSTR_TEXT = re.compile(rb"(<w:instrText\b[^>]*>)([^<]*)(</w:instrText>)")
_INSTR_ATTR = re.compile(rb"(\bw:instr\s*=\s*)([\"'])(.*?)\2", re.S)
# One complex field's instruction runs: Word joins every instrText from fldChar begin to separate/end, so
# "INCLUDE" + "PICTURE" split over two runs is one INCLUDEPICTURE.
_FIELD_SPAN = re.compile(
    rb"<w:fldChar\b[^>]*w:fldCharType\s*=\s*[\"']begin[\"'].*?(?=<w:fldChar\b[^>]*w:fldCharType\s*=\s*[\"'](?:separate|end)[\"'])",
    re.S,
)
_FORMULA = re.compile(rb"(<(?:[\w.-]+:)?f\b[^>]*>)([^<]*)(</(?:[\w.-]+:)?f>)")
_WEB_FUNCTION = re.compile(
    rb"\b(?:WEBSERVICE|FILTERXML|RTD|CALL|REGISTER\.ID|IMPORTXML|IMPORTDATA|DDE)\s*\(", re.I
)
_HREF_ATTR = re.compile(rb"(\b(?:[\w.-]+:)?href\s*=\s*)([\"'])(.*?)\2", re.S)
_VML_SRC = re.compile(rb"(\b(?:o:href|src|o:title)\s*=\s*)([\"'])(.*?)\2", re.S | re.I)
_BINARY_DATA = re.compile(rb"(<((?:[\w.-]+:)?binary-data)\b[^>]*>)(.*?)(</\2\s*>)", re.S)
_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_SVG_NS = "http://www.w3.org/2000/svg"
_XLINK_NS = "http://www.w3.org/1999/xlink"
_PREFIXES = {_XLINK_NS: "xlink", "http://www.w3.org/XML/1998/namespace": "xml"}
_SVG_DROP = {"script", "foreignobject", "iframe", "object", "embed", "audio", "video", "handler", "listener"}


def xml_unescape(value: bytes) -> bytes:
    """Character and predefined entity references decoded, as an XML parser reads an attribute or text."""

    def one(m: re.Match[bytes]) -> bytes:
        if m.group(3):
            return _NAMED[m.group(3)]
        code = int(m.group(1)) if m.group(1) else int(m.group(2), 16)
        return chr(code).encode("utf-8", errors="replace") if code < 0x110000 else b""

    return _CHAR_REF.sub(one, value)


def _xml_escape(value: bytes) -> bytes:
    return (
        value.replace(b"&", b"&amp;").replace(b"<", b"&lt;").replace(b">", b"&gt;").replace(b'"', b"&quot;")
    )


def _outside_package(value: bytes) -> bool:
    v = xml_unescape(value).strip().lower()
    if not v or v.startswith(b"#"):
        return False
    return bool(re.match(rb"^[a-z][a-z0-9+.-]*:", v)) or v.startswith((b"/", b"\\", b"..")) or b"/../" in v


def _outside_package_rel(value: bytes) -> bool:
    """A relationship target Office resolves outside the ZIP: a URI scheme, a network path or a backslash path.

    Unlike an ODF href, an internal OPC target is a part name: ``/xl/worksheets/sheet1.xml`` (package-absolute,
    as openpyxl writes it) and ``../media/image1.png`` (relative to the source part) both stay inside the ZIP.
    """
    v = xml_unescape(value).strip().lower()
    return bool(re.match(rb"^[a-z][a-z0-9+.-]*:", v)) or v.startswith((b"//", b"\\")) or b"\\" in v


def _clean_attr(m: re.Match[bytes]) -> bytes:
    """An href-like attribute: outside the package → empty; a data: URI → cleaned (or empty); else unchanged."""
    value = xml_unescape(m.group(3)).strip()
    if value[:5].lower() == b"data:":
        kept = clean_data_uri(value.decode("utf-8", errors="replace"))
        return m.group(1) + m.group(2) + (_xml_escape(kept.encode()) if kept else b"") + m.group(2)
    return m.group(1) + m.group(2) + (b"" if _outside_package(m.group(3)) else m.group(3)) + m.group(2)


_ENTITY_NAME = re.compile(rb"<!ENTITY\s+%?\s*([\w.:-]+)")


def _strip_doctype(xml: bytes) -> bytes:
    """No DOCTYPE, so no entity (XXE, billion laughs) can be declared; references to the declared ones go too."""
    names = [n for m in _DOCTYPE.finditer(xml) for n in _ENTITY_NAME.findall(m.group(0))]
    xml = _ENTITY.sub(b"", _DOCTYPE.sub(b"", xml))
    for name in set(names) - {b"amp", b"lt", b"gt", b"quot", b"apos"}:
        xml = xml.replace(b"&" + name + b";", b"")
    return xml


def serialize_xml(root: ET.Element, default_ns: str) -> bytes:
    """UTF-8 XML with ``default_ns`` as the default namespace and xlink:/xml: prefixes (ElementTree would write
    ns0:svg, which LibreOffice's SVG and relationship readers do not take)."""
    declared: dict[str, str] = {default_ns: "", **_PREFIXES}

    def qname(name: str) -> str:
        if not name.startswith("{"):
            return name
        ns, local = name[1:].split("}", 1)
        if ns not in declared:
            declared[ns] = f"ns{len(declared)}"
        return f"{declared[ns]}:{local}" if declared[ns] else local

    def write(el: ET.Element, out: list[str]) -> None:
        attrs = "".join(f' {qname(k)}="{html.escape(v, quote=True)}"' for k, v in el.attrib.items())
        tag = qname(el.tag)
        out.append(f"<{tag}{attrs}>" + html.escape(el.text or "", quote=False))
        for child in el:
            write(child, out)
            out.append(html.escape(child.tail or "", quote=False))
        out.append(f"</{tag}>")

    out: list[str] = []
    write(root, out)
    xmlns = "".join(
        f' xmlns:{prefix}="{ns}"' if prefix else f' xmlns="{ns}"'
        for ns, prefix in declared.items()
        if prefix != "xml"
    )
    body = "".join(out)
    head = body.index(">")  # the root's start tag ends at its first ">" (attribute values are escaped)
    return ('<?xml version="1.0" encoding="UTF-8"?>' + body[:head] + xmlns + body[head:]).encode("utf-8")


# --------------------------------------------------------------------------------------- content sniffing
_SVG_ROOT = re.compile(rb"<(?:[\w.-]+:)?svg[\s>/]|<!DOCTYPE\s+svg\b", re.I)
_FIRST_ELEMENT = re.compile(rb"<([A-Za-z_][\w.:-]*)")
_XML_PROLOG = re.compile(rb"\s*(?:<\?.*?\?>\s*|<!--.*?-->\s*|<!DOCTYPE[^\[>]*(?:\[.*?\])?\s*>\s*)*", re.S)


def _inflate_head(data: bytes, limit: int) -> bytes:
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, limit)
    except zlib.error:
        return b""


def _as_utf8(data: bytes) -> bytes:
    """Text in a UTF-16/32 encoding (by BOM or NUL pattern) as UTF-8; anything else unchanged."""
    codec = text_encoding(data)
    if codec and codec != "utf-8":
        return data[: len(data) // 4 * 4].decode(codec, errors="replace").encode("utf-8")
    return data.removeprefix(b"\xef\xbb\xbf")


def content_kind(data: bytes) -> str:
    """What embedded bytes are, from their content (as LibreOffice's graphic filter decides), never their name:
    ``svg`` (plain, gzipped SVGZ, UTF-16), ``raster``, ``html``, ``xml`` or ``other``."""
    head = data[: 64 << 10]
    if head.startswith(b"\x1f\x8b"):
        return "svg" if _SVG_ROOT.search(_as_utf8(_inflate_head(data, 64 << 10))) else "other"
    found = sniff(head).type
    # An SVG anywhere near the start wins over a raster magic (LibreOffice looks for "<svg" in the first KB).
    text = _as_utf8(head)
    if _SVG_ROOT.search(text):
        return "svg"
    if found is not None and found.is_image:
        return "raster"
    if found is DocumentType.HTML:
        return "html"
    return "xml" if text.lstrip().startswith(b"<") else "other"


def _root_is_svg(data: bytes) -> bool:
    text = _as_utf8(data[: 64 << 10])
    prolog = _XML_PROLOG.match(text)
    first = _FIRST_ELEMENT.match(text, prolog.end() if prolog else 0)
    return bool(first) and first.group(1).split(b":")[-1].lower() == b"svg"  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------------ SVG
def _svg_text(data: bytes) -> str:
    codec = text_encoding(data)
    if codec is None:
        m = re.match(rb"""\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9_.:-]{1,40})""", data)
        codec = m.group(1).decode() if m else "utf-8"
    try:
        text = data.decode(codec)
    except (LookupError, UnicodeDecodeError):
        text = data.decode("utf-8", errors="replace")
    return re.sub(r"^\s*<\?xml[^>]*\?>", "", text.lstrip("\ufeff"))


def _clean_svg_tree(root: ET.Element, depth: int) -> None:
    for parent in list(root.iter()):
        for child in list(parent):
            tag = child.tag.rsplit("}", 1)[-1].lower() if isinstance(child.tag, str) else ""
            if tag in _SVG_DROP or not isinstance(child.tag, str):
                parent.remove(child)
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1].lower()
        if tag == "style" and el.text:
            el.text = clean_css(el.text, depth)
        for name, value in list(el.attrib.items()):
            local = name.rsplit("}", 1)[-1].rsplit(":", 1)[-1].lower()
            if local.startswith("on"):
                del el.attrib[name]
            elif local in ("href", "src"):
                kept = _clean_ref(value, depth)
                if kept is None:
                    del el.attrib[name]
                else:
                    el.attrib[name] = kept
            elif local == "style" or "url(" in value.lower() or "\\" in value:
                el.attrib[name] = clean_css(value, depth)


def neutralize_svg(svg: bytes, depth: int = 0) -> bytes:
    """The SVG parsed and re-serialized with nothing that points outside it (``#fragment`` references and
    cleaned ``data:`` pictures stay). SVGZ in → SVGZ out. Anything that does not parse is an empty SVG."""
    zipped = svg.startswith(b"\x1f\x8b")
    if zipped:
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(svg)) as gz:
                svg = gz.read(MAX_SVG_BYTES + 1)
        except (OSError, EOFError, zlib.error):
            svg = b""
    cleaned = _EMPTY_SVG
    if 0 < len(svg) <= MAX_SVG_BYTES and depth < MAX_DATA_DEPTH:
        text = _svg_text(_strip_doctype(_as_utf8(svg)))
        if "<!ENTITY" not in text and "<!DOCTYPE" not in text.upper():
            try:
                root = ET.fromstring(text)
                if root.tag.rsplit("}", 1)[-1].lower() == "svg":
                    _clean_svg_tree(root, depth)
                    cleaned = serialize_xml(root, _SVG_NS)
            except (ET.ParseError, ValueError, RecursionError):
                pass
    return gzip.compress(cleaned, mtime=0) if zipped else cleaned


def clean_embedded(data: bytes) -> bytes:
    """Bytes embedded in a document (a package part, an inline picture) made safe according to what they are."""
    kind = content_kind(data)
    if kind == "svg":
        return neutralize_svg(data)
    if kind == "html":
        return neutralize_html(data)
    return data


# ------------------------------------------------------------------------------------------- OOXML/ODF
def _clean_rels(data: bytes) -> bytes:
    """Parsed, so entity-encoded attributes are read as Office reads them: external and absolute targets go."""
    text = _svg_text(_strip_doctype(_as_utf8(data)))
    try:
        root = ET.fromstring(text)
    except (ET.ParseError, ValueError, RecursionError):
        return f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{_REL_NS}"/>'.encode()
    for rel in list(root):
        mode = rel.get("TargetMode", "").strip().lower()
        if mode == "external" or _outside_package_rel(rel.get("Target", "").encode()):
            root.remove(rel)
    return serialize_xml(root, _REL_NS)


def _blank_fields(xml: bytes) -> bytes:
    def span(m: re.Match[bytes]) -> bytes:
        joined = b"".join(t.group(2) for t in _INSTR_TEXT.finditer(m.group(0)))
        if not _FIELD_WORD.search(xml_unescape(joined)):
            return m.group(0)
        return _INSTR_TEXT.sub(lambda t: t.group(1) + b" " + t.group(3), m.group(0))

    def attr(m: re.Match[bytes]) -> bytes:
        hit = _FIELD_WORD.search(xml_unescape(m.group(3)))
        return m.group(1) + m.group(2) + (b" " if hit else m.group(3)) + m.group(2)

    xml = _FIELD_SPAN.sub(span, xml)
    xml = _INSTR_TEXT.sub(lambda t: t.group(0) if not _FIELD_WORD.search(xml_unescape(t.group(2))) else
                          t.group(1) + b" " + t.group(3), xml)  # fmt: skip
    return _INSTR_ATTR.sub(attr, xml)


def _ooxml_xml(data: bytes) -> bytes:
    data = _blank_fields(_strip_doctype(data))
    data = _FORMULA.sub(lambda m: b"" if _WEB_FUNCTION.search(xml_unescape(m.group(2))) else m.group(0), data)
    return _VML_SRC.sub(
        lambda m: m.group(1)
        + m.group(2)
        + (b"" if _outside_package(m.group(3)) else m.group(3))
        + m.group(2),
        data,
    )


def _ooxml_part(name: str, data: bytes) -> bytes:
    if name.endswith(".rels"):
        return _clean_rels(data)
    if name.lower().endswith((".svg", ".svgz")) or _root_is_svg(data):
        return neutralize_svg(data)
    if name.endswith((".xml", ".vml")):
        return _ooxml_xml(data)
    return clean_embedded(data)


def _odf_xml(data: bytes) -> bytes:
    def inline(m: re.Match[bytes]) -> bytes:
        try:
            raw = base64.b64decode(re.sub(rb"\s+", b"", m.group(3)), validate=True)
        except (binascii.Error, ValueError):
            return m.group(1) + m.group(4)
        cleaned = clean_embedded(raw)
        return m.group(1) + (m.group(3) if cleaned is raw else base64.b64encode(cleaned)) + m.group(4)

    data = _HREF_ATTR.sub(_clean_attr, _strip_doctype(data))
    return _BINARY_DATA.sub(inline, data)


def _odf_part(name: str, data: bytes) -> bytes:
    if name.lower().endswith((".svg", ".svgz")) or _root_is_svg(data):
        return neutralize_svg(data)
    if name.endswith(".xml"):
        return _odf_xml(data)
    return clean_embedded(data)


MAX_UNZIPPED_BYTES = 1 << 30  # a ZIP (Office/ODF) that inflates past this is a bomb, not a document


def _rewrite_zip(data: bytes, part: object) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        if sum(i.file_size for i in src.infolist()) > MAX_UNZIPPED_BYTES:
            raise ValueError("the ZIP container inflates to more than 1 GiB (a ZIP bomb?)")
        for info in src.infolist():
            body = part(info.filename, src.read(info))  # type: ignore[operator]
            # ODF wants "mimetype" first and stored; keep each entry's compression.
            dst.writestr(info, body, compress_type=info.compress_type)
    return out.getvalue()


_RTF_FIELD = re.compile(rb"(\\fldinst\s*(?:\{[^{}]*?)?)\b" + _FIELD_WORDS + rb"\b", re.I)


def neutralize(data: bytes, type_: str) -> bytes:
    """The document with its external references removed (or unchanged for types this layer cannot rewrite)."""
    if type_ == "html":
        return neutralize_html(data)
    if type_ in ("docx", "xlsx", "pptx"):
        return _rewrite_zip(data, _ooxml_part)
    if type_ in ("odt", "ods", "odp"):
        return _rewrite_zip(data, _odf_part)
    if type_ in ("fodt", "fods", "fodp"):
        return _odf_xml(data)
    if type_ == "rtf":
        return _RTF_FIELD.sub(lambda m: m.group(1) + b"REF", data)
    return data
