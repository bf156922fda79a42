"""Frozen records passed between sensors, monitor, store and energy accounting."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

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


@dataclass(frozen=True, slots=True)
class Gap:
    """An interval in which a device produced no readings, and why."""

    device: str
    start_s: float
    end_s: float | None
    reason: str
