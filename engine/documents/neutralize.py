"""Remove every external reference from a document before LibreOffice sees it (first of several layers).

A document must not make the converter reach the network (SSRF from inside the VPC) or read local files into
the rendered page. Here, before conversion:

- HTML: re-serialized through a real HTML parser (html.parser): scripts, frames, objects, embeds, <link>, <base>
  and refresh <meta> are dropped; every resource attribute (src, href outside <a>, background, poster, data,
  srcset, xlink:href, ...) that is not a ``data:`` URI or a ``#fragment`` is removed (relative paths too: they
  resolve against the conversion folder, and ``../`` walks out of it); CSS ``url()`` and ``@import`` are
  removed from style attributes and <style> blocks. The result is UTF-8 whatever the input encoding.
- OOXML (DOCX/XLSX/PPTX): relationships with ``TargetMode="External"`` (linked pictures, external workbooks,
  remote templates) are dropped; INCLUDEPICTURE/INCLUDETEXT/LINK/DDE/IMPORT field instructions are blanked;
  WEBSERVICE/FILTERXML/RTD formulas are removed (their cached values stay); DOCTYPEs (XXE) are stripped from
  every XML part; embedded SVGs lose external references.
- ODF (ODT/ODS/ODP): ``xlink:href`` values outside the package (URLs, absolute or ``../`` paths) are emptied;
  DOCTYPEs are stripped; embedded SVGs are cleaned.
- RTF: INCLUDEPICTURE/INCLUDETEXT/LINK/DDE/IMPORT field instructions are blanked.

Legacy binary DOC/XLS/PPT cannot be rewritten here; the other layers (LibreOffice configured never to update
links or load remote resources, a proxy pointing nowhere, a network namespace where the kernel allows) cover
them and everything this layer misses. See engine.documents.office.
"""

from __future__ import annotations

import html
import io
import re
import zipfile
from html.parser import HTMLParser

from engine.documents.sniff import text_encoding

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
_CSS_URL = re.compile(r"url\s*\(\s*(['\"]?)(?!data:|#)[^)]*\1\s*\)", re.I)
_CSS_IMPORT = re.compile(r"@import[^;]*;?", re.I)
_CSS_IMAGE_SET = re.compile(r"image-set\s*\([^)]*\)", re.I)


def _inline_only(value: str) -> bool:
    v = value.strip().lower()
    return v.startswith(("data:", "#")) or v == ""


def clean_css(css: str) -> str:
    css = _CSS_IMPORT.sub("", css)
    css = _CSS_IMAGE_SET.sub("none", css)
    return _CSS_URL.sub("none", css)


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
            if name in _RESOURCE_ATTRS and not (tag == "a" and name == "href") and not _inline_only(v):
                continue
            if tag == "a" and name == "href" and v.strip().lower().startswith(("file:", "javascript:")):
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
_EXTERNAL_REL = re.compile(
    rb"<Relationship\b[^>]*\bTargetMode\s*=\s*[\"']External[\"'][^>]*?(/>|>\s*</Relationship>)", re.I
)
_REMOTE_TARGET = re.compile(
    rb"<Relationship\b[^>]*\bTarget\s*=\s*[\"'](?:[a-z][a-z0-9+.-]*:|\\\\|//)[^\"']*[\"'][^>]*?(/>|>\s*</Relationship>)",
    re.I,
)
_FIELD_WORDS = rb"(?:INCLUDEPICTURE|INCLUDETEXT|INCLUDE|LINK|DDEAUTO|DDE|IMPORT|AUTOTEXTLIST)"
_INSTR_TEXT = re.compile(rb"(<w:instrText\b[^>]*>)([^<]*)(</w:instrText>)")
_INSTR_ATTR = re.compile(rb"(\bw:instr\s*=\s*)([\"'])(.*?)\2", re.S)
_FIELD = re.compile(rb"^\s*" + _FIELD_WORDS + rb"\b", re.I)
_WEB_FORMULA = re.compile(
    rb"<(?:x:)?f\b[^>]*>[^<]*\b(?:WEBSERVICE|FILTERXML|RTD|CALL|REGISTER\.ID|IMPORTXML|IMPORTDATA|DDE)\s*\([^<]*</(?:x:)?f>",
    re.I,
)
_ODF_HREF = re.compile(rb"(\bxlink:href\s*=\s*)([\"'])(.*?)\2", re.S)
_SVG_HREF = re.compile(rb"(\b(?:xlink:)?href\s*=\s*)([\"'])(.*?)\2", re.S)
_VML_SRC = re.compile(
    rb"(\b(?:o:href|src|o:title)\s*=\s*)([\"'])((?:file|https?|ftp|smb|webdav)[^\"']*|\\\\[^\"']*)\2", re.I
)


def _outside_package(value: bytes) -> bool:
    v = value.strip().lower()
    if not v or v.startswith((b"#", b"data:")):
        return False
    return bool(re.match(rb"^[a-z][a-z0-9+.-]*:", v)) or v.startswith((b"/", b"\\", b"..")) or b"/../" in v


def _blank_if_outside(m: re.Match[bytes]) -> bytes:
    return m.group(1) + m.group(2) + (b"" if _outside_package(m.group(3)) else m.group(3)) + m.group(2)


_ENTITY_NAME = re.compile(rb"<!ENTITY\s+%?\s*([\w.:-]+)")


def _strip_doctype(xml: bytes) -> bytes:
    """No DOCTYPE, so no entity (XXE, billion laughs) can be declared; references to the declared ones go too."""
    names = [n for m in _DOCTYPE.finditer(xml) for n in _ENTITY_NAME.findall(m.group(0))]
    xml = _ENTITY.sub(b"", _DOCTYPE.sub(b"", xml))
    for name in set(names) - {b"amp", b"lt", b"gt", b"quot", b"apos"}:
        xml = xml.replace(b"&" + name + b";", b"")
    return xml


def neutralize_svg(svg: bytes) -> bytes:
    return _SVG_HREF.sub(_blank_if_outside, _strip_doctype(svg))


def _blank_field(m: re.Match[bytes]) -> bytes:
    return m.group(1) + (b" " if _FIELD.match(m.group(2)) else m.group(2)) + m.group(3)


def _blank_field_attr(m: re.Match[bytes]) -> bytes:
    return m.group(1) + m.group(2) + (b" " if _FIELD.match(m.group(3)) else m.group(3)) + m.group(2)


def _ooxml_part(name: str, data: bytes) -> bytes:
    if name.endswith(".rels"):
        data = _EXTERNAL_REL.sub(b"", data)
        return _REMOTE_TARGET.sub(b"", _strip_doctype(data))
    if name.endswith(".svg"):
        return neutralize_svg(data)
    if name.endswith((".xml", ".vml")):
        data = _strip_doctype(data)
        data = _INSTR_TEXT.sub(_blank_field, data)
        data = _INSTR_ATTR.sub(_blank_field_attr, data)
        data = _WEB_FORMULA.sub(b"", data)
        return _VML_SRC.sub(lambda m: m.group(1) + m.group(2) + m.group(2), data)
    return data


def _odf_part(name: str, data: bytes) -> bytes:
    if name.endswith(".svg"):
        return neutralize_svg(data)
    if name.endswith(".xml"):
        return _ODF_HREF.sub(_blank_if_outside, _strip_doctype(data))
    return data


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
    if type_ == "rtf":
        return _RTF_FIELD.sub(lambda m: m.group(1) + b"REF", data)
    return data
