"""Durations and numbers as people write them, and as hostile files write them."""

from __future__ import annotations

import argparse
import io

import pytest

from joulecast.errors import InputError
from joulecast.inputs import (
    capped_lines,
    finite,
    finite_arg,
    parse_duration,
    whole,
    whole_arg,
)


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


@pytest.mark.parametrize(
    "text", ["", "h", "2x", "1h30", "30m1h", "1h1h", "-5m", "1,5h", "abc", "\u0661h", "9" * 200]
)
def test_parse_duration_rejects(text):
    with pytest.raises(InputError, match="duration"):
        parse_duration(text)


def test_parse_duration_rejects_non_string():
    with pytest.raises(InputError, match="expected a string"):
        parse_duration(3600)  # type: ignore[arg-type]


def test_parse_duration_has_an_upper_bound():
    with pytest.raises(InputError, match="'99999999999999h': expected at most"):
        parse_duration("99999999999999h")
    assert parse_duration("90d") == 90 * 86400
    with pytest.raises(InputError, match="at most 60 s"):
        parse_duration("2m", max_s=60)


@pytest.mark.parametrize(("text", "value"), [("0", 0), (" 12 ", 12), ("+3", 3), (7, 7)])
def test_whole_reads_ascii_digits(text, value):
    assert whole(text, "index", hi=100) == value


@pytest.mark.parametrize(
    "text", ["\u00b2", "--5", "-1", "1.0", "", "9" * 30, "9" * 5000, "\u0663", True, None, 2**70]
)
def test_whole_refuses_with_the_value_and_the_range(text):
    with pytest.raises(InputError) as err:
        whole(text, "f.csv: line 2: column 'index'", hi=1000)
    message = str(err.value)
    assert message.startswith("f.csv: line 2: column 'index': ")
    assert message.endswith("expected a whole number from 0 to 1000")
    assert len(message) < 160


@pytest.mark.parametrize(("text", "value"), [("3.5", 3.5), ("-0", 0.0), (".5e-3", 5e-4), (2, 2.0)])
def test_finite_reads_decimal_numbers(text, value):
    assert finite(text, "power_w", lo=0, hi=5000) == value


@pytest.mark.parametrize(
    "text", ["1e308", "1e309", "nan", "inf", "-inf", "\u0661", "1_0", "0x10", 10**400, False, "-1"]
)
def test_finite_refuses_what_is_not_a_bounded_finite_number(text):
    with pytest.raises(InputError, match=r"power_w: .*expected a finite number from 0 to 5000"):
        finite(text, "power_w", lo=0, hi=5000)


def test_finite_above_excludes_the_bound():
    with pytest.raises(InputError, match="above 0"):
        finite("0", "interval", lo=0, above=True)


def test_argument_types_keep_the_value_and_the_range():
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'-2': expected a whole number from 1"):
        whole_arg(1)("-2")
    with pytest.raises(
        argparse.ArgumentTypeError, match=r"^'nan': expected a finite number above 0"
    ):
        finite_arg(0, above=True)("nan")
    assert whole_arg(1, 5)("5") == 5


def test_capped_lines_keep_lines_up_to_the_limit_with_their_ends():
    text = "a" * 8 + "\r\n" + "b" * 8 + "\n" + "c" * 8 + "\r" + "d" * 8
    lines = list(capped_lines(io.StringIO(text, newline=""), "f.csv", max_chars=8))
    assert lines == ["a" * 8 + "\r\n", "b" * 8 + "\n", "c" * 8 + "\r", "d" * 8]


@pytest.mark.parametrize(
    ("text", "line"), [("a" * 9, 1), ("ok\n" + "a" * 9 + "\r\n", 2), ("ok\n" + "a" * 100, 2)]
)
def test_capped_lines_refuse_a_longer_line_having_read_the_limit_only(text, line):
    fh = io.StringIO(text, newline="")
    message = f"^f.csv: line {line}: longer than the limit of 8 characters"
    with pytest.raises(InputError, match=message):
        list(capped_lines(fh, "f.csv", max_chars=8))
    assert fh.tell() <= text.index("a") + 8 + 2  # the limit and a line end, no further


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-01-05T10:00:00.000Z", "2026-01-05 10:00:00+00:00"),  # Electricity Maps' form
        ("2026-01-05T10:00:00Z", "2026-01-05 10:00:00+00:00"),
        ("2026-01-05T11:00:00.5+01:00", "2026-01-05 10:00:00.500000+00:00"),
        ("2026-01-05T10:00:00.1234567z", "2026-01-05 10:00:00.123456+00:00"),
        (" 2026-01-05 10:00:00,25+00:00 ", "2026-01-05 10:00:00.250000+00:00"),
    ],
)
def test_iso_times_read_alike_on_every_python(text: str, utc: str) -> None:
    from datetime import timezone

    from joulecast.inputs import iso_time

    moment = iso_time(text)
    assert moment is not None and str(moment.astimezone(timezone.utc)) == utc


@pytest.mark.parametrize("text", ["yesterday", "", "Z", None, 7, "2026-13-01T00:00Z", "9" * 80])
def test_what_is_not_an_iso_time_is_none(text: object) -> None:
    from joulecast.inputs import iso_time

    assert iso_time(text) is None
