"""Text from outside reaches the operator's terminal as the literal text it is."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from driftloop.shared.cli.terminal import outside, visible

pytestmark = pytest.mark.unit
RICH_STYLE = re.compile(r"\x1b\[[0-9;]*m")  # the colours Rich's own highlighter adds


def render(text: str, *, color: bool) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=color, color_system="truecolor" if color else None)
    console.print(outside(text))
    return out.getvalue()


@pytest.mark.parametrize("color", [True, False])
def test_an_escape_sequence_in_a_column_name_is_shown_not_sent(color: bool) -> None:
    printed = render("esc\x1b[31mred", color=color)
    assert "\x1b[31m" not in printed  # the name's own escape never reaches the terminal
    assert "esc\\x1b[31mred" in RICH_STYLE.sub("", printed)


@pytest.mark.parametrize("color", [True, False])
def test_rich_markup_in_a_name_prints_literally(color: bool) -> None:
    link = render("[link=https://evil.example]ok[/link]", color=color)
    assert "\x1b]8;" not in link  # no OSC-8 hyperlink
    assert "[link=https://evil.example]ok[/link]" in RICH_STYLE.sub("", link)
    bold = render("[bold red]x[/bold red]", color=color)
    assert "[bold red]x[/bold red]" in RICH_STYLE.sub("", bold)


def test_bidi_and_zero_width_characters_become_visible() -> None:
    assert visible("x1\u202e") == "x1\\u202e"
    assert visible("a\u200bb") == "a\\u200bb"
    assert visible("m1\n") == "m1\\x0a"
    assert visible("plain name °C") == "plain name °C"
