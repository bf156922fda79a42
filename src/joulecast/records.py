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


@dataclass(frozen=True, slots=True)
class Gap:
    """An interval in which a device produced no readings, and why."""

    device: str
    start_s: float
    end_s: float | None
    reason: str
