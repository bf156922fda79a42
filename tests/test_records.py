"""Reading: its hand-written __init__ stays in step with its fields."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from joulecast.records import Reading


def test_reading_init_takes_its_fields_in_order_with_their_defaults() -> None:
    params = list(inspect.signature(Reading).parameters.values())
    fields = dataclasses.fields(Reading)
    assert [p.name for p in params] == [f.name for f in fields]
    assert [p.default for p in params] == [
        inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default for f in fields
    ]


def test_reading_is_a_frozen_record() -> None:
    values = (1.5, "gpu:0", 250.0, "nvml", False, 10.0, 90.0, 3e4, 60.0)
    reading = Reading(*values)
    assert dataclasses.astuple(reading) == values
    names = [f.name for f in dataclasses.fields(Reading)]
    assert reading == Reading(**dict(zip(names, values, strict=True)))
    assert dataclasses.replace(reading, power_w=1.0).power_w == 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        reading.power_w = 1.0  # type: ignore[misc]
    assert Reading(0.0, "ram", None, "x") == Reading(0.0, "ram", None, "x", True, None, None)
