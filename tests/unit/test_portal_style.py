"""The portal's colours meet WCAG 2.1 AA contrast (4.5:1 for text) in every pairing the
stylesheet uses, and the layout has a phone breakpoint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CSS = (Path(__file__).resolve().parents[2] / "src/mudguard/portal/static/style.css").read_text()
VARS = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", CSS))


def _luminance(colour: str) -> float:
    channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    """WCAG 2.1 contrast ratio."""
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize(("fg", "bg"), [
    ("fg", "bg"), ("muted", "bg"), ("fg", "panel"), ("muted", "panel"), ("accent", "bg"),
    ("accent", "panel"), ("accent-fg", "accent"), ("ok", "bg"), ("warn", "bg"), ("bad", "bg"),
    ("ok", "panel"), ("warn", "panel"), ("bad", "panel"), ("accent-fg", "bad"),
])
def test_text_contrast_is_aa(fg: str, bg: str) -> None:
    assert contrast(VARS[fg], VARS[bg]) >= 4.5, (fg, bg, contrast(VARS[fg], VARS[bg]))


def test_literal_backgrounds_keep_contrast() -> None:
    for background in re.findall(r"background: (#[0-9a-fA-F]{6})", CSS):
        assert contrast(VARS["fg"], background) >= 4.5, background


def test_focus_is_visible_and_phone_layout_exists() -> None:
    assert re.search(r":focus[^{]*\{[^}]*outline: 3px", CSS)
    assert "@media (max-width: 40rem)" in CSS
    assert "min-height: 2.75rem" in CSS  # 44 px touch targets
