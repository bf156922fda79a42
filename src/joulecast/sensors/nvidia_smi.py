"""Fallback GPU sensor: one long-lived ``nvidia-smi --query-gpu ... -lms N`` process.

Used when the NVML bindings cannot load but the ``nvidia-smi`` binary exists. Spawning
nvidia-smi costs 10-20 ms, so it is started once and its CSV stream is parsed by a reader
thread; :meth:`NvidiaSmiSensor.read` returns the rows that arrived since the last call. Power
here is ``power.draw``: a 1 s average on Ampere and newer (except A100).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable

from joulecast.errors import SensorError, SensorUnavailable
from joulecast.records import Reading
from joulecast.sensors._gpus import GpuId, select_visible

log = logging.getLogger(__name__)

QUERY = "index,uuid,pci.bus_id,name,power.draw,utilization.gpu,memory.used,temperature.gpu"
_NA = {"[N/A]", "N/A", "[Not Supported]", "Not Supported", "[Unknown Error]", ""}


def _number(text: str) -> float | None:
    text = text.strip()
    if text in _NA:
        return None
    return float(text.split()[0])


class NvidiaSmiSensor:
    """GPU power, utilization, memory and temperature parsed from a streaming nvidia-smi."""

    name = "nvidia-smi"

    def __init__(
        self,
        *,
        binary: str = "nvidia-smi",
        interval_s: float = 0.1,
        visible: str | None = None,
        order: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        path = shutil.which(binary)
        if path is None:
            raise SensorUnavailable(
                f"{binary} not found on PATH", fix="install the NVIDIA driver utilities"
            )
        self._binary = path
        self._clock = clock
        gpus = self._list_gpus()
        self._visible = {
            g.uuid: f"gpu:{i}" for i, (g, _) in enumerate(select_visible(gpus, visible, order))
        }
        self._info = {
            self._visible[g.uuid]: {"name": g.name, "uuid": g.uuid, "pci_bus_id": g.pci_bus_id}
            for g in gpus
            if g.uuid in self._visible
        }
        if not self._visible:
            raise SensorUnavailable("no visible NVIDIA GPU", fix="check CUDA_VISIBLE_DEVICES")
        self._pending: list[Reading] = []
        self._lock = threading.Lock()
        self._error: str | None = None
        self._proc = subprocess.Popen(
            [
                self._binary,
                f"--query-gpu={QUERY}",
                "--format=csv,noheader,nounits",
                f"--loop-ms={max(1, round(interval_s * 1000))}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self._thread = threading.Thread(target=self._pump, name="joulecast-nvidia-smi", daemon=True)
        self._thread.start()

    def _list_gpus(self) -> list[GpuId]:
        try:
            out = subprocess.run(
                [
                    self._binary,
                    "--query-gpu=index,uuid,pci.bus_id,name,compute_cap",
                    "--format=csv,noheader,nounits",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise SensorUnavailable(f"{self._binary} failed: {exc}") from exc
        gpus = []
        for line in out.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) < 4 or not parts[0].isdigit():
                continue
            cc = None
            if len(parts) > 4 and parts[4] not in _NA:
                major, _, minor = parts[4].partition(".")
                cc = (int(major), int(minor or 0))
            gpus.append(GpuId(int(parts[0]), parts[1], parts[2], parts[3], cc))
        return gpus

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            now = self._clock()
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 8 or parts[1] not in self._visible:
                continue
            try:
                reading = Reading(
                    now,
                    self._visible[parts[1]],
                    _number(parts[4]),
                    "nvidia-smi",
                    True,
                    None,
                    _number(parts[5]),
                    _number(parts[6]),
                    _number(parts[7]),
                )
            except ValueError:
                log.debug("nvidia-smi: unparsable line %r", line)
                continue
            with self._lock:
                self._pending.append(reading)
        self._error = f"nvidia-smi exited with code {self._proc.wait()}"

    def devices(self) -> list[str]:
        """``gpu:N`` for each visible GPU, N its CUDA index."""
        return list(self._visible.values())

    def describe(self) -> dict[str, dict[str, object]]:
        """Name, UUID and PCI bus id per GPU."""
        return {d: dict(v) for d, v in self._info.items()}

    def read(self) -> list[Reading]:
        """The rows nvidia-smi printed since the last call."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending and self._error is not None:
            raise SensorError(self._error)
        return pending

    def close(self) -> None:
        """Stop the nvidia-smi process."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._thread.join(timeout=5)
