"""The review page in headless Chromium (Debian's chromium + chromium-driver, driven by selenium): it loads from
a file with no network, shows the verdict, and clicking a field highlights that field's box on its page."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import Settings
from engine.extraction.review import build_html, value_at
from engine.extraction.runner import extract_document
from engine.storage import LocalStore
from tests.fixtures.llm_server import ScriptedLLM
from tests.integration.test_extraction_trust import SCHEMA, faithful, invoice_pdf

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="chromium / chromium-driver not installed"
)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]  # fmt: skip


@pytest.fixture(scope="module")
def result_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("review")
    pdf = invoice_pdf(tmp / "invoice.pdf")
    answer = faithful()
    answer["lines"][0]["amount"] = 355.0  # row 1's amount given for row 0: wrong_row
    answer["payment_terms"] = "<script>window.pwned = 1</script><img src=x onerror='window.pwned = 2'>"
    with ScriptedLLM([{"content": json.dumps(answer)}]) as llm:
        s = Settings(llm_base_url=llm.base_url, llm_model="test-vlm")
        extract_document(pdf, SCHEMA, settings=s, store=LocalStore(tmp / "store"))
    (found,) = (tmp / "store").glob("results/*/*/result.json")
    quality = json.loads((found.parent / "quality.json").read_text())
    quality.setdefault(
        "verdict",
        {"decision": "review", "reasons": [{"reason": "wrong_row", "path": "$.lines[0].amount", "page": 2}]},
    )  # as extraction's verdict writes it
    (found.parent / "quality.json").write_text(json.dumps(quality))
    return found.parent


def review(result_dir: Path, out: Path) -> Path:
    done = subprocess.run([sys.executable, "-m", "engine", "review", str(result_dir), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_the_page_is_self_contained_and_escapes_values(result_dir: Path, tmp_path: Path) -> None:
    text = review(result_dir, tmp_path / "review.html").read_text()
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert "http://" not in text and "https://" not in text  # nothing to fetch at view time
    assert text.count('src="data:image/jpeg;base64,') == 3  # pages 1-3 are cited
    assert "<script>window.pwned" not in text and "&lt;script&gt;window.pwned" in text
    assert 'class="verdict v-review"' in text
    assert 'data-path="$.lines[0].amount"' in text and "wrong_row" in text


def test_values_are_read_by_path() -> None:
    data = {"a": {"b": [1, {"c": "x"}]}}
    assert (
        value_at(data, "$.a.b[1].c") == "x"
        and value_at(data, "$.a.b[0]") == 1
        and value_at(data, "$.z") is None
    )
    page = build_html({"data": {}, "provenance": {"citations": []}}, {}, {})
    assert 'class="verdict v-unknown"' in page  # a result written before verdicts existed still opens


@needs_chromium
@pytest.mark.slow
def test_clicking_a_field_highlights_its_box_in_headless_chromium(result_dir: Path, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    page = review(result_dir, tmp_path / "review.html")
    os.environ["SE_OFFLINE"] = "true"  # selenium must not look for drivers online
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM  # type: ignore[assignment]
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000"]:
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        drv.get(page.as_uri())
        assert drv.find_element(By.ID, "verdict").text.lower() == "review"
        path = "$.lines[1].unit_price"
        box = drv.find_element(By.CSS_SELECTOR, f'.box[data-path="{path}"]')
        before = box.value_of_css_property("background-color")
        assert "active" not in (box.get_attribute("class") or "")
        drv.find_element(By.CSS_SELECTOR, f'tr.field[data-path="{path}"]').click()
        assert "active" in (box.get_attribute("class") or "")
        assert box.value_of_css_property("background-color") != before  # drawn highlighted, not just tagged
        others = drv.find_elements(By.CSS_SELECTOR, ".box.active")
        assert [b.get_attribute("data-path") for b in others] == [path]  # only that field's box
        # the box sits on page 2 over the printed 35.50 (the cited bbox, as laid over the image)
        sheet = drv.find_element(By.CSS_SELECTOR, "#page-2 .sheet img")
        assert box.location["y"] >= sheet.location["y"] and box.size["width"] > 0
        # clicking a box selects its field's row
        target = drv.find_element(By.CSS_SELECTOR, '.box[data-path="$.invoice_number"]')
        drv.execute_script("arguments[0].click()", target)
        row = drv.find_element(By.CSS_SELECTOR, 'tr.field[data-path="$.invoice_number"]')
        assert "active" in (row.get_attribute("class") or "")
        assert drv.execute_script("return window.pwned") is None  # a hostile value stays text
        assert drv.execute_script("return performance.getEntriesByType('resource').length") == 0
        if os.environ.get("DOCVISION_REVIEW_SCREENSHOT"):  # `make review-screenshot` refreshes docs/
            drv.find_element(By.CSS_SELECTOR, 'tr.field[data-path="$.lines[0].amount"]').click()
            drv.save_screenshot(os.environ["DOCVISION_REVIEW_SCREENSHOT"])
    finally:
        drv.quit()
