"""Fakes at the hardware boundary, and nothing above it.

- :class:`FakeNvml`: a stand-in for the ``pynvml`` module (nvidia-ml-py) with exactly the
  functions, constants and error classes :mod:`joulecast.sensors.nvml` and
  :mod:`joulecast.study.powercap` use (power limits and locked clocks too). Structures
  (field values, PCI info, memory, utilization) are the real ``pynvml`` ctypes structures, so
  units and layouts are the library's own: power in mW, energy in mJ, memory in bytes.
- :class:`FakeAmdSmi`: a stand-in for the ``amdsmi`` module (ROCm's AMD SMI) with the
  functions, enums and exceptions :mod:`joulecast.sensors.amd` uses, answering as the real
  one does: dicts of W, µJ ticks and MiB, ``"N/A"`` for what a GPU lacks, and
  ``AmdSmiLibraryException(code)`` for errors.
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
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
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


class NVMLError_NoPermission(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_NO_PERMISSION)


class NVMLError_LibraryNotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_LIBRARY_NOT_FOUND)


class NVMLError_GpuIsLost(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_GPU_IS_LOST)


_ERROR_CLASSES: dict[int, type[NVMLError]] = {
    NVML_ERROR_NOT_SUPPORTED: NVMLError_NotSupported,
    NVML_ERROR_NO_PERMISSION: NVMLError_NoPermission,
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
    code it raises for this GPU. ``enforced_limit_mw`` is also the power management limit
    ``nvmlDeviceSetPowerManagementLimit`` sets (no other limiter in the fake);
    ``locked_clocks_mhz`` the graphics clock range ``nvmlDeviceSetGpuLockedClocks`` locked
    (None: not locked); ``max_clock_mhz`` the graphics clock's maximum (None: not supported,
    nor are locked clocks). ``lost_after`` is the number of power reads
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
    locked_clocks_mhz: tuple[int, int] | None = None
    max_clock_mhz: int | None = 1410
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
        limit_constraints_mw=None, memory_total_bytes=2 * 2**30, max_clock_mhz=None,
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
    function name; ``init_count`` is nvmlInit calls minus nvmlShutdown calls. ``admin``
    False: setting a power limit or clocks raises ``NVMLError_NoPermission``, as for a user
    who is not root. ``changes`` lists every setting made, ``(function, uuid, value)``.
    ``state_path``: a JSON file that holds each GPU's power limit and locked clocks, read at
    construction and written at each change, so a GPU set by one process (a runner killed
    afterwards) is found set by the next.
    """

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_NoPermission = NVMLError_NoPermission
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_GpuIsLost = NVMLError_GpuIsLost

    NVML_SUCCESS = NVML_SUCCESS
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_NO_PERMISSION = NVML_ERROR_NO_PERMISSION
    NVML_ERROR_LIBRARY_NOT_FOUND = NVML_ERROR_LIBRARY_NOT_FOUND
    NVML_ERROR_GPU_IS_LOST = NVML_ERROR_GPU_IS_LOST
    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_FI_DEV_ENERGY = 191
    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_GRAPHICS = 0

    def __init__(
        self,
        gpus: Iterable[FakeGpu] = (),
        *,
        clock: Callable[[], float] | None = None,
        init_error: int | None = None,
        admin: bool = True,
        state_path: Path | None = None,
    ) -> None:
        super().__init__(gpus, clock, init_error)
        self.admin = admin
        self.changes: list[tuple[str, str, Any]] = []
        self.state_path = state_path
        if state_path is not None and state_path.exists():
            state = json.loads(state_path.read_text())
            for gpu in self.gpus:
                if gpu.uuid in state:
                    gpu.enforced_limit_mw = state[gpu.uuid]["limit_mw"]
                    clocks = state[gpu.uuid]["locked_clocks_mhz"]
                    gpu.locked_clocks_mhz = tuple(clocks) if clocks else None

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

    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int:
        gpu = self._gpu("nvmlDeviceGetPowerManagementLimit", handle)
        return self._limit(gpu.enforced_limit_mw)

    def nvmlDeviceSetPowerManagementLimit(self, handle: Any, limit: int) -> None:
        fn = "nvmlDeviceSetPowerManagementLimit"
        gpu = self._gpu(fn, handle)
        if gpu.limit_constraints_mw is None:
            raise nvml_error(NVML_ERROR_NOT_SUPPORTED)
        if not self.admin:
            raise nvml_error(NVML_ERROR_NO_PERMISSION)
        low, high = gpu.limit_constraints_mw
        if not isinstance(limit, int) or not low <= limit <= high:
            raise nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        gpu.enforced_limit_mw = limit
        self._changed(fn, gpu, limit)

    # -- clocks ---------------------------------------------------------------------------------

    def nvmlDeviceGetMaxClockInfo(self, handle: Any, type: int) -> int:
        gpu = self._gpu("nvmlDeviceGetMaxClockInfo", handle)
        if type != self.NVML_CLOCK_GRAPHICS or gpu.max_clock_mhz is None:
            raise nvml_error(NVML_ERROR_NOT_SUPPORTED)
        return gpu.max_clock_mhz

    def nvmlDeviceSetGpuLockedClocks(
        self, handle: Any, minGpuClockMHz: int, maxGpuClockMHz: int
    ) -> None:
        fn = "nvmlDeviceSetGpuLockedClocks"
        gpu = self._gpu(fn, handle)
        if gpu.max_clock_mhz is None:
            raise nvml_error(NVML_ERROR_NOT_SUPPORTED)
        if not self.admin:
            raise nvml_error(NVML_ERROR_NO_PERMISSION)
        if not 0 < minGpuClockMHz <= maxGpuClockMHz:
            raise nvml_error(NVML_ERROR_INVALID_ARGUMENT)
        gpu.locked_clocks_mhz = (minGpuClockMHz, maxGpuClockMHz)
        self._changed(fn, gpu, gpu.locked_clocks_mhz)

    def nvmlDeviceResetGpuLockedClocks(self, handle: Any) -> None:
        fn = "nvmlDeviceResetGpuLockedClocks"
        gpu = self._gpu(fn, handle)
        if gpu.max_clock_mhz is None:
            raise nvml_error(NVML_ERROR_NOT_SUPPORTED)
        if not self.admin:
            raise nvml_error(NVML_ERROR_NO_PERMISSION)
        gpu.locked_clocks_mhz = None
        self._changed(fn, gpu, None)

    def _changed(self, fn: str, gpu: FakeGpu, value: Any) -> None:
        self.changes.append((fn, gpu.uuid, value))
        if self.state_path is not None:
            state = {
                g.uuid: {"limit_mw": g.enforced_limit_mw, "locked_clocks_mhz": g.locked_clocks_mhz}
                for g in self.gpus
            }
            self.state_path.write_text(json.dumps(state))

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


# -- AMD SMI ------------------------------------------------------------------------------------

AMDSMI_STATUS_INVAL = 1
AMDSMI_STATUS_NOT_SUPPORTED = 2
AMDSMI_STATUS_NOT_FOUND = 31
AMDSMI_STATUS_INIT_ERROR = 18
AMDSMI_STATUS_DRIVER_NOT_LOADED = 34

_AMD_MESSAGES = {
    AMDSMI_STATUS_INVAL: "AMDSMI_STATUS_INVAL - Invalid parameters",
    AMDSMI_STATUS_NOT_SUPPORTED: "AMDSMI_STATUS_NOT_SUPPORTED - Feature not supported",
    AMDSMI_STATUS_INIT_ERROR: "AMDSMI_STATUS_INIT_ERROR - Initialization error",
    AMDSMI_STATUS_NOT_FOUND: "AMDSMI_STATUS_NOT_FOUND - Device Not found",
}


class AmdSmiException(Exception):
    """Like ``amdsmi.AmdSmiException``: the base of the library's exceptions."""


class AmdSmiLibraryException(AmdSmiException):
    """Like ``amdsmi.AmdSmiLibraryException``: a status code from the C library."""

    def __init__(self, err_code: int) -> None:
        err_code = abs(err_code)
        super().__init__(err_code)
        self.err_code = err_code
        self.err_info = _AMD_MESSAGES.get(
            err_code, "AMDSMI_STATUS_UNKNOWN_ERROR - An unknown error occurred"
        )

    def __str__(self) -> str:
        return f"An error occured with code: {self.err_code}({self.err_info})"

    def get_error_code(self) -> int:
        return self.err_code


class _AmdTemperatureType:
    EDGE = 0
    HOTSPOT = 1
    JUNCTION = 1
    VRAM = 2


class _AmdTemperatureMetric:
    CURRENT = 0


#: The keys of ``amdsmi_get_power_info`` by amdsmi version: 5.x (MI200 and older only),
#: 6.x, and 7.x (which adds ``socket_power``).
POWER_INFO_KEYS = {
    "rocm5": ("average_socket_power", "gfx_voltage", "soc_voltage", "mem_voltage", "power_limit"),
    "rocm6": (
        "current_socket_power", "average_socket_power", "gfx_voltage", "soc_voltage",
        "mem_voltage", "power_limit",
    ),
    "rocm7": (
        "socket_power", "current_socket_power", "average_socket_power", "gfx_voltage",
        "soc_voltage", "mem_voltage", "power_limit",
    ),
}


@dataclass
class FakeAmdGpu:
    """One AMD GPU (a die, or a partition) as AMD SMI sees it. Watts and joules in.

    ``power_w`` fills the keys ``power_keys`` of the power info, whose keys are those of
    ``api`` (a version of amdsmi); the other keys read "N/A", all of them where ``power_w``
    is None (a die without power of its own). ``energy_j`` is the accumulated energy, read
    out as ticks of ``counter_resolution_uj`` under ``energy_key`` (``"energy_accumulator"``,
    amdsmi 6.2.1 and later; ``"power"`` before), kept in ``counter_bits`` bits (older firmware
    accumulates in 32); None: no counter. ``fail`` maps a function name to the status code it
    raises.
    """

    name: str = "AMD Instinct MI300X"
    uuid: str = "a1ff74a1-0000-1000-80ad-000000000000"
    hip_uuid: str = "GPU-a1a1a1a1a1a1a1a1"
    bdf: str = "0000:0c:00.0"
    hip_id: int | None = None
    oam_id: int | str = "N/A"
    power_w: Value | None = 300.0
    power_keys: tuple[str, ...] = ("current_socket_power",)
    api: str = "rocm6"
    energy_j: Value | None = 0.0
    counter_resolution_uj: float = 15.259
    energy_key: str = "energy_accumulator"
    counter_bits: int = 64
    power_cap_uw: int | None = 750_000_000
    vram_total_mib: int = 196_592
    vram_used_mib: int = 2_048
    gfx_activity: int | str = 50
    hotspot_c: int = 45
    fail: dict[str, int] = field(default_factory=dict)
    _n_power: int = 0
    _n_energy: int = 0


def mi300x(**kw: Any) -> FakeAmdGpu:
    """An MI300X: instant power (``current_socket_power``), an energy counter."""
    return FakeAmdGpu(**kw)


def mi250x_gcd(index: int, **kw: Any) -> FakeAmdGpu:
    """GCD ``index`` of an MI250X in OAM ``index // 2``, as AMD SMI 6 answers: the even GCD
    reports the package's average power (both dies) and energy; the odd one neither."""
    even = index % 2 == 0
    base: dict[str, Any] = dict(
        name="AMD Instinct MI250X", uuid=f"{index:02x}ff740c-0000-1000-8000-000000000000",
        hip_uuid=f"GPU-{index:02x}c2c2c2c2c2c2c2", bdf=f"0000:{0x29 + index:02x}:00.0",
        oam_id=index // 2, power_w=500.0 if even else None, power_keys=("average_socket_power",),
        energy_j=0.0 if even else None, power_cap_uw=500_000_000 if even else None,
        vram_total_mib=65_520,
    )
    base.update(kw)
    return FakeAmdGpu(**base)


@dataclass(frozen=True)
class _AmdHandle:
    index: int


class FakeAmdSmi(_FakeLibrary):
    """The parts of ``amdsmi`` that joulecast uses, over a list of :class:`FakeAmdGpu`.

    ``init_error`` makes ``amdsmi_init`` raise that status. ``enumeration`` False leaves out
    ``amdsmi_get_gpu_enumeration_info`` (older amdsmi). ``calls`` counts calls by function
    name; ``init_count`` is amdsmi_init calls minus amdsmi_shut_down calls.
    """

    AmdSmiException = AmdSmiException
    AmdSmiLibraryException = AmdSmiLibraryException
    AmdSmiTemperatureType = _AmdTemperatureType
    AmdSmiTemperatureMetric = _AmdTemperatureMetric

    def __init__(
        self,
        gpus: Iterable[FakeAmdGpu] = (),
        *,
        clock: Callable[[], float] | None = None,
        init_error: int | None = None,
        enumeration: bool = True,
    ) -> None:
        super().__init__(gpus, clock, init_error)
        if enumeration:
            self.amdsmi_get_gpu_enumeration_info = self._enumeration_info

    def _enter(self, fn: str) -> None:
        self.calls[fn] += 1
        if self.init_count <= 0:
            raise AmdSmiLibraryException(32)  # AMDSMI_STATUS_NOT_INIT

    def _gpu(self, fn: str, handle: Any) -> FakeAmdGpu:
        self._enter(fn)
        if not isinstance(handle, _AmdHandle) or not 0 <= handle.index < len(self.gpus):
            raise AmdSmiLibraryException(AMDSMI_STATUS_INVAL)
        gpu = self.gpus[handle.index]
        if fn in gpu.fail:
            raise AmdSmiLibraryException(gpu.fail[fn])
        return gpu

    # -- library --------------------------------------------------------------------------------

    def amdsmi_init(self, flag: int = 2) -> None:
        self._start("amdsmi_init", AmdSmiLibraryException)

    def amdsmi_shut_down(self) -> None:
        self._stop("amdsmi_shut_down")

    def amdsmi_get_processor_handles(self) -> list[_AmdHandle]:
        self._enter("amdsmi_get_processor_handles")
        return [_AmdHandle(i) for i in range(len(self.gpus))]

    # -- identity -------------------------------------------------------------------------------

    def amdsmi_get_gpu_device_uuid(self, handle: Any) -> str:
        return self._gpu("amdsmi_get_gpu_device_uuid", handle).uuid

    def amdsmi_get_gpu_device_bdf(self, handle: Any) -> str:
        return self._gpu("amdsmi_get_gpu_device_bdf", handle).bdf

    def amdsmi_get_gpu_asic_info(self, handle: Any) -> dict[str, Any]:
        gpu = self._gpu("amdsmi_get_gpu_asic_info", handle)
        return {
            "market_name": gpu.name, "vendor_id": "0x1002", "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]",
            "subvendor_id": "0x1002", "device_id": "0x74a1", "rev_id": "0x00",
            "asic_serial": "0x0000000000000000", "oam_id": gpu.oam_id,
            "num_compute_units": 304, "target_graphics_version": "gfx942",
        }

    def amdsmi_get_gpu_board_info(self, handle: Any) -> dict[str, Any]:
        gpu = self._gpu("amdsmi_get_gpu_board_info", handle)
        return {"model_number": "N/A", "product_serial": "N/A", "fru_id": "N/A",
                "product_name": gpu.name, "manufacturer_name": "AMD"}

    def _enumeration_info(self, handle: Any) -> dict[str, Any]:
        gpu = self._gpu("amdsmi_get_gpu_enumeration_info", handle)
        return {"drm_render": 128 + handle.index, "drm_card": handle.index,
                "hsa_id": "N/A", "hip_id": gpu.hip_id if gpu.hip_id is not None else "N/A",
                "hip_uuid": gpu.hip_uuid}

    # -- power ----------------------------------------------------------------------------------

    def amdsmi_get_power_info(self, handle: Any, sensor_ind: int = 0) -> dict[str, Any]:
        gpu = self._gpu("amdsmi_get_power_info", handle)
        info: dict[str, Any] = {k: "N/A" for k in POWER_INFO_KEYS[gpu.api]}
        if gpu.power_w is not None:
            watts = round(_value(gpu.power_w, gpu._n_power, self.clock()))
            gpu._n_power += 1
            for key in gpu.power_keys:
                info[key] = watts
        info["gfx_voltage"] = 800
        info["power_limit"] = (gpu.power_cap_uw or 0) // 1_000_000 or "N/A"
        return info

    def amdsmi_get_energy_count(self, handle: Any) -> dict[str, Any]:
        gpu = self._gpu("amdsmi_get_energy_count", handle)
        if gpu.energy_j is None:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        joules = _value(gpu.energy_j, gpu._n_energy, self.clock())
        gpu._n_energy += 1
        ticks = round(joules * 1e6 / gpu.counter_resolution_uj) % (1 << gpu.counter_bits)
        return {
            gpu.energy_key: ticks,
            "counter_resolution": gpu.counter_resolution_uj,
            "timestamp": int(self.clock() * 1e9),
        }

    def amdsmi_get_power_cap_info(self, handle: Any) -> dict[str, Any]:
        gpu = self._gpu("amdsmi_get_power_cap_info", handle)
        if gpu.power_cap_uw is None:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        return {"power_cap": gpu.power_cap_uw, "default_power_cap": gpu.power_cap_uw,
                "dpm_cap": 0, "min_power_cap": 0, "max_power_cap": gpu.power_cap_uw}

    # -- load -----------------------------------------------------------------------------------

    def amdsmi_get_gpu_activity(self, handle: Any) -> dict[str, Any]:
        gpu = self._gpu("amdsmi_get_gpu_activity", handle)
        return {"gfx_activity": gpu.gfx_activity, "umc_activity": 10, "mm_activity": "N/A"}

    def amdsmi_get_gpu_vram_usage(self, handle: Any) -> dict[str, Any]:
        gpu = self._gpu("amdsmi_get_gpu_vram_usage", handle)
        return {"vram_total": gpu.vram_total_mib, "vram_used": gpu.vram_used_mib}

    def amdsmi_get_temp_metric(self, handle: Any, sensor_type: int, metric: int) -> int:
        gpu = self._gpu("amdsmi_get_temp_metric", handle)
        if sensor_type != _AmdTemperatureType.HOTSPOT or metric != _AmdTemperatureMetric.CURRENT:
            raise AmdSmiLibraryException(AMDSMI_STATUS_NOT_SUPPORTED)
        return gpu.hotspot_c


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
    dies: int = 1,
    mirrored: bool = True,
) -> FakeRapl:
    """A /sys/class/powercap look-alike under ``root``.

    Per package N: ``intel-rapl:N`` named ``package-N`` (counter 1e6·(N+1) µJ) with sub-zones
    ``intel-rapl:N:0`` = dram (2e5 µJ, when ``dram``), then ``core`` (5e5 µJ) and ``uncore``
    (7e5 µJ), which overlap the package and must be ignored. Sub-zones also appear at the top
    level as symlinks, as in sysfs. ``psys`` adds a platform zone after the packages; ``mmio`` an
    ``intel-rapl-mmio:0`` duplicate of package 0.

    ``dies`` > 1 gives each package that many zones, ``intel-rapl:(N x dies + D)`` named
    ``package-N-die-D``: ``mirrored``, they all read the package's counter, as on multi-die
    AMD CPUs; else die D adds 1e5·D µJ of its own, as Intel's dies have.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "intel-rapl").mkdir()
    (root / "intel-rapl" / "enabled").write_text("1\n")
    for zone in range(packages * dies):
        n, die = divmod(zone, dies)
        pkg = root / f"intel-rapl:{zone}"
        name = f"package-{n}-die-{die}" if dies > 1 else f"package-{n}"
        energy = 1_000_000 * (n + 1) + (0 if mirrored else 100_000 * die)
        _write_zone(pkg, name, energy, max_energy_range_uj)
        subs = (["dram"] if dram else []) + ["core", "uncore"]
        for k, name in enumerate(subs):
            sub = pkg / f"intel-rapl:{zone}:{k}"
            energy = {"dram": 200_000, "core": 500_000, "uncore": 700_000}[name]
            _write_zone(sub, name, energy, max_energy_range_uj)
            (root / sub.name).symlink_to(sub, target_is_directory=True)
    if psys:
        zone = packages * dies
        _write_zone(root / f"intel-rapl:{zone}", "psys", 9_000_000, max_energy_range_uj)
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
