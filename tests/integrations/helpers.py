"""Reading a run back from its store, for the integration tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from joulecast.store import Store


def stored(path: Path, run_id: int) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """The run row, its epochs and its steps, read from a fresh connection to the store."""
    with Store(path) as store:
        return store.run(run_id), store.phases(run_id, "epoch"), store.phases(run_id, "step")
