"""CO2e of measured runs: energy x carbon intensity x PUE.

Where the intensity comes from, in order (:func:`resolve_intensity`): a value the user gives
(``--intensity G_PER_KWH``), an hourly intensity file (``--intensity-csv FILE``), the hourly
history of an Electricity Maps zone (``--electricity-maps ZONE``, with an API key), a country
of the shipped table (``--region CODE``, ``data/carbon_intensity.csv``); without any of
those options, ``JOULECAST_INTENSITY``, ``JOULECAST_ELECTRICITY_MAPS`` then
``JOULECAST_REGION``. Without any, there is no CO2e: no world average is assumed. PUE
defaults to 1.0 (the energy measured is the energy counted) and is always said. No network
call is made unless a zone is named (:mod:`joulecast.electricitymaps`).

The one formula is :func:`joulecast.offline.baselines.carbon_g`; this module only decides
which intensity applies to which joule.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from joulecast.errors import InputError
from joulecast.inputs import capped_lines, finite, iso_time, quote, read_file
from joulecast.offline.baselines import carbon_g

INTENSITY_ENV = "JOULECAST_INTENSITY"
REGION_ENV = "JOULECAST_REGION"
#: The Electricity Maps zone to look up (as ``--electricity-maps``; joulecast.electricitymaps).
ZONE_ENV = "JOULECAST_ELECTRICITY_MAPS"
#: The most gCO2e/kWh accepted: above any grid's (coal plants emit about 1,000).
MAX_G_PER_KWH = 5000.0
#: The most PUE accepted (data centres report 1.1-2).
MAX_PUE = 10.0
#: The longest intensity file read.
MAX_CSV_BYTES = 64 << 20
#: The longest time one row of an intensity file holds (until the next row's time, if sooner).
ROW_SPAN_S = 3600.0
TABLE = "carbon_intensity.csv"


@dataclass(frozen=True)
class Intensity:
    """A carbon intensity source: one value, or an hourly series.

    Attributes:
        source: Where it came from, in words (printed with every figure).
        g_per_kwh: The value, for a fixed intensity; None for a series.
        series: For an hourly file: (start, end, g_per_kwh) rows in UNIX seconds, in time
            order, not overlapping.
        lookup: For a source fetched for each run (Electricity Maps): a function of the
            run's first and last reading (UNIX seconds) that returns its hourly series.
    """

    source: str
    g_per_kwh: float | None = None
    series: tuple[tuple[float, float, float], ...] = ()
    lookup: Callable[[float, float], Intensity] | None = field(
        default=None, repr=False, compare=False
    )


@dataclass(frozen=True)
class Emissions:
    """A run's CO2e and how it was found.

    Attributes:
        co2e_g: Grams of CO2e: ``carbon_g(energy_j x pue, intensity)`` summed over the run.
        intensity_g_per_kwh: The intensity applied (for an hourly file, the mean weighted by
            the run's energy in each row's span).
        intensity_source: Where the intensity came from.
        pue: The power usage effectiveness applied.
    """

    co2e_g: float
    intensity_g_per_kwh: float
    intensity_source: str
    pue: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON keys of ``show --json`` (docs/json.md)."""
        return {
            "co2e_g": self.co2e_g,
            "intensity_g_per_kwh": self.intensity_g_per_kwh,
            "intensity_source": self.intensity_source,
            "pue": self.pue,
        }

    def describe(self) -> str:
        """One line: the figure and where its intensity came from."""
        grams = f"{self.co2e_g:,.2f}" if self.co2e_g >= 1 else f"{self.co2e_g:.3g}"
        if math.isnan(self.intensity_g_per_kwh):  # a lookup with no energy to weigh it by
            said = f"no energy measured; {self.intensity_source}"
            return f"CO2e: {grams} g ({said}), PUE {self.pue:g}"
        return (
            f"CO2e: {grams} g at {self.intensity_g_per_kwh:,.1f} gCO2e/kWh"
            f" ({self.intensity_source}), PUE {self.pue:g}"
        )


def no_intensity(hourly: bool = True) -> str:
    """What a command without intensity says instead of a CO2e figure (without ``hourly``,
    for a command that takes no hourly source)."""
    if hourly:
        options = "--intensity G_PER_KWH, --intensity-csv FILE, --electricity-maps ZONE"
        variables = f"${INTENSITY_ENV} / ${ZONE_ENV} / ${REGION_ENV}"
    else:
        options, variables = "--intensity G_PER_KWH", f"${INTENSITY_ENV} / ${REGION_ENV}"
    return (
        f"CO2e: none (no carbon intensity given: {options} or --region CODE, or {variables};"
        " see docs/carbon.md)"
    )


#: What a command without intensity says instead of a CO2e figure.
NO_INTENSITY = no_intensity()


def check_pue(value: object) -> float:
    """``value`` as a PUE: a finite number in [1, :data:`MAX_PUE`]."""
    return finite(value, "pue", lo=1.0, hi=MAX_PUE)


def fixed(value: object, source: str = "given value") -> Intensity:
    """A fixed intensity in gCO2e/kWh, checked (finite, 0 to :data:`MAX_G_PER_KWH`)."""
    g = finite(value, "carbon intensity (gCO2e/kWh)", lo=0.0, hi=MAX_G_PER_KWH)
    return Intensity(source, g_per_kwh=g)


def _table() -> dict[str, tuple[str, float, int]]:
    text = resources.files("joulecast").joinpath("data").joinpath(TABLE).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    return {
        r["code"]: (r["country"], float(r["g_per_kwh"]), int(r["year"]))
        for r in csv.DictReader(lines)
    }


def region(code: str) -> Intensity:
    """The shipped yearly intensity of a country by ISO 3166-1 alpha-3 code (``FRA``).

    Raises:
        InputError: the code is not in the table.
    """
    table = _table()
    key = code.strip().upper()
    if key not in table:
        raise InputError(
            f"region {quote(code)}: not in the shipped table; give an ISO 3166-1 alpha-3"
            f" country code such as FRA, DEU or USA (every code is in joulecast/data/{TABLE},"
            " listed by 'python -m joulecast.carbon')"
        )
    country, g, year = table[key]
    return Intensity(
        f"region {key} ({country}) {year} yearly average, Our World in Data via CodeCarbon",
        g_per_kwh=g,
    )


def _when(text: str, where: str) -> float:
    moment = iso_time(text)
    if moment is None:
        raise InputError(
            f"{where}: datetime {quote(text)}: expected ISO 8601 such as 2026-01-31T14:00:00Z"
        )
    if moment.tzinfo is None:  # documented: a time without a zone is UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def read_intensity_csv(path: str | os.PathLike[str]) -> Intensity:
    """An hourly (or finer) intensity file: columns ``datetime`` and ``g_per_kwh``.

    Each row holds from its ``datetime`` (ISO 8601; UTC where it names no zone) until the
    next row's, for at most :data:`ROW_SPAN_S`; rows may come in any order, other columns
    are ignored.

    Raises:
        InputError: the file cannot be read, lacks a column, has a bad row (named by line
            and field) or two rows at the same time.
    """
    name = str(path)
    data = read_file(path, "an intensity CSV (datetime,g_per_kwh)", max_bytes=MAX_CSV_BYTES)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{name}: not UTF-8 text (expected an intensity CSV)") from None
    lines = list(capped_lines(io.StringIO(text), name))
    reader = csv.DictReader(lines)
    missing = {"datetime", "g_per_kwh"} - set(reader.fieldnames or ())
    if missing:
        raise InputError(
            f"{name}: line 1: no column {', '.join(sorted(missing))}"
            " (expected a header with datetime,g_per_kwh)"
        )
    rows: dict[float, float] = {}
    for row in reader:
        where = f"{name}: line {reader.line_num}"
        t = _when(row["datetime"] or "", where)
        try:
            g = fixed(float(row["g_per_kwh"] or "nan")).g_per_kwh
        except (ValueError, InputError):
            raise InputError(
                f"{where}: g_per_kwh {quote(row['g_per_kwh'])}: expected a number of"
                f" gCO2e/kWh from 0 to {MAX_G_PER_KWH:g}"
            ) from None
        if t in rows:
            raise InputError(
                f"{where}: datetime {quote(row['datetime'])}: a second row at that time"
            )
        assert g is not None
        rows[t] = g
    if not rows:
        raise InputError(f"{name}: no rows (expected datetime,g_per_kwh rows)")
    return Intensity(f"hourly file {Path(name).name}", series=hourly_series(rows))


def hourly_series(rows: Mapping[float, float]) -> tuple[tuple[float, float, float], ...]:
    """:attr:`Intensity.series` from values by start time (UNIX seconds): each holds until the
    next one's start, for at most :data:`ROW_SPAN_S`."""
    starts = sorted(rows)
    ends = [*starts[1:], math.inf][: len(starts)]
    return tuple((s, min(e, s + ROW_SPAN_S), rows[s]) for s, e in zip(starts, ends, strict=True))


def resolve_intensity(
    intensity: float | None = None,
    intensity_csv: str | os.PathLike[str] | None = None,
    region_code: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    electricity_maps: str | None = None,
    hourly: bool = True,
) -> Intensity | None:
    """The intensity that applies: the first given of ``intensity``, ``intensity_csv``,
    ``electricity_maps`` (a zone) and ``region_code``; else ``$JOULECAST_INTENSITY``, else
    ``$JOULECAST_ELECTRICITY_MAPS``, else ``$JOULECAST_REGION``; else None. A zone is only
    checked here (its spelling, an API key in ``env``): it is fetched for each run. Without
    ``hourly`` (for figures with no time of day), ``$JOULECAST_ELECTRICITY_MAPS`` is passed
    over.

    Raises:
        InputError: the chosen one is not valid (a value out of range, a bad file, an unknown
            region, a zone without a key).
    """
    env = os.environ if env is None else env
    if intensity is not None:
        return fixed(intensity, "given value (--intensity)")
    if intensity_csv is not None:
        return read_intensity_csv(intensity_csv)
    if electricity_maps is not None:
        return _zone(electricity_maps, env)
    if region_code is not None:
        return region(region_code)
    if env.get(INTENSITY_ENV, "").strip():
        text = env[INTENSITY_ENV].strip()
        try:
            return fixed(float(text), f"given value (${INTENSITY_ENV})")
        except (ValueError, InputError):
            raise InputError(
                f"${INTENSITY_ENV} {quote(text)}: expected a number of gCO2e/kWh from 0 to"
                f" {MAX_G_PER_KWH:g}"
            ) from None
    if hourly and env.get(ZONE_ENV, "").strip():
        return _zone(env[ZONE_ENV], env)
    if env.get(REGION_ENV, "").strip():
        return region(env[REGION_ENV])
    return None


def _zone(zone: str, env: Mapping[str, str]) -> Intensity:
    from joulecast.electricitymaps import lookup  # urllib only where a zone is named

    return lookup(zone, env)


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def run_emissions(
    store: Any, run_id: int, source: Intensity, pue: float = 1.0, *, energy_j: float | None = None
) -> Emissions:
    """The CO2e of a stored run under ``source`` and ``pue``, from the store's energy
    aggregates (no sample is read).

    For an hourly series, each row's intensity applies to the energy the run's devices used
    in that row's span (the run's clock: its start time plus the samples' offsets). A source
    with a :attr:`~Intensity.lookup` is fetched here, for the span of the run's readings.

    ``energy_j`` is the run's energy as the caller read it (a live run's summary, logged beside
    the CO2e): the CO2e is that energy at the intensity found, so the two agree while the
    store still grows.

    Raises:
        InputError: ``pue`` is out of range, the series does not cover the run's readings, or
            the lookup fails.
    """
    pue = check_pue(pue)
    found = _stored_emissions(store, run_id, source, pue)
    if energy_j is None or not math.isfinite(energy_j) or math.isnan(found.intensity_g_per_kwh):
        return found
    return replace(found, co2e_g=carbon_g(energy_j * pue, found.intensity_g_per_kwh))


def _stored_emissions(store: Any, run_id: int, source: Intensity, pue: float) -> Emissions:
    states = store.device_energy(run_id)
    energy_j = sum((s.energy_j for s in states.values() if not math.isnan(s.energy_j)), 0.0)
    if source.g_per_kwh is not None:
        co2e = carbon_g(energy_j * pue, source.g_per_kwh)
        return Emissions(co2e, source.g_per_kwh, source.source, pue)
    if source.lookup is not None:
        _, span = _readings_span(store, run_id, states)
        if span is None or energy_j <= 0:  # nothing to fetch (as for a file, below)
            return Emissions(0.0, math.nan, source.source, pue)
        hint = "the service has no value for those hours; give --intensity-csv or --region"
        return _series_emissions(store, run_id, source.lookup(*span), pue, states, energy_j, hint)
    return _series_emissions(store, run_id, source, pue, states, energy_j)


def _readings_span(
    store: Any, run_id: int, states: Any
) -> tuple[float, tuple[float, float] | None]:
    """The run's start and its readings' first and last time (UNIX seconds; None without a
    reading of energy)."""
    started = float(store.run(run_id)["started_at"])
    spans = [s.span_s for s in states.values() if not math.isnan(s.energy_j) and s.samples]
    if not spans:
        return started, None
    return started, (started + min(a for a, _ in spans), started + max(b for _, b in spans))


def _series_emissions(
    store: Any,
    run_id: int,
    source: Intensity,
    pue: float,
    states: Any,
    energy_j: float,
    hint: str = "add rows for those hours, or give --intensity or --region instead",
) -> Emissions:
    import numpy as np

    started, span = _readings_span(store, run_id, states)
    if span is None or energy_j <= 0:  # no energy to weigh the hours by: no intensity to say
        return Emissions(0.0, math.nan, source.source, pue)
    first, last = span
    cells = [
        (max(a, first), min(b, last), g) for a, b, g in source.series if b > first and a < last
    ]
    covered = first
    for a, b, _ in cells:
        if a > covered:
            break
        covered = max(covered, b)
    if covered < last:
        gap_end = next((a for a, _, _ in cells if a > covered), last)
        raise InputError(
            f"{source.source}: does not cover the run's readings from {_utc(covered)} to"
            f" {_utc(gap_end)} (the run ran {_utc(first)} to {_utc(last)}): {hint}"
        )
    edges = np.array([[a - started, b - started] for a, b, _ in cells], dtype=float).ravel()
    cum = store.energy_at(run_id, edges)
    per_cell = sum(np.diff(e.reshape(-1, 2), axis=1)[:, 0] for e in cum.values())
    co2e = sum(carbon_g(float(e) * pue, g) for e, (_, _, g) in zip(per_cell, cells, strict=True))
    used_j = float(np.sum(per_cell))
    mean_g = co2e / carbon_g(used_j * pue, 1.0) if used_j > 0 else cells[0][2]
    return Emissions(co2e, mean_g, source.source, pue)


def main() -> int:
    """Print the shipped table's codes (``python -m joulecast.carbon``)."""
    import sys

    try:
        for code, (country, g, year) in sorted(_table().items()):
            sys.stdout.write(f"{code}  {g:8.1f} gCO2e/kWh  {year}  {country}\n")
        sys.stdout.flush()
    except BrokenPipeError:
        from joulecast.outputs import reader_gone

        return reader_gone()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
