"""Power sources, one module each, behind the :class:`Sensor` protocol.

:func:`detect` tries them in this order and keeps what works:

0. ``replay``: the GPUs of a recorded trace instead of this machine's, when one is given
   or named by ``$JOULECAST_REPLAY_GPUS`` (a dry run; ``nvml``, ``amdsmi`` and
   ``nvidia-smi`` are then not tried);
1. ``nvml``: NVIDIA GPUs through nvidia-ml-py;
2. ``amdsmi``: AMD GPUs through ROCm's AMD SMI, only when NVML found no GPU;
3. ``nvidia-smi``: only when neither found a GPU but the binary exists;
4. ``rapl``: CPU package and DRAM counters through /sys/class/powercap;
5. ``host``: process-tree load through psutil, modelled RAM power, and modelled CPU power
   when RAPL was not readable.

Every call builds new sensor objects; nothing is detected at import.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from joulecast.errors import SensorError, SensorUnavailable
from joulecast.inputs import REPLAY_GPUS_ENV
from joulecast.records import Reading

log = logging.getLogger(__name__)

__all__ = ["Sensor", "SensorReport", "detect", "detect_sensors", "replay_trace"]


@runtime_checkable
class Sensor(Protocol):
    """A source of readings. ``read`` raises :class:`~joulecast.errors.SensorError` on failure.

    Optional extras the monitor uses when present: ``name`` (str), ``describe()`` (static
    facts per device) and ``replayed`` (True: the readings are a recording played back, with
    source ``replay``, and the run's origin is ``replay``). A sensor may return nothing new
    for a call (it keeps its own pace); a device silent for longer than the monitor's gap
    threshold is recorded as a gap.
    """

    def devices(self) -> list[str]:
        """The devices this sensor reports, e.g. ``["gpu:0", "gpu:1"]``."""
        ...

    def read(self) -> list[Reading]:
        """Current readings: one per device that answered."""
        ...

    def close(self) -> None:
        """Release what the sensor holds."""
        ...


@dataclass(frozen=True)
class SensorReport:
    """What detection found for one source: its devices, or why it is missing and the fix."""

    name: str
    found: bool
    devices: list[str] = field(default_factory=list)
    measured: bool = True
    reason: str = ""
    fix: str = ""


def replay_trace(
    replay_gpus: str | os.PathLike[str] | None = None, *, gpus: bool = True
) -> tuple[str, bool] | None:
    """The trace whose GPUs detection replays, and whether ``$JOULECAST_REPLAY_GPUS`` named
    it: ``replay_gpus``, else the variable; None where GPU sensing is off or neither is set.

    The one place the choice is made: :func:`detect` replays it, and ``joulecast measure``
    passes it on to its command.
    """
    if not gpus:
        return None
    if replay_gpus is not None:
        return os.fspath(replay_gpus), False
    named = os.environ.get(REPLAY_GPUS_ENV)
    return (named, True) if named else None


def sensor_name(sensor: Sensor) -> str:
    """A sensor's ``name``, or its class name."""
    return str(getattr(sensor, "name", type(sensor).__name__))


def detect(
    *,
    pid: int | None = None,
    include_root: bool = True,
    gpus: bool = True,
    cpu: bool = True,
    interval_s: float = 0.1,
    rapl_root: Path | str | None = None,
    nvml: Any = None,
    amdsmi: Any = None,
    clock: Callable[[], float] = time.monotonic,
    replay_gpus: str | os.PathLike[str] | None = None,
    strict_replay: bool = False,
    visible_gpus: str | None = None,
    gpu_order: str | None = None,
) -> tuple[list[Sensor], list[SensorReport]]:
    """Build every sensor that works here; report each source found or not, and why.

    ``pid``/``include_root`` choose the process tree the host sensor follows (default: this
    process and its children). ``nvml`` and ``amdsmi`` replace the ``pynvml`` and ``amdsmi``
    modules (for tests). ``visible_gpus`` and ``gpu_order`` replace ``CUDA_VISIBLE_DEVICES``
    and ``CUDA_DEVICE_ORDER`` for choosing the GPUs (a node's sampler takes all its ranks'
    GPUs); for AMD GPUs ``visible_gpus`` replaces the ROCm variables
    (:func:`~joulecast.sensors.amd.select_rocm`).

    ``replay_gpus`` (a neutral ``power.csv``; default ``$JOULECAST_REPLAY_GPUS``) replaces
    the GPUs by the trace's, replayed in real time (:func:`~joulecast.sensors.replay.gpu_replay`).
    (:func:`replay_trace`). A bad trace given here raises; one named by the variable (or
    anything but a regular file there, such as a FIFO that would block) is reported as a
    missing ``replay`` source and logged as a warning, and the GPUs are detected as usual: a
    training process measuring itself must not fail on it. ``strict_replay`` makes it raise
    too (``joulecast measure``: a bad trace stops the command before it starts).

    Raises:
        InputError: the ``replay_gpus`` trace (or with ``strict_replay``, the variable's)
            cannot be replayed.
    """
    from joulecast.sensors.amd import AmdSmiSensor
    from joulecast.sensors.host import HostSensor
    from joulecast.sensors.nvidia_smi import NvidiaSmiSensor
    from joulecast.sensors.nvml import NvmlSensor
    from joulecast.sensors.rapl import POWERCAP_ROOT, RaplSensor
    from joulecast.sensors.replay import gpu_replay

    sensors: list[Sensor] = []
    reports: list[SensorReport] = []

    def attempt(name: str, build: Callable[[], Sensor], measured: bool = True) -> bool:
        try:
            sensor = build()
        except SensorUnavailable as exc:
            reports.append(SensorReport(name, False, reason=str(exc), fix=exc.fix))
            log.info("sensor %s not used: %s", name, exc)
            return False
        except SensorError as exc:
            reports.append(SensorReport(name, False, reason=str(exc)))
            return False
        sensors.append(sensor)
        reports.append(SensorReport(name, True, sensor.devices(), measured))
        return True

    choice = replay_trace(replay_gpus, gpus=gpus)
    trace, from_variable = choice if choice is not None else (None, False)
    replayed = False
    if trace is not None:
        try:
            # measured False: the trace's readings are not this machine's hardware.
            replayed = attempt(
                "replay",
                lambda: gpu_replay(
                    trace, clock=clock, regular_file=from_variable, visible=visible_gpus
                ),
                False,
            )
        except Exception as exc:
            # Whatever the variable names, a training process measuring itself goes on.
            if not from_variable or strict_replay:
                raise
            fix = f"unset {REPLAY_GPUS_ENV} or name a neutral power.csv with GPU rows"
            reports.append(SensorReport("replay", False, reason=str(exc), fix=fix))
            log.warning("%s not used, GPUs detected as usual: %s", REPLAY_GPUS_ENV, exc)
    if gpus and replayed:
        fix = f"unset {REPLAY_GPUS_ENV} (or leave out --replay-gpus) to read this machine's GPUs"
        reports.append(SensorReport("nvml", False, reason=f"GPUs replayed from {trace}", fix=fix))
    elif gpus:
        if not attempt(
            "nvml",
            lambda: NvmlSensor(nvml=nvml, clock=clock, visible=visible_gpus, order=gpu_order),
        ) and not attempt(
            "amdsmi", lambda: AmdSmiSensor(amdsmi=amdsmi, clock=clock, visible=visible_gpus)
        ):
            attempt(
                "nvidia-smi",
                lambda: NvidiaSmiSensor(
                    interval_s=interval_s, clock=clock, visible=visible_gpus, order=gpu_order
                ),
            )
    else:
        reports.append(SensorReport("nvml", False, reason="GPU sensing switched off"))
    have_rapl = False
    if cpu:
        root = Path(rapl_root) if rapl_root is not None else POWERCAP_ROOT
        have_rapl = attempt("rapl", lambda: RaplSensor(root, clock=clock))
    else:
        reports.append(SensorReport("rapl", False, reason="CPU sensing switched off"))
    attempt(
        "host",
        lambda: HostSensor(
            pid, include_root=include_root, model_cpu=cpu and not have_rapl, clock=clock
        ),
        measured=False,
    )
    return sensors, reports


def detect_sensors(**kwargs: Any) -> list[Sensor]:
    """The sensors :func:`detect` finds (same arguments), without the report."""
    return detect(**kwargs)[0]
