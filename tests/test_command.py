"""joulecast.measure_command: a command run under measurement, through the library."""

from __future__ import annotations

import sys
import textwrap

import pytest

import joulecast
from joulecast.errors import InputError
from joulecast.store import Store

CHILD = """
    import sys, time
    import joulecast
    with joulecast.measure() as run:
        assert run.joined
        for i in range(4):
            with run.epoch(i, samples=50):
                time.sleep(0.15)
    sys.exit(int(sys.argv[1]))
"""


def test_measure_command_returns_the_summary_with_the_live_forecast_stored(tmp_path, capsys):
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent(CHILD))
    summary = joulecast.measure_command(
        [sys.executable, child, "0"],
        store=tmp_path / "s.db",
        name="api",
        tags={"k": "v"},
        interval_s=0.02,
        epochs=4,
        stable_epoch=1,
        window=3,
    )
    assert summary.status == "completed" and summary.exit_code == 0 and summary.signal is None
    assert summary.name == "api" and summary.tags == {"k": "v"}
    assert list(summary.epochs["index"]) == [0, 1, 2, 3]
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("joulecast: epoch")]
    assert [ln.split()[2] for ln in lines] == ["1/4", "2/4", "3/4", "4/4"]
    # What was forecast from is what the summary shows: each epoch's energy is final when used.
    stored = [m["forecast"] for m in summary.epochs["metrics"]]
    energy = summary.epochs["energy_j"].to_numpy()
    for k, forecast in enumerate(stored):
        assert forecast["energy_so_far_j"] == pytest.approx(energy[: k + 1].sum(), rel=1e-9)
    # The last window covers every stable epoch: the forecast is the measured total.
    assert stored[-1]["total_j"] == pytest.approx(energy.sum(), rel=1e-9)


def test_measure_command_records_a_failing_command(tmp_path):
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent(CHILD))
    summary = joulecast.measure_command(
        [sys.executable, child, "3"], store=tmp_path / "s.db", interval_s=0.05
    )
    assert summary.status == "failed" and summary.exit_code == 3


def test_measure_command_that_cannot_start_leaves_no_run(tmp_path):
    with pytest.raises(InputError, match="cannot run"):
        joulecast.measure_command([str(tmp_path / "missing")], store=tmp_path / "s.db")
    with pytest.raises(InputError, match="no command"):
        joulecast.measure_command([], store=tmp_path / "s.db")
    assert Store(tmp_path / "s.db").runs().empty
