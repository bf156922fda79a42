"""Replay a recorded power trace as if it were hardware: for tests, demos and simulations.

Values are linearly interpolated at the replay position, so a trace replayed at any sampling
interval integrates to the trace's own energy. ``speed`` > 1 plays the trace faster than real
time: pass :meth:`ReplaySensor.clock` as the monitor's clock so the run's time base is the
trace's.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from joulecast.errors import InputError
from joulecast.inputs import finite, quote
from joulecast.records import REPLAY_SOURCE, Reading, reading_range

if TYPE_CHECKING:
    from joulecast.store import Store

log = logging.getLogger(__name__)

_OPTIONAL = ("energy_j", "util_pct", "mem_used_mib", "temp_c")


class _Device(NamedTuple):
    """One replayed device's columns."""

    name: str
    measured: bool
    #: One row per instant: power_w, then each of _OPTIONAL (NaN where ``has`` is False).
    values: np.ndarray
    has: tuple[bool, ...]  #: per column of _OPTIONAL: the device has it at every instant
    counter_pass_j: float  #: what its energy counter counts over the whole span (0 without)


class _Group:
    """Devices sampled at the same instants: one search per read serves them all.

    Columns are numpy arrays (8 bytes a value), not lists of Python floats (32), so that a
    long trace costs what its numbers do.
    """

    __slots__ = ("devices", "t")

    def __init__(self, t: np.ndarray) -> None:
        self.t = t
        self.devices: list[_Device] = []

    def add(self, device: str, frame: pd.DataFrame) -> None:
        """Add ``device``'s columns (its ``t_s`` is this group's).

        A device replays as measured unless its trace marks a row modelled (``measured``
        False), as the energy of a stored run counts it.
        """
        has = tuple(c in frame.columns and bool(frame[c].notna().all()) for c in _OPTIONAL)
        values = np.full((len(frame), 1 + len(_OPTIONAL)), np.nan)
        values[:, 0] = frame["power_w"].to_numpy(float)
        for k, c in enumerate(_OPTIONAL, start=1):
            if has[k - 1]:
                values[:, k] = frame[c].to_numpy(float)
        counter_pass_j = float(values[-1, 1] - values[0, 1]) if has[0] else 0.0
        measured = "measured" not in frame.columns or bool(frame["measured"].astype(bool).all())
        self.devices.append(_Device(device, measured, values, has, counter_pass_j))

    def at(self, pos: float) -> tuple[int, int, float]:
        """Rows ``i`` and ``j`` around ``pos`` (inside the span) and the weight of row ``j``."""
        t = self.t
        i = int(np.searchsorted(t, pos, side="right")) - 1
        if i >= len(t) - 1:
            return len(t) - 1, len(t) - 1, 0.0
        t0, t1 = float(t[i]), float(t[i + 1])
        return i, i + 1, (pos - t0) / (t1 - t0) if t1 > t0 else 0.0


class ReplaySensor:
    """Plays back ``trace`` (columns ``t_s``, ``device``, ``power_w``; optional counters and
    ``measured``).

    The trace's position 0 is the moment of creation, or with ``start_on_read`` the first
    :meth:`read` (a monitor's first reading, at its run's start). With ``loop`` each group of
    devices recorded at the same instants starts over at the end of its own span, and an
    energy counter goes on counting from where it was. ``trace_name`` names the recording in
    :meth:`describe` (the run's hardware facts).
    """

    name = "replay"

    def __init__(
        self,
        trace: pd.DataFrame,
        *,
        speed: float = 1.0,
        loop: bool = False,
        clock: Callable[[], float] = time.monotonic,
        source: str = REPLAY_SOURCE,
        start_on_read: bool = False,
        trace_name: str | None = None,
    ) -> None:
        for col in ("t_s", "device", "power_w"):
            if col not in trace.columns:
                raise InputError(f"replay trace: missing column {col!r}")
        if not speed > 0:
            raise InputError(f"replay speed must be positive, got {speed}")
        if trace.empty:
            raise InputError("replay trace: no samples")
        frame = trace.dropna(subset=["power_w"]).sort_values(["device", "t_s"], kind="stable")
        groups: dict[bytes, _Group] = {}
        for device, rows in frame.groupby("device", sort=True):
            _check_range(str(device), rows)
            t = rows["t_s"].to_numpy(float)
            groups.setdefault(t.tobytes(), _Group(t)).add(str(device), rows)
        self._groups = list(groups.values())
        self._devices = [d.name for g in self._groups for d in g.devices]
        self._t0 = float(frame["t_s"].min())
        self._t_end = float(frame["t_s"].max())
        self._speed = float(speed)
        self._loop = loop
        self._base = clock
        # None until the first read of a replay that starts there.
        self._origin: float | None = None if start_on_read else clock()
        self._source = source
        self.trace_name = trace_name

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str], **kwargs: Any) -> ReplaySensor:
        """Replay a neutral ``power.csv`` (see docs/traces.md)."""
        from joulecast.traces import read_trace

        kwargs.setdefault("trace_name", str(path))
        return cls(read_trace(path), **kwargs)

    @classmethod
    def from_store(cls, store: Store, run_id: int, **kwargs: Any) -> ReplaySensor:
        """Replay the power samples of a stored run (devices without power are left out)."""
        samples = store.samples(run_id)
        kwargs.setdefault("trace_name", f"{store.path} run {run_id}")
        return cls(samples[samples["power_w"].notna()], **kwargs)

    @property
    def replayed(self) -> bool:
        """A sensor extra: the readings are a recording played back, not this machine's
        hardware. True unless ``source`` names another source (a simulation of hardware):
        the one flag from which the run's origin and its devices' labels both follow."""
        return self._source == REPLAY_SOURCE

    @property
    def origin_s(self) -> float | None:
        """The monotonic time at which the replay started (trace position 0); None until the
        first read of a replay that starts there."""
        return self._origin

    @property
    def duration_s(self) -> float:
        """Length of the trace in trace seconds."""
        return self._t_end - self._t0

    def clock(self) -> float:
        """Monotonic seconds on the trace's time base (real time x ``speed`` since the start;
        real time before it)."""
        now = self._base()
        origin = self._origin
        return now if origin is None else origin + (now - origin) * self._speed

    @property
    def position_s(self) -> float:
        """Where in the trace the replay is, in trace seconds from its start."""
        if self._origin is None:
            return 0.0
        pos = self.clock() - self._origin
        if self._loop and self.duration_s > 0:
            pos %= self.duration_s
        return pos

    @property
    def finished(self) -> bool:
        """True once a non-looping replay has passed the end of the trace."""
        origin = self._origin
        return origin is not None and not self._loop and self.clock() - origin > self.duration_s

    def devices(self) -> list[str]:
        """The devices in the trace."""
        return list(self._devices)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per device: whether it is replayed, and the trace it comes from (where named)."""
        return {d: {"replayed": self.replayed, "trace": self.trace_name} for d in self._devices}

    def read(self) -> list[Reading]:
        """Each device's values interpolated at the current position; nothing past the end.

        Devices recorded at the same instants come together, in name order.
        """
        now = self.clock()
        if self._origin is None:
            self._origin = now
        pos = now - self._origin
        if not self._loop and pos > self.duration_s:
            return []
        source = self._source
        readings = []
        for group in self._groups:
            # Each group loops over its own span: one shorter than the trace's would otherwise
            # fall silent (and its counter jump a whole pass) until the trace started over.
            t_first, t_last = float(group.t[0]), float(group.t[-1])
            at, loops = pos + self._t0, 0.0
            if self._loop and at > t_last > t_first:
                loops, rest = divmod(at - t_first, t_last - t_first)
                at = t_first + rest
            if at < t_first or at > t_last:
                continue
            i, j, f = group.at(at)
            for d in group.devices:
                power, energy, *rest = (d.values[i] + (d.values[j] - d.values[i]) * f).tolist()
                # A counter goes on counting across each start-over, as hardware's.
                energy += loops * d.counter_pass_j
                util, mem, temp = (v if ok else None for v, ok in zip(rest, d.has[1:], strict=True))
                readings.append(
                    Reading(
                        now,
                        d.name,
                        power,
                        source,
                        d.measured,
                        energy if d.has[0] else None,
                        util,
                        mem,
                        temp,
                    )
                )
        return readings

    def close(self) -> None:
        """Nothing to release."""


def _check_range(device: str, rows: pd.DataFrame) -> None:
    """Refuse a replayed device's times or power outside their range (a frame or a stored run
    that no trace file could hold: the reader bounds those)."""
    for column in ("t_s", "power_w"):
        lo, hi = reading_range(column, device)
        values = rows[column].to_numpy(float)
        bad = ~((values >= lo) & (values <= hi))  # NaN is bad too
        if bad.any():
            finite(float(values[bad.argmax()]), f"replay trace: {device}: {column}", lo=lo, hi=hi)


def gpu_replay(
    path: str | os.PathLike[str],
    *,
    clock: Callable[[], float] = time.monotonic,
    regular_file: bool = False,
    visible: str | None = None,
) -> ReplaySensor:
    """The GPUs of the neutral trace ``path``, replayed in real time: a dry run's GPUs.

    Only the ``gpu:*`` devices are kept (the host's CPU and RAM stay this machine's). The
    trace starts at the sensor's first read (the run's first reading) and starts over when
    the run outlasts it, each GPU over its own span: power repeats, and an energy counter
    goes on counting from where it was. ``regular_file`` refuses anything but a regular file
    (a FIFO or a device would block or never end).

    The trace's ``gpu:N`` is CUDA device N of the machine replayed; ``visible`` (default
    ``$CUDA_VISIBLE_DEVICES``) keeps and renumbers them as CUDA would (:func:`visible_gpus`).

    Raises:
        InputError: ``path`` is missing, not a neutral trace, or holds no GPU power readings
            at two instants or more, or none of its GPUs is visible (one line naming the file
            and what was expected); with ``regular_file``, it is not a regular file.
    """
    from joulecast.traces import read_trace

    if regular_file and os.path.exists(path) and not os.path.isfile(path):
        raise InputError(f"{path}: not a regular file (expected a neutral power.csv)")
    trace = read_trace(path)
    gpus = trace[trace["device"].str.startswith("gpu:") & trace["power_w"].notna()]
    if gpus.empty:
        found = ", ".join(sorted(map(str, trace["device"].unique())))
        raise InputError(
            f"{path}: no GPU power readings to replay (expected rows of devices gpu:0, "
            f"gpu:1, ... or a gpu_index column; found {quote(found)})"
        )
    if visible is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    numbering = visible_gpus(sorted(gpus["device"].unique()), visible)
    if not numbering:
        raise InputError(
            f"{path}: CUDA_VISIBLE_DEVICES={visible!r} leaves none of the trace's GPUs visible "
            "(expected indices of its gpu:N devices)"
        )
    gpus = gpus[gpus["device"].isin(numbering)].assign(device=lambda f: f["device"].map(numbering))
    if not float(gpus["t_s"].max()) > float(gpus["t_s"].min()):
        raise InputError(f"{path}: the GPU readings span 0 s (expected two instants or more)")
    # The run's hardware facts name the file from anywhere (a pipe keeps the name it had).
    name = os.path.abspath(path) if os.path.isfile(path) else os.fspath(path)
    return ReplaySensor(gpus, loop=True, clock=clock, start_on_read=True, trace_name=name)


def visible_gpus(devices: list[str], visible: str | None) -> dict[str, str]:
    """The trace's GPUs a CUDA program would see under ``CUDA_VISIBLE_DEVICES`` = ``visible``,
    each mapped to its name there: ``gpu:N`` is the trace's CUDA device N.

    As for real GPUs (docs/measurement.md), the entries pick devices in their order and are
    numbered from 0; an entry that names no device of the trace hides itself and everything
    after it. Only indices are understood: a trace holds no UUIDs, so a ``GPU-``/``MIG-``
    entry hides the rest too (with a warning). None (unset): every GPU, as recorded.
    """
    from joulecast.sensors._gpus import parse_visible, visible_index

    entries = parse_visible(visible)
    if entries is None:
        return {d: d for d in devices}
    out: dict[str, str] = {}
    for entry in entries:
        index = visible_index(entry)
        device = f"gpu:{index}" if index is not None and index >= 0 else None
        if device not in devices:
            uuid = entry.upper().startswith(("GPU-", "MIG-"))
            unsupported = " (a replayed trace knows GPUs by index only)" if uuid else ""
            log.warning(
                "CUDA_VISIBLE_DEVICES entry %r matches no replayed GPU%s; it hides the rest",
                entry,
                unsupported,
            )
            break
        if device not in out:
            out[device] = f"gpu:{len(out)}"
    return out
