"""Frozen records passed between sensors, monitor, store and energy accounting."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from joulecast.errors import InputError, warn

#: The ``source`` of readings played back from a recorded trace (``sensors/replay.py``): a
#: recording, not this machine's hardware, whatever their ``measured`` flag says.
REPLAY_SOURCE = "replay"


class EnergyOrigin(str, enum.Enum):
    """Where a device's energy comes from: the three parts every total is split into."""

    MEASURED = "measured"  #: read from this machine's hardware (NVML, RAPL, imported traces)
    REPLAYED = "replayed"  #: a recorded trace played back (a dry run), whatever it marks
    MODELLED = "modelled"  #: computed from a model (RAM, CPU without RAPL)

    @classmethod
    def of(cls, source: str, measured: bool) -> EnergyOrigin:
        """The origin of readings from ``source`` with the ``measured`` flag."""
        if source == REPLAY_SOURCE:
            return cls.REPLAYED
        return cls.MEASURED if measured else cls.MODELLED


class RunStatus(str, enum.Enum):
    """Life cycle of a run in the store."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class PhaseKind(str, enum.Enum):
    """What a phase marks."""

    EPOCH = "epoch"
    STEP = "step"
    TEST = "test"  # evaluation on the test split after training; metrics hold its scores


def device_kind(device: str) -> str:
    """What a device is: ``"gpu"`` for ``gpu:0`` and a job's ``gpu:node1:0``, ``"ram"`` for
    ``ram`` and ``ram:node1``."""
    return device.partition(":")[0]


#: The largest ``t_s`` (either sign) of a reading or phase read from a file: a Unix time up to
#: the year 2286, or centuries of run time, while a float still tells such times apart by µs.
MAX_T_S = 1e10
#: The largest GPU index (``gpu_index``, nvidia-smi's ``index``): far more GPUs than a node holds.
MAX_GPU_INDEX = 1023
#: Utilisation in % of one core, summed over a process's cores (up to 4096 of them).
_CORES_PCT = 100.0 * 4096

#: The physical range of each kind of device's power (W) and utilisation (%) readings, far
#: above the largest device of the kind (GPU boards draw up to about 1.2 kW, CPU packages
#: 500 W, a server's memory a few hundred W): a value beyond it is a wrong unit (mW for W) or
#: a corrupt file, never a measurement. Kinds not named here (a process, a node) take "other".
DEVICE_RANGES: dict[str, tuple[float, float]] = {
    "gpu": (5_000.0, 100.0),
    "cpu": (2_000.0, _CORES_PCT),
    "dram": (1_000.0, 100.0),
    "ram": (2_000.0, 100.0),
    "other": (100_000.0, _CORES_PCT),
}
#: The range of each other sample column: counters from 0, memory up to 1 PiB, temperatures
#: of working silicon.
_COLUMN_RANGES: dict[str, tuple[float, float]] = {
    "t_s": (-MAX_T_S, MAX_T_S),
    "energy_j": (0.0, 1e18),
    "mem_used_mib": (0.0, 2.0**30),
    "temp_c": (-100.0, 250.0),
}


def reading_range(column: str, device: str) -> tuple[float, float]:
    """The lowest and highest value of the sample column ``column`` (``t_s``, ``power_w``,
    ``energy_j``, ``util_pct``, ``mem_used_mib`` or ``temp_c``) for ``device``."""
    if column in _COLUMN_RANGES:
        return _COLUMN_RANGES[column]
    power_w, util_pct = DEVICE_RANGES.get(device_kind(device), DEVICE_RANGES["other"])
    return 0.0, {"power_w": power_w, "util_pct": util_pct}[column]


@dataclass(frozen=True, slots=True, init=False)
class Reading:
    """One reading of one device at one instant.

    ``t_s`` is on the monitor's clock (monotonic seconds); ``energy_j`` is a cumulative
    counter since the sensor started, or None where the device has none; ``measured`` is
    False for values computed from a model rather than read from hardware.
    """

    t_s: float
    device: str
    power_w: float | None
    source: str
    measured: bool = True
    energy_j: float | None = None
    util_pct: float | None = None
    mem_used_mib: float | None = None
    temp_c: float | None = None

    def __init__(
        self,
        t_s: float,
        device: str,
        power_w: float | None,
        source: str,
        measured: bool = True,
        energy_j: float | None = None,
        util_pct: float | None = None,
        mem_used_mib: float | None = None,
        temp_c: float | None = None,
    ) -> None:
        # A frozen dataclass's own __init__ calls object.__setattr__ per field; the slots'
        # descriptors set them at half that cost, and a reading is made per device and tick.
        t, d, p, s, m, e, u, mem, temp = _READING_SLOTS
        t(self, t_s)
        d(self, device)
        p(self, power_w)
        s(self, source)
        m(self, measured)
        e(self, energy_j)
        u(self, util_pct)
        mem(self, mem_used_mib)
        temp(self, temp_c)


# The setters of Reading's slots, in the order of its fields (and of its __init__).
_READING_SLOTS: tuple[Callable[[Reading, Any], None], ...] = tuple(
    vars(Reading)[f.name].__set__ for f in fields(Reading)
)


@dataclass(frozen=True, slots=True)
class Phase:
    """An epoch or step: ``start_s``/``end_s`` in seconds since the run started."""

    kind: PhaseKind
    index: int
    start_s: float
    end_s: float | None = None
    samples: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def _span(phase: Phase) -> str:
    end = "open" if phase.end_s is None else f"{phase.end_s:g} s"
    return f"{phase.kind.value} {phase.index} ({phase.start_s:g} s to {end})"


def _slack_s(t_s: float) -> float:
    """How far apart two phase times near ``t_s`` may be and still be one instant: float
    rounding (an end computed as a start plus a duration) must not make phases that follow
    one another overlap, nor a phase ending at the last reading reach past it."""
    return 1e-6 + 1e-12 * abs(t_s)


def overlapping(phases: Iterable[Phase]) -> tuple[Phase, Phase] | None:
    """The first two phases of one kind whose spans overlap, the earlier first; None if none do.

    A phase may begin where the one before it ends (to a µs); steps may nest in epochs (only
    phases of one kind are compared). An open phase (``end_s`` None) runs on to now.
    """
    by_kind: dict[PhaseKind, list[Phase]] = {}
    for phase in phases:
        by_kind.setdefault(phase.kind, []).append(phase)
    for group in by_kind.values():
        group.sort(key=lambda p: (p.start_s, _end(p)))
        latest: Phase | None = None  # the phase seen so far that ends last
        for phase in group:
            if latest is not None and phase.start_s + _slack_s(phase.start_s) < _end(latest):
                return latest, phase
            if latest is None or _end(phase) > _end(latest):
                latest = phase
    return None


def _end(phase: Phase) -> float:
    return math.inf if phase.end_s is None else phase.end_s


def overlap_message(first: Phase, second: Phase, where_first: str = "") -> str:
    """What is wrong with two phases :func:`overlapping` found; ``where_first`` says where
    the first is (its line)."""
    return (
        f"{_span(second)} overlaps {_span(first)}{where_first}: expected phases of one kind "
        "one after another (steps may nest in epochs)"
    )


def check_overlaps(phases: Iterable[Phase], what: str = "phases") -> None:
    """Refuse phases of one kind that overlap (:func:`overlapping`); ``what`` names them.

    Raises:
        InputError: Two phases of one kind overlap (the message names both).
    """
    found = overlapping(phases)
    if found is not None:
        raise InputError(f"{what}: {overlap_message(*found)}")


def fit_phases(
    phases: Sequence[Phase], start_s: float, end_s: float, what: str = "phases"
) -> list[Phase]:
    """``phases`` checked against the span ``[start_s, end_s]`` of their run's readings.

    A phase that reaches past the span (by more than a µs) is clipped to it, with a
    :class:`JoulecastWarning` (energy beyond the readings is unknown: left in, it would stretch
    the phase's duration and dilute its mean power); an open phase (never ended) is left as it
    was recorded. ``what`` names the phases in messages (their file).

    Raises:
        InputError: A phase does not overlap the span at all (it would count 0 J), or two
            phases of one kind overlap (:func:`overlapping`).
    """
    check_overlaps(phases, what)
    readings = f"the readings ({start_s:g} s to {end_s:g} s)"
    fitted: list[Phase] = []
    clipped: list[str] = []
    for phase in phases:
        end = phase.end_s
        if end is None:
            fitted.append(phase)
            continue
        inside = phase.start_s >= start_s - _slack_s(start_s) and end <= end_s + _slack_s(end_s)
        if not inside and not (phase.start_s < end_s and end > start_s):
            raise InputError(
                f"{what}: {_span(phase)} lies outside {readings}: expected a phase that "
                "overlaps them"
            )
        first, last = (min(max(t, start_s), end_s) for t in (phase.start_s, end))
        if (first, last) == (phase.start_s, end):
            fitted.append(phase)
            continue
        fitted.append(replace(phase, start_s=first, end_s=last))
        if not inside:
            clipped.append(_span(phase))
    if clipped:
        shown = ", ".join(clipped[:3]) + (
            f" and {len(clipped) - 3} more" if len(clipped) > 3 else ""
        )
        verb = "reaches" if len(clipped) == 1 else "reach"
        warn(f"{what}: {shown} {verb} past {readings}: clipped to them")
    return fitted


@dataclass(frozen=True, slots=True)
class Gap:
    """An interval in which a device produced no readings, and why."""

    device: str
    start_s: float
    end_s: float | None
    reason: str
