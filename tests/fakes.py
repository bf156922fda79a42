"""Fakes at the hardware boundary, and nothing above it.

- :class:`FakeNvml`: a stand-in for the ``pynvml`` module (nvidia-ml-py) with exactly the
  functions, constants and error classes :mod:`joulecast.sensors.nvml` uses. Structures
  (field values, PCI info, memory, utilization) are the real ``pynvml`` ctypes structures, so
  units and layouts are the library's own: power in mW, energy in mJ, memory in bytes.
- :func:`write_rapl_tree`: a powercap sysfs tree (``intel-rapl:N`` zones, µJ counters).
- :func:`write_fake_nvidia_smi`: an ``nvidia-smi`` executable for a temporary PATH.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pynvml

# float: constant; sequence: one item per read (the last repeats); callable: f(clock seconds).
Value = float | Sequence[float] | Callable[[float], float]

GARBAGE_UI = 0xDEADBEEF  # what an unsupported field's value holds: never to be read


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self, t_s: float = 1000.0) -> None:
        self.t_s = t_s

    def __call__(self) -> float:
        return self.t_s

    def advance(self, dt_s: float) -> float:
        """Move forward by ``dt_s`` seconds; the new time."""
        self.t_s += dt_s
        return self.t_s


def _value(source: Value, n: int, t_s: float) -> float:
    if callable(source):
        return float(source(t_s))
    if isinstance(source, int | float):
        return float(source)
    items = list(source)
    return float(items[min(n, len(items) - 1)])


# -- errors, shaped like pynvml's ---------------------------------------------------------------

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    """Like ``pynvml.NVMLError``: ``value`` is the NVML return code."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML error {self.value}")


class NVMLError_NotSupported(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_NOT_SUPPORTED)


class NVMLError_LibraryNotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_LIBRARY_NOT_FOUND)


class NVMLError_GpuIsLost(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_GPU_IS_LOST)


_ERROR_CLASSES: dict[int, type[NVMLError]] = {
    NVML_ERROR_NOT_SUPPORTED: NVMLError_NotSupported,
    NVML_ERROR_LIBRARY_NOT_FOUND: NVMLError_LibraryNotFound,
    NVML_ERROR_GPU_IS_LOST: NVMLError_GpuIsLost,
}


def nvml_error(code: int) -> NVMLError:
    """The exception pynvml raises for return code ``code``."""
    cls = _ERROR_CLASSES.get(code)
    return cls() if cls is not None else NVMLError(code)


# -- GPUs ---------------------------------------------------------------------------------------


@dataclass
class FakeGpu:
    """One GPU as NVML sees it. Watts and joules in, NVML's mW and mJ out.

    ``power_w`` is field 186 (instant power); ``average_power_w`` what
    ``nvmlDeviceGetPowerUsage`` returns (default: the same source). ``energy_mj`` is field 191
    (None: no counter, as before Volta). ``fail`` maps a pynvml function name to the return
    code it raises for this GPU. ``lost_after`` is the number of power reads
    (``nvmlDeviceGetFieldValues``/``nvmlDeviceGetPowerUsage`` calls) the GPU answers before it
    falls off the bus; from then on every call on it raises ``NVMLError_GpuIsLost``.
    """

    name: str = "NVIDIA A100-SXM4-40GB"
    uuid: str = "GPU-a1a1a1a1-0000-0000-0000-000000000000"
    pci_bus_id: str = "00000000:07:00.0"
    compute_capability: tuple[int, int] | None = (8, 0)
    architecture: int = 7  # NVML_DEVICE_ARCH_AMPERE
    power_w: Value = 100.0
    average_power_w: Value | None = None
    instant_power: bool = True
    energy_mj: Value | None = 0.0
    enforced_limit_mw: int | None = 400_000
    default_limit_mw: int | None = 400_000
    limit_constraints_mw: tuple[int, int] | None = (100_000, 400_000)
    memory_total_bytes: int = 40 * 2**30
    memory_used_bytes: int = 3 * 2**30
    util_pct: int = 50
    temperature_c: int = 45
    mig_uuids: tuple[str, ...] = ()
    lost_after: int | None = None
    lost: bool = False
    fail: dict[str, int] = field(default_factory=dict)
    field_returns: dict[int, int] = field(default_factory=dict)
    power_reads: int = 0
    _n_instant: int = 0
    _n_average: int = 0
    _n_energy: int = 0


# Ready-made GPUs (CUDA's "fastest first" ranks by compute capability).
def a100(**kw: Any) -> FakeGpu:
    """An Ampere A100: instant power and an energy counter."""
    return FakeGpu(**kw)


def rtx2080(**kw: Any) -> FakeGpu:
    """A Turing RTX 2080 (compute 7.5)."""
    base: dict[str, Any] = dict(
        name="NVIDIA GeForce RTX 2080", uuid="GPU-b2b2b2b2-0000-0000-0000-000000000000",
        pci_bus_id="00000000:01:00.0", compute_capability=(7, 5), architecture=6,
        enforced_limit_mw=215_000, default_limit_mw=215_000,
        limit_constraints_mw=(105_000, 240_000), memory_total_bytes=8 * 2**30,
    )
    base.update(kw)
    return FakeGpu(**base)


def gtx750ti(**kw: Any) -> FakeGpu:
    """A Maxwell GTX 750 Ti: no energy counter, no instant-power field, 1 s power only."""
    base: dict[str, Any] = dict(
        name="NVIDIA GeForce GTX 750 Ti", uuid="GPU-c3c3c3c3-0000-0000-0000-000000000000",
        pci_bus_id="00000000:02:00.0", compute_capability=(5, 0), architecture=3,
        instant_power=False, energy_mj=None, enforced_limit_mw=None, default_limit_mw=None,
        limit_constraints_mw=None, memory_total_bytes=2 * 2**30,
    )
    base.update(kw)
    return FakeGpu(**base)


@dataclass(frozen=True)
class _Handle:
    index: int


@dataclass(frozen=True)
class _MigHandle:
    parent: int
    uuid: str


class _FakeLibrary:
    """What the fakes of vendor libraries share: calls counted by function name, and the
    library's reference count of inits (``init_count``), with ``init_error`` the status an
    init fails with (None: it succeeds)."""

    def __init__(
        self,
        gpus: Iterable[Any],
        clock: Callable[[], float] | None,
        init_error: int | None,
    ) -> None:
        self.gpus = list(gpus)
        self.clock = clock if clock is not None else FakeClock()
        self.init_error = init_error
        self.init_count = 0
        self.calls: Counter[str] = Counter()

    def _enter(self, fn: str) -> None:
        raise NotImplementedError

    def _start(self, fn: str, error: Callable[[int], Exception]) -> None:
        self.calls[fn] += 1
        if self.init_error is not None:
            raise error(self.init_error)
        self.init_count += 1

    def _stop(self, fn: str) -> None:
        self._enter(fn)
        self.init_count -= 1


class FakeNvml(_FakeLibrary):
    """The parts of ``pynvml`` that joulecast uses, over a list of :class:`FakeGpu`.

    ``init_error`` makes ``nvmlInit`` raise (12: no driver). ``calls`` counts every call by
    function name; ``init_count`` is nvmlInit calls minus nvmlShutdown calls.
    """

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_GpuIsLost = NVMLError_GpuIsLost

    NVML_SUCCESS = NVML_SUCCESS
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_LIBRARY_NOT_FOUND = NVML_ERROR_LIBRARY_NOT_FOUND
    NVML_ERROR_GPU_IS_LOST = NVML_ERROR_GPU_IS_LOST
    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_FI_DEV_ENERGY = 191
    NVML_TEMPERATURE_GPU = 0

    def __init__(
        self,
        gpus: Iterable[FakeGpu] = (),
        *,
        clock: Callable[[], float] | None = None,
        init_error: int | None = None,
    ) -> None:
        super().__init__(gpus, clock, init_error)

    # -- plumbing -------------------------------------------------------------------------------

    def _enter(self, fn: str) -> None:
        self.calls[fn] += 1
        if self.init_count <= 0:
            raise nvml_error(NVML_ERROR_UNINITIALIZED)

    def _gpu(self, fn: str, handle: Any) -> FakeGpu:
        self._enter(fn)
        if not isinstance(handle, _Handle) or not 0 <= handle.index < len(self.gpus):
            raise nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[handle.index]
        if gpu.lost:
            raise nvml_error(NVML_ERROR_GPU_IS_LOST)
        if fn in gpu.fail:
            raise nvml_error(gpu.fail[fn])
        return gpu

    def _power_read(self, gpu: FakeGpu) -> None:
        if gpu.lost_after is not None and gpu.power_reads >= gpu.lost_after:
            gpu.lost = True
            raise nvml_error(NVML_ERROR_GPU_IS_LOST)
        gpu.power_reads += 1

    def lose(self, index: int) -> None:
        """Make GPU ``index`` fall off the bus now."""
        self.gpus[index].lost = True

    # -- library --------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self._start("nvmlInit", nvml_error)

    def nvmlShutdown(self) -> None:
        self._stop("nvmlShutdown")

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> _Handle | _MigHandle:
        self._enter("nvmlDeviceGetHandleByUUID")
        text = uuid.decode() if isinstance(uuid, bytes) else uuid
        for i, gpu in enumerate(self.gpus):
            if gpu.uuid == text:
                return _Handle(i)
            if text in gpu.mig_uuids:
                return _MigHandle(i, text)
        raise nvml_error(NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: Any) -> _Handle:
        self._enter("nvmlDeviceGetDeviceHandleFromMigDeviceHandle")
        if not isinstance(handle, _MigHandle):
            raise nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(handle.parent)

    # -- identity -------------------------------------------------------------------------------

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        if isinstance(handle, _MigHandle):
            self._enter("nvmlDeviceGetUUID")
            return handle.uuid
        return self._gpu("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetName(self, handle: Any) -> str:
        return self._gpu("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetPciInfo(self, handle: Any) -> pynvml.nvmlPciInfo_t:
        gpu = self._gpu("nvmlDeviceGetPciInfo", handle)
        info = pynvml.nvmlPciInfo_t()
        domain, bus, rest = gpu.pci_bus_id.split(":")
        info.domain, info.bus, info.device = int(domain, 16), int(bus, 16), int(rest[:2], 16)
        info.busId = info.busIdLegacy = gpu.pci_bus_id.encode()
        return info

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        gpu = self._gpu("nvmlDeviceGetCudaComputeCapability", handle)
        if gpu.compute_capability is None:
            raise nvml_error(NVML_ERROR_NOT_SUPPORTED)
        return gpu.compute_capability

    def nvmlDeviceGetArchitecture(self, handle: Any) -> int:
        return self._gpu("nvmlDeviceGetArchitecture", handle).architecture

    # -- power ----------------------------------------------------------------------------------

    def nvmlDeviceGetFieldValues(self, handle: Any, fieldIds: list[Any]) -> Any:
        gpu = self._gpu("nvmlDeviceGetFieldValues", handle)
        self._power_read(gpu)
        t_s = self.clock()
        values = (pynvml.c_nvmlFieldValue_t * len(fieldIds))()
        for fv, fid in zip(values, fieldIds, strict=True):
            fid, scope = fid if isinstance(fid, tuple) else (fid, 0)
            fv.fieldId, fv.scopeId = fid, scope
            fv.timestamp = int(t_s * 1e6)
            fv.nvmlReturn = NVML_ERROR_NOT_SUPPORTED
            fv.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
            fv.value.uiVal = GARBAGE_UI
            if fid == self.NVML_FI_DEV_POWER_INSTANT and gpu.instant_power:
                fv.nvmlReturn = gpu.field_returns.get(fid, NVML_SUCCESS)
                if fv.nvmlReturn == NVML_SUCCESS:
                    fv.value.uiVal = round(_value(gpu.power_w, gpu._n_instant, t_s) * 1000)
                    gpu._n_instant += 1
            elif fid == self.NVML_FI_DEV_ENERGY and gpu.energy_mj is not None:
                fv.nvmlReturn = gpu.field_returns.get(fid, NVML_SUCCESS)
                fv.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
                fv.value.ullVal = GARBAGE_UI << 20
                if fv.nvmlReturn == NVML_SUCCESS:
                    fv.value.ullVal = round(_value(gpu.energy_mj, gpu._n_energy, t_s))
                    gpu._n_energy += 1
        return values

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        gpu = self._gpu("nvmlDeviceGetPowerUsage", handle)
        self._power_read(gpu)
        source = gpu.average_power_w if gpu.average_power_w is not None else gpu.power_w
        mw = round(_value(source, gpu._n_average, self.clock()) * 1000)
        gpu._n_average += 1
        return mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return self._limit(self._gpu("nvmlDeviceGetEnforcedPowerLimit", handle).enforced_limit_mw)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: Any) -> int:
        gpu = self._gpu("nvmlDeviceGetPowerManagementDefaultLimit", handle)
        return self._limit(gpu.default_limit_mw)

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: Any) -> list[int]:
        gpu = self._gpu("nvmlDeviceGetPowerManagementLimitConstraints", handle)
        if gpu.limit_constraints_mw is None:
            raise nvml_error(NVML_ERROR_NOT_SUPPORTED)
        return list(gpu.limit_constraints_mw)

    @staticmethod
    def _limit(mw: int | None) -> int:
        if mw is None:
            raise nvml_error(NVML_ERROR_NOT_SUPPORTED)
        return mw

    # -- load -----------------------------------------------------------------------------------

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Any = None) -> Any:
        gpu = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        return pynvml.c_nvmlMemory_t(
            gpu.memory_total_bytes, gpu.memory_total_bytes - gpu.memory_used_bytes,
            gpu.memory_used_bytes,
        )

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        gpu = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return pynvml.c_nvmlUtilization_t(gpu.util_pct, gpu.util_pct // 2)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        gpu = self._gpu("nvmlDeviceGetTemperature", handle)
        if sensor != self.NVML_TEMPERATURE_GPU:
            raise nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        return gpu.temperature_c


# -- RAPL ---------------------------------------------------------------------------------------


@dataclass
class FakeRapl:
    """A powercap tree under ``root``; ``set_uj`` moves a zone's counter."""

    root: Path

    def set_uj(self, zone: str, value_uj: int) -> None:
        """Write ``value_uj`` to ``zone``'s energy_uj (zone: "intel-rapl:0" or "intel-rapl:0:0")."""
        self.zone(zone).joinpath("energy_uj").write_text(f"{value_uj}\n")

    def zone(self, zone: str) -> Path:
        """The folder of ``zone``."""
        parts = zone.split(":")
        if zone.startswith("intel-rapl:") and len(parts) == 3:
            return self.root / f"intel-rapl:{parts[1]}" / zone
        return self.root / zone


def _write_zone(folder: Path, name: str, energy_uj: int, max_uj: int) -> None:
    folder.mkdir(parents=True)
    (folder / "name").write_text(name + "\n")
    (folder / "energy_uj").write_text(f"{energy_uj}\n")
    (folder / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (folder / "enabled").write_text("1\n")


def write_rapl_tree(
    root: Path,
    *,
    packages: int = 1,
    dram: bool = True,
    psys: bool = False,
    mmio: bool = False,
    max_energy_range_uj: int = 262_143_328_850,
) -> FakeRapl:
    """A /sys/class/powercap look-alike under ``root``.

    Per package N: ``intel-rapl:N`` named ``package-N`` (counter 1e6·(N+1) µJ) with sub-zones
    ``intel-rapl:N:0`` = dram (2e5 µJ, when ``dram``), then ``core`` (5e5 µJ) and ``uncore``
    (7e5 µJ), which overlap the package and must be ignored. Sub-zones also appear at the top
    level as symlinks, as in sysfs. ``psys`` adds a platform zone after the packages; ``mmio`` an
    ``intel-rapl-mmio:0`` duplicate of package 0.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "intel-rapl").mkdir()
    (root / "intel-rapl" / "enabled").write_text("1\n")
    for n in range(packages):
        pkg = root / f"intel-rapl:{n}"
        _write_zone(pkg, f"package-{n}", 1_000_000 * (n + 1), max_energy_range_uj)
        subs = (["dram"] if dram else []) + ["core", "uncore"]
        for k, name in enumerate(subs):
            sub = pkg / f"intel-rapl:{n}:{k}"
            energy = {"dram": 200_000, "core": 500_000, "uncore": 700_000}[name]
            _write_zone(sub, name, energy, max_energy_range_uj)
            (root / sub.name).symlink_to(sub, target_is_directory=True)
    if psys:
        _write_zone(root / f"intel-rapl:{packages}", "psys", 9_000_000, max_energy_range_uj)
    if mmio:
        _write_zone(root / "intel-rapl-mmio:0", "package-0", 8_000_000, max_energy_range_uj)
    return FakeRapl(root)


# -- nvidia-smi ---------------------------------------------------------------------------------

LIST_QUERY = "--query-gpu=index,uuid,pci.bus_id,name,compute_cap"

_SMI_SCRIPT = '''#!{python}
"""Fake nvidia-smi: answers the GPU listing and streams rows for a -lms loop."""
import json, sys, time
cfg = json.load(open({config!r}))
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
loop_ms = None
for i, a in enumerate(args):
    if a.startswith(("-lms=", "--loop-ms=")):
        loop_ms = int(a.split("=", 1)[1])
    elif a in ("-lms", "--loop-ms"):
        loop_ms = int(args[i + 1])
if loop_ms is None:
    if {list_query!r} in args and "--format=csv,noheader,nounits" in args:
        if cfg["list_exit_code"]:
            print(cfg["list_error"])
            sys.exit(cfg["list_exit_code"])
        for line in cfg["listing"]:
            print(line)
        sys.exit(0)
    print("fake nvidia-smi: unexpected arguments", args, file=sys.stderr)
    sys.exit(2)
for row in cfg["rows"]:
    print(row, flush=True)
    time.sleep(loop_ms / 1000)
if cfg["exit_code"] is not None:
    sys.exit(cfg["exit_code"])
while True:
    time.sleep(0.05)
'''


@dataclass
class FakeSmi:
    """Where the fake nvidia-smi lives; ``calls()`` lists the argv of each run."""

    bin_dir: Path
    script: Path
    log: Path

    def calls(self) -> list[list[str]]:
        """The arguments of every invocation so far."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def smi_listing_line(index: int, gpu: FakeGpu) -> str:
    """One line of ``nvidia-smi --query-gpu=index,uuid,pci.bus_id,name,compute_cap``."""
    cc = ".".join(map(str, gpu.compute_capability)) if gpu.compute_capability else "[N/A]"
    return f"{index}, {gpu.uuid}, {gpu.pci_bus_id}, {gpu.name}, {cc}"


def smi_row(
    index: int, gpu: FakeGpu, power: str = "100.00", util: str = "50", mem_mib: str = "1024",
    temp: str = "45",
) -> str:
    """One streamed row: index, uuid, pci.bus_id, name, power.draw, util, memory.used, temp."""
    return f"{index}, {gpu.uuid}, {gpu.pci_bus_id}, {gpu.name}, {power}, {util}, {mem_mib}, {temp}"


def write_fake_nvidia_smi(
    folder: Path,
    gpus: Sequence[FakeGpu],
    rows: Sequence[str] = (),
    *,
    exit_code: int | None = None,
    list_exit_code: int = 0,
    list_error: str = "",
) -> FakeSmi:
    """Write an executable ``nvidia-smi`` into ``folder/bin``; put that folder on PATH to use it.

    The listing call prints one line per GPU (NVML index = position in ``gpus``), or
    ``list_error`` with ``list_exit_code``. A loop call (``-lms=N``) prints ``rows`` N ms apart,
    then exits with ``exit_code``, or stays alive until terminated when it is None.
    """
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    config, log = folder / "nvidia-smi.json", folder / "nvidia-smi.calls"
    config.write_text(json.dumps({
        "listing": [smi_listing_line(i, g) for i, g in enumerate(gpus)],
        "rows": list(rows),
        "exit_code": exit_code,
        "list_exit_code": list_exit_code,
        "list_error": list_error,
    }))
    script = bin_dir / "nvidia-smi"
    script.write_text(_SMI_SCRIPT.format(
        python=sys.executable, config=str(config), log=str(log), list_query=LIST_QUERY
    ))
    script.chmod(0o755)
    return FakeSmi(bin_dir, script, log)


def path_with(*folders: Path) -> str:
    """A PATH of ``folders`` only (so no real nvidia-smi is found)."""
    return os.pathsep.join(str(f) for f in folders)
