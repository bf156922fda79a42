"""NVIDIA GPUs through NVML (the ``nvidia-ml-py`` package, module ``pynvml``).

Per tick and GPU, one ``nvmlDeviceGetFieldValues`` call reads instant power (field 186, every
architecture) and the total-energy counter (field 191, mJ since driver load, Volta and newer);
each field's own return code is checked. Where field 186 is not supported the 1 s averaged
``nvmlDeviceGetPowerUsage`` is used. Utilization, memory and temperature change slowly and are
read every ``aux_interval_s``. Only the GPUs the training sees are sampled (see
:mod:`joulecast.sensors._gpus`); a MIG slice is reported as its whole GPU, flagged shared.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from joulecast.errors import SensorError, SensorUnavailable
from joulecast.records import Reading
from joulecast.sensors._gpus import Every, GpuId, parse_visible, select_visible

log = logging.getLogger(__name__)

FI_POWER_INSTANT = 186
FI_ENERGY = 191
ARCH_VOLTA = 5
_SUCCESS = 0
_GPU_IS_LOST = 15
_ARCH_NAMES = {
    2: "kepler",
    3: "maxwell",
    4: "pascal",
    5: "volta",
    6: "turing",
    7: "ampere",
    8: "ada",
    9: "hopper",
    10: "blackwell",
}


def load_nvml(nvml: ModuleType | Any | None = None) -> Any:
    """Import ``pynvml`` (unless ``nvml`` stands in for it) and initialise NVML.

    Failures become SensorUnavailable with a fix.
    """
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError as exc:
            raise SensorUnavailable(
                "nvidia-ml-py is not installed", fix="pip install nvidia-ml-py"
            ) from exc
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        raise SensorUnavailable(
            f"NVML did not start: {exc}",
            fix="install the NVIDIA driver (no NVIDIA GPU or driver on this machine?)",
        ) from exc
    return nvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field_value(fv: Any) -> float:
    kind = int(fv.valueType)
    attr = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}
    return float(getattr(fv.value, attr.get(kind, "ullVal")))


def visible_gpus(
    nv: Any, visible: str | None = None, order: str | None = None
) -> list[tuple[GpuId, Any, bool]]:
    """The GPUs a CUDA program started here sees, in its order: each one's identity, its NVML
    handle and whether a MIG slice of it is what the program sees (the GPU is shared).

    ``nv`` is an initialised ``pynvml`` (see :func:`load_nvml`); ``visible``/``order`` default
    to ``CUDA_VISIBLE_DEVICES`` and ``CUDA_DEVICE_ORDER``.

    Raises:
        NVMLError: NVML could not list the GPUs (``nv``'s own exception).
    """
    ids: list[GpuId] = []
    handles: dict[str, Any] = {}
    for i in range(nv.nvmlDeviceGetCount()):
        h = nv.nvmlDeviceGetHandleByIndex(i)
        uuid = _text(nv.nvmlDeviceGetUUID(h))
        try:
            cc: tuple[int, int] | None = tuple(nv.nvmlDeviceGetCudaComputeCapability(h))
        except nv.NVMLError:
            cc = None
        bus = _text(nv.nvmlDeviceGetPciInfo(h).busId)
        ids.append(GpuId(i, uuid, bus, _text(nv.nvmlDeviceGetName(h)), cc))
        handles[uuid] = h
    mig_parents: dict[str, str] = {}
    if visible is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    for entry in parse_visible(visible) or []:
        if entry.upper().startswith("MIG-"):
            try:
                mig = nv.nvmlDeviceGetHandleByUUID(entry)
                parent = nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
                mig_parents[entry] = _text(nv.nvmlDeviceGetUUID(parent))
            except nv.NVMLError as exc:
                log.warning("MIG device %s not found through NVML: %s", entry, exc)
    return [
        (gid, handles[gid.uuid], shared)
        for gid, shared in select_visible(ids, visible, order, mig_parents=mig_parents)
    ]


@dataclass
class _Gpu:
    device: str
    handle: Any
    gpu: GpuId
    shared: bool
    instant_power: bool = False
    energy_counter: bool = False
    energy0_mj: float | None = None
    lost: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class NvmlSensor:
    """Power, energy counter, utilization, memory and temperature of the visible GPUs.

    Devices are ``gpu:N`` with N the CUDA index the training sees. ``nvml`` is the ``pynvml``
    module (tests pass a fake); ``visible``/``order`` default to ``CUDA_VISIBLE_DEVICES`` and
    ``CUDA_DEVICE_ORDER``.
    """

    name = "nvml"

    def __init__(
        self,
        *,
        nvml: ModuleType | Any | None = None,
        visible: str | None = None,
        order: str | None = None,
        aux_interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nvml = load_nvml(nvml)
        self._clock = clock
        self._aux = Every(aux_interval_s)
        try:
            self._gpus = self._discover(visible, order)
        except self._nvml.NVMLError as exc:
            self._nvml.nvmlShutdown()
            raise SensorUnavailable(f"NVML could not list GPUs: {exc}") from exc
        if not self._gpus:
            self._nvml.nvmlShutdown()
            raise SensorUnavailable(
                "no visible NVIDIA GPU",
                fix="check CUDA_VISIBLE_DEVICES; 'nvidia-smi -L' lists the GPUs",
            )

    def _discover(self, visible: str | None, order: str | None) -> list[_Gpu]:
        gpus = []
        for cuda_index, (gid, handle, shared) in enumerate(
            visible_gpus(self._nvml, visible, order)
        ):
            gpu = _Gpu(f"gpu:{cuda_index}", handle, gid, shared)
            self._probe(gpu)
            gpus.append(gpu)
        return gpus

    def _probe(self, gpu: _Gpu) -> None:
        """Find once what this GPU supports; NOT_SUPPORTED is a capability, not an error."""
        nv, h = self._nvml, gpu.handle
        try:
            values = nv.nvmlDeviceGetFieldValues(h, [FI_POWER_INSTANT, FI_ENERGY])
        except nv.NVMLError as exc:  # old driver without field values: power usage only
            log.info("%s: no NVML field values (%s)", gpu.device, exc)
            values = None
        gpu.instant_power = values is not None and values[0].nvmlReturn == _SUCCESS
        gpu.energy_counter = values is not None and values[1].nvmlReturn == _SUCCESS
        if gpu.energy_counter and values is not None:
            gpu.energy0_mj = _field_value(values[1])

        def optional(fn: str, *args: Any) -> Any:
            try:
                return getattr(nv, fn)(h, *args)
            except nv.NVMLError:
                return None

        if not gpu.instant_power and optional("nvmlDeviceGetPowerUsage") is None:
            log.warning("%s (%s): NVML reports no power reading", gpu.device, gpu.gpu.name)
        arch = optional("nvmlDeviceGetArchitecture")
        enforced = optional("nvmlDeviceGetEnforcedPowerLimit")
        default = optional("nvmlDeviceGetPowerManagementDefaultLimit")
        constraints = optional("nvmlDeviceGetPowerManagementLimitConstraints")
        mem = optional("nvmlDeviceGetMemoryInfo")
        gpu.info = {
            "name": gpu.gpu.name,
            "uuid": gpu.gpu.uuid,
            "pci_bus_id": gpu.gpu.pci_bus_id,
            "nvml_index": gpu.gpu.nvml_index,
            "architecture": _ARCH_NAMES.get(arch, arch) if arch is not None else None,
            "compute_capability": ".".join(map(str, gpu.gpu.compute_capability or ())) or None,
            "power_limit_w": enforced / 1000 if enforced is not None else None,
            "default_power_limit_w": default / 1000 if default is not None else None,
            "max_power_limit_w": constraints[1] / 1000 if constraints else None,
            "memory_total_mib": mem.total / 2**20 if mem is not None else None,
            "power_reading": "instant" if gpu.instant_power else "1s-average",
            "energy_counter": gpu.energy_counter,
            "mig_shared": gpu.shared,
        }

    def devices(self) -> list[str]:
        """``gpu:N`` for each visible GPU, N its CUDA index."""
        return [g.device for g in self._gpus]

    def describe(self) -> dict[str, dict[str, Any]]:
        """Static facts per GPU: model, UUID, PCI bus id, power limits, capabilities."""
        return {g.device: dict(g.info) for g in self._gpus}

    def read(self) -> list[Reading]:
        """One reading per GPU that answered; lost GPUs are dropped for good."""
        nv = self._nvml
        now = self._clock()
        aux = self._aux.due(now)
        readings: list[Reading] = []
        errors: list[str] = []
        for gpu in self._gpus:
            if gpu.lost:
                continue
            try:
                readings.append(self._read_one(gpu, now, aux))
            except nv.NVMLError as exc:
                if getattr(exc, "value", None) == _GPU_IS_LOST:
                    gpu.lost = True
                    log.warning(
                        "%s (%s) is lost: no more readings from it", gpu.device, gpu.gpu.uuid
                    )
                errors.append(f"{gpu.device}: {exc}")
        if errors and not readings:
            raise SensorError("; ".join(errors))
        if all(g.lost for g in self._gpus):
            raise SensorError("every GPU is lost: " + ", ".join(g.device for g in self._gpus))
        return readings

    def _read_one(self, gpu: _Gpu, now: float, aux: bool) -> Reading:
        nv, h = self._nvml, gpu.handle
        power_w: float | None = None
        energy_j: float | None = None
        if gpu.instant_power or gpu.energy_counter:
            values = nv.nvmlDeviceGetFieldValues(h, [FI_POWER_INSTANT, FI_ENERGY])
            if gpu.instant_power and values[0].nvmlReturn == _SUCCESS:
                power_w = _field_value(values[0]) / 1000.0
            if gpu.energy_counter and values[1].nvmlReturn == _SUCCESS:
                energy_j = (_field_value(values[1]) - (gpu.energy0_mj or 0.0)) / 1000.0
        if power_w is None and not gpu.instant_power:
            power_w = nv.nvmlDeviceGetPowerUsage(h) / 1000.0
        util = mem = temp = None
        if aux:
            try:
                util = float(nv.nvmlDeviceGetUtilizationRates(h).gpu)
            except nv.NVMLError:
                util = None
            try:
                mem = nv.nvmlDeviceGetMemoryInfo(h).used / 2**20
            except nv.NVMLError:
                mem = None
            try:
                temp = float(nv.nvmlDeviceGetTemperature(h, 0))
            except nv.NVMLError:
                temp = None
        return Reading(now, gpu.device, power_w, "nvml", True, energy_j, util, mem, temp)

    def close(self) -> None:
        """Shut NVML down (reference-counted by the library)."""
        with contextlib.suppress(self._nvml.NVMLError):
            self._nvml.nvmlShutdown()
