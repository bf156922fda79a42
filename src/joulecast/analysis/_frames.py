"""Checks of the frames the analysis functions take: columns present, values numbers."""

from __future__ import annotations

import contextlib
from collections.abc import Hashable

import numpy as np
import pandas as pd

from joulecast.errors import InputError


def require_columns(df: object, **columns: str | None) -> None:
    """InputError unless ``df`` is a DataFrame with every named column (None: not asked for)."""
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"expected a pandas DataFrame, got {type(df).__name__}")
    for argument, name in columns.items():
        if name is not None and name not in df.columns:
            cols = ", ".join(map(str, df.columns)) or "none"
            raise InputError(f"{argument}={name!r} is not a column of the frame (columns: {cols})")


def numbers(df: pd.DataFrame, name: str, argument: str, *, infinite: str = "error") -> pd.Series:
    """Column ``name`` as floats; infinities raise (``infinite="error"``) or become NaN."""
    try:
        values = pd.to_numeric(df[name], errors="raise").astype("float64")
    except (TypeError, ValueError) as exc:
        raise InputError(f"{argument}={name!r}: the column must hold numbers ({exc})") from exc
    if infinite == "nan":
        return values.replace([np.inf, -np.inf], np.nan)
    if np.isinf(values.to_numpy()).any():
        raise InputError(f"{argument}={name!r}: the column holds infinite values")
    return values


def group_order(labels: pd.Series) -> list[Hashable]:
    """Distinct labels in category order, else sorted (first-seen order when unsortable)."""
    if isinstance(labels.dtype, pd.CategoricalDtype):
        present = set(labels.dropna().unique())
        return [c for c in labels.cat.categories if c in present]
    order: list[Hashable] = list(pd.unique(labels.dropna()))
    with contextlib.suppress(TypeError):
        order = sorted(order)  # type: ignore[type-var]
    return order
