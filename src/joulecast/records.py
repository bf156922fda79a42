"""Frozen records passed between sensors, monitor, store and energy accounting."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


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


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class Phase:
    """An epoch or step: ``start_s``/``end_s`` in seconds since the run started."""

    kind: PhaseKind
    index: int
    start_s: float
    end_s: float | None = None
    samples: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Gap:
    """An interval in which a device produced no readings, and why."""

    device: str
    start_s: float
    end_s: float | None
    reason: str
