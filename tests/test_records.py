"""Reading: its hand-written __init__ stays in step with its fields. Phases: checked against
each other and against their run's readings."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import warnings

import pytest

from joulecast.errors import InputError, JoulecastWarning
from joulecast.records import (
    Phase,
    PhaseKind,
    Reading,
    check_overlaps,
    fit_phases,
    overlapping,
    reading_range,
)

EPOCH, STEP, TEST = PhaseKind.EPOCH, PhaseKind.STEP, PhaseKind.TEST


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


def test_phases_of_one_kind_one_after_another_do_not_overlap() -> None:
    phases = [
        Phase(EPOCH, 1, 10.0, 20.0),
        Phase(EPOCH, 0, 0.0, 10.0),  # ends where epoch 1 begins; given out of order
        Phase(STEP, 0, 0.0, 5.0),  # steps nest in epochs
        Phase(STEP, 1, 5.0, 5.0),  # of no length, where step 2 begins
        Phase(STEP, 3, 15.0, 15.0),
        Phase(STEP, 2, 5.0, 15.0),  # across an epoch boundary
        Phase(TEST, 0, 20.0, None),  # open: runs on to now
        Phase(EPOCH, 2, 20.0, None),
    ]
    assert overlapping(phases) is None
    check_overlaps(phases)


@pytest.mark.parametrize(
    ("phases", "pair"),
    [
        ([Phase(EPOCH, 0, 0.0, 10.0), Phase(EPOCH, 1, 9.0, 20.0)], (0, 1)),
        ([Phase(EPOCH, 1, 9.0, 20.0), Phase(EPOCH, 0, 0.0, 10.0)], (0, 1)),
        ([Phase(EPOCH, 0, 0.0, 100.0), Phase(EPOCH, 1, 10.0, 10.0)], (0, 1)),  # inside
        ([Phase(EPOCH, 0, 0.0, 100.0), Phase(EPOCH, 1, 0.0, 10.0)], (1, 0)),  # same start
        ([Phase(EPOCH, 0, 5.0, 5.0), Phase(EPOCH, 1, 0.0, 10.0)], (1, 0)),
        (
            [Phase(EPOCH, 0, 0.0, 50.0), Phase(EPOCH, 1, 50.0, 60.0), Phase(EPOCH, 2, 40.0, 55.0)],
            (0, 2),
        ),
        ([Phase(STEP, 0, 0.0, None), Phase(STEP, 1, 5.0, 6.0)], (0, 1)),  # still open
    ],
)
def test_overlapping_phases_of_one_kind_are_found(phases, pair) -> None:
    found = overlapping(phases)
    assert found is not None and tuple(p.index for p in found) == pair
    with pytest.raises(InputError) as info:
        check_overlaps(phases, "f.csv")
    first, second = found
    assert str(info.value).startswith(
        f"f.csv: {second.kind.value} {second.index} ({second.start_s:g} s to "
    )
    assert f"overlaps {first.kind.value} {first.index} ({first.start_s:g} s to " in str(info.value)


def test_phases_that_meet_but_for_rounding_do_not_overlap() -> None:
    durations = [0.1 * (1 + i % 7) + 1e-3 / 3 for i in range(200)]
    ends = list(itertools.accumulate(durations))
    starts = [end - d for end, d in zip(ends, durations, strict=True)]  # a hair off the last end
    assert any(s < e for s, e in zip(starts[1:], ends, strict=False))
    phases = [Phase(EPOCH, i, s, e) for i, (s, e) in enumerate(zip(starts, ends, strict=True))]
    assert overlapping(phases) is None
    assert overlapping([Phase(EPOCH, 0, 0.0, 1.0), Phase(EPOCH, 1, 1.0 - 2e-6, 2.0)]) is not None


def test_fit_phases_keeps_phases_inside_the_readings() -> None:
    phases = [Phase(EPOCH, 0, 0.0, 50.0), Phase(EPOCH, 1, 50.0, 100.0), Phase(STEP, 0, 3.0, None)]
    assert fit_phases(phases, 0.0, 100.0) == phases


def test_fit_phases_moves_a_phase_past_the_readings_by_rounding_silently() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted = fit_phases([Phase(EPOCH, 0, -1e-9, 100.0 + 1e-9)], 0.0, 100.0)
    assert fitted == [Phase(EPOCH, 0, 0.0, 100.0)]


def test_fit_phases_clips_a_phase_reaching_past_the_readings_with_one_warning() -> None:
    phases = [
        Phase(EPOCH, 0, -20.0, 50.0, 10, {"loss": 1.0}),
        Phase(EPOCH, 1, 50.0, 200.0),
        Phase(STEP, 0, 90.0, 110.0),
    ]
    message = (
        r"^f\.csv: epoch 0 \(-20 s to 50 s\), epoch 1 \(50 s to 200 s\), step 0 \(90 s to 110 s\) "
        r"reach past the readings \(0 s to 100 s\): clipped to them$"
    )
    with pytest.warns(JoulecastWarning, match=message) as caught:
        fitted = fit_phases(phases, 0.0, 100.0, "f.csv")
    assert len(caught) == 1
    assert fitted == [
        Phase(EPOCH, 0, 0.0, 50.0, 10, {"loss": 1.0}),
        Phase(EPOCH, 1, 50.0, 100.0),
        Phase(STEP, 0, 90.0, 100.0),
    ]


@pytest.mark.parametrize(
    "phase",
    [Phase(EPOCH, 2, 100.0, 200.0), Phase(EPOCH, 2, 150.0, 200.0), Phase(EPOCH, 2, -9.0, -1.0)],
)
def test_fit_phases_refuses_a_phase_outside_the_readings(phase) -> None:
    with pytest.raises(InputError) as info:
        fit_phases([Phase(EPOCH, 0, 0.0, 50.0), phase], 0.0, 100.0, "f.csv")
    assert str(info.value) == (
        f"f.csv: epoch 2 ({phase.start_s:g} s to {phase.end_s:g} s) lies outside the readings "
        "(0 s to 100 s): expected a phase that overlaps them"
    )


def test_reading_ranges_per_device_kind() -> None:
    assert reading_range("power_w", "gpu:0") == (0.0, 5000.0)
    assert reading_range("power_w", "gpu:node1:3") == (0.0, 5000.0)
    assert reading_range("power_w", "cpu:0") == (0.0, 2000.0)
    assert reading_range("power_w", "ram") == (0.0, 2000.0)
    assert reading_range("power_w", "process") == (0.0, 100_000.0)
    assert reading_range("util_pct", "gpu:0") == (0.0, 100.0)
    assert reading_range("t_s", "gpu:0") == (-1e10, 1e10)
