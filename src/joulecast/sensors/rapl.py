"""CPU package and DRAM energy through the Linux powercap interface (Intel RAPL, AMD since 5.8).

Zones ``intel-rapl:N`` are CPU packages (devices ``cpu:N``); their sub-zones named ``dram``
become ``dram:N``. ``core``/``uncore``/``psys`` are skipped: they overlap the package. Counters
are in µJ and wrap at ``max_energy_range_uj``; :class:`RaplSensor` unwraps them into a
cumulative energy since the sensor started.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from joulecast.errors import SensorError, SensorUnavailable
from joulecast.records import Reading

log = logging.getLogger(__name__)

POWERCAP_ROOT = Path("/sys/class/powercap")
PERMISSION_FIX = (
    "energy_uj is root-only since CVE-2020-8694: run as root, or grant read access with "
    "'sudo chmod -R a+r /sys/class/powercap/intel-rapl*' (or a udev rule for a group)"
)


@dataclass
class _Zone:
    device: str
    energy_file: Path
    max_range_uj: int
    last_uj: int = 0
    total_uj: int = 0
    last_t: float = 0.0


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def find_zones(root: Path = POWERCAP_ROOT) -> list[tuple[str, Path]]:
    """The package and dram zones under ``root`` as (device, zone folder), packages first."""
    if not root.is_dir():
        raise SensorUnavailable(
            f"{root} does not exist", fix="needs Linux with the intel_rapl powercap driver"
        )
    zones: list[tuple[str, Path]] = []
    for pkg in sorted(root.glob("intel-rapl:[0-9]*")):
        if pkg.name.count(":") != 1:
            continue
        try:
            pkg_name = (pkg / "name").read_text().strip()
        except OSError:
            pkg_name = "package"
        if not pkg_name.startswith("package"):  # psys: the whole platform, overlaps packages
            continue
        index = pkg.name.split(":")[1]
        zones.append((f"cpu:{index}", pkg))
        for sub in sorted(pkg.glob(f"intel-rapl:{index}:[0-9]*")):
            try:
                name = (sub / "name").read_text().strip()
            except OSError:
                continue
            if name == "dram":
                zones.append((f"dram:{index}", sub))
    if not zones:
        raise SensorUnavailable(f"no RAPL package zones under {root}", fix="no RAPL on this CPU")
    return zones


class RaplSensor:
    """Package (and DRAM) energy counters, unwrapped; power from the change between reads."""

    name = "rapl"

    def __init__(
        self, root: Path | str = POWERCAP_ROOT, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._zones: list[_Zone] = []
        now = clock()
        for device, folder in find_zones(Path(root)):
            energy_file = folder / "energy_uj"
            try:
                first = _read_int(energy_file)
                max_range = _read_int(folder / "max_energy_range_uj")
            except PermissionError as exc:
                raise SensorUnavailable(
                    f"{energy_file}: permission denied", fix=PERMISSION_FIX
                ) from exc
            except (OSError, ValueError) as exc:
                raise SensorUnavailable(f"{energy_file}: unreadable ({exc})") from exc
            self._zones.append(_Zone(device, energy_file, max_range, first, 0, now))

    def devices(self) -> list[str]:
        """``cpu:N`` per package, ``dram:N`` where the package has a dram zone."""
        return [z.device for z in self._zones]

    def describe(self) -> dict[str, dict[str, object]]:
        """The zone file and counter range of each device."""
        return {
            z.device: {"zone": str(z.energy_file.parent), "max_energy_range_uj": z.max_range_uj}
            for z in self._zones
        }

    def read(self) -> list[Reading]:
        """Read each counter; a counter below its last value has wrapped once."""
        readings: list[Reading] = []
        failed: list[str] = []
        for zone in self._zones:
            now = self._clock()
            try:
                value = _read_int(zone.energy_file)
            except (OSError, ValueError) as exc:
                failed.append(f"{zone.device}: {exc}")
                continue
            delta = value - zone.last_uj
            if delta < 0:
                delta += zone.max_range_uj
            zone.total_uj += delta
            dt = now - zone.last_t
            power_w = delta / 1e6 / dt if dt > 0 else None
            zone.last_uj, zone.last_t = value, now
            readings.append(Reading(now, zone.device, power_w, "rapl", True, zone.total_uj / 1e6))
        if failed and not readings:
            raise SensorError("; ".join(failed))
        return readings

    def close(self) -> None:
        """Nothing to release."""
