"""AMD GPUs through AMD SMI (the ``amdsmi`` Python package of ROCm), imported only when used.

Per tick and GPU: the socket power in W from ``amdsmi_get_power_info``, under whichever key
the GPU fills (chosen once: ``current_socket_power`` on MI300 and newer, ``socket_power`` in
ROCm 7, ``average_socket_power`` on MI200 and older; the others read ``"N/A"``), and the
energy accumulator of ``amdsmi_get_energy_count`` where the GPU has one (ticks of
``counter_resolution`` µJ; the key is ``energy_accumulator`` since amdsmi 6.2.1, ``power``
before), unwrapped into joules since the sensor started. Activity (``gfx_activity``), VRAM
used (MiB) and hotspot temperature change slowly and are read every ``aux_interval_s``.

Which GPUs: those a HIP program sees (:func:`select_rocm`). Devices are ``gpu:N``, N the HIP
index. The two dies (GCDs) of an MI250X, like the partitions of an MI300X, are separate
GPUs to HIP and AMD SMI, but only one of them reports power: the package's, both dies
included. A die without power of its own is given the package's power where its reporting
die is not sampled, flagged ``package_shared``; where it is, the package is counted once,
in that die, and the other says ``power_counted_in``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from joulecast.errors import SensorError, SensorUnavailable
from joulecast.records import DEVICE_RANGES, Reading
from joulecast.sensors._gpus import Every, parse_visible, visible_index

log = logging.getLogger(__name__)

#: Power keys of ``amdsmi_get_power_info``, in the order they are preferred.
POWER_KEYS = ("current_socket_power", "socket_power", "average_socket_power")
#: Energy accumulator keys of ``amdsmi_get_energy_count``: amdsmi 6.2.1 and later, before.
ENERGY_KEYS = ("energy_accumulator", "power")
#: A GPU's power above this is not a reading (AMD SMI marks unsupported fields with
#: 0xFFFF or UINT32_MAX where it does not say "N/A").
_MAX_GPU_W = DEVICE_RANGES["gpu"][0]
#: AMD SMI's own marks of a value it does not have.
_NOT_AVAILABLE = {0xFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF}
#: Older firmware accumulates energy in 32 bits: a counter below 2**32 that goes back wrapped.
_WRAP_32 = 2**32
#: After this long, the counter's energy is compared with the integrated power, once.
_CHECK_AFTER_S = 2.0


def load_amdsmi(amdsmi: ModuleType | Any | None = None) -> Any:
    """Import ``amdsmi`` (unless ``amdsmi`` stands in for it) and initialise AMD SMI.

    Failures become SensorUnavailable with a fix.
    """
    if amdsmi is None:
        try:
            # amdsmi prints to stdout, at import, when libamd_smi.so is missing.
            with contextlib.redirect_stdout(io.StringIO()):
                amdsmi = importlib.import_module("amdsmi")
        except ImportError as exc:
            raise SensorUnavailable(
                "amdsmi is not installed",
                fix="install ROCm's amdsmi Python package, of your ROCm's version "
                "(pip install /opt/rocm/share/amd_smi)",
            ) from exc
        except Exception as exc:  # OSError: no libamd_smi.so; others: a version mismatch
            raise SensorUnavailable(
                f"amdsmi could not be imported: {exc}",
                fix="install ROCm and the amdsmi package of the same version",
            ) from exc
    try:
        amdsmi.amdsmi_init()
    except Exception as exc:  # AmdSmiLibraryException, or a library that would not load
        raise SensorUnavailable(
            f"AMD SMI did not start: {exc}",
            fix="install the amdgpu driver (no AMD GPU or driver on this machine?)",
        ) from exc
    return amdsmi


def _number(value: Any, hi: float) -> float | None:
    """``value`` as a float in [0, ``hi``], or None for "N/A", AMD SMI's marks and nonsense."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value in _NOT_AVAILABLE or not math.isfinite(value) or not 0 <= value <= hi:
        return None
    return float(value)


def _watts(info: Any, key: str | None) -> float | None:
    return _number(info.get(key), _MAX_GPU_W) if key is not None else None


def _text(value: Any) -> str:
    text = value.decode() if isinstance(value, bytes) else str(value or "")
    return "" if text.strip() in {"", "N/A"} else text.strip()


@dataclass(frozen=True)
class AmdId:
    """How one GPU (one die, one partition) is known to AMD SMI and to HIP."""

    smi_index: int
    uuid: str
    pci_bus_id: str
    name: str = ""
    hip_id: int | None = None
    hip_uuid: str = ""
    oam_id: int | None = None


def _norm_uuid(text: str) -> str:
    text = text.strip().lower()
    return (text[4:] if text.startswith("gpu-") else text).replace("-", "")


def _pick(gpus: list[AmdId], entries: list[str] | None, what: str) -> list[AmdId]:
    """The GPUs of ``gpus`` that ``entries`` name, in their order (None: all of them).

    An entry is an index into ``gpus`` or a (``GPU-``) UUID prefix; an entry that names no
    GPU hides itself and the rest, as the ROCm runtime does.
    """
    if entries is None:
        return list(gpus)
    chosen: list[AmdId] = []
    for entry in entries:
        index = visible_index(entry)
        gpu: AmdId | None = None
        if index is not None:
            gpu = gpus[index] if 0 <= index < len(gpus) else None
        elif _norm_uuid(entry):
            want = _norm_uuid(entry)
            matches = [
                g
                for g in gpus
                if any(u and _norm_uuid(u).startswith(want) for u in (g.hip_uuid, g.uuid))
            ]
            gpu = matches[0] if len(matches) == 1 else None
        if gpu is None:
            log.warning("%s entry %r matches no AMD GPU; it hides the rest", what, entry)
            break
        if gpu not in chosen:
            chosen.append(gpu)
    return chosen


def select_rocm(
    gpus: list[AmdId], visible: str | None = None, env: Mapping[str, str] | None = None
) -> list[AmdId]:
    """The GPUs a HIP program sees, in its order (its device N is item N).

    HIP numbers the GPUs in AMD SMI's order, or by the ``hip_id`` AMD SMI reports where
    every GPU has one. ``ROCR_VISIBLE_DEVICES`` chooses among them first, then
    ``HIP_VISIBLE_DEVICES`` (else ``CUDA_VISIBLE_DEVICES``, which HIP reads in its place)
    among what is left; both take indices and UUIDs. ``visible``, where given (a node's
    sampler takes all its ranks' GPUs), names the machine's GPUs as ROCR_VISIBLE_DEVICES
    does, and the variables are not read.
    """
    env = os.environ if env is None else env
    ordered = list(gpus)
    if all(g.hip_id is not None for g in gpus):
        ordered.sort(key=lambda g: (g.hip_id, g.smi_index))
    if visible is not None:
        return _pick(ordered, parse_visible(visible), "the GPU list")
    ordered = _pick(ordered, parse_visible(env.get("ROCR_VISIBLE_DEVICES")), "ROCR_VISIBLE_DEVICES")
    hip = env.get("HIP_VISIBLE_DEVICES")
    name = "HIP_VISIBLE_DEVICES"
    if hip is None:
        hip, name = env.get("CUDA_VISIBLE_DEVICES"), "CUDA_VISIBLE_DEVICES"
    return _pick(ordered, parse_visible(hip), name)


@dataclass
class _Die:
    """One AMD SMI processor: what it can report, found once."""

    gid: AmdId
    handle: Any
    power_key: str | None = None
    probe_power_w: float | None = None
    energy_key: str | None = None
    resolution_uj: float = 0.0
    probe_ticks: int = 0


@dataclass
class _Gpu:
    device: str
    die: _Die
    source: _Die | None  # whose power and counter this device reports (None: counted elsewhere)
    info: dict[str, Any] = field(default_factory=dict)
    last_ticks: int | None = None
    energy_uj: float = 0.0
    power_j: float = 0.0  # integrated power, for the counter's one check
    start_t: float = 0.0
    last_t: float = 0.0
    last_power_w: float | None = None
    checked: bool = False


class AmdSmiSensor:
    """Power, energy counter, activity, VRAM and temperature of the visible AMD GPUs.

    ``amdsmi`` is the ``amdsmi`` module (tests pass a fake); ``visible`` replaces the
    visible-devices variables (see :func:`select_rocm`); ``env`` the environment they are
    read from.
    """

    name = "amdsmi"

    def __init__(
        self,
        *,
        amdsmi: ModuleType | Any | None = None,
        visible: str | None = None,
        env: Mapping[str, str] | None = None,
        aux_interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._smi = load_amdsmi(amdsmi)
        # What a read may raise: the library's errors, and answers not shaped as expected.
        self._failures: tuple[type[BaseException], ...] = (
            getattr(self._smi, "AmdSmiException", Exception),
            LookupError,
            TypeError,
            ValueError,
            AttributeError,
        )
        self._clock = clock
        self._aux = Every(aux_interval_s)
        self._closed = False
        try:
            self._gpus = self._discover(visible, env)
        except self._failures as exc:
            self.close()
            raise SensorUnavailable(f"AMD SMI could not list GPUs: {exc}") from exc
        if not self._gpus:
            self.close()
            raise SensorUnavailable(
                "no visible AMD GPU",
                fix="check ROCR_VISIBLE_DEVICES and HIP_VISIBLE_DEVICES; 'amd-smi list' "
                "lists the GPUs",
            )

    # -- discovery ------------------------------------------------------------------------------

    def _optional(self, fn: str, handle: Any, *args: Any) -> Any:
        call = getattr(self._smi, fn, None)  # older amdsmi lacks some functions
        if call is None:
            return None
        try:
            return call(handle, *args)
        except self._failures:
            return None

    def _identify(self, index: int, handle: Any) -> AmdId:
        smi = self._smi
        asic = self._optional("amdsmi_get_gpu_asic_info", handle) or {}
        name = _text(asic.get("market_name"))
        if not name:
            board = self._optional("amdsmi_get_gpu_board_info", handle) or {}
            name = _text(board.get("product_name"))
        enum = self._optional("amdsmi_get_gpu_enumeration_info", handle) or {}
        hip_id = enum.get("hip_id")
        oam = asic.get("oam_id")
        return AmdId(
            smi_index=index,
            uuid=_text(smi.amdsmi_get_gpu_device_uuid(handle)),
            pci_bus_id=_text(smi.amdsmi_get_gpu_device_bdf(handle)),
            name=name,
            hip_id=hip_id if isinstance(hip_id, int) and hip_id not in _NOT_AVAILABLE else None,
            hip_uuid=_text(enum.get("hip_uuid")),
            oam_id=oam if isinstance(oam, int) and oam not in _NOT_AVAILABLE else None,
        )

    def _probe(self, die: _Die) -> None:
        """Find once which power key the die fills and whether it has an energy counter."""
        info = self._optional("amdsmi_get_power_info", die.handle) or {}
        for key in POWER_KEYS:
            power_w = _watts(info, key)
            if power_w is not None:
                die.power_key, die.probe_power_w = key, power_w
                break
        count = self._optional("amdsmi_get_energy_count", die.handle) or {}
        energy_key = next((k for k in ENERGY_KEYS if k in count), None)
        resolution = _number(count.get("counter_resolution"), 1e9)
        ticks = count.get(energy_key) if energy_key is not None else None
        if isinstance(ticks, int) and ticks >= 0 and resolution:
            die.energy_key, die.resolution_uj, die.probe_ticks = energy_key, resolution, ticks

    def _discover(self, visible: str | None, env: Mapping[str, str] | None) -> list[_Gpu]:
        handles = list(self._smi.amdsmi_get_processor_handles())
        dies = [_Die(self._identify(i, h), h) for i, h in enumerate(handles)]
        by_id = {d.gid: d for d in dies}
        chosen = [by_id[g] for g in select_rocm([d.gid for d in dies], visible, env)]
        for die in dies:
            self._probe(die)
        device = {id(d): f"gpu:{n}" for n, d in enumerate(chosen)}
        carriers: dict[int, str] = {}
        gpus = [self._place(die, dies, device, carriers) for die in chosen]
        now = self._clock()
        for gpu in gpus:
            gpu.start_t = gpu.last_t = now
            if gpu.source is not None:
                gpu.last_ticks = gpu.source.probe_ticks  # energy counts from the probe
        return gpus

    def _place(
        self, die: _Die, dies: list[_Die], device: dict[int, str], carriers: dict[int, str]
    ) -> _Gpu:
        """The device of ``die`` and whose power it reports: its own; its package's, where it
        has no power of its own and its package's reporting die is not sampled; or none, where
        the package is counted in another device. ``carriers`` maps a package (OAM id) to the
        device that took its power."""
        gpu = _Gpu(device[id(die)], die, die)
        oam = die.gid.oam_id
        package = [d for d in dies if oam is not None and d.gid.oam_id == oam]
        reports = [d for d in package if (d.probe_power_w or 0.0) > 0.0]
        sensorless = len(package) > 1 and bool(reports) and die not in reports
        counted_in: str | None = None
        if sensorless and oam is not None:
            counted_in = device.get(id(reports[0])) or carriers.get(oam)
            gpu.source = None if counted_in else reports[0]
            if counted_in is None:
                carriers[oam] = gpu.device
        elif die.power_key is None:
            log.warning("%s (%s): AMD SMI reports no power for it", gpu.device, die.gid.name)
        # Shared: this device's power is the package's, other dies included.
        shared = (
            len(package) > len(reports)
            and gpu.source is not None
            and (sensorless or die is reports[0])
        )
        gpu.info = self._facts(gpu, shared, counted_in)
        return gpu

    def _facts(self, gpu: _Gpu, shared: bool, counted_in: str | None) -> dict[str, Any]:
        gid, source = gpu.die.gid, gpu.source
        counter = source is not None and source.energy_key is not None
        cap = self._optional("amdsmi_get_power_cap_info", gpu.die.handle) or {}
        vram = self._optional("amdsmi_get_gpu_vram_usage", gpu.die.handle) or {}
        cap_w = _number(cap.get("power_cap"), _MAX_GPU_W * 1e6)
        return {
            "name": gid.name or None,
            "uuid": gid.uuid or None,
            "pci_bus_id": gid.pci_bus_id or None,
            "amdsmi_index": gid.smi_index,
            "hip_id": gid.hip_id,
            "oam_id": gid.oam_id,
            "power_limit_w": cap_w / 1e6 if cap_w else None,  # AMD SMI gives µW
            "memory_total_mib": _number(vram.get("vram_total"), 2.0**31),
            "power_reading": source.power_key if source is not None else None,
            "energy_counter": counter,
            "counter_resolution_uj": source.resolution_uj if source and counter else None,
            "package_shared": shared,
            "power_counted_in": counted_in,
        }

    # -- reading --------------------------------------------------------------------------------

    def devices(self) -> list[str]:
        """``gpu:N`` for each visible GPU, N its HIP index."""
        return [g.device for g in self._gpus]

    def describe(self) -> dict[str, dict[str, Any]]:
        """Static facts per GPU: model, UUID, PCI bus id, power limit, what it reports."""
        return {g.device: dict(g.info) for g in self._gpus}

    def read(self) -> list[Reading]:
        """One reading per GPU that answered; a GPU whose read fails is skipped this time."""
        now = self._clock()
        aux = self._aux.due(now)
        readings: list[Reading] = []
        errors: list[str] = []
        for gpu in self._gpus:
            try:
                readings.append(self._read_one(gpu, now, aux))
            except self._failures as exc:
                errors.append(f"{gpu.device}: {exc}")
        if errors and not readings:
            raise SensorError("; ".join(errors))
        return readings

    def _ticks(self, die: _Die) -> int:
        count = self._smi.amdsmi_get_energy_count(die.handle)
        ticks = count[die.energy_key]
        if not isinstance(ticks, int) or ticks < 0:
            raise ValueError(f"energy accumulator {ticks!r}")
        return ticks

    def _read_one(self, gpu: _Gpu, now: float, aux: bool) -> Reading:
        smi, source = self._smi, gpu.source
        power_w = energy_j = None
        if source is not None:
            power_w = _watts(smi.amdsmi_get_power_info(source.handle), source.power_key)
            if source.energy_key is not None:
                energy_j = self._energy_j(gpu, self._ticks(source), now, power_w)
        if power_w is not None:
            gpu.power_j += power_w * (now - gpu.last_t)
        gpu.last_t, gpu.last_power_w = now, power_w
        util = mem = temp = None
        if aux:
            h = gpu.die.handle
            activity = self._optional("amdsmi_get_gpu_activity", h) or {}
            util = _number(activity.get("gfx_activity"), 100.0)
            vram = self._optional("amdsmi_get_gpu_vram_usage", h) or {}
            mem = _number(vram.get("vram_used"), 2.0**31)  # MiB: AMD SMI divides bytes by 2**20
            kind = getattr(getattr(smi, "AmdSmiTemperatureType", None), "HOTSPOT", None)
            metric = getattr(getattr(smi, "AmdSmiTemperatureMetric", None), "CURRENT", None)
            if kind is not None and metric is not None:
                temp = _number(self._optional("amdsmi_get_temp_metric", h, kind, metric), 200.0)
        return Reading(now, gpu.device, power_w, "amdsmi", True, energy_j, util, mem, temp)

    def _energy_j(self, gpu: _Gpu, ticks: int, now: float, power_w: float | None) -> float:
        """The counter's energy since the sensor started: steps summed, wraps and resets
        taken apart."""
        assert gpu.source is not None and gpu.last_ticks is not None
        resolution, last = gpu.source.resolution_uj, gpu.last_ticks
        step = ticks - last
        dt_s = max(now - gpu.last_t, 0.0)
        if step < 0:
            wrapped = ticks + _WRAP_32 - last
            # Plausible only as a 32-bit wrap: from below 2**32, and at most the largest
            # board's power over the interval (else the counter was reset: a driver reload).
            if last < _WRAP_32 and wrapped * resolution <= (_MAX_GPU_W * dt_s + 1.0) * 1e6:
                step = wrapped
            else:
                log.warning(
                    "%s: energy counter went back from %d to %d; the interval is counted "
                    "from power",
                    gpu.device,
                    last,
                    ticks,
                )
                known = power_w if power_w is not None else gpu.last_power_w
                step = round((known or 0.0) * dt_s * 1e6 / resolution)
        gpu.last_ticks = ticks
        gpu.energy_uj += step * resolution
        self._check(gpu, now)
        return gpu.energy_uj / 1e6

    def _check(self, gpu: _Gpu, now: float) -> None:
        """Warn once where the counter and the integrated power disagree tenfold (counters of
        some AMD GPUs are known to be wrong, ROCm/amdsmi issue 38)."""
        if gpu.checked or now - gpu.start_t < _CHECK_AFTER_S or gpu.power_j < 1.0:
            return
        gpu.checked = True
        counter_j = gpu.energy_uj / 1e6
        if not 0.1 <= counter_j / gpu.power_j <= 10.0:
            log.warning(
                "%s: the energy counter gives %.1f J over %.1f s where power integrates to "
                "%.1f J: its energy may be wrong",
                gpu.device,
                counter_j,
                now - gpu.start_t,
                gpu.power_j,
            )

    def close(self) -> None:
        """Shut AMD SMI down, once."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):  # a library failing to shut down changes nothing
            self._smi.amdsmi_shut_down()
