"""Host load of a process tree, and the modelled CPU and RAM power that follow from it.

Readings (all from the measured process tree: a root process and its descendants):

- ``process``: CPU % (100 = one core busy) and resident memory; no power; measured.
- ``ram``: RSS x :data:`RAM_W_PER_GB` (0.375 W per decimal GB, the paper's figure, taken from
  CodeCarbon's 3 W per 8 GB); modelled.
- ``cpu``: TDP x the tree's share of all logical cores; modelled; only when ``model_cpu`` is set,
  which :func:`joulecast.sensors.detect_sensors` does only where RAPL is not readable. The TDP
  is the machine's (:func:`cpu_tdp`): ``$JOULECAST_CPU_TDP_W``, else the shipped table's TDP
  of this CPU model (:mod:`joulecast.sensors.cpu_tdp`) times its sockets, else 85 W; the
  ``cpu`` facts say which, and the table row's source.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from joulecast.errors import InputError, SensorError, SensorUnavailable
from joulecast.inputs import CPU_TDP_ENV, finite
from joulecast.records import Reading
from joulecast.sensors.cpu_tdp import CPUINFO, lookup_cpu_tdp, read_cpuinfo

log = logging.getLogger(__name__)

RAM_W_PER_GB = 0.375
DEFAULT_CPU_TDP_W = 85.0
#: The largest CPU TDP a user may set (the largest server CPUs are about 500 W per socket).
MAX_CPU_TDP_W = 2000.0
_BYTES_PER_GB = 1e9
_BYTES_PER_MIB = 2.0**20
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class ModelledTdp:
    """The TDP the modelled CPU power uses, where it came from, and the facts behind it."""

    tdp_w: float
    tdp_from: str
    facts: dict[str, Any] = field(default_factory=dict)


def cpu_tdp(cpuinfo: Path | str = CPUINFO) -> ModelledTdp:
    """The machine's CPU TDP for the modelled CPU power: ``$JOULECAST_CPU_TDP_W``; else the
    shipped table's TDP of the CPU model ``cpuinfo`` names, times its sockets; else 85 W.

    Raises:
        SensorUnavailable: the variable is not a number of watts.
    """
    text = os.environ.get(CPU_TDP_ENV)
    if text:
        try:
            return ModelledTdp(
                finite(text, CPU_TDP_ENV, lo=0.0, hi=MAX_CPU_TDP_W, above=True), CPU_TDP_ENV
            )
        except InputError as exc:
            raise SensorUnavailable(str(exc), fix=f"set {CPU_TDP_ENV} to watts") from None
    info = read_cpuinfo(cpuinfo)
    row = lookup_cpu_tdp(info.model) if info.model else None
    if row is None:
        unknown = f"CPU model {info.model!r} not in the TDP table" if info.model else "no CPU model"
        return ModelledTdp(
            DEFAULT_CPU_TDP_W,
            f"default ({unknown}); set {CPU_TDP_ENV} to your CPU's TDP",
            {"cpu_model": info.model or None},
        )
    facts = {
        "cpu_model": info.model,
        "sockets": info.sockets,
        "tdp_per_socket_w": row.tdp_w,
        "tdp_table_model": row.model,
        "tdp_source": row.source,
    }
    return ModelledTdp(
        row.tdp_w * info.sockets,
        f"table: {row.model}, {row.tdp_w:g} W x {info.sockets} socket(s), {row.source}",
        facts,
    )


def cpu_tdp_w(cpuinfo: Path | str = CPUINFO) -> float:
    """The W of :func:`cpu_tdp`."""
    return cpu_tdp(cpuinfo).tdp_w


def _proc_children_supported() -> bool:
    return os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def _descendants(root: int) -> list[int]:
    """Descendant pids of ``root`` from /proc/PID/task/TID/children, breadth first."""
    found: list[int] = []
    queue = [root]
    while queue:
        pid = queue.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                    kids = [int(k) for k in fh.read().split()]
            except OSError:
                continue
            found.extend(kids)
            queue.extend(kids)
    return found


def _cpu_clock_id(pid: int) -> int:
    """The id of process ``pid``'s CPU-time clock (glibc's clock_getcpuclockid)."""
    import ctypes

    clock_id = ctypes.c_int()  # clockid_t
    err = ctypes.CDLL(None).clock_getcpuclockid(pid, ctypes.byref(clock_id))
    if err:
        raise OSError(err, os.strerror(err))
    return clock_id.value


class _ProcessClock:
    """One process's CPU time from its CPU-time clock, its RSS from its /proc/PID/statm.

    psutil reads /proc/PID/stat and statm, opening and closing each, on every call (about
    60 us); a clock_gettime and one pread of a kept-open statm cost a tenth of that, so the
    tree can be read on every tick. The clock counts nanoseconds, where /proc/PID/stat counts
    10 ms clock ticks, so the CPU % of a 10 ms interval means something. The open statm file
    follows the process it was opened for: once that process is gone its reads fail. It is
    read after the clock, so a CPU time is only kept when its process was still alive after
    it was read, never one of a process that reused the pid.
    """

    __slots__ = ("_clock_id", "_fd", "pid")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._clock_id = _cpu_clock_id(pid)
        self._fd: int | None = os.open(f"/proc/{pid}/statm", os.O_RDONLY)

    def usage(self) -> tuple[float, int]:
        """User + system CPU seconds and resident bytes; OSError once the process is gone."""
        if self._fd is None:
            raise ProcessLookupError(self.pid)
        cpu_s = time.clock_gettime(self._clock_id)
        data = os.pread(self._fd, 256, 0)  # size resident shared ..., in pages
        if not data:
            raise ProcessLookupError(self.pid)
        return cpu_s, int(data.split(None, 2)[1]) * _PAGE_BYTES

    def close(self) -> None:
        """Close the file (again: nothing)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _process_clocks_work(pid: int) -> bool:
    """Whether a :class:`_ProcessClock` can read process ``pid`` here."""
    try:
        _ProcessClock(pid).close()
    except (OSError, AttributeError, ImportError, TypeError):  # no /proc or no CPU clocks
        return False
    return True


class _PsutilProcess:
    """The same figures through psutil, where there is no /proc or no process CPU clock."""

    __slots__ = ("pid", "proc")

    def __init__(self, proc: psutil.Process) -> None:
        self.pid = proc.pid
        self.proc = proc

    def usage(self) -> tuple[float, int]:
        """User + system CPU seconds and resident bytes; psutil.Error once the process is gone."""
        with self.proc.oneshot():
            times = self.proc.cpu_times()
            return times.user + times.system, self.proc.memory_info().rss

    def close(self) -> None:
        """Nothing to release."""


_Member = _ProcessClock | _PsutilProcess
# What reading a process that has just exited may raise.
_GONE = (OSError, ValueError, IndexError, psutil.Error)


class HostSensor:
    """A process tree's load and RSS, and modelled RAM (and optionally CPU) power.

    Every read returns readings (CPU % from the second read on): the sensor keeps the
    monitor's interval, whatever it is. The tree's membership is refreshed every
    ``tree_refresh_s`` (every 5 x ``tree_refresh_s`` where the kernel lacks
    /proc/PID/task/TID/children and all of /proc must be scanned); each member's CPU time
    and RSS are read on every call (on Linux from its CPU-time clock and /proc/PID/statm,
    elsewhere through psutil, whose CPU time counts in clock ticks). ``min_interval_s`` > 0
    makes calls closer than that to the last read return nothing new.
    """

    name = "host"

    def __init__(
        self,
        pid: int | None = None,
        *,
        include_root: bool = True,
        model_cpu: bool = False,
        tdp_w: float | None = None,
        min_interval_s: float = 0.0,
        tree_refresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        cpuinfo: Path | str = CPUINFO,
    ) -> None:
        self._root_pid = pid if pid is not None else os.getpid()
        try:
            self._root = psutil.Process(self._root_pid)
        except psutil.Error as exc:
            raise SensorUnavailable(f"process {self._root_pid} not found") from exc
        self._include_root = include_root
        self._model_cpu = model_cpu
        if tdp_w is not None:
            self._tdp = ModelledTdp(tdp_w, "argument")
        else:
            self._tdp = cpu_tdp(cpuinfo) if model_cpu else ModelledTdp(0.0, "")
        self._tdp_w = self._tdp.tdp_w
        self._cores = psutil.cpu_count(logical=True) or 1
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._process_clocks = _process_clocks_work(self._root_pid)
        self._children_files = _proc_children_supported()
        # Listing descendants through psutil reads every process on the machine; Linux's
        # /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN) costs only the tree's size, so
        # it is used where the kernel has it, and the full scan is done five times less often.
        self._tree_period_s = tree_refresh_s * (1 if self._children_files else 5)
        self._procs: dict[int, _Member] = {}
        self._tree_at = -float("inf")
        self._cpu_s: dict[int, float] = {}
        self._last_t: float | None = None

    def devices(self) -> list[str]:
        """``process``, ``ram``, and ``cpu`` when CPU power is modelled."""
        return ["process", "ram", *(["cpu"] if self._model_cpu else [])]

    def describe(self) -> dict[str, dict[str, object]]:
        """Static facts: the model constants used and the core count."""
        facts: dict[str, dict[str, object]] = {
            "ram": {"model": "rss_gb x w_per_gb", "w_per_gb": RAM_W_PER_GB},
            "process": {"pid": self._root_pid, "logical_cores": self._cores},
        }
        if self._model_cpu:
            facts["cpu"] = {
                "model": "tdp_w x tree_cpu_share",
                "tdp_w": self._tdp_w,
                "tdp_from": self._tdp.tdp_from,
                **self._tdp.facts,
            }
        return facts

    def _member(self, pid: int, proc: psutil.Process | None = None) -> _Member | None:
        """The member for ``pid``: the one already followed, else a new one (None: gone)."""
        member = self._procs.get(pid)
        if member is not None:
            return member
        try:
            if self._process_clocks:
                return _ProcessClock(pid)
            return _PsutilProcess(proc if proc is not None else psutil.Process(pid))
        except _GONE:
            return None

    def _refresh_tree(self, now: float) -> None:
        self._tree_at = now
        found: list[tuple[int, psutil.Process | None]] = []
        try:
            if self._children_files:
                found = [(pid, None) for pid in _descendants(self._root_pid)]
            else:
                found = [(p.pid, p) for p in self._root.children(recursive=True)]
        except psutil.NoSuchProcess:
            found = []
        except psutil.Error as exc:
            raise SensorError(f"cannot list children of process {self._root_pid}: {exc}") from exc
        if self._include_root:
            found.append((self._root_pid, self._root))
        procs: dict[int, _Member] = {}
        for pid, proc in found:
            member = self._member(pid, proc)
            if member is not None:
                procs[pid] = member
        for pid, member in self._procs.items():
            if procs.get(pid) is not member:
                member.close()
        self._procs = procs

    def read(self) -> list[Reading]:
        """Read the tree's CPU time and RSS; power of ``ram`` (and ``cpu``) from the model."""
        now = self._clock()
        last_t = self._last_t
        if last_t is not None and now - last_t < self.min_interval_s:
            return []
        # An empty tree (a command not started yet) is looked at again on every read.
        if not self._procs or now - self._tree_at >= self._tree_period_s:
            self._refresh_tree(now)
        before = self._cpu_s
        cpu_s: dict[int, float] = {}
        rss = 0
        busy_s = 0.0
        gone: list[int] = []
        for pid, member in self._procs.items():
            try:
                cpu, mem = member.usage()
            except _GONE:
                gone.append(pid)
                continue
            cpu_s[pid] = cpu
            rss += mem
            # Only processes seen in both reads count, so a new child's past CPU time is not
            # charged to this interval.
            if pid in before:
                busy_s += cpu - before[pid]
        for pid in gone:
            self._procs.pop(pid).close()
        util_pct: float | None = None
        if last_t is not None and now > last_t:
            util_pct = max(0.0, 100.0 * busy_s / (now - last_t))
        self._cpu_s = cpu_s
        self._last_t = now
        readings = [
            Reading(now, "process", None, "psutil", True, None, util_pct, rss / _BYTES_PER_MIB),
            Reading(now, "ram", rss / _BYTES_PER_GB * RAM_W_PER_GB, "ram-model", False),
        ]
        if self._model_cpu and util_pct is not None:
            share = min(1.0, util_pct / (100.0 * self._cores))
            readings.append(
                Reading(now, "cpu", self._tdp_w * share, "tdp-model", False, None, util_pct)
            )
        return readings

    def close(self) -> None:
        """Close the /proc files held open."""
        for member in self._procs.values():
            member.close()
        self._procs.clear()
