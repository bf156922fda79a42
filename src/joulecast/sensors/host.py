"""Host load through psutil, and the modelled CPU and RAM power that follow from it.

Readings (all from the measured process tree: a root process and its descendants):

- ``process``: CPU % (100 = one core busy) and resident memory; no power; measured.
- ``ram``: RSS x :data:`RAM_W_PER_GB` (0.375 W per decimal GB, the paper's figure, taken from
  CodeCarbon's 3 W per 8 GB); modelled.
- ``cpu``: TDP x the tree's share of all logical cores; modelled; only when ``model_cpu`` is set,
  which :func:`joulecast.sensors.detect_sensors` does only where RAPL is not readable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable

import psutil

from joulecast.errors import SensorError, SensorUnavailable
from joulecast.inputs import CPU_TDP_ENV
from joulecast.records import Reading

log = logging.getLogger(__name__)

RAM_W_PER_GB = 0.375
DEFAULT_CPU_TDP_W = 85.0
_BYTES_PER_GB = 1e9
_BYTES_PER_MIB = 2.0**20


def cpu_tdp_w() -> float:
    """The CPU TDP used for the modelled CPU power: ``$JOULECAST_CPU_TDP_W`` or 85 W per socket."""
    text = os.environ.get(CPU_TDP_ENV)
    if text:
        try:
            value = float(text)
        except ValueError:
            raise SensorUnavailable(
                f"{CPU_TDP_ENV}={text!r} is not a number", fix=f"set {CPU_TDP_ENV} to watts"
            ) from None
        if value <= 0:
            raise SensorUnavailable(f"{CPU_TDP_ENV}={text!r} must be positive")
        return value
    return DEFAULT_CPU_TDP_W


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


class HostSensor:
    """psutil view of a process tree: load, RSS, and modelled RAM (and optionally CPU) power.

    The tree's membership is refreshed every ``tree_refresh_s`` (every 5 x ``tree_refresh_s``
    where the kernel lacks /proc/PID/task/TID/children and all of /proc must be scanned) and
    CPU/RSS at most every ``min_interval_s``; calls in between return nothing new.
    """

    name = "host"

    def __init__(
        self,
        pid: int | None = None,
        *,
        include_root: bool = True,
        model_cpu: bool = False,
        tdp_w: float | None = None,
        min_interval_s: float = 0.2,
        tree_refresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._root_pid = pid if pid is not None else os.getpid()
        try:
            self._root = psutil.Process(self._root_pid)
        except psutil.Error as exc:
            raise SensorUnavailable(f"process {self._root_pid} not found") from exc
        self._include_root = include_root
        self._model_cpu = model_cpu
        self._tdp_w = tdp_w if tdp_w is not None else (cpu_tdp_w() if model_cpu else 0.0)
        if tdp_w is not None:
            self._tdp_from = "argument"
        elif os.environ.get(CPU_TDP_ENV):
            self._tdp_from = CPU_TDP_ENV
        else:
            self._tdp_from = f"default; set {CPU_TDP_ENV} to your CPU's TDP"
        self._cores = psutil.cpu_count(logical=True) or 1
        self.min_interval_s = min_interval_s
        self._tree_refresh_s = tree_refresh_s
        self._clock = clock
        self._procs: dict[int, psutil.Process] = {}
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
                "tdp_from": self._tdp_from,
            }
        return facts

    def _refresh_tree(self, now: float) -> None:
        # Listing descendants through psutil reads every process on the machine; Linux's
        # /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN) costs only the tree's size, so it
        # is used where the kernel has it, and the full scan is done five times less often.
        fast = _proc_children_supported()
        period = self._tree_refresh_s if fast else 5 * self._tree_refresh_s
        # An empty tree (a command not started yet) is looked at again on every read.
        if self._procs and now - self._tree_at < period:
            return
        self._tree_at = now
        members: list[psutil.Process] = []
        try:
            if fast:
                for pid in _descendants(self._root_pid):
                    proc = self._procs.get(pid)
                    if proc is None:
                        with contextlib.suppress(psutil.Error):
                            proc = psutil.Process(pid)
                    if proc is not None:
                        members.append(proc)
            else:
                members = self._root.children(recursive=True)
        except psutil.NoSuchProcess:
            members = []
        except psutil.Error as exc:
            raise SensorError(f"cannot list children of process {self._root_pid}: {exc}") from exc
        if self._include_root:
            members.append(self._root)
        self._procs = {p.pid: self._procs.get(p.pid, p) for p in members}

    def read(self) -> list[Reading]:
        """Read the tree's CPU time and RSS; power of ``ram`` (and ``cpu``) from the model."""
        now = self._clock()
        if self._last_t is not None and now - self._last_t < self.min_interval_s:
            return []
        self._refresh_tree(now)
        cpu_s: dict[int, float] = {}
        rss = 0
        for pid, proc in list(self._procs.items()):
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
            except psutil.Error:
                del self._procs[pid]
                continue
            cpu_s[pid] = times.user + times.system
        util_pct: float | None = None
        if self._last_t is not None:
            # Only processes seen in both reads count, so a new child's past CPU time is not
            # charged to this interval.
            busy = sum(t - self._cpu_s[p] for p, t in cpu_s.items() if p in self._cpu_s)
            util_pct = max(0.0, 100.0 * busy / (now - self._last_t))
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
        """Nothing to release."""
        self._procs.clear()
