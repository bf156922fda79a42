"""The real GPU power traces shipped in ``tests/data/traces`` (provenance in ``tests/data/README.md``).

Each trace is a neutral ``<name>.power.csv`` with its ``<name>.phases.csv``, imported through
:func:`joulecast.traces.import_trace` like any user's trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from joulecast.store import Store
from joulecast.traces import import_trace

TRACES_DIR = Path(__file__).parent / "data" / "traces"


@dataclass(frozen=True)
class RealTrace:
    """One shipped trace: its name and the two files that hold it."""

    name: str
    power: Path
    phases: Path


def real_traces() -> list[RealTrace]:
    """The shipped traces, sorted by name; each has a power file and a phases file."""
    traces = []
    for power in sorted(TRACES_DIR.glob("*.power.csv")):
        name = power.name.removesuffix(".power.csv")
        phases = TRACES_DIR / f"{name}.phases.csv"
        if not phases.is_file():
            raise FileNotFoundError(f"{power} has no phases file {phases.name}")
        traces.append(RealTrace(name, power, phases))
    return traces


def real_trace(name: str) -> RealTrace:
    """The shipped trace called ``name``; a ``KeyError`` lists the names there are."""
    for trace in real_traces():
        if trace.name == name:
            return trace
    raise KeyError(f"no shipped trace {name!r}; there are {[t.name for t in real_traces()]}")


def import_real_trace(store: Store, name: str) -> int:
    """Import the shipped trace ``name`` (power and epochs) into ``store``; returns the run id."""
    trace = real_trace(name)
    return import_trace(store, trace.power, trace.phases, name=trace.name, tags={"trace": "real"})
