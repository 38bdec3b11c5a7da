"""Settings: every variable is documented in .env.example, and bad values are refused clearly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from chunking.settings import Settings
from cli.target import CliSettings

EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"


def test_every_setting_is_in_env_example_with_a_comment() -> None:
    lines = EXAMPLE.read_text().splitlines()
    documented = {
        m.group(1): i for i, line in enumerate(lines) if (m := re.match(r"([A-Z_]+)=", line))
    }
    for name in [*Settings.model_fields, *CliSettings.model_fields]:  # the app's, the command's
        variable = name.upper()
        assert variable in documented, f"{variable} is missing from .env.example"
        assert lines[documented[variable] - 1].startswith("#"), f"{variable} has no comment"


def test_env_example_values_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for line in EXAMPLE.read_text().splitlines():
        if (m := re.match(r"([A-Z_]+)=(.*)", line)) and m.group(2):
            monkeypatch.setenv(m.group(1), m.group(2))
    Settings()
    CliSettings()


def test_too_many_polls_are_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_POLL_INTERVAL_S", "1")
    monkeypatch.setenv("AWS_POLL_TIMEOUT_S", "3600")
    with pytest.raises(ValidationError, match="raise AWS_POLL_INTERVAL_S"):
        Settings()


@pytest.mark.parametrize(("value", "dev", "url"), [("1", True, None), ("0", False, None),
    ("false", False, None), ("http://127.0.0.1:9999", True, "http://127.0.0.1:9999")])  # fmt: skip
def test_inngest_dev_accepts_a_flag_or_a_url(
    monkeypatch: pytest.MonkeyPatch, value: str, dev: bool, url: str | None
) -> None:
    monkeypatch.setenv("INNGEST_DEV", value)
    # Production mode needs these to start at all (tests/test_inngest_signing.py).
    monkeypatch.setenv("INNGEST_SIGNING_KEY", "signkey-prod-00")
    monkeypatch.setenv("INNGEST_SERVE_ORIGIN", "https://jobs.example.com")
    settings = Settings()
    assert (settings.inngest_dev_mode, settings.inngest_dev_url) == (dev, url)
