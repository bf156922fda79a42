"""The shipped real traces import as runs that forecasting tests can use."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from joulecast.energy import summarize
from joulecast.store import Store
from tests.real_traces import TRACES_DIR, import_real_trace, real_trace, real_traces

NAMES = [trace.name for trace in real_traces()]


def test_at_least_three_traces_are_shipped() -> None:
    assert len(NAMES) >= 3


def test_every_trace_is_small() -> None:
    for path in TRACES_DIR.glob("*.csv"):
        assert path.stat().st_size < 300_000, path.name


def test_an_unknown_name_lists_the_shipped_ones() -> None:
    with pytest.raises(KeyError, match=NAMES[0]):
        real_trace("no-such-trace")


@pytest.mark.parametrize("name", NAMES)
def test_trace_imports_with_finished_epochs_and_energy(store: Store, name: str) -> None:
    run_id = import_real_trace(store, name)
    summary = summarize(store, run_id)
    assert summary.name == name
    assert summary.warnings == []
    epochs = summary.epochs
    finished = epochs[epochs["duration_s"] > 0]
    assert len(finished) >= 6
    assert (finished["energy_j"] > 0).all()
    assert summary.energy_j > 0
    # Epochs lie inside the trace, in order, without overlap.
    starts, ends = epochs["start_s"].to_numpy(), epochs["end_s"].to_numpy()
    assert (starts[1:] >= ends[:-1]).all()
    assert epochs["energy_j"].sum() <= summary.energy_j


@pytest.fixture(scope="module")
def real_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, dict[str, int]]]:
    """Every shipped trace imported into one store: name -> run id."""
    with Store(tmp_path_factory.mktemp("real") / "real.db") as store:
        yield store, {name: import_real_trace(store, name) for name in NAMES}


def test_default_forecast_on_real_traces_is_within_3_percent(
    real_store: tuple[Store, dict[str, int]],
) -> None:
    from joulecast.forecast import finished_epochs, forecast_run

    store, runs = real_store
    errors: dict[str, list[float]] = {"epoch-energy": [], "first-epoch": []}
    for name, run_id in runs.items():
        n = len(finished_epochs(store, run_id))
        if n < 6:
            continue
        after = max(n // 2, min(n - 2, 7))
        for method in errors:
            found = forecast_run(store, run_id, after=after, method=method)
            assert found.error_pct is not None
            errors[method].append(abs(found.error_pct))
            if method == "epoch-energy":
                assert abs(found.error_pct) <= 3.0, (name, after, found.error_pct)
                assert found.forecast.stable_by in ("fluss", "energy", "recent")
                f = found.forecast
                assert f.low_j <= found.true_j <= f.high_j, name  # type: ignore[operator]
    assert len(errors["epoch-energy"]) >= 3
    assert np.median(errors["epoch-energy"]) < np.median(errors["first-epoch"])


def test_default_forecast_answers_after_one_and_two_epochs(
    real_store: tuple[Store, dict[str, int]],
) -> None:
    from joulecast.forecast import forecast_run

    store, runs = real_store
    for run_id in runs.values():
        two = forecast_run(store, run_id, after=2).forecast
        assert two.method == "epoch-energy" and two.stable_epoch == 1 and two.epochs_used == 2
        one = forecast_run(store, run_id, after=1).forecast
        assert one.method == "first-epoch" and one.stable_by == "first-epoch"
        assert one.notes[0] == "one epoch seen: the first-epoch extrapolation"


def test_cli_imports_a_real_trace_and_forecasts_it_by_default(tmp_path: Path) -> None:
    trace = real_trace(NAMES[0])
    store = tmp_path / "s.db"

    def cli(*args: object) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, "-m", "joulecast", *map(str, args), "--store", store, "--json"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    run_id = cli("import", "trace", "--power", trace.power, "--phases", trace.phases)["run_id"]
    found = cli("forecast", run_id, "--after", 21)
    assert found["method"] == "epoch-energy" and found["stable_epoch_by"] == "fluss"
    assert abs(found["error_pct"]) <= 3.0
    assert found["low_j"] <= found["true_j"] <= found["high_j"]
