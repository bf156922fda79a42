"""CO2e of stored runs: a fixed value, the shipped table and an hourly file, hand-computed."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from joulecast.carbon import (
    INTENSITY_ENV,
    REGION_ENV,
    fixed,
    read_intensity_csv,
    region,
    resolve_intensity,
    run_emissions,
)
from joulecast.errors import InputError
from joulecast.store import SAMPLE_COLUMNS, Store

# The run: 100 W from 10:30 to 12:00 UTC, read every minute: 180 kJ (0.05 kWh) in the hour
# from 10:00 and 360 kJ (0.1 kWh) in the hour from 11:00; 540 kJ = 0.15 kWh in all.
START = datetime(2026, 1, 5, 10, 30, tzinfo=timezone.utc).timestamp()
HOURLY = (
    "datetime,g_per_kwh,zone\n"
    "2026-01-05T09:00:00Z,999,ignored: before the run\n"
    "2026-01-05T11:00:00+00:00,400,rows in any order\n"
    "2026-01-05T10:00:00,100,no zone: UTC\n"
    "2026-01-05T12:00:00Z,999,ignored: from the run's end\n"
)


def store_run(path: Path) -> tuple[Store, int]:
    """A store at ``path`` holding the run above, named ``r``."""
    store = Store(path)
    t = np.arange(0.0, 5400.0 + 1, 60.0)
    frame = pd.DataFrame({"t_s": t, "device": "gpu:0", "power_w": 100.0, "energy_j": np.nan})
    frame = frame.assign(util_pct=np.nan, mem_used_mib=np.nan, temp_c=np.nan)
    frame = frame.assign(source="test", measured=True)
    run_id = store.import_run(samples=frame[list(SAMPLE_COLUMNS)], started_at=START, name="r")
    return store, run_id


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Store, int]:
    return store_run(tmp_path / "runs.db")


def test_a_fixed_value(stored: tuple[Store, int]) -> None:
    e = run_emissions(*stored, fixed(200.0))
    assert e.co2e_g == pytest.approx(0.15 * 200.0)  # 30 g
    assert e.intensity_g_per_kwh == 200.0 and e.pue == 1.0
    assert "given value" in e.intensity_source


def test_the_energy_the_caller_read_is_the_energy_counted(
    stored: tuple[Store, int], tmp_path: Path
) -> None:
    # A live run's summary read a moment before the store grew to 0.15 kWh: its 0.1 kWh count.
    assert run_emissions(*stored, fixed(200.0), energy_j=0.1 * 3.6e6).co2e_g == pytest.approx(20)
    (tmp_path / "ci.csv").write_text(HOURLY)
    e = run_emissions(*stored, read_intensity_csv(tmp_path / "ci.csv"), 1.2, energy_j=0.1 * 3.6e6)
    assert e.intensity_g_per_kwh == pytest.approx(300.0)  # weighted by the stored energy
    assert e.co2e_g == pytest.approx(0.1 * 1.2 * 300.0)


def test_the_table_by_region(stored: tuple[Store, int]) -> None:
    e = run_emissions(*stored, region("fra"), pue=1.5)
    assert e.co2e_g == pytest.approx(0.15 * 1.5 * 67.39)  # France 2021: 67.39 g/kWh
    assert "FRA (France) 2021" in e.intensity_source and "Our World in Data" in e.intensity_source


def test_an_hourly_file_weights_each_hour_by_its_energy(
    stored: tuple[Store, int], tmp_path: Path
) -> None:
    (tmp_path / "ci.csv").write_text(HOURLY)
    e = run_emissions(*stored, read_intensity_csv(tmp_path / "ci.csv"), pue=1.2)
    # 0.05 kWh x 100 g + 0.1 kWh x 400 g = 45 g; x PUE 1.2 = 54 g; 45 g / 0.15 kWh = 300 g/kWh
    assert e.co2e_g == pytest.approx(54.0)
    assert e.intensity_g_per_kwh == pytest.approx(300.0)
    assert e.intensity_source == "hourly file ci.csv"


def test_half_hourly_rows_each_hold_until_the_next(
    stored: tuple[Store, int], tmp_path: Path
) -> None:
    rows = ["10:30,100", "11:00,200", "11:30,300"]
    body = "".join(f"2026-01-05T{r}\n".replace(",", ":00Z,", 1) for r in rows)
    (tmp_path / "ci.csv").write_text("datetime,g_per_kwh\n" + body)
    e = run_emissions(*stored, read_intensity_csv(tmp_path / "ci.csv"))
    # 180 kJ (0.05 kWh) in each half hour: 0.05 x (100 + 200) + 0.05 x 300 (10:30-12:00 is
    # covered by the last row's hour up to 12:30)
    assert e.co2e_g == pytest.approx(0.05 * 100 + 0.05 * 200 + 0.05 * 300)


def test_a_file_that_misses_an_hour_of_the_run_names_it(
    stored: tuple[Store, int], tmp_path: Path
) -> None:
    (tmp_path / "ci.csv").write_text("datetime,g_per_kwh\n2026-01-05T10:00:00Z,100\n")
    with pytest.raises(InputError, match="from 2026-01-05 11:00:00 UTC to 2026-01-05 12:00:00"):
        run_emissions(*stored, read_intensity_csv(tmp_path / "ci.csv"))


def test_resolution_order(tmp_path: Path) -> None:
    (tmp_path / "ci.csv").write_text(HOURLY)
    env = {INTENSITY_ENV: "50", REGION_ENV: "SWE"}
    assert resolve_intensity(10.0, tmp_path / "ci.csv", "FRA", env).g_per_kwh == 10.0
    assert resolve_intensity(None, tmp_path / "ci.csv", "FRA", env).series
    assert "FRA" in resolve_intensity(None, None, "FRA", env).source
    assert resolve_intensity(None, None, None, env).g_per_kwh == 50.0
    assert "SWE" in resolve_intensity(None, None, None, {REGION_ENV: "swe"}).source
    assert resolve_intensity(None, None, None, {}) is None


@pytest.mark.parametrize("value", ["abc", "-5", "1e9", "nan"])
def test_a_bad_intensity_variable_is_named(value: str) -> None:
    with pytest.raises(InputError, match=f"^\\${INTENSITY_ENV} '{value}': expected a number"):
        resolve_intensity(None, None, None, {INTENSITY_ENV: value})


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("when,g\n", "no column datetime, g_per_kwh"),
        ("datetime,g_per_kwh\nyesterday,10\n", "line 2: datetime 'yesterday'"),
        ("datetime,g_per_kwh\n2026-01-05T10:00Z,abc\n", "line 2: g_per_kwh 'abc'"),
        ("datetime,g_per_kwh\n2026-01-05T10:00Z,-1\n", "line 2: g_per_kwh '-1'"),
        ("datetime,g_per_kwh\n2026-01-05T10:00Z,nan\n", "line 2: g_per_kwh 'nan'"),
        ("datetime,g_per_kwh\n2026-01-05T10:00Z,1\n2026-01-05T10:00Z,2\n", "line 3: datetime"),
        ("datetime,g_per_kwh\n", "no rows"),
    ],
)
def test_bad_hourly_files_name_line_and_field(tmp_path: Path, body: str, named: str) -> None:
    (tmp_path / "ci.csv").write_text(body)
    with pytest.raises(InputError, match=f"ci.csv: .*{named}"):
        read_intensity_csv(tmp_path / "ci.csv")


def test_an_unknown_region_says_how_to_find_codes() -> None:
    with pytest.raises(InputError, match=r"'XX'.*alpha-3.*python -m joulecast\.carbon"):
        region("XX")


def test_the_table_is_shipped_with_its_source() -> None:
    from importlib import resources

    text = resources.files("joulecast").joinpath("data").joinpath("carbon_intensity.csv")
    head = text.read_text(encoding="utf-8")[:600]
    assert "mlco2/codecarbon" in head and "CC BY 4.0" in head and "2021" in head


def test_the_table_script_copies_the_four_fields(tmp_path: Path) -> None:
    import subprocess
    import sys

    mix = (
        '{"FRA": {"carbon_intensity": 67.39, "country_name": "France", "year": 2021,'
        ' "iso_code": "FRA"}, "XYZ": {"carbon_intensity": NaN, "country_name": "X", "year": 2021}}'
    )
    (tmp_path / "mix.json").write_text(mix)
    script = Path(__file__).parents[1] / "scripts" / "carbon_table.py"
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "mix.json")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shipped = (Path(__file__).parents[1] / "src/joulecast/data/carbon_intensity.csv").read_text()
    body = [line for line in out.splitlines() if not line.startswith("#")]
    assert body == ["code,country,g_per_kwh,year", "FRA,France,67.39,2021"]
    assert "FRA,France,67.39,2021" in shipped.splitlines()
    assert [x for x in out.splitlines() if x.startswith("#")] == [
        x for x in shipped.splitlines() if x.startswith("#")
    ]


def test_a_run_without_energy_under_a_lookup_says_so_not_nan() -> None:
    from joulecast.carbon import Emissions

    line = Emissions(0.0, float("nan"), "Electricity Maps zone DE, hourly history", 1.0).describe()
    assert line == "CO2e: 0 g (no energy measured; Electricity Maps zone DE, hourly history), PUE 1"


def test_a_run_without_energy_claims_no_intensity_from_a_file(tmp_path: Path) -> None:
    store = Store(tmp_path / "idle.db")
    frame = pd.DataFrame(
        {"t_s": [0.0, 60.0], "device": "gpu:0", "power_w": 0.0, "energy_j": np.nan}
    )
    frame = frame.assign(util_pct=np.nan, mem_used_mib=np.nan, temp_c=np.nan)
    frame = frame.assign(source="test", measured=True)
    later = START + 30 * 86400  # a month after the file's hours
    run_id = store.import_run(samples=frame[list(SAMPLE_COLUMNS)], started_at=later, name="idle")
    (tmp_path / "ci.csv").write_text(HOURLY)
    e = run_emissions(store, run_id, read_intensity_csv(tmp_path / "ci.csv"))
    assert e.co2e_g == 0.0 and np.isnan(e.intensity_g_per_kwh)
    assert e.describe() == "CO2e: 0 g (no energy measured; hourly file ci.csv), PUE 1"


def test_the_table_listing_stops_quietly_when_its_reader_does() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        f"'{sys.executable}' -m joulecast.carbon | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.startswith("ABW ") and len(proc.stdout.splitlines()) == 1
    assert "Traceback" not in proc.stderr
