"""CPU package and DRAM energy through the Linux powercap interface (Intel RAPL, AMD since 5.8).

Zones ``intel-rapl:N`` are CPU packages (devices ``cpu:N``); their sub-zones named ``dram``
become ``dram:N``. ``core``/``uncore``/``psys`` are skipped: they overlap the package. Counters
are in µJ and wrap at ``max_energy_range_uj``; :class:`RaplSensor` unwraps them into a
cumulative energy since the sensor started.

A package of several dies has one zone per die (``package-0-die-0``, ``package-0-die-1``...).
On Intel each die has its own counter; on multi-die AMD CPUs (Threadripper, EPYC) every die's
zone reads the one socket counter, and summing them counts the socket once per die. So zones
of one package (by their names) whose counters read the same, non-zero value in two of three
reads taken back to back are one counter: it is counted once, in the first zone, which lists
the others as ``mirrors``.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
    mirrors: list[str] = field(default_factory=list)  # zones reading this one's counter


#: A package zone's name: its package and, on a package of several dies, its die.
_PACKAGE_NAME = re.compile(r"package-(\d+)(?:-die-\d+)?")
#: Reads of each zone that decide whether zones mirror each other (the first at start).
_MIRROR_READS = 3


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


def _package_group(zone: _Zone) -> tuple[str, int] | None:
    """The kind and package number of a zone (a dram zone's from its package's name); None
    where the name does not say."""
    folder = zone.energy_file.parent
    package = folder.parent if zone.device.startswith("dram:") else folder
    try:
        match = _PACKAGE_NAME.fullmatch((package / "name").read_text().strip())
    except OSError:
        return None
    return (zone.device.partition(":")[0], int(match.group(1))) if match else None


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
        self._count_mirrors_once()

    def _count_mirrors_once(self) -> None:
        """Keep one zone of each set that reads one counter (see the module's docstring)."""
        groups: dict[tuple[str, int], list[_Zone]] = {}
        for zone in self._zones:
            key = _package_group(zone)
            if key is not None:
                groups.setdefault(key, []).append(zone)
        dropped: set[int] = set()
        for members in groups.values():
            if len(members) < 2:
                continue
            try:
                rounds = [[z.last_uj for z in members]] + [
                    [_read_int(z.energy_file) for z in members] for _ in range(_MIRROR_READS - 1)
                ]
            except (OSError, ValueError):
                continue  # unreadable now: each zone is counted, as before
            for i, keep in enumerate(members):
                if id(keep) in dropped:
                    continue
                for j in range(i + 1, len(members)):
                    same = sum(r[i] == r[j] != 0 for r in rounds)
                    if id(members[j]) not in dropped and same >= 2:
                        dropped.add(id(members[j]))
                        keep.mirrors.append(str(members[j].energy_file.parent))
                if keep.mirrors:
                    log.info(
                        "RAPL zones %s read the counter of %s: counted once",
                        ", ".join(keep.mirrors),
                        keep.energy_file.parent,
                    )
        self._zones = [z for z in self._zones if id(z) not in dropped]

    def devices(self) -> list[str]:
        """``cpu:N`` per package, ``dram:N`` where the package has a dram zone."""
        return [z.device for z in self._zones]

    def describe(self) -> dict[str, dict[str, object]]:
        """The zone file and counter range of each device, and the zones that mirror it."""
        return {
            z.device: {
                "zone": str(z.energy_file.parent),
                "max_energy_range_uj": z.max_range_uj,
                **({"mirrors": list(z.mirrors)} if z.mirrors else {}),
            }
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
