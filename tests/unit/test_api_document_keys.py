"""Which S3 keys a caller may name as document.key (issue 23 item 16): DOCVISION_API_KEY_PREFIXES (the
template's ApiDocumentPrefixes) decides, except that derived/ and empty/./.. segments never pass."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

pytestmark = pytest.mark.unit


@pytest.fixture
def api(monkeypatch):  # noqa: ANN001, ANN201
    """handlers.api with DOCVISION_API_KEY_PREFIXES set (read from Settings per request: a fresh container)."""
    import handlers.api
    import handlers.common
    from engine.config import get_settings

    def load(prefixes: str | None):  # noqa: ANN202
        if prefixes is None:
            monkeypatch.delenv("DOCVISION_API_KEY_PREFIXES", raising=False)
        else:
            monkeypatch.setenv("DOCVISION_API_KEY_PREFIXES", prefixes)
        get_settings.cache_clear()
        handlers.common.reset_service()
        return handlers.api

    yield load
    monkeypatch.delenv("DOCVISION_API_KEY_PREFIXES", raising=False)
    get_settings.cache_clear()
    handlers.common.reset_service()


def _allowed(module, key: str) -> bool:  # noqa: ANN001
    try:
        module.DocumentRef(key=key)
        return True
    except ValidationError:
        return False


def test_the_default_is_raw_only(api) -> None:  # noqa: ANN001
    m = api(None)
    assert m.key_prefixes() == ("raw/",)
    assert _allowed(m, "raw/a.pdf") and _allowed(m, "raw/2026/b c.docx")
    for key in ("inbox/a.pdf", "derived/failures/d/call-0.json", "rawx/a.pdf", "raw//a.pdf", "raw/../a.pdf",
                "raw/./a.pdf", "/raw/a.pdf"):  # fmt: skip
        assert not _allowed(m, key), key


def test_configured_prefixes_and_derived_never(api) -> None:  # noqa: ANN001
    m = api(" tenant-a/in/ , shared/,derived/")
    assert m.key_prefixes() == ("tenant-a/in/", "shared/", "derived/")
    assert _allowed(m, "tenant-a/in/x.pdf") and _allowed(m, "shared/y.pdf")
    for key in ("raw/a.pdf", "tenant-a/x.pdf", "derived/pages/d/00001.png", "derived/x.pdf",
                "shared/../derived/x.json"):  # fmt: skip
        assert not _allowed(m, key), key
