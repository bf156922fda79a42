"""Energy aggregates kept in the store as samples are written.

Every sample row carries its device's cumulative energy at that row, on two tracks: ``trap_j``
(the trapezoid of power, on rows with power) and ``ctr_j`` (the energy counter's steps, a
backwards step filled from power, on rows with a counter reading). Table ``device_energy``
holds each device's running state: the last row of each track, their counts and totals.
Together they answer what :func:`joulecast.energy.integrate` computes from the raw samples,
without reading them: a device's total is one row, and its energy at any time is the two
rows around that time, found through the ``(run_id, t_s)`` index.

Rows are appended in time order per device (the sampler's case); a batch that goes back in
time for a device settles that device again from its raw samples. Imports and copies of whole
runs compute or copy the aggregates once. :func:`joulecast.energy.integrate` stays the
reference: the tests compare both on every store they make.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np

#: The columns of a sample, as :meth:`joulecast.store.Store.samples` returns them.
SAMPLE_COLUMNS = (
    "t_s",
    "device",
    "power_w",
    "energy_j",
    "util_pct",
    "mem_used_mib",
    "temp_c",
    "source",
    "measured",
)
#: The columns of a row of the ``samples`` table.
ROW_COLUMNS = ("run_id", *SAMPLE_COLUMNS, "trap_j", "ctr_j")
INSERT_SAMPLE = f"INSERT INTO samples ({', '.join(ROW_COLUMNS)}) VALUES ({', '.join('?' * 12)})"

_STATE_COLUMNS = (
    "source",
    "measured",
    "rows",
    "t_first_s",
    "t_last_s",
    "power_rows",
    "power_t0_s",
    "power_t_s",
    "power_w",
    "trap_j",
    "counter_rows",
    "counter_t0_s",
    "counter_t_s",
    "counter_j",
    "counter_power_w",
    "ctr_j",
    "util_rows",
    "util_sum",
)

# The columns of a device's state that are times (a copy to another time base shifts them).
_TIME_COLUMNS = frozenset(
    {"t_first_s", "t_last_s", "power_t0_s", "power_t_s", "counter_t0_s", "counter_t_s"}
)

SCHEMA = """
ALTER TABLE samples ADD COLUMN trap_j REAL;
ALTER TABLE samples ADD COLUMN ctr_j REAL;
CREATE TABLE device_energy (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    device TEXT NOT NULL,
    source TEXT NOT NULL,
    measured INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    t_first_s REAL NOT NULL,
    t_last_s REAL NOT NULL,
    power_rows INTEGER NOT NULL,
    power_t0_s REAL,
    power_t_s REAL,
    power_w REAL,
    trap_j REAL NOT NULL,
    counter_rows INTEGER NOT NULL,
    counter_t0_s REAL,
    counter_t_s REAL,
    counter_j REAL,
    counter_power_w REAL,
    ctr_j REAL NOT NULL,
    util_rows INTEGER NOT NULL,
    util_sum REAL NOT NULL,
    PRIMARY KEY (run_id, device)
);
"""


#: A ``device_energy`` row's energy in SQL: :attr:`DeviceState.energy_j` (NULL for NaN).
ENERGY_SQL = "CASE WHEN counter_rows >= 2 THEN ctr_j WHEN power_rows > 0 THEN trap_j END"


@dataclass(frozen=True)
class DeviceState:
    """One device's aggregates: what its rows so far add up to (see the module docstring).

    ``t_first_s``/``t_last_s`` are the times of its first and last rows; ``power_*`` describe
    the last row with power, ``counter_*`` the last with a counter reading
    (``counter_power_w``: that row's power, 0 where it had none); ``*_t0_s`` the first such
    row.
    """

    source: str
    measured: bool
    rows: int = 0
    t_first_s: float = math.inf
    t_last_s: float = -math.inf
    power_rows: int = 0
    power_t0_s: float = math.nan
    power_t_s: float = math.nan
    power_w: float = math.nan
    trap_j: float = 0.0
    counter_rows: int = 0
    counter_t0_s: float = math.nan
    counter_t_s: float = math.nan
    counter_j: float = math.nan
    counter_power_w: float = math.nan
    ctr_j: float = 0.0
    util_rows: int = 0
    util_sum: float = 0.0

    @property
    def counter(self) -> bool:
        """Counted from its energy counter (two or more readings), as the kernel does."""
        return self.counter_rows >= 2

    @property
    def energy_j(self) -> float:
        """Its energy; NaN where it has neither a counter pair nor a power reading."""
        if self.counter:
            return self.ctr_j
        return self.trap_j if self.power_rows else math.nan

    @property
    def samples(self) -> int:
        """The rows its energy is counted from."""
        return self.counter_rows if self.counter else self.power_rows

    @property
    def span_s(self) -> tuple[float, float]:
        """Time of the first and the last row its energy is counted from."""
        if self.counter:
            return self.counter_t0_s, self.counter_t_s
        return self.power_t0_s, self.power_t_s

    @property
    def rate_hz(self) -> float | None:
        """Rows stored per second, from its first row to its last; None under two rows."""
        span = self.t_last_s - self.t_first_s
        return (self.rows - 1) / span if self.rows >= 2 and span > 0 else None

    @property
    def util_mean_pct(self) -> float:
        """Mean utilisation over the rows that read one; NaN where none did."""
        return self.util_sum / self.util_rows if self.util_rows else math.nan


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _sql(value: float) -> float | None:
    return None if math.isnan(value) else value


def _running_j(
    last: tuple[float, float, float, float] | None,
    t_s: np.ndarray,
    power_w: np.ndarray,
    counter_j: np.ndarray | None,
) -> np.ndarray:
    """The cumulative energy of a track at each of its new rows.

    ``last``: the track's last row so far, ``(t_s, power_w, counter_j, cum_j)``, or None.
    A step is the trapezoid of power (``counter_j`` None), or the counter's step where it
    did not go backwards. The sums are taken one after the other from the last row's, as the
    kernel's ``np.cumsum`` takes them, so both round alike.
    """
    import numpy as np

    start = 0.0
    if last is not None:
        t_s = np.concatenate(([last[0]], t_s))
        power_w = np.concatenate(([last[1]], power_w))
        if counter_j is not None:
            counter_j = np.concatenate(([last[2]], counter_j))
        start = last[3]
    steps = np.diff(t_s) * (power_w[1:] + power_w[:-1]) / 2.0
    if counter_j is not None:
        counted = np.diff(counter_j)
        steps = np.where(counted >= 0, counted, steps)
    cum = np.cumsum(np.concatenate(([start], steps)))
    return cum[1:] if last is not None else cum


def cumulate(
    state: DeviceState,
    t_s: np.ndarray,
    power_w: np.ndarray,
    energy_j: np.ndarray,
    util_pct: np.ndarray,
    measured: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, DeviceState]:
    """Extend ``state`` by rows of its device in time order, all after its last row.

    Returns:
        Each row's ``trap_j`` and ``ctr_j`` (NaN where the row has no power, no counter
        reading), and the state after them.
    """
    import numpy as np

    n = len(t_s)
    trap = np.full(n, np.nan)
    ctr = np.full(n, np.nan)
    fields: dict[str, Any] = {
        "rows": state.rows + n,
        "t_first_s": state.t_first_s if state.rows or not n else float(t_s[0]),
        "t_last_s": float(t_s[-1]) if n else state.t_last_s,
        "measured": state.measured and bool(measured.all()),
    }
    no_power = np.isnan(power_w)
    powered = np.flatnonzero(~no_power)
    if len(powered):
        t, p = t_s[powered], power_w[powered]
        last = (state.power_t_s, state.power_w, 0.0, state.trap_j) if state.power_rows else None
        trap[powered] = cum = _running_j(last, t, p, None)
        fields.update(
            power_rows=state.power_rows + len(powered),
            power_t0_s=state.power_t0_s if state.power_rows else float(t[0]),
            power_t_s=float(t[-1]),
            power_w=float(p[-1]),
            trap_j=float(cum[-1]),
        )
    counted = np.flatnonzero(~np.isnan(energy_j))
    if len(counted):
        t, e = t_s[counted], energy_j[counted]
        p = np.where(no_power[counted], 0.0, power_w[counted])
        last = None
        if state.counter_rows:
            last = (state.counter_t_s, state.counter_power_w, state.counter_j, state.ctr_j)
        ctr[counted] = cum = _running_j(last, t, p, e)
        fields.update(
            counter_rows=state.counter_rows + len(counted),
            counter_t0_s=state.counter_t0_s if state.counter_rows else float(t[0]),
            counter_t_s=float(t[-1]),
            counter_j=float(e[-1]),
            counter_power_w=float(p[-1]),
            ctr_j=float(cum[-1]),
        )
    util = util_pct[~np.isnan(util_pct)]
    if len(util):
        fields.update(
            util_rows=state.util_rows + len(util),
            util_sum=state.util_sum + float(util.sum()),
        )
    return trap, ctr, replace(state, **fields)


def _floats(values: Iterable[Any]) -> np.ndarray:
    """Numbers as float64, None as NaN."""
    import numpy as np

    return np.array(list(values), dtype=float)


def _nullable(values: np.ndarray) -> list[float | None]:
    """Floats for SQLite, NaN as NULL."""
    import numpy as np

    out = values.astype(object)
    out[np.isnan(values)] = None
    return list(out)


def append(
    conn: sqlite3.Connection, run_id: int, rows: Sequence[Sequence[Any]], *, defer: bool = False
) -> list[str]:
    """Insert sample rows of one run (the columns of :data:`ROW_COLUMNS` but the last two) with
    their cumulative energy, and bring its devices' aggregates up to date; in the caller's
    transaction.

    An infinite value (a sensor's glitch) is stored as missing, like NaN: no reading could
    mean it, and one would make every later sum of its device meaningless. A device whose
    rows are out of time order, or go back before its stored rows, is settled again from all
    its raw samples. With ``defer`` it is not: it is returned, and the caller
    settles the devices its calls returned once, with :func:`settle`, before the transaction
    ends (so an import written in many calls stays linear when it goes back in time).

    Returns:
        The devices left to settle: none unless ``defer``.
    """
    import numpy as np

    if not rows:
        return []
    _, t, device, *numbers, source, measured = zip(*rows, strict=True)
    t_s = _floats(t)
    values = [_floats(column) for column in numbers]  # power, energy, util, memory, temp
    if any(np.isinf(v).any() for v in values):
        for v in values:
            v[np.isinf(v)] = np.nan
        cells = zip(*(_nullable(v) for v in values), strict=True)
        rows = [(*row[:3], *cell, *row[8:10]) for row, cell in zip(rows, cells, strict=True)]
    columns = (*values[:3], np.array(measured, dtype=bool))
    by_device: dict[str, list[int]] = {}
    for i, name in enumerate(device):
        by_device.setdefault(str(name), []).append(i)
    states = load_states(conn, run_id, list(by_device))
    trap = np.full(len(rows), np.nan)
    ctr = np.full(len(rows), np.nan)
    resettle: list[str] = []
    updated: dict[str, DeviceState] = {}
    for name, listed in by_device.items():
        index = np.array(listed)
        t = t_s[index]
        state = states.get(name)
        if np.any(np.diff(t) < 0) or (state is not None and t[0] < state.t_last_s):
            resettle.append(name)
            continue
        if state is None:
            state = DeviceState(source=str(source[index[0]]), measured=True)
        trap[index], ctr[index], updated[name] = cumulate(state, t, *(c[index] for c in columns))
    conn.executemany(
        INSERT_SAMPLE,
        [
            (*row[:10], a, b)
            for row, a, b in zip(rows, _nullable(trap), _nullable(ctr), strict=True)
        ],
    )
    save_states(conn, run_id, updated)
    if resettle and not defer:
        settle(conn, run_id, resettle)
        return []
    return resettle


def copy_shifted(
    conn: sqlite3.Connection,
    schema: str,
    run_id: int,
    new_id: int,
    *,
    offset_s: float,
    devices: Mapping[str, str],
) -> None:
    """Copy run ``run_id``'s samples and device aggregates from the attached store ``schema``
    into ``main``'s run ``new_id``, their times shifted by ``offset_s`` and each device
    renamed as ``devices`` says (a device not named there is not copied); in the caller's
    transaction, inside SQLite.

    The cumulative energy on each row and the device totals hold as they are: shifting a
    device's times, or renaming it, changes none of its energy.
    """
    if not devices:
        return
    names = list(devices)
    case = "CASE device " + " ".join("WHEN ? THEN ?" for _ in names) + " END"
    pairs = [value for name in names for value in (name, devices[name])]
    marks = ", ".join("?" * len(names))
    columns = ("t_s", "device", *SAMPLE_COLUMNS[2:], "trap_j", "ctr_j")
    picked = ", ".join("t_s + ?" if c == "t_s" else case if c == "device" else c for c in columns)
    conn.execute(
        f"INSERT INTO main.samples (run_id, {', '.join(columns)})"
        f" SELECT ?, {picked} FROM {schema}.samples WHERE run_id = ? AND device IN ({marks})"
        " ORDER BY rowid",
        (new_id, offset_s, *pairs, run_id, *names),
    )
    state = ("device", *_STATE_COLUMNS)
    picked = ", ".join(
        case if c == "device" else f"{c} + ?" if c in _TIME_COLUMNS else c for c in state
    )
    shifts = [offset_s] * len(_TIME_COLUMNS)
    conn.execute(
        f"INSERT INTO main.device_energy (run_id, {', '.join(state)})"
        f" SELECT ?, {picked} FROM {schema}.device_energy WHERE run_id = ? AND device IN"
        f" ({marks})",
        (new_id, *pairs, *shifts, run_id, *names),
    )


def load_states(
    conn: sqlite3.Connection, run_id: int, devices: Sequence[str] | None = None
) -> dict[str, DeviceState]:
    """The stored aggregates of a run's devices (all, or those named)."""
    sql = f"SELECT device, {', '.join(_STATE_COLUMNS)} FROM device_energy WHERE run_id = ?"
    params: list[Any] = [run_id]
    if devices is not None:
        sql += f" AND device IN ({', '.join('?' * len(devices))})"
        params += list(devices)
    out: dict[str, DeviceState] = {}
    for device, source, measured, *rest in conn.execute(sql, params):
        values: dict[str, Any] = {
            k: (int(v) if k.endswith("rows") else _float(v))
            for k, v in zip(_STATE_COLUMNS[2:], rest, strict=True)
        }
        out[str(device)] = DeviceState(source=str(source), measured=bool(measured), **values)
    return out


def save_states(conn: sqlite3.Connection, run_id: int, states: Mapping[str, DeviceState]) -> None:
    """Write devices' aggregates (inserted, or replacing the stored ones)."""
    if not states:
        return
    columns = ("run_id", "device", *_STATE_COLUMNS)
    conn.executemany(
        f"INSERT OR REPLACE INTO device_energy ({', '.join(columns)})"
        f" VALUES ({', '.join('?' * len(columns))})",
        [
            (
                run_id,
                device,
                s.source,
                int(s.measured),
                *(
                    v if isinstance(v, int) else _sql(float(v))
                    for v in (getattr(s, c) for c in _STATE_COLUMNS[2:])
                ),
            )
            for device, s in states.items()
        ],
    )


_SETTLE_CHUNK = 100_000


def settle(conn: sqlite3.Connection, run_id: int, devices: Sequence[str] | None = None) -> None:
    """Compute again, from the raw samples, the aggregates of a run's devices (all, or those
    named); in the caller's transaction. Reads the rows in chunks: memory stays bounded."""
    where = "run_id = ?"
    params: list[Any] = [run_id]
    if devices is not None:
        where += f" AND device IN ({', '.join('?' * len(devices))})"
        params += list(devices)
    conn.execute(f"DELETE FROM device_energy WHERE {where}", params)
    cursor = conn.execute(
        "SELECT rowid, device, t_s, power_w, energy_j, util_pct, source, measured"
        f" FROM samples WHERE {where} ORDER BY device, t_s, rowid",
        params,
    )
    states: dict[str, DeviceState] = {}
    # The sums go to a table of their own while the cursor reads, then into the samples in one
    # statement: the rows a cursor reads must not change under it.
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS settled (row INTEGER PRIMARY KEY, trap_j REAL, ctr_j REAL)"
    )
    conn.execute("DELETE FROM temp.settled")
    while chunk := cursor.fetchmany(_SETTLE_CHUNK):
        conn.executemany("INSERT INTO temp.settled VALUES (?, ?, ?)", _settle_chunk(chunk, states))
    conn.execute(
        "UPDATE samples SET (trap_j, ctr_j) ="
        " (SELECT trap_j, ctr_j FROM temp.settled WHERE row = samples.rowid)"
        " WHERE rowid IN (SELECT row FROM temp.settled)"
    )
    conn.execute("DELETE FROM temp.settled")
    save_states(conn, run_id, states)


def _settle_chunk(
    chunk: list[tuple[Any, ...]], states: dict[str, DeviceState]
) -> list[tuple[int, float | None, float | None]]:
    """Each row's ``(rowid, trap_j, ctr_j)``; rows come by device, then time."""
    trap, ctr = _cumulated(chunk, states)
    return list(zip((row[0] for row in chunk), _nullable(trap), _nullable(ctr), strict=True))


def _cumulated(
    chunk: Sequence[Sequence[Any]], states: dict[str, DeviceState]
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's running energies ``trap_j`` and ``ctr_j`` (NaN where it has none).

    Rows are ``(rowid, device, t_s, power_w, energy_j, util_pct, source, measured, ...)``
    and come by device, then time; ``states`` holds each device's state before the chunk,
    and after it on return.
    """
    import numpy as np

    _, device, t, power, energy, util, source, measured = list(zip(*chunk, strict=True))[:8]
    t_s = _floats(t)
    columns = (_floats(power), _floats(energy), _floats(util), np.array(measured, dtype=bool))
    names = np.array(device, dtype=object)
    starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]]).tolist()
    trap = np.empty(len(chunk))
    ctr = np.empty(len(chunk))
    for start, stop in zip(starts, [*starts[1:], len(chunk)], strict=True):
        name = str(names[start])
        state = states.get(name) or DeviceState(source=str(source[start]), measured=True)
        rows = slice(start, stop)
        trap[rows], ctr[rows], states[name] = cumulate(
            state, t_s[rows], *(c[rows] for c in columns)
        )
    return trap, ctr


# The aggregates that are sums: rows written batch by batch add up in another order than one
# pass over them does, so these agree to a relative 1e-6; the others exactly.
_SUMS = frozenset({"trap_j", "ctr_j", "util_sum"})
_REL = 1e-6


def _agree(a: Any, b: Any, approx: bool) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if approx:
        return bool(abs(a - b) <= _REL * max(abs(b), 1.0))
    return bool(a == b)


def _gaps(given: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """How far apart two columns of running energies are, row by row (NaN in both: 0; in
    one only: infinite)."""
    import numpy as np

    gap: np.ndarray = np.abs(given - kept)
    missing = np.isnan(given), np.isnan(kept)
    gap[missing[0] & missing[1]] = 0.0
    gap[missing[0] ^ missing[1]] = np.inf
    return gap


def verify(conn: sqlite3.Connection, run_id: int) -> list[str]:
    """What differs between run ``run_id``'s stored aggregates (each device's state, each
    sample row's running energies) and the ones its samples give, computed again as
    :func:`settle` computes them, in chunks; empty where they agree. Only reads.

    Raises:
        sqlite3.Error: the rows cannot be read.
    """
    import numpy as np

    cursor = conn.execute(
        "SELECT rowid, device, t_s, power_w, energy_j, util_pct, source, measured, trap_j, ctr_j"
        " FROM samples WHERE run_id = ? ORDER BY device, t_s, rowid",
        (run_id,),
    )
    states: dict[str, DeviceState] = {}
    worst: dict[str, float] = {}  # each device's largest difference in a row's running energy
    rows_off: dict[str, int] = {}
    while chunk := cursor.fetchmany(_SETTLE_CHUNK):
        trap, ctr = _cumulated(chunk, states)
        kept_trap, kept_ctr = _floats(row[8] for row in chunk), _floats(row[9] for row in chunk)
        gap = np.fmax(_gaps(trap, kept_trap), _gaps(ctr, kept_ctr))
        off = np.flatnonzero(gap > 0.0)
        names = np.array([chunk[i][1] for i in off], dtype=object)
        for device in set(names.tolist()):
            here = gap[off[names == device]]
            worst[device] = max(worst.get(device, 0.0), float(here.max()))
            rows_off[device] = rows_off.get(device, 0) + len(here)
    stored = load_states(conn, run_id)
    problems: list[str] = []
    for device in sorted(set(stored) | set(states)):
        have, want = stored.get(device), states.get(device)
        if have is None or want is None:
            problems.append(f"{device}: " + ("no aggregates" if have is None else "no samples"))
            continue
        for name in _STATE_COLUMNS:
            a, b = getattr(have, name), getattr(want, name)
            if not _agree(a, b, name in _SUMS):
                problems.append(f"{device}: {name} {a!r} in its aggregates, {b!r} from its samples")
        if worst.get(device, 0.0) > _REL * max(abs(want.trap_j), abs(want.ctr_j), 1.0):
            problems.append(
                f"{device}: {rows_off[device]} sample row(s) carry a running energy that"
                f" differs from their samples' (by up to {worst[device]:.6g} J)"
            )
    return problems


#: Which cumulative energy to read: ``"energy"``, the device's energy as the kernel counts
#: it (its counter where it has one); ``"power"``, the trapezoid of its power readings.
Track = Literal["energy", "power"]


@dataclass(frozen=True)
class _Track:
    """Where a device's cumulative energy on one track is kept."""

    column: str  # the samples' column
    counter: bool  # interpolated as a counter (else as the trapezoid of power)
    t0_s: float  # its first row
    t1_s: float  # its last row
    total_j: float  # its value at the last row

    @classmethod
    def of(cls, state: DeviceState, track: Track) -> _Track | None:
        """The track of a device; None where it has no energy on it."""
        if track == "power":
            if not state.power_rows:
                return None
            return cls("trap_j", False, state.power_t0_s, state.power_t_s, state.trap_j)
        if math.isnan(state.energy_j):
            return None
        t0, t1 = state.span_s
        return cls("ctr_j" if state.counter else "trap_j", state.counter, t0, t1, state.energy_j)

    def clamped(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The energy at the ``times`` at or after its last row (NaN at the others); the
        positions of the others, in time order; and the times, none before its first row.

        As in the kernel, a time before the first row is taken at that row's instant, where
        the counter's steps between rows of that very instant already count.
        """
        import numpy as np

        at = np.maximum(times, self.t0_s)
        e = np.full(len(times), np.nan)
        e[at >= self.t1_s] = self.total_j
        inner = np.flatnonzero(at < self.t1_s)
        return e, inner[np.argsort(at[inner], kind="stable")], at


def energy_at(
    conn: sqlite3.Connection,
    run_id: int,
    states: Mapping[str, DeviceState],
    t_s: Sequence[float] | np.ndarray,
    *,
    track: Track = "energy",
) -> dict[str, np.ndarray]:
    """Each device's cumulative energy at the times ``t_s``, as
    :meth:`joulecast.energy.EnergyCurve.at` gives it (clamped to the device's counted span;
    NaN at a NaN time); devices without energy on ``track`` are left out.

    Each time inside a device's span costs two indexed reads: the rows around it, made
    inside SQLite a chunk of times per statement.
    """
    import numpy as np

    times = np.asarray(t_s, dtype=float)
    out: dict[str, np.ndarray] = {}
    for device, state in states.items():
        found = _Track.of(state, track)
        if found is None:
            continue
        e, inner, at = found.clamped(times)
        taus, back = np.unique(at[inner], return_inverse=True)
        around = _rows_around(conn, run_id, device, found.column, taus)
        if around:
            rows = np.array(around, dtype=float)  # None (no power) becomes NaN
            e[inner] = _between(found.counter, rows[:, :3], rows[:, 3:], taus)[back]
        out[device] = e
    return out


# Times looked up per statement by _rows_around: two parameters each, well under SQLite's
# limit on parameters, and few statements for many times.
_AROUND_CHUNK = 400


def _rows_around(
    conn: sqlite3.Connection, run_id: int, device: str, column: str, taus: np.ndarray
) -> list[tuple[Any, ...]]:
    """For each of the sorted ``taus``: the device's last row with ``column`` at or before it
    and its first such row after it, as (t_s, power_w, column) twice.

    Each time costs two indexed seeks, made inside SQLite a chunk of times per statement.
    """
    where = f"run_id = ? AND device = ? AND {column} IS NOT NULL"
    around: list[tuple[Any, ...]] = []
    for start in range(0, len(taus), _AROUND_CHUNK):
        chunk = taus[start : start + _AROUND_CHUNK].tolist()
        values = ", ".join("(?, ?)" for _ in chunk)
        sql = (
            f"WITH q(i, tau) AS (VALUES {values}), r AS (SELECT i, tau,"
            f" (SELECT rowid FROM samples WHERE {where} AND t_s <= q.tau"
            "  ORDER BY t_s DESC, rowid DESC LIMIT 1) AS b,"
            f" (SELECT rowid FROM samples WHERE {where} AND t_s > q.tau"
            "  ORDER BY t_s, rowid LIMIT 1) AS a FROM q)"
            f" SELECT r.tau, sb.t_s, sb.power_w, sb.{column}, sa.t_s, sa.power_w, sa.{column}"
            " FROM r LEFT JOIN samples sb ON sb.rowid = r.b LEFT JOIN samples sa ON sa.rowid = r.a"
            " ORDER BY r.i"
        )
        params: list[Any] = []
        for i, tau in enumerate(chunk):
            params += (i, tau)
        rows = conn.execute(sql, (*params, run_id, device, run_id, device)).fetchall()
        for tau, *row in rows:
            if row[0] is None or row[3] is None:  # the aggregates and the rows disagree
                raise sqlite3.DatabaseError(f"run {run_id}: {device} has no rows around {tau} s")
            around.append(tuple(row))
    return around


def energy_scan(
    conn: sqlite3.Connection,
    run_id: int,
    states: Mapping[str, DeviceState],
    t_s: Sequence[float] | np.ndarray,
    *,
    track: Track = "energy",
    chunk_rows: int = _SETTLE_CHUNK,
) -> dict[str, np.ndarray]:
    """:func:`energy_at` from one pass over the run's rows in time order, ``chunk_rows`` at a
    time (through the (run, time) index), instead of two reads per time and device: cheaper
    where the times are many for the rows. Memory holds one chunk and the answer.
    """
    import numpy as np

    times = np.asarray(t_s, dtype=float)
    out: dict[str, np.ndarray] = {}
    # Per device: its track, and the positions and times still to find, in time order.
    pending: dict[str, tuple[_Track, np.ndarray, np.ndarray]] = {}
    for device, state in states.items():
        found = _Track.of(state, track)
        if found is None:
            continue
        out[device], inner, at = found.clamped(times)
        if len(inner):
            pending[device] = (found, inner, at[inner])
    if not pending:
        return out
    cursor = conn.execute(
        "SELECT t_s, device, power_w, trap_j, ctr_j FROM samples WHERE run_id = ? AND t_s >= ?"
        " ORDER BY t_s, rowid",
        (run_id, min(found.t0_s for found, _, _ in pending.values())),
    )
    # Per device, its last row so far (t_s, power_w, cum_j): the row before the next chunk's.
    carry: dict[str, np.ndarray] = {}
    while pending and (chunk := cursor.fetchmany(chunk_rows)):
        t, of, power, trap, ctr = zip(*chunk, strict=True)
        names = np.array(of, dtype=object)
        columns = {"t_s": _floats(t), "power_w": _floats(power)}
        columns |= {"trap_j": _floats(trap), "ctr_j": _floats(ctr)}
        for name, (found, inner, tau) in list(pending.items()):
            mine = (names == name) & ~np.isnan(columns[found.column])
            rows = np.column_stack(
                [columns["t_s"][mine], columns["power_w"][mine], columns[found.column][mine]]
            )
            if name in carry:
                rows = np.vstack([carry[name], rows])
            if not len(rows):
                continue
            carry[name] = rows[-1:]
            before = np.searchsorted(rows[:, 0], tau, side="right") - 1
            done = int(np.count_nonzero(before + 1 < len(rows)))  # the times sorted: a prefix
            if done:
                below = before[:done]
                out[name][inner[:done]] = _between(
                    found.counter, rows[below], rows[below + 1], tau[:done]
                )
            if done == len(inner):
                del pending[name]
            else:
                pending[name] = (found, inner[done:], tau[done:])
    if pending:  # the aggregates and the rows disagree
        raise sqlite3.DatabaseError(f"run {run_id}: {sorted(pending)} lack rows after some times")
    return out


def _between(counter: bool, before: np.ndarray, after: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Cumulative energy at the times ``tau`` from the rows ``(t_s, power_w, cum_j)`` before
    and after each (NaN power: none read)."""
    import numpy as np

    t0, p0, c0 = before[:, 0], before[:, 1], before[:, 2]
    t1, p1, c1 = after[:, 0], after[:, 1], after[:, 2]
    frac = (tau - t0) / (t1 - t0)
    if counter:
        result: np.ndarray = c0 + (c1 - c0) * frac
        return result
    p0, p1 = np.nan_to_num(p0), np.nan_to_num(p1)
    p_tau = p0 + (p1 - p0) * frac
    result = c0 + (tau - t0) * (p0 + p_tau) / 2.0
    return result
