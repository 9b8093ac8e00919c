"""BAML_LOG is written in one place (engine/extraction/clients.py: configure_baml_log), per extraction."""

from __future__ import annotations

import os

import pytest

from engine.config import Settings
from engine.extraction import clients

pytestmark = pytest.mark.unit


def test_a_debug_extraction_does_not_leave_prompt_logging_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clients, "_OPERATOR_BAML_LOG", None)
    monkeypatch.setenv("BAML_LOG", "error")
    clients.configure_baml_log(Settings(llm_debug=True))
    assert os.environ["BAML_LOG"] == "info"
    # before: runner.py set BAML_LOG=info and nothing set it back, so every later extraction of the
    # container logged prompts and answers
    clients.configure_baml_log(Settings())
    assert os.environ["BAML_LOG"] == "error"


def test_an_operators_level_is_kept_when_debugging_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clients, "_OPERATOR_BAML_LOG", "warn")
    monkeypatch.setenv("BAML_LOG", "warn")
    clients.configure_baml_log(Settings())
    assert os.environ["BAML_LOG"] == "warn"
