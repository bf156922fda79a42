"""The cleaning of del Rey et al. (2024), section 3.7: which runs the analysis keeps, and why.

"Before the analysis, we clean our data from failed runs, empty values, outliers, and runs
where the sampling rate was higher than the epoch duration. This process reduces the initial
1,630 runs to 1,225 cleaned runs." :func:`clean` applies these rules to a run table
(:func:`joulecast.analysis.data.run_table`), in this order, each to the runs the rules before it
kept:

1. **not completed**: ``status`` is not ``completed`` (failed, interrupted, still running).
2. **empty values**: ``energy_j``, ``images``, ``duration_s`` or ``j_per_image`` is missing or
   not finite (``j_per_image`` is missing where ``images`` is 0, or where the ``val_samples``
   tag is there but not a number of 0 or more).
3. **sampled slower than an epoch**: ``interval_s`` is longer than ``mean_epoch_s``: the run
   has fewer samples than epochs, so its per-epoch energy is mostly interpolation. A run whose
   interval or epoch time is unknown is kept.
4. **outliers**: ``j_per_image`` outside [Q1 - k IQR, Q3 + k IQR] of its group (the runs that
   share the ``group_by`` columns; a missing value is a group value of its own), with the
   quartiles interpolated linearly between runs (pandas' default). A group of fewer than
   :data:`MIN_GROUP_SIZE` runs has too few for quartiles to mean anything: it is **not
   filtered**, and :attr:`CleaningLog.unchecked_groups` lists it.

The paper's replication package drops outliers of energy; here it is energy per image, the
quantity the analysis compares, so that runs of different lengths are judged alike. It is the
paper's J/image (training and validation images); in a group whose runs share their split sizes
it is the training-only ``j_per_train_image`` times one constant, so the same runs are removed.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from joulecast.errors import InputError

__all__ = [
    "EMPTY",
    "MIN_GROUP_SIZE",
    "NOT_COMPLETED",
    "OUTLIERS",
    "SLOW_SAMPLING",
    "CleaningLog",
    "CleaningStep",
    "clean",
]

NOT_COMPLETED = "not completed"
EMPTY = "empty values"
SLOW_SAMPLING = "sampled slower than an epoch"
OUTLIERS = "outliers"
#: Groups with fewer runs than this are not filtered for outliers.
MIN_GROUP_SIZE = 4
#: Columns a run needs; a missing or infinite value in any of them removes it (rule 2).
REQUIRED = ("energy_j", "images", "duration_s", "j_per_image")
_USED = ("run_id", "status", *REQUIRED, "interval_s", "mean_epoch_s")


@dataclass(frozen=True)
class CleaningStep:
    """What one rule removed: its reason, how many runs, and their ids (in table order)."""

    reason: str
    removed: int
    run_ids: tuple[int, ...]


@dataclass
class CleaningLog:
    """The rules applied in order, with the counts before and after.

    ``str(log)`` reads like the paper: ``"1,630 runs -> 1,225: 12 not completed, ..."``.
    """

    start: int
    end: int
    steps: list[CleaningStep] = field(default_factory=list)
    group_by: tuple[str, ...] = ()
    iqr_k: float = 1.5
    #: Groups (tuples of the ``group_by`` values) too small to be checked for outliers.
    unchecked_groups: list[tuple[Hashable, ...]] = field(default_factory=list)

    def removed(self, reason: str) -> tuple[int, ...]:
        """The ids of the runs removed for ``reason`` (one of the module's reason constants)."""
        for step in self.steps:
            if step.reason == reason:
                return step.run_ids
        raise InputError(f"reason {reason!r}: expected one of {[s.reason for s in self.steps]}")

    def to_frame(self) -> pd.DataFrame:
        """One row per rule: ``reason``, ``removed`` (a count) and ``run_ids`` (a list)."""
        return pd.DataFrame(
            {
                "reason": [s.reason for s in self.steps],
                "removed": pd.Series([s.removed for s in self.steps], dtype="int64"),
                "run_ids": [list(s.run_ids) for s in self.steps],
            }
        )

    def __str__(self) -> str:
        counts = ", ".join(f"{s.removed:,} {s.reason}" for s in self.steps)
        text = f"{self.start:,} runs -> {self.end:,}" + (f": {counts}" if counts else "")
        if self.unchecked_groups:
            n = len(self.unchecked_groups)
            text += (
                f" (outliers not checked in {n} group{'s' if n > 1 else ''}"
                f" of fewer than {MIN_GROUP_SIZE} runs)"
            )
        return text


def _check(table: pd.DataFrame, group_by: tuple[str, ...], iqr_k: float) -> None:
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"table: got {type(table).__name__}, expected a run table (DataFrame)")
    missing = [c for c in (*_USED, *group_by) if c not in table.columns]
    if missing:
        raise InputError(
            f"run table lacks columns {missing}: expected the columns of "
            "joulecast.analysis.data.run_table"
        )
    if not (isinstance(iqr_k, int | float) and math.isfinite(iqr_k) and iqr_k > 0):
        raise InputError(f"iqr_k: got {iqr_k!r}, expected a positive number such as 1.5")
    for col in (*REQUIRED, "interval_s", "mean_epoch_s"):
        if not pd.api.types.is_numeric_dtype(table[col]):
            raise InputError(f"run table column {col!r}: expected numbers, got {table[col].dtype}")


def _empty(table: pd.DataFrame) -> pd.Series:
    values = table.loc[:, list(REQUIRED)].astype(float).to_numpy()
    return pd.Series(~np.isfinite(values).all(axis=1), index=table.index)


def clean(
    table: pd.DataFrame,
    *,
    group_by: Sequence[str] = ("architecture", "dataset", "environment"),
    iqr_k: float = 1.5,
) -> tuple[pd.DataFrame, CleaningLog]:
    """Apply the four rules of the module docstring, in order; return the kept runs and a log.

    Args:
        table: A run table (:func:`joulecast.analysis.data.run_table`); not modified.
        group_by: The columns whose values make a group for the outlier rule.
        iqr_k: Outliers lie more than ``iqr_k`` interquartile ranges outside the quartiles.

    Returns:
        The kept rows, in their order, with a fresh index; and the :class:`CleaningLog`.

    Raises:
        InputError: ``table`` lacks a column the rules use, or one is not numeric, or
            ``iqr_k`` is not a positive number.
    """
    group_by = tuple(group_by)
    _check(table, group_by, iqr_k)
    kept = table.reset_index(drop=True)
    log = CleaningLog(start=len(kept), end=len(kept), group_by=group_by, iqr_k=float(iqr_k))

    def drop(reason: str, mask: pd.Series) -> None:
        nonlocal kept
        mask = mask.fillna(False).astype(bool)
        ids = tuple(int(i) for i in kept.loc[mask, "run_id"])
        log.steps.append(CleaningStep(reason, len(ids), ids))
        kept = kept.loc[~mask].reset_index(drop=True)

    drop(NOT_COMPLETED, kept["status"] != "completed")
    drop(EMPTY, _empty(kept))
    interval = kept["interval_s"].astype(float)
    epoch = kept["mean_epoch_s"].astype(float)
    drop(SLOW_SAMPLING, interval.notna() & epoch.notna() & (interval > epoch))

    outlier = pd.Series(False, index=kept.index)
    if group_by and len(kept):
        groups = kept.groupby(list(group_by), dropna=False, sort=True)["j_per_image"]
    else:
        groups = kept.groupby(np.zeros(len(kept)), sort=True)["j_per_image"]
    for key, values in groups:
        if len(values) < MIN_GROUP_SIZE:
            if not group_by:
                key = ()
            log.unchecked_groups.append(key if isinstance(key, tuple) else (key,))
            continue
        q1, q3 = values.quantile(0.25), values.quantile(0.75)
        spread = iqr_k * (q3 - q1)
        outlier.loc[values.index] = (values < q1 - spread) | (values > q3 + spread)
    drop(OUTLIERS, outlier)
    log.end = len(kept)
    return kept, log
