"""The CPU TDP table: shipped rows and their sources, name matching, and the modelled CPU power
that uses it where RAPL cannot be read."""

from __future__ import annotations

import csv
import io
from importlib import resources
from pathlib import Path

import pytest

from joulecast.sensors.cpu_tdp import cpu_tdp_table, lookup_cpu_tdp, normalise, read_cpuinfo
from joulecast.sensors.host import HostSensor, cpu_tdp

EPYC_7742 = "AMD EPYC 7742 64-Core Processor"


def cpuinfo(tmp_path: Path, model: str, sockets: int = 1, cpus_per_socket: int = 2) -> Path:
    """A /proc/cpuinfo of ``sockets`` x ``cpus_per_socket`` logical CPUs."""
    blocks = [
        f"processor\t: {s * cpus_per_socket + c}\nvendor_id\t: x\nmodel name\t: {model}\n"
        f"physical id\t: {s}\ncore id\t\t: {c}\n"
        for s in range(sockets)
        for c in range(cpus_per_socket)
    ]
    path = tmp_path / "cpuinfo"
    path.write_text("\n".join(blocks))
    return path


# -- the shipped table ----------------------------------------------------------------------------


def test_shipped_file_is_package_data_and_every_row_cites_its_vendor() -> None:
    text = resources.files("joulecast.sensors").joinpath("cpu_tdp.csv").read_text("utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(cpu_tdp_table()) >= 80
    for row in rows:
        vendor_site = {"Intel": "https://www.intel.com/", "AMD": "https://www.amd.com/"}
        assert row["source"].startswith(vendor_site[row["vendor"]]), row["model"]
        assert 0 < float(row["tdp_w"]) <= 500, row["model"]
    models = [normalise(r["model"]) for r in rows]
    assert len(set(models)) == len(models)
    families = " ".join(models)
    for family in ("xeon e5", "xeon gold", "xeon platinum", "core i9", "epyc", "ryzen 9",
                   "threadripper"):
        assert family in families


def test_rows_known_from_the_vendors() -> None:
    table = {r.model: r.tdp_w for r in cpu_tdp_table()}
    # NVIDIA DGX-1, DGX-2, DGX A100 and DGX H100 hosts, and a few others.
    assert table["Xeon E5-2698 v4"] == 135.0
    assert table["Xeon Platinum 8168"] == 205.0
    assert table["EPYC 7742"] == 225.0
    assert table["Xeon Platinum 8480+"] == 350.0
    assert table["EPYC 9654"] == 360.0
    assert table["Ryzen Threadripper 3990X"] == 280.0


# -- matching /proc/cpuinfo's names -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("Intel(R) Xeon(R) CPU E5-2698 v4 @ 2.20GHz", "Xeon E5-2698 v4"),
        ("Intel(R) Xeon(R) CPU E5-2699 v3 @ 2.30GHz", "Xeon E5-2699 v3"),
        ("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", "Xeon Gold 6248"),
        ("Intel(R) Xeon(R) Platinum 8480+", "Xeon Platinum 8480+"),
        ("12th Gen Intel(R) Core(TM) i9-12900K", "Core i9-12900K"),
        ("Intel(R) Core(TM) i7-4790 CPU @ 3.60GHz", "Core i7-4790"),
        (EPYC_7742, "EPYC 7742"),
        ("AMD EPYC 9474F 48-Core Processor", "EPYC 9474F"),
        ("AMD Ryzen 9 5950X 16-Core Processor", "Ryzen 9 5950X"),
        ("AMD Ryzen Threadripper PRO 3995WX 64-Cores", "Ryzen Threadripper PRO 3995WX"),
    ],
)
def test_cpuinfo_names_find_their_row(name: str, model: str) -> None:
    row = lookup_cpu_tdp(name)
    assert row is not None and row.model == model


@pytest.mark.parametrize(
    "name",
    [
        "Intel(R) Xeon(R) Processor",  # a virtual machine's generic name
        "Intel(R) Xeon(R) Platinum 8480C",  # NVIDIA's DGX H100 variant: not the 8480+
        "12th Gen Intel(R) Core(TM) i9-12900KF",
        "AMD EPYC 7742P 64-Core Processor",
        "AMD EPYC 77420 Processor",
        "Intel(R) Xeon(R) CPU E5-2698 v3 @ 2.30GHz",
        "",
    ],
)
def test_other_names_find_no_row(name: str) -> None:
    assert lookup_cpu_tdp(name) is None


def test_read_cpuinfo_counts_sockets(tmp_path: Path) -> None:
    info = read_cpuinfo(cpuinfo(tmp_path, EPYC_7742, sockets=2))
    assert (info.model, info.sockets) == (EPYC_7742, 2)
    assert read_cpuinfo(tmp_path / "missing").sockets == 1


# -- the modelled CPU power ----------------------------------------------------------------------


def test_a_known_cpu_uses_its_tdp_times_sockets_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOULECAST_CPU_TDP_W", raising=False)
    path = cpuinfo(tmp_path, EPYC_7742, sockets=2)
    tdp = cpu_tdp(path)
    source = "https://www.amd.com/en/products/processors/server/epyc/7002-series/amd-epyc-7742.html"
    assert tdp.tdp_w == 450.0
    assert tdp.tdp_from == f"table: EPYC 7742, 225 W x 2 socket(s), {source}"
    facts = HostSensor(model_cpu=True, cpuinfo=path).describe()["cpu"]
    assert facts == {
        "model": "tdp_w x tree_cpu_share",
        "tdp_w": 450.0,
        "tdp_from": tdp.tdp_from,
        "cpu_model": EPYC_7742,
        "sockets": 2,
        "tdp_per_socket_w": 225.0,
        "tdp_table_model": "EPYC 7742",
        "tdp_source": source,
    }


def test_the_variable_overrides_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOULECAST_CPU_TDP_W", "95")
    tdp = cpu_tdp(cpuinfo(tmp_path, EPYC_7742))
    assert (tdp.tdp_w, tdp.tdp_from, tdp.facts) == (95.0, "JOULECAST_CPU_TDP_W", {})


def test_an_unknown_cpu_keeps_the_default_and_names_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOULECAST_CPU_TDP_W", raising=False)
    tdp = cpu_tdp(cpuinfo(tmp_path, "Intel(R) Xeon(R) Processor", sockets=2))
    assert tdp.tdp_w == 85.0
    assert tdp.tdp_from == (
        "default (CPU model 'Intel(R) Xeon(R) Processor' not in the TDP table); "
        "set JOULECAST_CPU_TDP_W to your CPU's TDP"
    )
    assert cpu_tdp(tmp_path / "none").tdp_from.startswith("default (")
