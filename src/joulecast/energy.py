"""Energy from samples: counters where a device has one, trapezoidal integration elsewhere.

Each device gets a cumulative-energy curve E(t). With a counter, E is the counter interpolated
linearly between samples (an interval where the counter went backwards, as after a driver
reload, is integrated from power instead). Without one, E is the exact integral of the
piecewise-linear power through the samples, so the energy of any window [a, b] is
E(b) - E(a) and the phases of a run add up to its total. Measured devices (this machine's
hardware), replayed ones (source ``replay``, a recorded trace) and modelled ones (``measured``
False) are summed apart (:class:`~joulecast.records.EnergyOrigin`).

:func:`integrate` is the one implementation of that rule, over arrays holding many devices (of
many runs) at once; :class:`EnergyCurve` and :func:`phase_table` count energy through it. A
stored run is read from the aggregates the store keeps as its samples are written
(:mod:`joulecast.ledger`, held equal to this rule by the tests): :func:`summarize`,
:func:`stored_phase_table` and the ``stored_*`` power series cost the same however long the run.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from joulecast.records import EnergyOrigin

J_PER_KWH = 3.6e6

Method = Literal["counter", "trapezoid"]


def j_to_kwh(energy_j: float) -> float:
    """Joules to kilowatt-hours (1 kWh = 3.6e6 J exactly)."""
    return energy_j / J_PER_KWH


@dataclass(frozen=True)
class GroupEnergy:
    """The energy of groups of samples (devices, or devices of runs) as :func:`integrate` counts it.

    Per-row arrays hold the input's rows sorted by group, then time (``order``); per-group
    arrays hold one entry per group, in the order of their keys.
    """

    order: np.ndarray  #: per row: its index in the input
    t_s: np.ndarray  #: per row: time
    power_w: np.ndarray  #: per row: power (NaN where none was read)
    used: np.ndarray  #: per row: integrated by its group's method
    cum_j: np.ndarray  #: per row: its group's energy from its first used row; NaN where unused
    key: np.ndarray  #: per group: its key
    start: np.ndarray  #: per group: its first row
    stop: np.ndarray  #: per group: one past its last row
    energy_j: np.ndarray  #: per group: energy; NaN where it has no counter pair and no power
    counter: np.ndarray  #: per group: counted from its energy counter (else power's trapezoid)
    samples: np.ndarray  #: per group: the rows integrated
    t_first_s: np.ndarray  #: per group: time of the first row integrated; NaN if none
    t_last_s: np.ndarray  #: per group: time of the last row integrated; NaN if none
    measured: np.ndarray  #: per group: every row measured (none modelled)

    def method(self, group: int) -> Method:
        """How group number ``group`` was counted."""
        return "counter" if self.counter[group] else "trapezoid"


def _group_time_order(group: np.ndarray, t_s: np.ndarray) -> np.ndarray | None:
    """The stable order sorting rows by group, then time; None where they are in it already."""
    if len(group) < 2:
        return None
    step = np.diff(group)
    if np.all(step >= 0) and not np.any((step == 0) & (np.diff(t_s) < 0)):
        return None
    # Rows mostly come in time order within each group (the store reads them through its
    # (run, time) index), so a stable sort on the group alone is enough, and much cheaper.
    order = np.argsort(group, kind="stable")
    if np.any((np.diff(group[order]) == 0) & (np.diff(t_s[order]) < 0)):
        order = np.lexsort((t_s, group))
    return order


def integrate(
    t_s: np.ndarray,
    power_w: np.ndarray,
    energy_j: np.ndarray | None = None,
    group: np.ndarray | None = None,
    measured: np.ndarray | None = None,
) -> GroupEnergy:
    """The energy of every group of samples at once: the one place the rule below is written.

    A group with two or more energy counter readings is counted from its counter: the sum of
    the counter's steps between consecutive readings, where a step that went backwards (a
    driver reload) is the trapezoid of the power at its ends instead (missing power counts
    as 0 W). A group with fewer counter readings and one or more power readings is the
    trapezoid of its power readings (a single reading: 0 J). A group with neither has no
    energy (NaN). Rows are taken in time order within each group; ties keep their order.

    Args:
        t_s: Time of each sample.
        power_w: Power of each sample; NaN where none was read.
        energy_j: Cumulative energy counter of each sample; NaN where none was read (None:
            no counter at all).
        group: Integer key of each sample's group (e.g. a device code, or run and device
            codes combined); None: all samples are one group.
        measured: Whether each sample was measured (not modelled); None: all were.

    Returns:
        Per-group energy, and the per-row cumulative energy that :class:`EnergyCurve` uses.
    """
    t = np.asarray(t_s, dtype=float)
    p = np.asarray(power_w, dtype=float)
    n = len(t)
    e = np.full(n, np.nan) if energy_j is None else np.asarray(energy_j, dtype=float)
    g = np.zeros(n, dtype=np.int64) if group is None else np.asarray(group, dtype=np.int64)
    m = np.ones(n, dtype=bool) if measured is None else np.asarray(measured, dtype=bool)
    order = _group_time_order(g, t)
    if order is None:
        order = np.arange(n)
    else:
        t, p, e, g, m = t[order], p[order], e[order], g[order], m[order]
    start = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if n else np.empty(0, dtype=np.int64)
    stop = np.append(start[1:], n) if n else start
    ngroups = len(start)
    index = np.repeat(np.arange(ngroups), stop - start)
    has_power = ~np.isnan(p)
    has_counter = ~np.isnan(e)
    counter = np.bincount(index[has_counter], minlength=ngroups) >= 2
    used = np.where(counter[index], has_counter, has_power)

    rows = np.flatnonzero(used)
    if len(rows) == n:  # every row counts (the common case): no copies
        tu, pu, eu, gu = t, np.nan_to_num(p), e, index
    else:
        tu, pu, eu, gu = t[rows], np.nan_to_num(p[rows]), e[rows], index[rows]
    trapezoid = np.diff(tu) * (pu[1:] + pu[:-1]) / 2.0
    counted = np.diff(eu)
    # A counter step that went backwards is filled from power, as is every step of a group
    # without a counter (the pairs that straddle two groups are never summed).
    steps = np.where(counter[gu[1:]] & (counted >= 0), counted, trapezoid)
    first = np.searchsorted(gu, np.arange(ngroups))
    last = np.searchsorted(gu, np.arange(ngroups), side="right")
    cum = np.zeros(len(rows))
    for a, b in zip(first.tolist(), last.tolist(), strict=True):
        # One cumulative sum per group keeps each group's figures independent of the others.
        if b - a > 1:
            cum[a + 1 : b] = np.cumsum(steps[a : b - 1])
    if len(rows) == n:
        cum_j = cum
    else:
        cum_j = np.full(n, np.nan)
        cum_j[rows] = cum
    samples = last - first
    some = samples > 0
    energy = np.full(ngroups, np.nan)
    energy[some] = cum[last[some] - 1]
    t_first = np.full(ngroups, np.nan)
    t_first[some] = tu[first[some]]
    t_last = np.full(ngroups, np.nan)
    t_last[some] = tu[last[some] - 1]
    return GroupEnergy(
        order=order,
        t_s=t,
        power_w=p,
        used=used,
        cum_j=cum_j,
        key=g[start],
        start=start,
        stop=stop,
        energy_j=energy,
        counter=counter,
        samples=samples,
        t_first_s=t_first,
        t_last_s=t_last,
        measured=np.logical_and.reduceat(m, start) if n else np.empty(0, dtype=bool),
    )


@dataclass(frozen=True)
class EnergyCurve:
    """The cumulative energy of one device, evaluable at any time."""

    device: str
    t_s: np.ndarray
    power_w: np.ndarray
    cum_j: np.ndarray
    method: Method
    source: str
    measured: bool

    @classmethod
    def from_samples(cls, device: str, frame: pd.DataFrame) -> EnergyCurve | None:
        """Build from one device's samples (columns as in the store); None if it has no power."""
        energy = integrate(
            frame["t_s"].to_numpy(float),
            frame["power_w"].to_numpy(float),
            frame["energy_j"].to_numpy(float) if "energy_j" in frame else None,
            measured=_measured(frame),
        )
        return cls.of_group(energy, 0, device, _sources(frame)) if len(frame) else None

    @classmethod
    def of_group(
        cls, energy: GroupEnergy, group: int, device: str, sources: np.ndarray | None = None
    ) -> EnergyCurve | None:
        """The curve of group number ``group`` of ``energy``; None if it has no energy.

        ``sources``: the input rows' ``source`` (the curve takes its first row's).
        """
        if np.isnan(energy.energy_j[group]):
            return None
        rows = slice(energy.start[group], energy.stop[group])
        used = energy.used[rows]
        first = energy.order[energy.start[group]]
        return cls(
            device,
            energy.t_s[rows][used],
            np.nan_to_num(energy.power_w[rows][used]),
            energy.cum_j[rows][used],
            energy.method(group),
            str(sources[first]) if sources is not None else "",
            bool(energy.measured[group]),
        )

    @property
    def total_j(self) -> float:
        """Energy from the first to the last sample."""
        return float(self.cum_j[-1]) if len(self.cum_j) else 0.0

    def at(self, t_s: np.ndarray | float) -> np.ndarray:
        """Cumulative energy at ``t_s`` (clamped to the sampled span)."""
        tau = np.clip(np.asarray(t_s, dtype=float), self.t_s[0], self.t_s[-1])
        if self.method == "counter" or len(self.t_s) < 2:
            return np.asarray(np.interp(tau, self.t_s, self.cum_j), dtype=float)
        i = np.clip(np.searchsorted(self.t_s, tau, side="right") - 1, 0, len(self.t_s) - 2)
        t0, t1 = self.t_s[i], self.t_s[i + 1]
        p0, p1 = self.power_w[i], self.power_w[i + 1]
        frac = np.where(t1 > t0, (tau - t0) / np.where(t1 > t0, t1 - t0, 1.0), 0.0)
        p_tau = p0 + (p1 - p0) * frac
        return np.asarray(self.cum_j[i] + (tau - t0) * (p0 + p_tau) / 2.0, dtype=float)

    def between(self, start_s: float, end_s: float) -> float:
        """Energy in [start_s, end_s]."""
        a, b = self.at(np.array([start_s, end_s]))
        return float(b - a)


def curves(samples: pd.DataFrame) -> dict[str, EnergyCurve]:
    """One curve per device that reports power, keyed by device."""
    codes, devices = pd.factorize(samples["device"].astype(str), sort=True)
    energy = integrate(
        samples["t_s"].to_numpy(float),
        samples["power_w"].to_numpy(float),
        samples["energy_j"].to_numpy(float) if "energy_j" in samples else None,
        codes,
        _measured(samples),
    )
    out: dict[str, EnergyCurve] = {}
    for group, code in enumerate(energy.key.tolist()):
        curve = EnergyCurve.of_group(energy, group, str(devices[code]), _sources(samples))
        if curve is not None:
            out[curve.device] = curve
    return out


def _measured(samples: pd.DataFrame) -> np.ndarray | None:
    return samples["measured"].to_numpy(bool) if "measured" in samples else None


def _sources(samples: pd.DataFrame) -> np.ndarray | None:
    return samples["source"].to_numpy() if "source" in samples else None


def unmeasured_phases(
    start_s: np.ndarray, end_s: np.ndarray, readings: Collection[tuple[float, float, int]]
) -> np.ndarray:
    """Which ended phases ran outside a run's readings: their energy is not known.

    ``readings`` holds, for each device with energy, the times of the first and the last
    reading its energy is counted from and how many there are. A phase is unmeasured where
    it starts before the first reading of every device or ends after the last of every
    device, by more than the longest mean spacing of a device's readings; with no readings,
    every ended phase is. Outside the readings the energy curves stay flat, so such a phase
    would show part of its energy, or 0 J: what a command marking epochs after its sampler
    died (``joulecast measure`` killed) would show.
    """
    start = np.asarray(start_s, dtype=float)
    end = np.asarray(end_s, dtype=float)
    ended: np.ndarray = ~np.isnan(end)
    if not readings:
        return ended
    first = min(r[0] for r in readings)
    last = max(r[1] for r in readings)
    slack = max(((b - a) / (n - 1) for a, b, n in readings if n >= 2), default=0.0)
    unmeasured: np.ndarray = ended & ((start < first - slack) | (end > last + slack))
    return unmeasured


def phase_table(samples: pd.DataFrame, phases: pd.DataFrame) -> pd.DataFrame:
    """Per-phase duration, energy (total, measured, per device), mean power and J per sample.

    ``phases`` has the store's columns (``index``, ``start_s``, ``end_s``, ``samples``, ...);
    a phase still open (no ``end_s``) gets NaN energy, and so does one outside the samples
    (:func:`unmeasured_phases`; column ``unmeasured`` True). Per-device columns are
    ``energy_j[DEV]``.
    """
    frame = phases.reset_index(drop=True)
    start = np.nan_to_num(frame["start_s"].to_numpy(float))
    end = frame["end_s"].to_numpy(float)
    cs = curves(samples)
    readings = [(float(c.t_s[0]), float(c.t_s[-1]), len(c.t_s)) for c in cs.values()]
    return _phase_frame(
        frame,
        {
            d: (c.at(end) - c.at(start), EnergyOrigin.of(c.source, c.measured))
            for d, c in cs.items()
        },
        unmeasured_phases(start, end, readings),
    )


def stored_phase_table(store: Any, run_id: int, phases: pd.DataFrame) -> pd.DataFrame:
    """:func:`phase_table` of a stored run's ``phases``, from the store's energy aggregates
    (:meth:`joulecast.store.Store.energy_at`): its cost does not grow with the run's length.

    While the run is being recorded (:meth:`joulecast.store.Store.recording`), a phase that
    ended after the readings stored so far is not unmeasured: its readings are on their way.
    """
    frame = phases.reset_index(drop=True)
    start = np.nan_to_num(frame["start_s"].to_numpy(float))
    end = frame["end_s"].to_numpy(float)
    states = store.device_energy(run_id)
    at = store.energy_at(run_id, np.concatenate([start, end]))
    n = len(frame)
    unmeasured = (
        np.zeros(n, dtype=bool)
        if store.recording(run_id)
        else unmeasured_phases(start, end, stored_readings(states))
    )
    return _phase_frame(
        frame,
        {
            d: (e[n:] - e[:n], EnergyOrigin.of(states[d].source, states[d].measured))
            for d, e in sorted(at.items())
        },
        unmeasured,
    )


def stored_readings(states: Mapping[str, Any]) -> list[tuple[float, float, int]]:
    """The ``readings`` of :func:`unmeasured_phases` from a stored run's device aggregates
    (:meth:`joulecast.store.Store.device_energy`)."""
    return [
        (*s.span_s, s.samples)
        for s in states.values()
        if not math.isnan(s.energy_j) and s.samples > 0
    ]


def mean_power(samples: pd.DataFrame, edges_s: np.ndarray) -> dict[str, np.ndarray]:
    """Each device's mean power over the cells between consecutive ``edges_s``.

    A cell's mean is the trapezoid of the device's power readings over it (its energy
    counter is not used; 0 W outside its readings) divided by the cell's width, so a coarse
    grid summarizes every reading. Devices without power readings are left out.
    """
    edges = np.asarray(edges_s, dtype=float)
    power = curves(samples.drop(columns="energy_j", errors="ignore"))
    return _cell_means({d: c.at(edges) for d, c in power.items()}, edges)


def stored_mean_power(
    store: Any, run_id: int, edges_s: np.ndarray, *, devices: Collection[str] | None = None
) -> dict[str, np.ndarray]:
    """:func:`mean_power` of a stored run (of its ``devices`` only, where given), from the
    store's energy aggregates (the power track of :meth:`joulecast.store.Store.energy_at`):
    no sample is loaded."""
    edges = np.asarray(edges_s, dtype=float)
    return _cell_means(store.energy_at(run_id, edges, track="power", devices=devices), edges)


def _cell_means(energy: dict[str, np.ndarray], edges: np.ndarray) -> dict[str, np.ndarray]:
    """Mean power per cell from cumulative energy at the cells' edges (NaN in a cell of no
    width)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return {d: np.diff(e) / np.diff(edges) for d, e in sorted(energy.items())}


def stored_power_profile(store: Any, run_id: int, cells: int) -> pd.DataFrame:
    """A stored run's power per device, over ``cells`` equal cells spanning its power readings
    (:func:`stored_power_span`): columns ``t_s`` (a cell's middle), ``device`` and ``power_w``
    (the cell's mean, :func:`stored_mean_power`). What a plot of a run of any length needs;
    empty where the run has no power reading."""
    span = stored_power_span(store, run_id)
    if span is None:
        return pd.DataFrame({"t_s": [], "device": [], "power_w": []})
    edges = np.linspace(span[0], span[1], cells + 1)
    middle = (edges[:-1] + edges[1:]) / 2
    parts = [
        pd.DataFrame({"t_s": middle, "device": device, "power_w": power})
        for device, power in stored_mean_power(store, run_id, edges).items()
    ]
    return pd.concat(parts, ignore_index=True)


def stored_power_span(
    store: Any, run_id: int, devices: Collection[str] | None = None
) -> tuple[float, float] | None:
    """Times of a stored run's first and last power readings (of any device, or of any of
    ``devices``); None where it has none."""
    states = store.device_energy(run_id)
    powered = [s for d, s in states.items() if s.power_rows and (devices is None or d in devices)]
    if not powered:
        return None
    return min(s.power_t0_s for s in powered), max(s.power_t_s for s in powered)


def empty_phase_table() -> pd.DataFrame:
    """A phase table (:func:`phase_table`'s columns) without phases."""
    import pandas as pd

    columns: dict[str, list[object]] = {
        "kind": [],
        "index": [],
        "start_s": [],
        "end_s": [],
        "samples": [],
        "metrics": [],
    }
    return _phase_frame(
        pd.DataFrame(columns).astype({"samples": "Int64"}), {}, np.zeros(0, dtype=bool)
    )


def _phase_frame(
    phases: pd.DataFrame,
    energy: dict[str, tuple[np.ndarray, EnergyOrigin]],
    unmeasured: np.ndarray,
) -> pd.DataFrame:
    """The phase table of ``phases`` given each device's energy in each phase (and where it
    comes from); the ``unmeasured`` phases have no energy."""
    frame = phases.copy()
    start = frame["start_s"].to_numpy(float)
    end = frame["end_s"].to_numpy(float)
    frame["duration_s"] = end - start
    frame["unmeasured"] = np.asarray(unmeasured, dtype=bool)
    unknown = np.isnan(end) | frame["unmeasured"].to_numpy(bool)
    total = np.zeros(len(frame))
    part = {origin: np.zeros(len(frame)) for origin in EnergyOrigin}
    for device, (e, origin) in energy.items():
        e = np.where(unknown, np.nan, e)
        frame[f"energy_j[{device}]"] = e
        total = total + e
        part[origin] = part[origin] + e
    frame["energy_j"] = total
    frame["energy_j_measured"] = part[EnergyOrigin.MEASURED] if energy else np.nan
    frame["energy_j_replayed"] = part[EnergyOrigin.REPLAYED] if energy else np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["mean_power_w"] = total / frame["duration_s"].to_numpy(float)
        n = frame["samples"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        frame["j_per_sample"] = np.where(n > 0, total / n, np.nan)
    if not energy:
        frame["energy_j"] = np.nan
    return frame


@dataclass
class DeviceTotal:
    """One device's total energy and where it came from.

    ``rate_hz`` is the rate its readings were stored at: (readings - 1) / the span from its
    first to its last reading; None with fewer than two readings.
    """

    device: str
    energy_j: float
    mean_power_w: float
    method: Method
    source: str
    measured: bool
    samples: int
    rate_hz: float | None = None

    @property
    def origin(self) -> EnergyOrigin:
        """Where the energy comes from: this machine's hardware, a replayed trace or a model."""
        return EnergyOrigin.of(self.source, self.measured)

    @property
    def replayed(self) -> bool:
        """True where the readings are a recorded trace played back (a dry run), not this
        machine's hardware."""
        return self.origin is EnergyOrigin.REPLAYED


@dataclass
class RunSummary:
    """Totals, per-device figures, per-epoch table and quality notes of one run."""

    run_id: int
    name: str | None
    status: str
    exit_code: int | None
    signal: str | None
    duration_s: float
    devices: dict[str, DeviceTotal]
    epochs: pd.DataFrame
    samples_processed: int | None
    quality: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    test: dict[str, Any] | None = None

    @property
    def energy_j(self) -> float:
        """Total energy: the measured, replayed and modelled parts together."""
        return sum((d.energy_j for d in self.devices.values()), 0.0)

    def _part_j(self, origin: EnergyOrigin) -> float:
        return sum((d.energy_j for d in self.devices.values() if d.origin is origin), 0.0)

    @property
    def energy_j_measured(self) -> float:
        """Energy of devices read from this machine's hardware counters or power sensors."""
        return self._part_j(EnergyOrigin.MEASURED)

    @property
    def energy_j_replayed(self) -> float:
        """Energy of devices replayed from a recorded trace (a dry run), not this machine's."""
        return self._part_j(EnergyOrigin.REPLAYED)

    @property
    def energy_j_modelled(self) -> float:
        """Energy of devices whose power comes from a model (RAM, CPU without RAPL)."""
        return self._part_j(EnergyOrigin.MODELLED)

    @property
    def mean_power_w(self) -> float:
        """Total energy over duration."""
        return self.energy_j / self.duration_s if self.duration_s > 0 else math.nan

    @property
    def unmeasured_epochs(self) -> list[int]:
        """The epochs that ran outside the run's readings (:func:`unmeasured_phases`), as
        after its sampler died: their energy is unknown (NaN), never 0 J."""
        if "unmeasured" not in self.epochs.columns:
            return []
        return [int(i) for i in self.epochs.loc[self.epochs["unmeasured"], "index"]]

    @property
    def j_per_sample(self) -> float | None:
        """Energy per training sample processed, where epochs counted them; None where an
        epoch is unmeasured (the run's energy does not cover its samples)."""
        if not self.samples_processed or self.unmeasured_epochs:
            return None
        return self.energy_j / self.samples_processed

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; the keys are documented in docs/json.md."""
        epochs = []
        device_cols = [c for c in self.epochs.columns if c.startswith("energy_j[")]
        for row in self.epochs.to_dict("records"):
            epochs.append(
                {
                    "index": int(row["index"]),
                    "start_s": _num(row["start_s"]),
                    "end_s": _num(row["end_s"]),
                    "duration_s": _num(row["duration_s"]),
                    "energy_j": _num(row["energy_j"]),
                    "energy_j_measured": _num(row["energy_j_measured"]),
                    "energy_j_replayed": _num(row["energy_j_replayed"]),
                    "energy_j_by_device": {c[9:-1]: _num(row[c]) for c in device_cols},
                    "mean_power_w": _num(row["mean_power_w"]),
                    "samples": None if pd.isna(row["samples"]) else int(row["samples"]),
                    "j_per_sample": _num(row["j_per_sample"]),
                    "unmeasured": bool(row.get("unmeasured", False)),
                    "metrics": row.get("metrics") or {},
                }
            )
        return {
            "run_id": self.run_id,
            "name": self.name,
            "status": self.status,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "energy_j": self.energy_j,
            "energy_kwh": j_to_kwh(self.energy_j),
            "energy_j_measured": self.energy_j_measured,
            "energy_j_modelled": self.energy_j_modelled,
            "energy_j_replayed": self.energy_j_replayed,
            "energy_j_by_device": {d: v.energy_j for d, v in self.devices.items()},
            "mean_power_w": _num(self.mean_power_w),
            "samples_processed": self.samples_processed,
            "j_per_sample": self.j_per_sample,
            "unmeasured_epochs": self.unmeasured_epochs,
            "devices": {
                d: {
                    "energy_j": v.energy_j,
                    "mean_power_w": _num(v.mean_power_w),
                    "method": v.method,
                    "source": v.source,
                    "measured": v.measured,
                    "origin": v.origin.value,
                    "samples": v.samples,
                    "rate_hz": v.rate_hz,
                }
                for d, v in self.devices.items()
            },
            "epochs": epochs,
            "quality": self.quality,
            "warnings": self.warnings,
            "tags": self.tags,
            "hardware": self.hardware,
            "test": self.test,
        }


def index_ranges(indices: Collection[int]) -> str:
    """``indices`` as runs of consecutive numbers: ``[1, 2, 3, 5]`` -> ``"1-3, 5"``."""
    parts: list[str] = []
    ordered = sorted(indices)
    k = 0
    while k < len(ordered):
        j = k
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[k]) if j == k else f"{ordered[k]}-{ordered[j]}")
        k = j + 1
    return ", ".join(parts)


def _num(value: Any) -> float | None:
    if value is None or pd.isna(value):
        return None
    return float(value)


def summarize(store: Any, run_id: int) -> RunSummary:
    """Compute the :class:`RunSummary` of a stored run from its energy aggregates; no sample
    is read, so it costs the same for a run of an hour or of weeks."""
    row = store.run(run_id)
    phases = store.phases(run_id)
    gaps = store.gaps(run_id)
    states = store.device_energy(run_id)
    duration = row["duration_s"]
    if duration is None:
        duration = max((s.t_last_s for s in states.values()), default=0.0)
    devices: dict[str, DeviceTotal] = {}
    for device, state in sorted(states.items()):
        if math.isnan(state.energy_j):
            continue
        first_s, last_s = state.span_s
        span = last_s - first_s
        devices[device] = DeviceTotal(
            device,
            state.energy_j,
            state.energy_j / span if span > 0 else math.nan,
            "counter" if state.counter else "trapezoid",
            state.source,
            state.measured,
            state.samples,
            state.rate_hz,
        )
    epochs = stored_phase_table(store, run_id, phases[phases["kind"] == "epoch"])
    processed = phases.loc[phases["kind"] == "epoch", "samples"].dropna()
    warnings: list[str] = []
    if not devices:
        warnings.append("no power readings were recorded")
    replayed = [d for d, total in devices.items() if total.replayed]
    if devices and not any(d.origin is EnergyOrigin.MEASURED for d in devices.values()):
        kind = "replayed or modelled" if replayed else "modelled"
        warnings.append(f"no measured power source: every energy figure is {kind}")
    if replayed:
        warnings.append(
            f"{', '.join(replayed)}: replayed from a recorded trace (a dry run), "
            "not read from this machine's hardware"
        )
    unmeasured = epochs.loc[epochs["unmeasured"], "index"].astype(int).tolist()
    readings = stored_readings(states)
    if unmeasured and readings:
        first, last = min(r[0] for r in readings), max(r[1] for r in readings)
        warnings.append(
            f"{'epoch' if len(unmeasured) == 1 else 'epochs'} {index_ranges(unmeasured)}"
            f" ({len(unmeasured)} of {len(epochs)}) ran outside"
            f" the run's readings ({first:.1f}-{last:.1f} s), as after its sampler stopped:"
            " unmeasured, without energy, and the run has no J/sample"
        )
    for device, frame in gaps.groupby("device", sort=True):
        ends = frame["end_s"].fillna(duration)
        lost = float((ends - frame["start_s"]).sum())
        reasons = "; ".join(sorted(set(frame["reason"])))[:200]
        warnings.append(f"{device}: {len(frame)} gap(s), {lost:.1f} s without readings ({reasons})")
    test = None
    tests = phases[phases["kind"] == "test"]
    if len(tests):
        last = tests.iloc[-1]
        tested = stored_phase_table(store, run_id, tests.iloc[[-1]])
        test = {
            "metrics": last["metrics"],
            "samples": None if pd.isna(last["samples"]) else int(last["samples"]),
            "duration_s": _num(tested["duration_s"].iloc[0]),
            "energy_j": _num(tested["energy_j"].iloc[0]),
        }
    missed = row["quality"].get("missed_deadlines", 0)
    if missed:
        warnings.append(f"sampler missed {missed} deadline(s)")
    tags = row["tags"]
    if tags.get("job_nodes_found", tags.get("job_nodes")) != tags.get("job_nodes"):
        warnings.append(
            f"merged from {tags['job_nodes_found']} of the job's {tags['job_nodes']} nodes:"
            " its energy is theirs only, and it has no J/sample"
        )
    elif "job_nodes" in tags and "job_shards" not in tags and tags["job_nodes"] != "1":
        warnings.append(
            f"one node's run of a job over {tags['job_nodes']} nodes: its energy is this"
            " node's; 'joulecast collect' merges the job"
        )
    return RunSummary(
        run_id=run_id,
        name=row["name"],
        status=row["status"],
        exit_code=row["exit_code"],
        signal=row["signal"],
        duration_s=float(duration),
        devices=devices,
        epochs=epochs,
        samples_processed=int(processed.sum()) if len(processed) else None,
        quality=row["quality"],
        warnings=warnings,
        tags=row["tags"],
        hardware=row["hardware"],
        started_at=row["started_at"],
        test=test,
    )
