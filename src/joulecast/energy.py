"""Energy from samples: counters where a device has one, trapezoidal integration elsewhere.

Each device gets a cumulative-energy curve E(t). With a counter, E is the counter interpolated
linearly between samples (an interval where the counter went backwards, as after a driver
reload, is integrated from power instead). Without one, E is the exact integral of the
piecewise-linear power through the samples, so the energy of any window [a, b] is
E(b) - E(a) and the phases of a run add up to its total. Modelled devices (``measured`` False)
are summed apart from measured ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

J_PER_KWH = 3.6e6

Method = Literal["counter", "trapezoid"]


def j_to_kwh(energy_j: float) -> float:
    """Joules to kilowatt-hours (1 kWh = 3.6e6 J exactly)."""
    return energy_j / J_PER_KWH


def _trapezoid_cumulative(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    if len(t) < 2:
        return np.zeros(len(t))
    return np.concatenate([[0.0], np.cumsum(np.diff(t) * (p[1:] + p[:-1]) / 2.0)])


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
        frame = frame.sort_values("t_s", kind="stable")
        has_power = frame["power_w"].notna()
        counter = frame["energy_j"].notna() if "energy_j" in frame else has_power & False
        source = str(frame["source"].iloc[0]) if "source" in frame and len(frame) else ""
        measured = bool(frame["measured"].all()) if "measured" in frame else True
        if counter.sum() >= 2:
            rows = frame[counter]
            t = rows["t_s"].to_numpy(float)
            e = rows["energy_j"].to_numpy(float)
            p = rows["power_w"].to_numpy(float)
            steps = np.diff(e)
            backwards = steps < 0
            if backwards.any():
                # Fill reset intervals from power, or zero where power is missing too.
                pw = np.nan_to_num(p)
                trap = np.diff(t) * (pw[1:] + pw[:-1]) / 2.0
                steps = np.where(backwards, trap, steps)
            cum = np.concatenate([[0.0], np.cumsum(steps)])
            return cls(device, t, np.nan_to_num(p), cum, "counter", source, measured)
        if has_power.sum() == 0:
            return None
        rows = frame[has_power]
        t = rows["t_s"].to_numpy(float)
        p = rows["power_w"].to_numpy(float)
        return cls(device, t, p, _trapezoid_cumulative(t, p), "trapezoid", source, measured)

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
    out: dict[str, EnergyCurve] = {}
    for device, frame in samples.groupby("device", sort=True):
        curve = EnergyCurve.from_samples(str(device), frame)
        if curve is not None:
            out[str(device)] = curve
    return out


def phase_table(samples: pd.DataFrame, phases: pd.DataFrame) -> pd.DataFrame:
    """Per-phase duration, energy (total, measured, per device), mean power and J per sample.

    ``phases`` has the store's columns (``index``, ``start_s``, ``end_s``, ``samples``, ...);
    a phase still open (no ``end_s``) gets NaN energy. Per-device columns are ``energy_j[DEV]``.
    """
    cs = curves(samples)
    frame = phases.reset_index(drop=True).copy()
    start = frame["start_s"].to_numpy(float)
    end = frame["end_s"].to_numpy(float)
    frame["duration_s"] = end - start
    total = np.zeros(len(frame))
    measured = np.zeros(len(frame))
    for device, curve in cs.items():
        e = curve.at(end) - curve.at(np.nan_to_num(start))
        e = np.where(np.isnan(end), np.nan, e)
        frame[f"energy_j[{device}]"] = e
        total = total + e
        if curve.measured:
            measured = measured + e
    frame["energy_j"] = total
    frame["energy_j_measured"] = measured if cs else np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["mean_power_w"] = total / frame["duration_s"].to_numpy(float)
        n = frame["samples"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        frame["j_per_sample"] = np.where(n > 0, total / n, np.nan)
    if not cs:
        frame["energy_j"] = np.nan
    return frame


@dataclass
class DeviceTotal:
    """One device's total energy and where it came from."""

    device: str
    energy_j: float
    mean_power_w: float
    method: Method
    source: str
    measured: bool
    samples: int


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
        """Total energy, measured and modelled devices together."""
        return sum((d.energy_j for d in self.devices.values()), 0.0)

    @property
    def energy_j_measured(self) -> float:
        """Energy of devices read from hardware counters or power sensors."""
        return sum((d.energy_j for d in self.devices.values() if d.measured), 0.0)

    @property
    def energy_j_modelled(self) -> float:
        """Energy of devices whose power comes from a model (RAM, CPU without RAPL)."""
        return sum((d.energy_j for d in self.devices.values() if not d.measured), 0.0)

    @property
    def mean_power_w(self) -> float:
        """Total energy over duration."""
        return self.energy_j / self.duration_s if self.duration_s > 0 else math.nan

    @property
    def j_per_sample(self) -> float | None:
        """Energy per training sample processed, where epochs counted them."""
        if not self.samples_processed:
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
                    "energy_j_by_device": {c[9:-1]: _num(row[c]) for c in device_cols},
                    "mean_power_w": _num(row["mean_power_w"]),
                    "samples": None if pd.isna(row["samples"]) else int(row["samples"]),
                    "j_per_sample": _num(row["j_per_sample"]),
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
            "energy_j_by_device": {d: v.energy_j for d, v in self.devices.items()},
            "mean_power_w": _num(self.mean_power_w),
            "samples_processed": self.samples_processed,
            "j_per_sample": self.j_per_sample,
            "devices": {
                d: {
                    "energy_j": v.energy_j,
                    "mean_power_w": _num(v.mean_power_w),
                    "method": v.method,
                    "source": v.source,
                    "measured": v.measured,
                    "samples": v.samples,
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


def _num(value: Any) -> float | None:
    if value is None or pd.isna(value):
        return None
    return float(value)


def summarize(store: Any, run_id: int) -> RunSummary:
    """Compute the :class:`RunSummary` of a stored run."""
    row = store.run(run_id)
    samples = store.samples(run_id)
    phases = store.phases(run_id)
    gaps = store.gaps(run_id)
    cs = curves(samples)
    duration = row["duration_s"]
    if duration is None:
        duration = float(samples["t_s"].max()) if len(samples) else 0.0
    devices: dict[str, DeviceTotal] = {}
    for device, curve in cs.items():
        span = curve.t_s[-1] - curve.t_s[0] if len(curve.t_s) else 0.0
        devices[device] = DeviceTotal(
            device,
            curve.total_j,
            curve.total_j / span if span > 0 else math.nan,
            curve.method,
            curve.source,
            curve.measured,
            len(curve.t_s),
        )
    epochs = phase_table(samples, phases[phases["kind"] == "epoch"])
    processed = phases.loc[phases["kind"] == "epoch", "samples"].dropna()
    warnings: list[str] = []
    if not devices:
        warnings.append("no power readings were recorded")
    elif not any(d.measured for d in devices.values()):
        warnings.append("no measured power source: every energy figure is modelled")
    for device, frame in gaps.groupby("device", sort=True):
        ends = frame["end_s"].fillna(duration)
        lost = float((ends - frame["start_s"]).sum())
        reasons = "; ".join(sorted(set(frame["reason"])))[:200]
        warnings.append(f"{device}: {len(frame)} gap(s), {lost:.1f} s without readings ({reasons})")
    test = None
    tests = phases[phases["kind"] == "test"]
    if len(tests):
        last = tests.iloc[-1]
        tested = phase_table(samples, tests.iloc[[-1]])
        test = {
            "metrics": last["metrics"],
            "samples": None if pd.isna(last["samples"]) else int(last["samples"]),
            "duration_s": _num(tested["duration_s"].iloc[0]),
            "energy_j": _num(tested["energy_j"].iloc[0]),
        }
    missed = row["quality"].get("missed_deadlines", 0)
    if missed:
        warnings.append(f"sampler missed {missed} deadline(s)")
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
