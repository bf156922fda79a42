"""Reading a run back from its store, for the integration tests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from joulecast.integrations._common import Session
from joulecast.records import PhaseKind
from joulecast.run import Run, measure
from joulecast.store import Store


def stored(path: Path, run_id: int) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """The run row, its epochs and its steps, read from a fresh connection to the store."""
    with Store(path) as store:
        return store.run(run_id), store.phases(run_id, "epoch"), store.phases(run_id, "step")


def measured_run(path: Path, name: str, epochs: int = 2) -> Run:
    """A run of ``epochs`` short epochs of 50 samples each, stored at ``path``."""
    with measure(name=name, store=path, interval_s=0.02) as run:
        for i in range(epochs):
            with run.epoch(i, samples=50):
                time.sleep(0.1)
    return run


def train(session: Session, epochs: int, samples: int | None = 10) -> None:
    """Start ``session``, run ``epochs`` empty epochs of ``samples`` each, finish it."""
    session.start()
    for i in range(epochs):
        index = session.begin(PhaseKind.EPOCH, i)
        session.end(PhaseKind.EPOCH, index, samples=samples)
    session.finish()
