"""Energy against correctness: the Pareto front of groups and plain-language savings.

del Rey et al. (2024), RQ1.2, weigh each architecture's median energy per image against its
median F1 ("VGG16 achieves the best score of 0.99, followed by Xception ... with 0.98") and
RQ2.1 state environment changes as savings ("migrating to Local N ... a 31.61% reduction").
This module turns a run table (one row per run, the columns of
:func:`joulecast.analysis.data.run_table`) into both, computed from the data only:

- :func:`pareto_front`: per group the median cost and median benefit, and whether the group
  is on the front (no other group is at least as cheap and at least as good, and strictly one
  of the two);
- :func:`savings_statements`: for every pair of groups where one is cheaper, a
  :class:`Savings` record ("Xception uses 38.2% less energy per image than VGG16 for at most
  1.3 points of F1").

Lower cost is better, higher benefit is better. Rows whose cost is missing are dropped; a
group whose benefit is missing for every run keeps its cost: it gets ``pareto`` = NA and a
note in :func:`pareto_front`, and statements about cost only (saying the benefit is missing)
in :func:`savings_statements`. A missing column, a non-numeric column or an infinite value
raises :class:`~joulecast.errors.InputError`.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from joulecast.analysis._frames import group_order, numbers, require_columns
from joulecast.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["Savings", "benefit_label", "cost_label", "pareto_front", "savings_statements"]

# How a column reads in a sentence; anything else reads as its own name.
COST_LABELS: dict[str, str] = {
    "j_per_image": "energy per image",
    "j_per_train_image": "energy per training image",
    "energy_j": "energy",
    "energy_j_measured": "measured energy",
    "energy_j_gpu": "GPU energy",
    "avg_power_w": "power",
    "s_per_image": "time per image",
    "duration_s": "time",
    "train_duration_s": "training time",
}
BENEFIT_LABELS: dict[str, str] = {"f1": "F1", "accuracy": "accuracy"}


def cost_label(cost: str) -> str:
    """How the cost column reads in a sentence (``j_per_image`` -> ``energy per image``)."""
    return COST_LABELS.get(cost, cost)


def benefit_label(benefit: str) -> str:
    """How the benefit column reads in a sentence (``f1`` -> ``F1``)."""
    return BENEFIT_LABELS.get(benefit, benefit)


# --- input handling ---------------------------------------------------------------------------


def _check_columns(df: pd.DataFrame, **columns: str) -> None:
    require_columns(df, **columns)


def _numeric(df: pd.DataFrame, name: str, argument: str) -> pd.Series:
    return numbers(df, name, argument)


def _medians(df: pd.DataFrame, cost: str, benefit: str, by: str) -> pd.DataFrame:
    """One row per group with a finite cost: n, median cost, n_benefit, median benefit."""
    _check_columns(df, cost=cost, benefit=benefit, by=by)
    if len({cost, benefit, by}) < 3:
        raise InputError(f"cost={cost!r}, benefit={benefit!r} and by={by!r} must be 3 columns")
    costs = _numeric(df, cost, "cost")
    benefits = _numeric(df, benefit, "benefit")
    labels = df[by]
    keep = costs.notna() & labels.notna()
    dropped = int((~keep).sum())
    if dropped:
        log.debug("%d of %d rows dropped: %r or %r missing", dropped, len(df), cost, by)
    costs, benefits, labels = costs[keep], benefits[keep], labels[keep]
    rows = []
    for group in group_order(labels):
        mine = (labels == group).to_numpy()
        c, b = costs[mine].to_numpy(), benefits[mine].dropna().to_numpy()
        rows.append(
            {
                by: group,
                "n": len(c),
                cost: float(np.median(c)),
                "n_benefit": len(b),
                benefit: float(np.median(b)) if len(b) else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=[by, "n", cost, "n_benefit", benefit])


def _points_scale(df: pd.DataFrame, benefit: str) -> float:
    """100 when every known benefit lies in 0..1 (a fraction: differences become points)."""
    values = _numeric(df, benefit, "benefit").dropna().to_numpy()
    return 100.0 if len(values) == 0 or (values.min() >= 0 and values.max() <= 1) else 1.0


# --- Pareto front -----------------------------------------------------------------------------


def pareto_front(
    df: pd.DataFrame, *, cost: str = "j_per_image", benefit: str = "f1", by: str = "architecture"
) -> pd.DataFrame:
    """The median cost and benefit of each group and whether the group is on the Pareto front.

    A group is on the front when no other group has a lower-or-equal median cost and a
    higher-or-equal median benefit with at least one of the two strict; two groups with the
    same medians are both on it.

    Args:
        df: one row per run.
        cost: the column to minimise (default energy per image, J).
        benefit: the column to maximise (default F1).
        by: the grouping column.

    Returns:
        One row per group that has a cost, sorted by median cost: ``by``, ``n`` (runs with a
        cost), ``cost`` (median), ``n_benefit`` (runs with a benefit), ``benefit`` (median),
        ``pareto`` (nullable boolean: NA when the group has no benefit), ``dominated_by``
        (the groups that dominate it, comma-separated) and ``note``. The column names are
        those of the arguments; ``attrs`` records ``cost``, ``benefit`` and ``by``.
    """
    out = _medians(df, cost, benefit, by)
    known = out[out[benefit].notna()]
    pareto: list[bool | None] = []
    dominated_by: list[str] = []
    notes: list[str] = []
    for c, b in zip(out[cost].to_numpy(), out[benefit].to_numpy(), strict=True):
        if math.isnan(b):
            pareto.append(None)
            dominated_by.append("")
            notes.append(f"{benefit_label(benefit)} missing: cost only, not placed on the front")
            continue
        better = known[
            (known[cost] <= c) & (known[benefit] >= b) & ((known[cost] < c) | (known[benefit] > b))
        ]
        names = [str(g) for g in better[by]]
        pareto.append(not names)
        dominated_by.append(", ".join(names))
        notes.append("")
    out["pareto"] = pd.array(pareto, dtype="boolean")
    out["dominated_by"] = dominated_by
    out["note"] = notes
    out = out.sort_values([cost, benefit], ascending=[True, False], kind="stable")
    out = out.reset_index(drop=True)
    out.attrs.update(cost=cost, benefit=benefit, by=by)
    return out


# --- savings statements -----------------------------------------------------------------------


@dataclass(frozen=True)
class Savings:
    """How much cheaper ``alternative`` is than ``reference``, and what it costs in benefit.

    ``saving_pct`` is the reduction of the median cost, in % of the reference's.
    ``loss_points`` is the reference's median benefit minus the alternative's, times 100 when
    the benefit is a fraction (0..1), so in points of F1; negative means the alternative is
    also better. It is ``None`` when either group has no benefit.
    """

    reference: str
    alternative: str
    saving_pct: float
    loss_points: float | None
    reference_cost: float
    alternative_cost: float
    reference_benefit: float | None
    alternative_benefit: float | None
    cost: str = "j_per_image"
    benefit: str = "f1"

    def text(self) -> str:
        """One sentence, e.g. "Xception uses 38.2% less energy per image than VGG16 for at
        most 1.3 points of F1"."""
        head = (
            f"{self.alternative} uses {self.saving_pct:.1f}% less {cost_label(self.cost)} "
            f"than {self.reference}"
        )
        name = benefit_label(self.benefit)
        loss = self.loss_points
        if loss is None:
            missing = [
                g
                for g, v in (
                    (self.alternative, self.alternative_benefit),
                    (self.reference, self.reference_benefit),
                )
                if v is None
            ]
            return f"{head} ({name} is missing for {' and '.join(missing)})"
        if loss == 0:
            return f"{head} with the same {name}"
        small = abs(loss) < 0.05  # would print as 0.0
        if loss > 0:
            size = "less than 0.1" if small else f"at most {loss:.1f}"
            return f"{head} for {size} points of {name}"
        size = "less than 0.1" if small else f"{-loss:.1f}"
        return f"{head} and {size} points more {name}"


def savings_statements(
    df: pd.DataFrame,
    *,
    cost: str = "j_per_image",
    benefit: str = "f1",
    by: str = "architecture",
    max_loss_points: float | None = None,
) -> list[Savings]:
    """Every pair of groups where the alternative's median cost is lower, as :class:`Savings`.

    Args:
        df: one row per run.
        cost: the column to minimise (default energy per image, J).
        benefit: the column to maximise (default F1).
        by: the grouping column.
        max_loss_points: keep only statements losing at most this many points of benefit
            (negative asks for a gain); statements whose benefit is missing are then left
            out, since their loss is unknown. ``None`` keeps every statement.

    Returns:
        Statements sorted by saving, largest first (ties: smaller loss first). A reference
        whose median cost is zero gives none (no percentage of zero).
    """
    if max_loss_points is not None and not math.isfinite(max_loss_points):
        raise InputError(f"max_loss_points must be a finite number, got {max_loss_points!r}")
    groups = _medians(df, cost, benefit, by)
    scale = _points_scale(df, benefit)
    out: list[Savings] = []
    for ref, alt in itertools.permutations(groups.to_dict("records"), 2):
        ref_cost, alt_cost = float(ref[cost]), float(alt[cost])
        if not alt_cost < ref_cost or ref_cost <= 0:
            continue
        ref_b, alt_b = _known(ref[benefit]), _known(alt[benefit])
        loss = None if ref_b is None or alt_b is None else (ref_b - alt_b) * scale
        if loss is not None:
            loss = round(loss, 12) + 0.0  # exact-looking points; -0.0 becomes 0.0
        if max_loss_points is not None and (loss is None or loss > max_loss_points):
            continue
        out.append(
            Savings(
                reference=str(ref[by]),
                alternative=str(alt[by]),
                saving_pct=(ref_cost - alt_cost) / ref_cost * 100,
                loss_points=loss,
                reference_cost=ref_cost,
                alternative_cost=alt_cost,
                reference_benefit=ref_b,
                alternative_benefit=alt_b,
                cost=cost,
                benefit=benefit,
            )
        )
    out.sort(
        key=lambda s: (
            -s.saving_pct,
            math.inf if s.loss_points is None else s.loss_points,
            s.alternative,
            s.reference,
        )
    )
    return out


def _known(value: object) -> float | None:
    number = float(value)  # type: ignore[arg-type]
    return None if math.isnan(number) else number
