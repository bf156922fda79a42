"""Replay a recorded power trace as if it were hardware: for tests, demos and simulations.

Values are linearly interpolated at the replay position, so a trace replayed at any sampling
interval integrates to the trace's own energy. ``speed`` > 1 plays the trace faster than real
time: pass :meth:`ReplaySensor.clock` as the monitor's clock so the run's time base is the
trace's.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd

from joulecast.errors import InputError
from joulecast.records import Reading

if TYPE_CHECKING:
    from joulecast.store import Store

_OPTIONAL = ("energy_j", "util_pct", "mem_used_mib", "temp_c")


class _Track:
    """One device's samples as plain lists: a bisect and a blend per read, no numpy calls."""

    __slots__ = ("has", "rows", "t")

    def __init__(self, frame: pd.DataFrame) -> None:
        self.t: list[float] = frame["t_s"].astype(float).tolist()
        self.has = tuple(c in frame.columns and bool(frame[c].notna().all()) for c in _OPTIONAL)
        columns = [frame["power_w"].astype(float).tolist()]
        columns += [
            frame[c].astype(float).tolist() if ok else [0.0] * len(frame)
            for c, ok in zip(_OPTIONAL, self.has, strict=True)
        ]
        self.rows: list[tuple[float, ...]] = list(zip(*columns, strict=True))

    def at(self, pos: float) -> tuple[float, ...]:
        """Values linearly interpolated at ``pos`` (inside the track's span)."""
        i = bisect.bisect_right(self.t, pos) - 1
        if i >= len(self.t) - 1:
            return self.rows[-1]
        t0, t1 = self.t[i], self.t[i + 1]
        frac = (pos - t0) / (t1 - t0) if t1 > t0 else 0.0
        a, b = self.rows[i], self.rows[i + 1]
        return tuple(x + (y - x) * frac for x, y in zip(a, b, strict=True))


class ReplaySensor:
    """Plays back ``trace`` (columns ``t_s``, ``device``, ``power_w``; optional counters)."""

    name = "replay"

    def __init__(
        self,
        trace: pd.DataFrame,
        *,
        speed: float = 1.0,
        loop: bool = False,
        clock: Callable[[], float] = time.monotonic,
        source: str = "replay",
    ) -> None:
        for col in ("t_s", "device", "power_w"):
            if col not in trace.columns:
                raise InputError(f"replay trace: missing column {col!r}")
        if not speed > 0:
            raise InputError(f"replay speed must be positive, got {speed}")
        if trace.empty:
            raise InputError("replay trace: no samples")
        frame = trace.dropna(subset=["power_w"]).sort_values(["device", "t_s"], kind="stable")
        self._tracks = {str(d): _Track(g) for d, g in frame.groupby("device", sort=True)}
        self._t0 = float(frame["t_s"].min())
        self._t_end = float(frame["t_s"].max())
        self._speed = float(speed)
        self._loop = loop
        self._base = clock
        self._origin = clock()
        self._source = source

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str], **kwargs: Any) -> ReplaySensor:
        """Replay a neutral ``power.csv`` (see docs/traces.md)."""
        from joulecast.traces import read_trace

        return cls(read_trace(path), **kwargs)

    @classmethod
    def from_store(cls, store: Store, run_id: int, **kwargs: Any) -> ReplaySensor:
        """Replay the power samples of a stored run (devices without power are left out)."""
        samples = store.samples(run_id)
        return cls(samples[samples["power_w"].notna()], **kwargs)

    @property
    def origin_s(self) -> float:
        """The monotonic time at which the replay started (trace position 0)."""
        return self._origin

    @property
    def duration_s(self) -> float:
        """Length of the trace in trace seconds."""
        return self._t_end - self._t0

    def clock(self) -> float:
        """Monotonic seconds on the trace's time base (real time x ``speed`` since creation)."""
        return self._origin + (self._base() - self._origin) * self._speed

    @property
    def position_s(self) -> float:
        """Where in the trace the replay is, in trace seconds from its start."""
        pos = self.clock() - self._origin
        if self._loop and self.duration_s > 0:
            pos %= self.duration_s
        return pos

    @property
    def finished(self) -> bool:
        """True once a non-looping replay has passed the end of the trace."""
        return not self._loop and self.clock() - self._origin > self.duration_s

    def devices(self) -> list[str]:
        """The devices in the trace."""
        return list(self._tracks)

    def read(self) -> list[Reading]:
        """Each device's values interpolated at the current position; nothing past the end."""
        now = self.clock()
        pos = self.position_s + self._t0
        if self.finished:
            return []
        readings = []
        for device, tr in self._tracks.items():
            if pos < tr.t[0] or pos > tr.t[-1]:
                continue
            power, *extra = tr.at(pos)
            energy, util, mem, temp = (
                v if ok else None for v, ok in zip(extra, tr.has, strict=True)
            )
            readings.append(
                Reading(now, device, power, self._source, True, energy, util, mem, temp)
            )
        return readings

    def close(self) -> None:
        """Nothing to release."""
