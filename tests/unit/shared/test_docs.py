"""The README stays true: its first two commands, and its settings table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from driftloop.shared.cli.commands.config import settings_table
from driftloop.shared.settings import CommonSettings

pytestmark = pytest.mark.unit
README = (Path(__file__).resolve().parents[3] / "README.md").read_text()


def test_quick_start_is_make_demo_then_make_test() -> None:
    block = README.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]


def test_settings_table_matches_the_settings_classes() -> None:
    found = re.search(r"<!-- settings:begin -->\n(.*?)<!-- settings:end -->", README, re.S)
    assert found, "README lacks the settings markers"
    assert found.group(1) == settings_table(), (
        "README settings table is stale: replace it with `driftloop config` output"
    )


def test_nested_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_PORTS__SERVING", "9001")
    monkeypatch.setenv("DRIFTLOOP_S3__BUCKET", "models")
    monkeypatch.setenv("DRIFTLOOP_ADDRESSES", '{"registry": "reg:1"}')
    common = CommonSettings()
    assert common.ports.serving == 9001 and common.ports.registry == 50054
    assert common.s3.bucket == "models"
    assert common.address("registry") == "reg:1"
    assert common.address("serving") == "127.0.0.1:9001"


def test_unknown_nested_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_PORTS__SERVNG", "9001")
    with pytest.raises(ValueError, match="servng"):
        CommonSettings()


def test_token_file_wins_and_is_never_in_repr(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    common = CommonSettings(auth_token="other", auth_token_file=token_file)
    assert common.token() == "s3cret"
    assert "other" not in repr(common) and "s3cret" not in repr(common)
