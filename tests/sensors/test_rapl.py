"""RaplSensor over a fake powercap tree: µJ to J, wraparound, zones, permissions."""

from __future__ import annotations

from pathlib import Path

import pytest

from joulecast.errors import SensorError, SensorUnavailable
from joulecast.sensors.rapl import RaplSensor, find_zones
from tests.fakes import FakeClock, write_rapl_tree


def test_zones_package_and_dram_only(tmp_path: Path) -> None:
    rapl = write_rapl_tree(tmp_path / "powercap", mmio=True)
    zones = find_zones(rapl.root)
    assert [(d, p.name) for d, p in zones] == [
        ("cpu:0", "intel-rapl:0"), ("dram:0", "intel-rapl:0:0"),
    ]
    # dram is the package's own sub-zone, not the top-level symlink to it
    assert zones[1][1].parent.name == "intel-rapl:0"


def test_two_packages_and_no_dram_zone(tmp_path: Path) -> None:
    rapl = write_rapl_tree(tmp_path / "powercap", packages=2, dram=False)  # AMD-like
    assert RaplSensor(rapl.root).devices() == ["cpu:0", "cpu:1"]


def test_psys_platform_zone_is_not_a_package(tmp_path: Path) -> None:
    rapl = write_rapl_tree(tmp_path / "powercap", psys=True)  # psys at intel-rapl:1
    assert RaplSensor(rapl.root).devices() == ["cpu:0", "dram:0"]


def test_microjoules_to_joules_and_power(tmp_path: Path, clock: FakeClock) -> None:
    rapl = write_rapl_tree(tmp_path / "powercap")
    s = RaplSensor(rapl.root, clock=clock)
    assert s.devices() == ["cpu:0", "dram:0"]
    rapl.set_uj("intel-rapl:0", 1_000_000 + 25_000_000)  # +25 J
    rapl.set_uj("intel-rapl:0:0", 200_000 + 1_500_000)  # +1.5 J
    rapl.set_uj("intel-rapl:0:1", 99_999_999)  # core: must not be read
    clock.advance(0.5)
    cpu, dram = s.read()
    assert (cpu.device, cpu.energy_j, cpu.power_w) == ("cpu:0", 25.0, 50.0)
    assert (dram.device, dram.energy_j, dram.power_w) == ("dram:0", 1.5, 3.0)
    assert cpu.source == "rapl" and cpu.measured and cpu.t_s == 1000.5
    # cumulative since start; power from the last interval
    rapl.set_uj("intel-rapl:0", 1_000_000 + 26_000_000)
    clock.advance(0.25)
    cpu, _ = s.read()
    assert (cpu.energy_j, cpu.power_w) == (26.0, 4.0)


def test_wraparound_at_max_energy_range(tmp_path: Path, clock: FakeClock) -> None:
    rapl = write_rapl_tree(tmp_path / "powercap", dram=False, max_energy_range_uj=10_000_000)
    rapl.set_uj("intel-rapl:0", 9_000_000)
    s = RaplSensor(rapl.root, clock=clock)
    rapl.set_uj("intel-rapl:0", 1_000_000)  # wrapped: 1 J to the top, 1 J after
    clock.advance(1.0)
    (cpu,) = s.read()
    assert (cpu.energy_j, cpu.power_w) == (2.0, 2.0)
    rapl.set_uj("intel-rapl:0", 4_000_000)
    clock.advance(1.0)
    (cpu,) = s.read()
    assert (cpu.energy_j, cpu.power_w) == (5.0, 3.0)
    assert s.describe()["cpu:0"] == {
        "zone": str(rapl.root / "intel-rapl:0"), "max_energy_range_uj": 10_000_000,
    }


def test_unchanged_counter_reads_zero_power(tmp_path: Path, clock: FakeClock) -> None:
    rapl = write_rapl_tree(tmp_path / "powercap", dram=False)
    s = RaplSensor(rapl.root, clock=clock)
    clock.advance(0.1)
    (cpu,) = s.read()
    assert (cpu.energy_j, cpu.power_w) == (0.0, 0.0)
    (cpu,) = s.read()  # no time passed: no power, not a division by zero
    assert cpu.power_w is None


def test_permission_denied_is_unavailable_with_chmod_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rapl = write_rapl_tree(tmp_path / "powercap")
    real_read_text = Path.read_text

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        if self.name == "energy_uj":  # root-only since CVE-2020-8694
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", read_text)
    with pytest.raises(SensorUnavailable) as info:
        RaplSensor(rapl.root)
    assert "permission denied" in str(info.value)
    assert "energy_uj" in str(info.value)
    assert "chmod" in info.value.fix and "CVE-2020-8694" in info.value.fix


def test_missing_root_and_empty_root(tmp_path: Path) -> None:
    with pytest.raises(SensorUnavailable) as info:
        RaplSensor(tmp_path / "nope")
    assert "does not exist" in str(info.value) and "powercap" in info.value.fix
    (tmp_path / "empty").mkdir()
    with pytest.raises(SensorUnavailable, match="no RAPL package zones"):
        RaplSensor(tmp_path / "empty")


def test_garbage_counter_is_unavailable(tmp_path: Path) -> None:
    rapl = write_rapl_tree(tmp_path / "powercap")
    (rapl.root / "intel-rapl:0" / "energy_uj").write_text("not a number\n")
    with pytest.raises(SensorUnavailable, match="unreadable"):
        RaplSensor(rapl.root)


def test_one_zone_failing_keeps_the_others(tmp_path: Path, clock: FakeClock) -> None:
    rapl = write_rapl_tree(tmp_path / "powercap", packages=2, dram=False)
    s = RaplSensor(rapl.root, clock=clock)
    (rapl.root / "intel-rapl:1" / "energy_uj").unlink()
    clock.advance(1.0)
    assert [r.device for r in s.read()] == ["cpu:0"]
    (rapl.root / "intel-rapl:0" / "energy_uj").unlink()
    with pytest.raises(SensorError, match="cpu:0") as info:
        s.read()
    assert not isinstance(info.value, SensorUnavailable)


# -- dies of one package: counted once where they mirror one counter -----------------------------


def test_two_die_epyc_counts_its_socket_once(tmp_path: Path, clock: FakeClock) -> None:
    # package-0-die-0 and package-0-die-1 both read the socket's counter.
    rapl = write_rapl_tree(tmp_path / "powercap", dies=2, dram=False)
    s = RaplSensor(rapl.root, clock=clock)
    assert s.devices() == ["cpu:0"]
    assert s.describe()["cpu:0"]["mirrors"] == [str(rapl.root / "intel-rapl:1")]
    for zone in ("intel-rapl:0", "intel-rapl:1"):
        rapl.set_uj(zone, 1_000_000 + 25_000_000)
    clock.advance(0.5)
    (cpu,) = s.read()
    assert (cpu.energy_j, cpu.power_w) == (25.0, 50.0)  # not 50 J, 100 W


def test_two_socket_epyc_counts_each_socket_once(tmp_path: Path, clock: FakeClock) -> None:
    rapl = write_rapl_tree(tmp_path / "powercap", packages=2, dies=4, dram=False)
    s = RaplSensor(rapl.root, clock=clock)
    assert s.devices() == ["cpu:0", "cpu:4"]  # the first die of each package
    assert len(s.describe()["cpu:4"]["mirrors"]) == 3
    for zone in range(8):
        rapl.set_uj(f"intel-rapl:{zone}", (1 + zone // 4) * 1_000_000 + 10_000_000)
    clock.advance(1.0)
    assert sum(r.energy_j for r in s.read()) == 20.0


def test_two_socket_intel_is_summed_even_when_counters_agree(
    tmp_path: Path, clock: FakeClock
) -> None:
    # package-0 and package-1 are two sockets by their names, whatever they read.
    rapl = write_rapl_tree(tmp_path / "powercap", packages=2, dram=True)
    for zone in ("intel-rapl:0", "intel-rapl:1"):
        rapl.set_uj(zone, 5_000_000)
    for zone in ("intel-rapl:0:0", "intel-rapl:1:0"):
        rapl.set_uj(zone, 300_000)
    s = RaplSensor(rapl.root, clock=clock)
    assert s.devices() == ["cpu:0", "dram:0", "cpu:1", "dram:1"]
    assert all("mirrors" not in facts for facts in s.describe().values())
    for zone in ("intel-rapl:0", "intel-rapl:1"):
        rapl.set_uj(zone, 15_000_000)
    clock.advance(1.0)
    assert sum(r.energy_j for r in s.read() if r.device.startswith("cpu")) == 20.0


def test_dies_with_counters_of_their_own_are_summed(tmp_path: Path) -> None:
    rapl = write_rapl_tree(tmp_path / "powercap", dies=2, mirrored=False, dram=False)
    assert RaplSensor(rapl.root).devices() == ["cpu:0", "cpu:1"]  # Intel's multi-die Xeons


def test_dies_reading_zero_are_not_taken_for_mirrors(tmp_path: Path) -> None:
    rapl = write_rapl_tree(tmp_path / "powercap", dies=2, dram=False)
    for zone in ("intel-rapl:0", "intel-rapl:1"):
        rapl.set_uj(zone, 0)
    assert RaplSensor(rapl.root).devices() == ["cpu:0", "cpu:1"]


def test_one_read_caught_between_updates_still_finds_mirrors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The socket counter moves every millisecond: one of the reads may see it move between
    # the two zones; two of three agreeing is enough.
    rapl = write_rapl_tree(tmp_path / "powercap", dies=2, dram=False)
    from joulecast.sensors import rapl as rapl_mod

    real = rapl_mod._read_int
    seen: list[Path] = []

    def read_int(path: Path) -> int:
        seen.append(path)
        moved = path.parent.name == "intel-rapl:1" and path.name == "energy_uj" and len(seen) > 4
        return real(path) + (15 if moved and seen.count(path) == 2 else 0)

    monkeypatch.setattr(rapl_mod, "_read_int", read_int)
    assert RaplSensor(rapl.root).devices() == ["cpu:0"]
