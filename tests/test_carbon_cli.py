"""CO2e in the verbs: show (text and JSON), runs and measure, and their options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from joulecast.carbon import REGION_ENV
from joulecast.cli import main
from joulecast.store import Store
from tests.test_carbon import HOURLY, store_run


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Store, int]:
    return store_run(tmp_path / "runs.db")


def test_show_json_and_text(
    stored: tuple[Store, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "runs.db")
    assert main(["show", "r", "--store", store, "--json", "--intensity", "200"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["co2e_g"] == pytest.approx(30.0) and data["intensity_g_per_kwh"] == 200.0
    assert data["pue"] == 1.0 and "given value" in data["intensity_source"]
    assert main(["show", "r", "--store", store, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["co2e_g"] is None and data["intensity_source"] is None
    (tmp_path / "ci.csv").write_text(HOURLY)
    argv = ["show", "r", "--store", store, "--intensity-csv", str(tmp_path / "ci.csv")]
    assert main([*argv, "--pue", "1.2"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "CO2e: 54.00 g at 300.0 gCO2e/kWh (hourly file ci.csv), PUE 1.2" in out
    assert main(["show", "r", "--store", store]) == 0
    assert "CO2e: none (no carbon intensity given" in capsys.readouterr().out


def test_runs_has_a_column_where_an_intensity_is_known(
    stored: tuple[Store, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = str(tmp_path / "runs.db")
    assert main(["runs", "--store", store]) == 0
    assert "CO2e" not in capsys.readouterr().out
    monkeypatch.setenv(REGION_ENV, "FRA")
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["runs", "--store", store, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["co2e_g"] == pytest.approx(0.15 * 67.39) and "FRA" in row["intensity_source"]
    assert main(["runs", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "CO2e g" in out and "10.11" in out and "region FRA" in out
    # A file that misses the run: the same keys, null figures, and why.
    (tmp_path / "ci.csv").write_text("datetime,g_per_kwh\n2026-01-05T10:00:00Z,100\n")
    assert (
        main(["runs", "--store", store, "--json", "--intensity-csv", str(tmp_path / "ci.csv")]) == 0
    )
    (row,) = json.loads(capsys.readouterr().out)
    assert row["co2e_g"] is None and row["intensity_g_per_kwh"] is None
    assert row["intensity_source"] == "hourly file ci.csv" and row["pue"] == 1.0
    assert row["co2e_note"].startswith("no CO2e: hourly file ci.csv: does not cover the run's")


def test_show_with_a_file_that_misses_the_run_is_one_line(
    stored: tuple[Store, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ci.csv").write_text("datetime,g_per_kwh\n2000-01-01T00:00Z,100\n")
    argv = ["show", "r", "--store", str(tmp_path / "runs.db")]
    assert main([*argv, "--intensity-csv", str(tmp_path / "ci.csv")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing half-printed
    (line,) = captured.err.splitlines()
    assert "ci.csv: does not cover the run's readings from 2026-01-05 10:30:00 UTC" in line


def test_measure_prints_the_co2e_at_the_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    argv = ["measure", "--no-gpu", "--interval", "0.05", "--store", str(tmp_path / "m.db")]
    argv += ["--region", "SWE", "--pue", "1.3", "--", sys.executable, "-c", "pass"]
    assert main(argv) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "gCO2e/kWh (region SWE (Sweden) 2021 yearly average" in err and "PUE 1.3" in err


def test_report_takes_the_same_options(
    stored: tuple[Store, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "r.md"
    argv = ["report", "--store", str(tmp_path / "runs.db"), "-o", str(out), "--format", "md"]
    assert main([*argv, "--intensity", "200"]) == 0
    text = out.read_text()
    assert "## CO2e" in text and "given value (--intensity)" in text  # the run is cleaned out
    assert main([*argv, "--region", "nowhere"]) == 2
    assert "region 'nowhere'" in capsys.readouterr().err
