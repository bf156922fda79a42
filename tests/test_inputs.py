"""Durations as people write them."""

from __future__ import annotations

import pytest

from joulecast.errors import InputError
from joulecast.inputs import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2h", 7200),
        ("90m", 5400),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("45s", 45),
        ("3600", 3600),
        ("1.5h", 5400),
        ("1d2h", 93600),
        ("2H", 7200),
        (" 10m5s ", 605),
        ("0.5", 0.5),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "h", "2x", "1h30", "30m1h", "1h1h", "-5m", "1,5h", "abc"])
def test_parse_duration_rejects(text):
    with pytest.raises(InputError, match="duration"):
        parse_duration(text)


def test_parse_duration_rejects_non_string():
    with pytest.raises(InputError, match="expected a string"):
        parse_duration(3600)  # type: ignore[arg-type]
