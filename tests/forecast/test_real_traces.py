"""The shipped real traces import as runs that forecasting tests can use."""

from __future__ import annotations

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
