"""The TDP of a CPU by its model name: the shipped table ``cpu_tdp.csv``, read offline.

One row per CPU model common on training hosts (Intel Xeon and Core, AMD EPYC, Ryzen and
Threadripper): the TDP per socket in W as the vendor's specification page gives it (Intel's
"TDP", or "Processor Base Power" for Core 12th generation and later; AMD's "Default TDP"),
and that page's URL. It feeds the modelled CPU power (:mod:`joulecast.sensors.host`) only
where RAPL cannot be read.

A model name as ``/proc/cpuinfo`` writes it ("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz",
"AMD EPYC 7742 64-Core Processor") is matched by :func:`lookup_cpu_tdp`: both names are
normalised (lower case; vendor names, trademarks, "CPU", "Processor", core counts and the
clock dropped) and the longest table model found in the name as whole words wins, so
"EPYC 7742" does not match an "EPYC 7742P" and "Core i9-12900K" not an "i9-12900KF".
"""

from __future__ import annotations

import csv
import functools
import io
import platform
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from joulecast.inputs import finite

#: Where Linux describes the CPUs.
CPUINFO = Path("/proc/cpuinfo")
#: The shipped table, beside this module.
SHIPPED = "cpu_tdp.csv"
#: The largest TDP of one socket the table may hold (server CPUs reach about 500 W).
MAX_SOCKET_TDP_W = 1000.0

_NOISE = re.compile(
    r"\(r\)|\(tm\)|®|™|\bintel\b|\bamd\b|\bcpu\b|\bprocessor\b|\b\d+-cores?\b|@\s*[\d.]+\s*ghz"
)


@dataclass(frozen=True)
class CpuTdp:
    """One row of the table: the model as the table names it, its TDP per socket, the URL."""

    model: str
    tdp_w: float
    source: str


@dataclass(frozen=True)
class CpuInfo:
    """This machine's CPU model name (empty where unknown) and number of sockets."""

    model: str
    sockets: int


def normalise(name: str) -> str:
    """``name`` in lower case without vendor names, trademarks, core counts or clock."""
    return " ".join(_NOISE.sub(" ", name.lower()).split())


@functools.cache
def cpu_tdp_table() -> tuple[CpuTdp, ...]:
    """The shipped table's rows."""
    text = resources.files("joulecast.sensors").joinpath(SHIPPED).read_text(encoding="utf-8")
    rows = []
    for line, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        what = f"{SHIPPED} line {line} tdp_w"
        tdp_w = finite(row["tdp_w"], what, lo=0.0, hi=MAX_SOCKET_TDP_W, above=True)
        rows.append(CpuTdp(row["model"].strip(), tdp_w, row["source"].strip()))
    return tuple(rows)


@functools.cache
def _patterns() -> tuple[tuple[re.Pattern[str], CpuTdp], ...]:
    # Longest first: the first match is the most specific model.
    rows = sorted(cpu_tdp_table(), key=lambda r: -len(normalise(r.model)))
    return tuple(
        (re.compile(rf"(?<![\w+]){re.escape(normalise(r.model))}(?![\w+])"), r) for r in rows
    )


def lookup_cpu_tdp(model_name: str) -> CpuTdp | None:
    """The table's row for a CPU model name as ``/proc/cpuinfo`` writes it; None if none."""
    name = normalise(model_name)
    return next((row for pattern, row in _patterns() if pattern.search(name)), None)


def read_cpuinfo(path: Path | str = CPUINFO) -> CpuInfo:
    """The CPU model and the number of sockets (distinct ``physical id``) from ``path``;
    elsewhere than Linux, Python's name for the processor and one socket."""
    model, sockets = "", set()
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "physical id":
                    sockets.add(value.strip())
    except OSError:
        model = platform.processor()
    return CpuInfo(model, max(1, len(sockets)))
