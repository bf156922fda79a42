"""Trace interchange: the neutral CSV format, nvidia-smi query logs, and export.

Neutral format (``joulecast import trace``, ``joulecast export``):

- ``power.csv``: ``t_s``, ``power_w`` and ``gpu_index`` (becomes ``gpu:N``) or ``device``;
  optional ``energy_j`` (cumulative counter), ``util_pct``, ``mem_used_mib``, ``temp_c``,
  ``source``, ``measured``. An empty ``power_w`` cell means no reading at that instant.
- ``phases.csv``: ``index``, ``start_s``, ``end_s``; optional ``kind`` (``epoch`` default,
  or ``step``), ``samples``. Same time base as ``power.csv``.

Parsing is strict and reports the first problem as one line naming the file, line and what
was expected; an import writes its run in one transaction, so a bad file leaves no run.
"""

from __future__ import annotations

import csv
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from joulecast.errors import InputError
from joulecast.inputs import MAX_WHOLE, capped_lines, finite, whole
from joulecast.outputs import write_atomic
from joulecast.records import (
    MAX_GPU_INDEX,
    MAX_T_S,
    Phase,
    PhaseKind,
    overlap_message,
    overlapping,
    reading_range,
)
from joulecast.store import SAMPLE_CHUNK_ROWS, SAMPLE_COLUMNS, Store, sample_frame

POWER_REQUIRED = ("t_s", "power_w")
OPTIONAL_NUMERIC = ("energy_j", "util_pct", "mem_used_mib", "temp_c")
#: Lines per chunk read by an import, unless told: memory holds one chunk (tens of MB).
IMPORT_CHUNK_ROWS = 50_000
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for each non-blank line, header included; lines are read up to
    :data:`joulecast.inputs.MAX_LINE_CHARS` characters each."""
    try:
        fh = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
    with fh:
        reader = csv.reader(capped_lines(fh, str(path)), skipinitialspace=True, strict=True)
        try:
            for fields in reader:
                if fields and any(f.strip() for f in fields):
                    yield reader.line_num, [f.strip() for f in fields]
        except csv.Error as exc:
            raise InputError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from exc


def _cell(path: Path, line: int, column: str) -> str:
    """Where a cell is, for an error message: the file, the line and the column."""
    return f"{path}: line {line}: column {column!r}"


def _value(
    path: Path,
    line: int,
    column: str,
    text: str,
    device: str,
    *,
    required: bool = False,
    name: str | None = None,
) -> float | None:
    """``text``, a cell of the sample column ``column`` (named ``name`` in the file), as a
    float in the physical range of ``device``'s readings (:func:`reading_range`); None for an
    empty cell unless ``required``."""
    name = column if name is None else name
    if text == "":
        if required:
            raise InputError(f"{_cell(path, line, name)} is empty, expected a number")
        return None
    lo, hi = reading_range(column, device)
    # Power and utilisation are bounded per kind of device: the message says which device.
    of = f" of {device}" if column in ("power_w", "util_pct") else ""
    return finite(text, _cell(path, line, name) + of, lo=lo, hi=hi)


def _seconds(path: Path, line: int, column: str, text: str) -> float:
    """``text``, a time in seconds, as a float within :data:`MAX_T_S` of 0."""
    if text == "":
        raise InputError(f"{_cell(path, line, column)} is empty, expected a number")
    return finite(text, _cell(path, line, column), lo=-MAX_T_S, hi=MAX_T_S)


def _header(path: Path, rows: Iterator[tuple[int, list[str]]], expected: str) -> list[str]:
    try:
        _, header = next(rows)
    except StopIteration:
        raise InputError(f"{path}: empty file, expected a header with {expected}") from None
    return [h.strip().lower() for h in header]


def _chunks(
    path: Path, records: Iterator[tuple[Any, ...]], chunk_rows: int, no_power: str
) -> Iterator[pd.DataFrame]:
    """``records`` (the sample columns) as frames of ``chunk_rows`` rows at most.

    The first frame is parsed before this returns, so that a bad header, an empty file or a
    bad line among the first rows raises here; the checks on the whole file (some power
    reading: ``no_power`` says what is missing) run before the last frame is given.
    """
    if chunk_rows < 1:
        raise InputError(f"chunk_rows: got {chunk_rows}, expected 1 or more")
    pending = next(records, None)
    if pending is None:
        raise InputError(f"{path}: no data rows after the header")

    def frames(pending: tuple[Any, ...] | None) -> Iterator[pd.DataFrame]:
        powered = False
        while pending is not None:
            rows = [pending, *itertools.islice(records, chunk_rows - 1)]
            pending = next(records, None)
            frame = sample_frame(rows)
            powered = powered or bool(frame["power_w"].notna().any())
            if pending is None and not powered:
                raise InputError(f"{path}: {no_power}")
            yield frame

    chunks = frames(pending)
    return itertools.chain([next(chunks)], chunks)


def read_trace(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Parse a neutral ``power.csv`` into the store's sample columns."""
    return pd.concat(iter_trace(path), ignore_index=True)


def iter_trace(
    path: str | os.PathLike[str], *, chunk_rows: int = IMPORT_CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """Parse a neutral ``power.csv`` ``chunk_rows`` rows at a time: frames of the store's
    sample columns, in the file's order.

    The header and the first chunk are parsed before this returns (their errors raise here);
    later lines are read as the frames are taken, so memory holds one chunk.

    Raises:
        InputError: The file is missing, not CSV, or a line is wrong (one line of text naming
            the file, the line and what was expected).
    """
    path = Path(path)
    return _chunks(path, _trace_records(path), chunk_rows, "no power_w values in any row")


def _trace_records(path: Path) -> Iterator[tuple[Any, ...]]:
    """The samples of a neutral ``power.csv``, one record of the sample columns per line."""
    rows = _rows(path)
    expected = "t_s, power_w and gpu_index or device"
    header = _header(path, rows, expected)
    for col in POWER_REQUIRED:
        if col not in header:
            raise InputError(f"{path}: line 1: missing column {col!r} (expected {expected})")
    if "gpu_index" not in header and "device" not in header:
        raise InputError(f"{path}: line 1: missing column 'gpu_index' or 'device'")
    pos = {name: i for i, name in enumerate(header)}
    last_t: dict[str, float] = {}
    for line, fields in rows:
        if len(fields) != len(header):
            raise InputError(
                f"{path}: line {line}: expected {len(header)} fields, got {len(fields)}"
            )
        if "device" in pos:
            device = fields[pos["device"]]
            if not device:
                raise InputError(f"{path}: line {line}: column 'device' is empty")
        else:
            text = fields[pos["gpu_index"]]
            index = whole(text, _cell(path, line, "gpu_index"), hi=MAX_GPU_INDEX)
            device = f"gpu:{index}"
        t = _value(path, line, "t_s", fields[pos["t_s"]], device, required=True)
        assert t is not None
        if device in last_t and t < last_t[device]:
            raise InputError(
                f"{path}: line {line}: t_s {t:g} goes backwards (previous {last_t[device]:g} "
                f"for {device}); expected non-decreasing times"
            )
        last_t[device] = t
        power = _value(path, line, "power_w", fields[pos["power_w"]], device)
        extra = [
            _value(path, line, c, fields[pos[c]], device) if c in pos else None
            for c in OPTIONAL_NUMERIC
        ]
        source = fields[pos["source"]] if "source" in pos and fields[pos["source"]] else "import"
        measured = True
        if "measured" in pos:
            flag = fields[pos["measured"]].lower()
            if flag not in _TRUE | _FALSE:
                raise InputError(
                    f"{path}: line {line}: column 'measured': {flag!r} is not true/false"
                )
            measured = flag in _TRUE
        yield (t, device, power, *extra, source, measured)


def read_phases(
    path: str | os.PathLike[str], *, time_origin: datetime | None = None
) -> list[Phase]:
    """Parse a ``phases.csv``; with ``time_origin``, ``start_time``/``end_time`` timestamps too.

    Raises:
        InputError: The file is missing or not such a file, a line is wrong, or two phases of
            one kind overlap (:func:`joulecast.records.overlapping`): one line naming the file
            and line.
    """
    path = Path(path)
    rows = _rows(path)
    expected = "index, start_s, end_s"
    header = _header(path, rows, expected)
    timed = time_origin is not None and {"start_time", "end_time"} <= set(header)
    needed = ("index", "start_time", "end_time") if timed else ("index", "start_s", "end_s")
    for col in needed:
        if col not in header:
            raise InputError(f"{path}: line 1: missing column {col!r} (expected {expected})")
    pos = {name: i for i, name in enumerate(header)}
    phases: list[Phase] = []
    lines: dict[tuple[str, int], int] = {}  # where each phase is
    for line, fields in rows:
        if len(fields) != len(header):
            raise InputError(
                f"{path}: line {line}: expected {len(header)} fields, got {len(fields)}"
            )
        where = _cell(path, line, "index")
        index = whole(fields[pos["index"]], where, lo=-MAX_WHOLE, hi=MAX_WHOLE)
        kind_text = fields[pos["kind"]].lower() if "kind" in pos else "epoch"
        try:
            kind = PhaseKind(kind_text or "epoch")
        except ValueError:
            raise InputError(
                f"{path}: line {line}: column 'kind': {kind_text!r} (expected epoch, step or test)"
            ) from None
        if timed:
            assert time_origin is not None
            start = _since(path, line, "start_time", fields[pos["start_time"]], time_origin)
            end = _since(path, line, "end_time", fields[pos["end_time"]], time_origin)
        else:
            start = _seconds(path, line, "start_s", fields[pos["start_s"]])
            end = _seconds(path, line, "end_s", fields[pos["end_s"]])
        if end < start:
            raise InputError(f"{path}: line {line}: end {end:g} is before start {start:g}")
        samples = None
        if "samples" in pos and fields[pos["samples"]]:
            samples = whole(fields[pos["samples"]], _cell(path, line, "samples"))
        if (kind.value, index) in lines:
            raise InputError(f"{path}: line {line}: {kind.value} {index} appears twice")
        lines[kind.value, index] = line
        phases.append(Phase(kind, index, start, end, samples))
    if not phases:
        raise InputError(f"{path}: no data rows after the header")
    found = overlapping(phases)
    if found is not None:
        first, second = (lines[p.kind.value, p.index] for p in found)
        message = overlap_message(*found, where_first=f" on line {first}")
        raise InputError(f"{path}: line {second}: {message}")
    return phases


def import_trace(
    store: Store,
    power: str | os.PathLike[str],
    phases: str | os.PathLike[str] | None = None,
    *,
    name: str | None = None,
    tags: dict[str, str] | None = None,
    chunk_rows: int = IMPORT_CHUNK_ROWS,
) -> int:
    """Import a neutral trace (and its phases) as a completed run; returns the run id.

    ``power`` is read ``chunk_rows`` lines at a time into one write transaction: memory does
    not grow with its length, and a bad line anywhere leaves no run. Phases reaching past the
    trace's span of time are clipped to it with a :class:`~joulecast.errors.JoulecastWarning`;
    one wholly outside it, or two of one kind that overlap, are refused
    (:meth:`Store.import_run`).
    """
    samples = iter_trace(power, chunk_rows=chunk_rows)
    marks = read_phases(phases) if phases is not None else []
    return store.import_run(
        samples=samples,
        phases=marks,
        phases_from=str(phases),
        name=name or Path(power).stem,
        tags=tags,
        hardware={"imported_from": str(power)},
    )


# -- nvidia-smi query logs -----------------------------------------------------------------

_TS_FORMATS = (
    "%Y/%m/%d %H:%M:%S.%f",
    "%Y/%m/%d %H:%M:%S",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S",
)
_NA = {"[n/a]", "n/a", "[not supported]", "not supported", "[unknown error]"}
_SMI_COLUMNS = {
    "power.draw": "power_w",
    "power.draw.instant": "power_w",
    "power.draw.average": "power_w",
    "utilization.gpu": "util_pct",
    "memory.used": "mem_used_mib",
    "temperature.gpu": "temp_c",
}
_SMI_IDS = ("index", "uuid", "pci.bus_id")


#: The earliest timestamp of a log: its first becomes the run's start as a Unix time, which
#: 0001/01/01 moved by a local time zone (to year 0) cannot be.
_EARLIEST = datetime(1970, 1, 1)


def _timestamp(path: Path, line: int, text: str) -> datetime:
    for fmt in _TS_FORMATS:
        try:
            ts = datetime.strptime(text, fmt)
        except ValueError:
            continue
        if ts < _EARLIEST:
            raise InputError(
                f"{path}: line {line}: {text!r} is before 1970 (expected a timestamp from "
                "1970/01/01 00:00:00 on)"
            )
        return ts
    raise InputError(
        f"{path}: line {line}: {text!r} is not a timestamp (expected YYYY/MM/DD HH:MM:SS.mmm)"
    )


def _since(path: Path, line: int, column: str, text: str, origin: datetime) -> float:
    """Seconds from ``origin`` to the timestamp ``text``, within :data:`MAX_T_S`."""
    seconds = (_timestamp(path, line, text) - origin).total_seconds()
    if not -MAX_T_S <= seconds <= MAX_T_S:
        raise InputError(
            f"{_cell(path, line, column)}: {text!r} is {seconds:.0f} s from the log's first "
            f"timestamp, expected at most {MAX_T_S:g} s"
        )
    return seconds


def _smi_value(
    path: Path, line: int, column: str, target: str, text: str, device: str
) -> float | None:
    if text.lower() in _NA or text == "":
        return None
    # "123.45 W", "45 %", "1024 MiB": the number is the first word.
    return _value(path, line, target, text.split()[0], device, name=column)


def read_nvidia_smi(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, datetime]:
    """Parse ``nvidia-smi --query-gpu=timestamp,...,power.draw,... --format=csv[,nounits]``.

    Returns the samples (``t_s`` from the first timestamp) and that first timestamp. GPUs are
    told apart by ``index``, ``uuid`` or ``pci.bus_id``; without any of them the log must hold
    one GPU.
    """
    chunks, first = iter_nvidia_smi(path)
    return pd.concat(chunks, ignore_index=True), first


def iter_nvidia_smi(
    path: str | os.PathLike[str], *, chunk_rows: int = IMPORT_CHUNK_ROWS
) -> tuple[Iterator[pd.DataFrame], datetime]:
    """:func:`read_nvidia_smi` ``chunk_rows`` rows at a time: frames of the samples in the
    log's order, and the log's first timestamp.

    The header and the first chunk are parsed before this returns (their errors raise here);
    later lines are read as the frames are taken, so memory holds one chunk.
    """
    path = Path(path)
    origin = _Origin()
    records = _smi_records(path, origin)
    chunks = _chunks(path, records, chunk_rows, "no power.draw values in any row")
    assert origin.first is not None  # the first chunk is parsed: the log has a data row
    return chunks, origin.first


@dataclass
class _Origin:
    """Where a log's time starts: its first timestamp, once read."""

    first: datetime | None = None


def _smi_records(path: Path, origin: _Origin) -> Iterator[tuple[Any, ...]]:
    """The samples of an nvidia-smi log, one record of the sample columns per line; the
    first timestamp goes to ``origin`` as it is read."""
    rows = _rows(path)
    expected = "timestamp and power.draw (nvidia-smi --format=csv with its header)"
    raw_header = _header(path, rows, expected)
    header = [h.split("[")[0].strip() for h in raw_header]
    if "timestamp" not in header or not any(
        h in _SMI_COLUMNS and _SMI_COLUMNS[h] == "power_w" for h in header
    ):
        missing = "timestamp" if "timestamp" not in header else "power.draw"
        raise InputError(f"{path}: line 1: missing column {missing!r} (expected {expected})")
    pos = {name: i for i, name in enumerate(header)}
    id_col = next((c for c in _SMI_IDS if c in pos), None)
    value_cols = [(h, _SMI_COLUMNS[h]) for h in header if h in _SMI_COLUMNS]
    last_t: dict[str, float] = {}
    last_ts_text: str | None = None
    devices: dict[str, str] = {}
    for line, fields in rows:
        if [f.lower() for f in fields] == raw_header:
            continue  # a header repeated by concatenated logs
        if len(fields) != len(header):
            raise InputError(
                f"{path}: line {line}: expected {len(header)} fields, got {len(fields)}"
            )
        ts_text = fields[pos["timestamp"]]
        ts = _timestamp(path, line, ts_text)
        if id_col is None:
            if ts_text == last_ts_text:
                raise InputError(
                    f"{path}: line {line}: timestamp {ts_text!r} repeats but the log has no "
                    "index, uuid or pci.bus_id column to tell GPUs apart; add index to --query-gpu"
                )
            key = "0"
        else:
            key = fields[pos[id_col]]
            if not key:
                raise InputError(f"{path}: line {line}: column {id_col!r} is empty")
        last_ts_text = ts_text
        if key not in devices:
            if id_col == "index":
                index = whole(key, _cell(path, line, "index"), hi=MAX_GPU_INDEX)
                devices[key] = f"gpu:{index}"
            else:
                devices[key] = f"gpu:{len(devices)}" if id_col else "gpu:0"
        device = devices[key]
        origin.first = first = origin.first or ts
        t = _since(path, line, "timestamp", ts_text, first)
        if device in last_t and t < last_t[device]:
            raise InputError(
                f"{path}: line {line}: timestamp {ts_text!r} goes backwards for {device}"
            )
        last_t[device] = t
        values: dict[str, float | None] = {}
        for column, target in value_cols:
            value = _smi_value(path, line, column, target, fields[pos[column]], device)
            if values.get(target) is None:
                values[target] = value
        yield (
            t,
            device,
            values.get("power_w"),
            None,
            values.get("util_pct"),
            values.get("mem_used_mib"),
            values.get("temp_c"),
            "nvidia-smi",
            True,
        )


def import_nvidia_smi(
    store: Store,
    log_path: str | os.PathLike[str],
    phases: str | os.PathLike[str] | None = None,
    *,
    name: str | None = None,
    tags: dict[str, str] | None = None,
    chunk_rows: int = IMPORT_CHUNK_ROWS,
) -> int:
    """Import an nvidia-smi CSV log as a completed run; returns the run id.

    Phases use seconds from the log's first timestamp (``start_s``/``end_s``) or timestamps
    (``start_time``/``end_time``) in nvidia-smi's format. The log is read ``chunk_rows``
    lines at a time into one write transaction, as :func:`import_trace` reads a trace.
    """
    samples, first = iter_nvidia_smi(log_path, chunk_rows=chunk_rows)
    marks = read_phases(phases, time_origin=first) if phases is not None else []
    return store.import_run(
        samples=samples,
        phases=marks,
        phases_from=str(phases),
        name=name or Path(log_path).stem,
        tags=tags,
        hardware={"imported_from": str(log_path)},
        started_at=first.timestamp(),
    )


# -- export --------------------------------------------------------------------------------

ExportFormat = Literal["csv", "parquet"]
_FLOATS = "%.9g"


def export_run(
    store: Store,
    run_id: int,
    out_dir: str | os.PathLike[str] = ".",
    *,
    format: ExportFormat = "csv",
    chunk_rows: int = SAMPLE_CHUNK_ROWS,
) -> list[Path]:
    """Write a run's samples and phases in the neutral format; returns the files written.

    Files: ``run-ID-power.csv`` and ``run-ID-phases.csv`` (or ``.parquet``), readable by
    ``joulecast import trace``; samples in time order. Each file appears whole or not at all.
    The samples are written ``chunk_rows`` at a time (:meth:`Store.iter_samples`): memory
    does not grow with the run's length.
    """
    if format not in ("csv", "parquet"):
        raise InputError(f"format {format!r} is not supported (expected csv or parquet)")
    out = Path(out_dir)
    if not out.is_dir():
        raise InputError(f"{out}: not a folder")
    phases = store.phases(run_id)
    phases = phases.drop(columns=["metrics"]).loc[
        :, ["index", "start_s", "end_s", "kind", "samples"]
    ]
    chunks = store.iter_samples(run_id, chunk_rows=chunk_rows)
    paths = [out / f"run-{run_id}-power.{format}", out / f"run-{run_id}-phases.{format}"]
    if format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise InputError(
                "Parquet export needs pyarrow: pip install 'joulecast[parquet]'"
            ) from exc
        write_atomic(paths[0], lambda p: _samples_parquet(chunks, p))
        write_atomic(paths[1], lambda p: phases.to_parquet(p, index=False))
    else:
        write_atomic(paths[0], lambda p: _samples_csv(chunks, p))
        write_atomic(paths[1], lambda p: phases.to_csv(p, index=False, float_format=_FLOATS))
    return paths


def _samples_csv(chunks: Iterator[pd.DataFrame], path: str) -> None:
    """Write the sample chunks to ``path`` as one CSV file (the header even without rows)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        empty = pd.DataFrame(columns=list(SAMPLE_COLUMNS))
        for chunk in itertools.chain([empty], chunks):
            chunk.to_csv(fh, header=chunk is empty, index=False, float_format=_FLOATS)


def _samples_parquet(chunks: Iterator[pd.DataFrame], path: str) -> None:
    """Write the sample chunks to ``path`` as one Parquet file, one row group per chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"device": pa.string(), "source": pa.string(), "measured": pa.bool_()}
    schema = pa.schema([(name, types.get(name, pa.float64())) for name in SAMPLE_COLUMNS])
    with pq.ParquetWriter(path, schema) as writer:
        for chunk in chunks:
            writer.write_table(pa.Table.from_pandas(chunk, schema=schema, preserve_index=False))
