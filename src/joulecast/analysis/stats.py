"""Group comparisons and correlations, as del Rey et al. (2024) analyse their runs.

Source: S. del Rey, S. Martínez-Fernández, L. Cruz, X. Franch, "How to use model architecture and
training environment to estimate the energy consumption of DL training" (2024), section 3.7
"Data analysis" and Tables 3-7. For each dependent variable (J/image, GPU usage, F1, ...) and
each grouping (architecture, training environment, allocated RAM) they

1. check normality per group with Shapiro-Wilk and equality of variances with Levene
   (Tables 3-5);
2. finding both violated, compare the groups with Kruskal-Wallis, reporting H, p and
   eta² = (H - k + 1) / (n - k) (Table 7), and then Dunn's post-hoc test between pairs;
3. measure monotone association with a one-sided Spearman rank correlation (Table 6).

:func:`compare_groups` runs that procedure and picks the test the assumptions allow: one-way
ANOVA with Tukey's HSD when every group is normal and the variances are equal, Kruskal-Wallis
with Dunn otherwise. :func:`paper_table` lays one or more comparisons out like the paper's
tables.

Every function takes a tidy frame (one row per run) and the names of its value and group
columns, drops rows where either is missing, and returns a tidy frame. Data too small for a
test (fewer than 2 groups, a group under the minimum size, no spread at all) gives NaN
statistics and a ``note`` that says why, instead of raising; a missing column, a non-numeric
value column or an infinite value raises :class:`~joulecast.errors.InputError`.

scipy (a dependency of scikit-learn) does the distributions; Dunn's z and p and the p-value
adjustments are computed here, so scikit-posthocs is not needed (the tests check against it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from joulecast.analysis._frames import group_order, numbers, require_columns
from joulecast.errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "GroupComparison",
    "adjust_p",
    "compare_groups",
    "dunn",
    "eta_squared_effect",
    "kruskal",
    "levene",
    "one_way_anova",
    "paper_table",
    "shapiro_by_group",
    "spearman",
    "spearman_strength",
    "tukey",
]

PAdjust = Literal["holm", "bonferroni", "fdr_bh", "none"]
Alternative = Literal["greater", "less", "two-sided"]
Test = Literal["kruskal", "anova", "none"]
TableKind = Literal["pairs", "groups", "test"]

P_ADJUST_METHODS: tuple[str, ...] = ("holm", "bonferroni", "fdr_bh", "none")
ALTERNATIVES: tuple[str, ...] = ("greater", "less", "two-sided")

# Shapiro-Wilk needs at least 3 values (scipy.stats.shapiro refuses fewer).
MIN_GROUP_SIZE = 3
# Cohen's (1988) thresholds for eta squared, as commonly applied to the H-based eta squared
# (Tomczak & Tomczak 2014): below SMALL is negligible.
ETA_SQUARED_SMALL = 0.01
ETA_SQUARED_MEDIUM = 0.06
ETA_SQUARED_LARGE = 0.14
# The paper's words for |rho| (section 4.1-4.2): 0.40-0.69 moderate, 0.70-0.89 strong,
# >= 0.90 very strong; below 0.10 negligible and 0.10-0.39 weak complete the usual scale
# (Schober et al. 2018).
SPEARMAN_STRENGTH = ((0.90, "very strong"), (0.70, "strong"), (0.40, "moderate"), (0.10, "weak"))

_Groups = list[tuple[Hashable, NDArray[np.float64]]]


# --- input handling ---------------------------------------------------------------------------


def _column(df: pd.DataFrame, name: str, argument: str) -> None:
    require_columns(df, **{argument: name})


def _numeric(df: pd.DataFrame, name: str, argument: str) -> pd.Series:
    _column(df, name, argument)
    return numbers(df, name, argument)


def _groups(df: pd.DataFrame, value: str, by: str) -> _Groups:
    """The finite values of ``value`` per level of ``by``, rows with either missing dropped.

    Groups come in category order for a categorical ``by``, otherwise sorted (in order of first
    appearance when the labels cannot be sorted). A frame with no rows has no groups, whatever
    its columns.
    """
    if isinstance(df, pd.DataFrame) and df.empty and not {value, by} <= set(df.columns):
        return []
    values = _numeric(df, value, "value")
    _column(df, by, "by")
    labels = df[by]
    keep = values.notna() & labels.notna()
    dropped = int((~keep).sum())
    if dropped:
        log.debug("%d of %d rows dropped: %r or %r missing", dropped, len(df), value, by)
    values, labels = values[keep], labels[keep]
    order = group_order(labels)
    return [(g, values[labels == g].to_numpy(dtype=np.float64)) for g in order]


def _sizes(groups: _Groups) -> tuple[int, int]:
    return len(groups), sum(len(x) for x in _values(groups))


def _values(groups: _Groups) -> list[NDArray[np.float64]]:
    return [x for _, x in groups]


def _constant(values: NDArray[np.float64]) -> bool:
    return len(values) > 0 and bool(np.ptp(values) == 0)


def _too_few_groups(k: int) -> str:
    return f"{k} group{'s' if k != 1 else ''}: a comparison needs at least 2"


def eta_squared_effect(eta_squared: float) -> str:
    """Label eta squared by Cohen's thresholds: < 0.01 negligible, < 0.06 small, < 0.14 medium,
    else large. NaN gives ``""``."""
    if not math.isfinite(eta_squared):
        return ""
    if eta_squared < ETA_SQUARED_SMALL:
        return "negligible"
    if eta_squared < ETA_SQUARED_MEDIUM:
        return "small"
    if eta_squared < ETA_SQUARED_LARGE:
        return "medium"
    return "large"


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha={alpha!r}: must be between 0 and 1 (exclusive)")


# --- assumption checks ------------------------------------------------------------------------


def shapiro_by_group(df: pd.DataFrame, value: str, by: str, *, alpha: float = 0.05) -> pd.DataFrame:
    """Shapiro-Wilk normality test of ``value`` in each group of ``by`` (paper, Tables 3-5).

    ``W, p = scipy.stats.shapiro(x)`` per group; ``normal`` is ``p >= alpha`` (the paper marks
    ``p < 0.05`` as not normal). A group with fewer than 3 values, or whose values are all
    equal, gets NaN ``W`` and ``p``, ``normal`` missing (``pd.NA``) and a ``note``.

    Returns:
        One row per group: ``group, n, W, p, normal, note``.
    """
    from scipy import stats

    _check_alpha(alpha)
    rows: list[dict[str, Any]] = []
    for group, x in _groups(df, value, by):
        row: dict[str, Any] = {"group": group, "n": len(x), "W": np.nan, "p": np.nan}
        row["normal"], row["note"] = pd.NA, ""
        if len(x) < MIN_GROUP_SIZE:
            row["note"] = f"n = {len(x)}: Shapiro-Wilk needs at least {MIN_GROUP_SIZE} values"
        elif _constant(x):
            row["note"] = "all values are equal: normality cannot be tested"
        else:
            res = stats.shapiro(x)
            row["W"], row["p"] = float(res.statistic), float(res.pvalue)
            row["normal"] = row["p"] >= alpha
        rows.append(row)
    out = pd.DataFrame(rows, columns=["group", "n", "W", "p", "normal", "note"])
    return out.astype({"n": "int64", "W": "float64", "p": "float64", "normal": "boolean"})


def levene(
    df: pd.DataFrame,
    value: str,
    by: str,
    center: Literal["median", "mean", "trimmed"] = "median",
    *,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Levene's test of equal variances of ``value`` across the groups of ``by`` (Tables 3-5).

    ``scipy.stats.levene(*groups, center=center)``: the one-way ANOVA F of the absolute
    deviations ``|x_ij - c_i|`` from each group's centre ``c_i``; ``center="median"`` is the
    Brown-Forsythe variant (robust to non-normal data, scipy's default). ``equal_variances`` is
    ``p >= alpha``. Needs 2 groups, more values than groups and some spread within groups.

    Returns:
        One row: ``statistic, p, equal_variances, k, n, center, note``.
    """
    from scipy import stats

    _check_alpha(alpha)
    if center not in ("median", "mean", "trimmed"):
        raise InputError(f"center={center!r}: expected 'median', 'mean' or 'trimmed'")
    groups = _groups(df, value, by)
    k, n = _sizes(groups)
    xs = _values(groups)
    row: dict[str, Any] = {"statistic": np.nan, "p": np.nan, "equal_variances": pd.NA}
    row.update(k=k, n=n, center=center, note="")
    if k < 2:
        row["note"] = _too_few_groups(k)
    elif n <= k:
        row["note"] = f"n = {n} values in {k} groups: Levene needs more values than groups"
    elif all(_constant(x) for x in xs if len(x)):
        row["note"] = "no spread within any group: Levene's test is undefined"
    else:
        res = stats.levene(*xs, center=center)
        row["statistic"], row["p"] = float(res.statistic), float(res.pvalue)
        row["equal_variances"] = row["p"] >= alpha
    return pd.DataFrame([row]).astype({"equal_variances": "boolean"})


# --- omnibus tests ----------------------------------------------------------------------------


def _omnibus_checks(groups: _Groups, name: str) -> str:
    k, n = _sizes(groups)
    if k < 2:
        return _too_few_groups(k)
    if n <= k:
        return f"n = {n} values in {k} groups: {name} needs more values than groups"
    if _constant(np.concatenate(_values(groups))):
        return f"all values are equal: {name} is undefined"
    return ""


def kruskal(df: pd.DataFrame, value: str, by: str) -> pd.DataFrame:
    """Kruskal-Wallis H test of ``value`` across the groups of ``by`` (paper, section 4, Table 7).

    ``H, p = scipy.stats.kruskal(*groups)``: with N values ranked together (ties get their
    average rank), R_i the rank sum and n_i the size of group i,
    ``H = [12 / (N(N+1)) sum_i R_i^2 / n_i - 3(N+1)] / C`` with the tie correction
    ``C = 1 - sum_t (t^3 - t) / (N^3 - N)``; p from chi-squared with ``df = k - 1``.

    Effect size as in the paper (Tomczak & Tomczak 2014): ``eta² = (H - k + 1) / (n - k)``,
    labelled by :func:`eta_squared_effect`; it can fall below 0 when H < k - 1.

    Returns:
        One row: ``H, df, p, k, n, eta_squared, effect, note``.
    """
    from scipy import stats

    groups = _groups(df, value, by)
    k, n = _sizes(groups)
    row: dict[str, Any] = {"H": np.nan, "df": k - 1, "p": np.nan, "k": k, "n": n}
    row.update(eta_squared=np.nan, effect="", note=_omnibus_checks(groups, "Kruskal-Wallis"))
    if not row["note"]:
        res = stats.kruskal(*_values(groups))
        h = float(res.statistic)
        row.update(H=h, p=float(res.pvalue), eta_squared=(h - k + 1) / (n - k))
        row["effect"] = eta_squared_effect(row["eta_squared"])
    return pd.DataFrame([row]).astype({"df": "int64", "k": "int64", "n": "int64"})


def one_way_anova(df: pd.DataFrame, value: str, by: str) -> pd.DataFrame:
    """One-way ANOVA of ``value`` across the groups of ``by``: the parametric alternative.

    ``F, p = scipy.stats.f_oneway(*groups)``, ``F = [SS_between / (k - 1)] / [SS_within / (n - k)]``
    with ``df = (k - 1, n - k)``. Effect size ``eta² = SS_between / SS_total`` (Cohen 1988), where
    ``SS_between = sum_i n_i (mean_i - mean)^2`` and ``SS_total = sum_ij (x_ij - mean)^2``.
    No spread within groups makes F infinite; that case gets NaN and a note.

    Returns:
        One row: ``F, df_between, df_within, p, k, n, eta_squared, effect, note``.
    """
    from scipy import stats

    groups = _groups(df, value, by)
    k, n = _sizes(groups)
    xs = _values(groups)
    row: dict[str, Any] = {"F": np.nan, "df_between": k - 1, "df_within": n - k, "p": np.nan}
    row.update(k=k, n=n, eta_squared=np.nan, effect="", note=_omnibus_checks(groups, "ANOVA"))
    if not row["note"] and all(_constant(x) or len(x) == 0 for x in xs):
        row["note"] = "no spread within any group: the F statistic is undefined"
    if not row["note"]:
        res = stats.f_oneway(*xs)
        pooled = np.concatenate(xs)
        grand = pooled.mean()
        ss_between = sum(len(x) * (x.mean() - grand) ** 2 for x in xs)
        ss_total = float(((pooled - grand) ** 2).sum())
        row.update(F=float(res.statistic), p=float(res.pvalue))
        row["eta_squared"] = float(ss_between / ss_total)
        row["effect"] = eta_squared_effect(row["eta_squared"])
    types = {"df_between": "int64", "df_within": "int64", "k": "int64", "n": "int64"}
    return pd.DataFrame([row]).astype(types)


# --- post-hoc tests ---------------------------------------------------------------------------


def adjust_p(p: Sequence[float] | NDArray[np.float64], method: str = "holm") -> NDArray[np.float64]:
    """Adjust p-values for multiple comparisons; same results as statsmodels' ``multipletests``.

    With m p-values sorted ascending, p_(1) <= ... <= p_(m):

    - ``"bonferroni"``: ``min(1, m p)``;
    - ``"holm"`` (Holm 1979): ``p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``;
    - ``"fdr_bh"`` (Benjamini & Hochberg 1995): ``p~_(i) = min_{j >= i} min(1, m p_(j) / j)``;
    - ``"none"``: unchanged.

    NaN p-values stay NaN and do not count in m.
    """
    if method not in P_ADJUST_METHODS:
        raise InputError(f"p_adjust={method!r}: expected one of {', '.join(P_ADJUST_METHODS)}")
    p_all = np.asarray(p, dtype=np.float64)
    out: NDArray[np.float64] = p_all.copy()
    ok = np.isfinite(p_all)
    q = p_all[ok]
    m = len(q)
    if m == 0 or method == "none":
        return out
    if method == "bonferroni":
        out[ok] = np.minimum(1.0, q * m)
        return out
    order = np.argsort(q, kind="stable")
    ranked = q[order]
    i = np.arange(1, m + 1)
    if method == "holm":
        adj = np.maximum.accumulate(np.minimum(1.0, (m - i + 1) * ranked))
    else:  # fdr_bh
        adj = np.minimum.accumulate(np.minimum(1.0, ranked * m / i)[::-1])[::-1]
    res = np.empty(m)
    res[order] = adj
    out[ok] = res
    return out


_DUNN_COLUMNS = [
    "group_a", "group_b", "n_a", "n_b", "median_a", "median_b", "mean_rank_a", "mean_rank_b",
    "z", "p", "p_adjusted", "significant", "r",
]  # fmt: skip


def dunn(
    df: pd.DataFrame,
    value: str,
    by: str,
    p_adjust: PAdjust = "holm",
    *,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Dunn's (1964) pairwise post-hoc test after Kruskal-Wallis, with the tie correction.

    All N values are ranked together (ties get their average rank). For groups a and b with
    n_a, n_b values and mean ranks R_a, R_b::

        z = (R_a - R_b) / sigma,
        sigma² = [N (N + 1) / 12 - sum_t (t³ - t) / (12 (N - 1))] (1 / n_a + 1 / n_b),

    where t runs over the sizes of the groups of tied values (Glantz 2012); ``p = 2 (1 - Phi(|z|))``
    (two-sided). ``p_adjusted`` applies :func:`adjust_p` over all k (k - 1) / 2 pairs (the paper
    names no method; Holm is the default), ``significant`` is ``p_adjusted < alpha``. As an
    effect size per pair, ``r = z / sqrt(n_a + n_b)`` (Rosenthal 1991). ``z > 0`` means a ranks
    above b. Matches ``scikit_posthocs.posthoc_dunn`` (which reports only |z|'s p).

    Returns:
        One row per pair of groups, in group order: ``group_a, group_b, n_a, n_b, median_a,
        median_b, mean_rank_a, mean_rank_b, z, p, p_adjusted, significant, r``. Fewer than 2
        groups give an empty frame.
    """
    from scipy import stats

    _check_alpha(alpha)
    if p_adjust not in P_ADJUST_METHODS:
        raise InputError(f"p_adjust={p_adjust!r}: expected one of {', '.join(P_ADJUST_METHODS)}")
    groups = [(g, x) for g, x in _groups(df, value, by) if len(x)]
    rows: list[dict[str, Any]] = []
    if len(groups) >= 2:
        pooled = np.concatenate(_values(groups))
        n_total = len(pooled)
        ranks = stats.rankdata(pooled)
        _, tie_sizes = np.unique(pooled, return_counts=True)
        ties = float(np.sum(tie_sizes.astype(np.float64) ** 3 - tie_sizes))
        var_unit = n_total * (n_total + 1) / 12.0 - ties / (12.0 * (n_total - 1))
        bounds = np.cumsum([0] + [len(x) for _, x in groups])
        mean_ranks = [float(ranks[bounds[i] : bounds[i + 1]].mean()) for i in range(len(groups))]
        for i, (ga, xa) in enumerate(groups):
            for j in range(i + 1, len(groups)):
                gb, xb = groups[j]
                sigma = math.sqrt(var_unit * (1 / len(xa) + 1 / len(xb))) if var_unit > 0 else 0
                diff = mean_ranks[i] - mean_ranks[j]
                z = diff / sigma if sigma > 0 else np.nan
                rows.append(
                    {
                        "group_a": ga,
                        "group_b": gb,
                        "n_a": len(xa),
                        "n_b": len(xb),
                        "median_a": float(np.median(xa)),
                        "median_b": float(np.median(xb)),
                        "mean_rank_a": mean_ranks[i],
                        "mean_rank_b": mean_ranks[j],
                        "z": z,
                        "p": 2.0 * float(stats.norm.sf(abs(z))),
                        "r": z / math.sqrt(len(xa) + len(xb)),
                    }
                )
    out = pd.DataFrame(rows, columns=_DUNN_COLUMNS)
    adjusted = adjust_p(out["p"].to_numpy(dtype=np.float64), p_adjust)
    out["p_adjusted"] = adjusted
    out["significant"] = pd.array(adjusted < alpha, dtype="boolean")
    out.loc[out["p_adjusted"].isna(), "significant"] = pd.NA
    return out.astype({"n_a": "int64", "n_b": "int64", "z": "float64", "p": "float64"})


_TUKEY_COLUMNS = [
    "group_a", "group_b", "n_a", "n_b", "median_a", "median_b", "mean_a", "mean_b",
    "mean_diff", "ci_low", "ci_high", "p_adjusted", "significant", "d",
]  # fmt: skip


def tukey(df: pd.DataFrame, value: str, by: str, *, alpha: float = 0.05) -> pd.DataFrame:
    """Tukey's HSD pairwise post-hoc test after a one-way ANOVA (``scipy.stats.tukey_hsd``).

    ``mean_diff = mean_a - mean_b``; ``p_adjusted`` is Tukey's p from the studentized range
    distribution (already family-wise); ``ci_low, ci_high`` is its ``1 - alpha`` confidence
    interval; ``significant`` is ``p_adjusted < alpha``. Effect size per pair: Cohen's
    ``d = mean_diff / s_pooled`` with
    ``s_pooled² = [(n_a - 1) s_a² + (n_b - 1) s_b²] / (n_a + n_b - 2)``.

    Returns:
        One row per pair of groups: ``group_a, group_b, n_a, n_b, median_a, median_b, mean_a,
        mean_b, mean_diff, ci_low, ci_high, p_adjusted, significant, d``; empty when the data
        are too small for an ANOVA (see :func:`one_way_anova`).
    """
    from scipy import stats

    _check_alpha(alpha)
    groups = [(g, x) for g, x in _groups(df, value, by) if len(x)]
    xs = _values(groups)
    rows: list[dict[str, Any]] = []
    usable = not _omnibus_checks(groups, "Tukey's HSD") and all(len(x) >= 2 for x in xs)
    if usable and not all(_constant(x) for x in xs):
        res = stats.tukey_hsd(*xs)
        ci = res.confidence_interval(confidence_level=1 - alpha)
        for i, (ga, xa) in enumerate(groups):
            for j in range(i + 1, len(groups)):
                gb, xb = groups[j]
                dof = len(xa) + len(xb) - 2
                var = ((len(xa) - 1) * xa.var(ddof=1) + (len(xb) - 1) * xb.var(ddof=1)) / dof
                diff = float(xa.mean() - xb.mean())
                rows.append(
                    {
                        "group_a": ga,
                        "group_b": gb,
                        "n_a": len(xa),
                        "n_b": len(xb),
                        "median_a": float(np.median(xa)),
                        "median_b": float(np.median(xb)),
                        "mean_a": float(xa.mean()),
                        "mean_b": float(xb.mean()),
                        "mean_diff": diff,
                        "ci_low": float(ci.low[i, j]),
                        "ci_high": float(ci.high[i, j]),
                        "p_adjusted": float(res.pvalue[i, j]),
                        "significant": bool(res.pvalue[i, j] < alpha),
                        "d": diff / math.sqrt(var) if var > 0 else np.nan,
                    }
                )
    out = pd.DataFrame(rows, columns=_TUKEY_COLUMNS)
    return out.astype({"n_a": "int64", "n_b": "int64", "significant": "boolean"})


# --- correlation ------------------------------------------------------------------------------


def spearman_strength(rho: float) -> str:
    """The paper's words for |rho|: very strong >= 0.90, strong >= 0.70, moderate >= 0.40,
    weak >= 0.10, else negligible (NaN gives ``""``)."""
    if not math.isfinite(rho):
        return ""
    for bound, word in SPEARMAN_STRENGTH:
        if abs(rho) >= bound:
            return word
    return "negligible"


def spearman(
    df: pd.DataFrame, x: str, y: str, alternative: Alternative = "greater"
) -> pd.DataFrame:
    """Spearman's rank correlation of ``x`` and ``y`` (paper, Table 6 and section 4.2).

    ``rho, p = scipy.stats.spearmanr(x, y, alternative=alternative)``: Pearson's correlation of
    the average ranks; p from Student's t with n - 2 degrees of freedom. The paper uses the
    one-sided ``"greater"`` (a positive association), the default here. Rows where x or y is
    missing are dropped; fewer than 3 pairs or a constant column give NaN and a note.

    Returns:
        One row: ``rho, p, n, alternative, strength, note`` (``strength`` in the paper's words,
        see :func:`spearman_strength`).
    """
    from scipy import stats

    if alternative not in ALTERNATIVES:
        raise InputError(f"alternative={alternative!r}: expected one of {', '.join(ALTERNATIVES)}")
    xv, yv = _numeric(df, x, "x"), _numeric(df, y, "y")
    keep = xv.notna() & yv.notna()
    a, b = xv[keep].to_numpy(), yv[keep].to_numpy()
    row: dict[str, Any] = {"rho": np.nan, "p": np.nan, "n": len(a), "alternative": alternative}
    row.update(strength="", note="")
    if len(a) < 3:
        row["note"] = f"n = {len(a)} pairs: Spearman's test needs at least 3"
    elif _constant(a) or _constant(b):
        row["note"] = f"{x if _constant(a) else y!r} is constant: rho is undefined"
    else:
        res = stats.spearmanr(a, b, alternative=alternative)
        row.update(rho=float(res.statistic), p=float(res.pvalue))
        row["strength"] = spearman_strength(row["rho"])
    return pd.DataFrame([row]).astype({"n": "int64"})


# --- the chooser ------------------------------------------------------------------------------


def _fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "p = n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}"


def _names(labels: Sequence[Hashable]) -> str:
    return ", ".join(str(g) for g in labels)


@dataclass(frozen=True, eq=False)
class GroupComparison:
    """The outcome of :func:`compare_groups`: assumption checks, chosen test, post-hoc table.

    Attributes:
        value, by: the compared column and the grouping column.
        value_label, group_label: how :meth:`summary` names them.
        alpha: significance level of every decision.
        test: ``"kruskal"``, ``"anova"`` or ``"none"`` (data too small for a test).
        reason: why that test was chosen, or why none could be.
        groups: one row per group: ``group, n, median, mean, std``.
        shapiro: :func:`shapiro_by_group`'s table.
        levene: :func:`levene`'s row.
        result: the chosen test's row (:func:`kruskal` or :func:`one_way_anova`); empty if none.
        posthoc_test: ``"dunn"``, ``"tukey"`` or ``"none"``.
        p_adjust: the adjustment of Dunn's p-values (Tukey's are family-wise already).
        posthoc: :func:`dunn`'s or :func:`tukey`'s table; empty if no test was run.
    """

    value: str
    by: str
    value_label: str
    group_label: str
    alpha: float
    test: Test
    reason: str
    groups: pd.DataFrame
    shapiro: pd.DataFrame
    levene: pd.DataFrame
    result: pd.DataFrame = field(default_factory=pd.DataFrame)
    posthoc_test: Literal["dunn", "tukey", "none"] = "none"
    p_adjust: str = "holm"
    posthoc: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def tested(self) -> bool:
        """Whether a test was run (the data were large enough)."""
        return (
            self.test != "none" and not self.result.empty and bool(self.result["p"].notna().all())
        )

    @property
    def p(self) -> float:
        """The omnibus p-value (NaN when no test ran)."""
        return float(self.result["p"].iloc[0]) if self.tested else math.nan

    @property
    def significant(self) -> bool:
        """Whether the groups differ at ``alpha`` (False when no test ran)."""
        return self.tested and self.p < self.alpha

    def summary(self) -> str:
        """One sentence: the verdict, the test with its statistic, p and eta², and the pairs.

        For example: "J/image differs between architectures (Kruskal-Wallis H = 45.20,
        p < 0.001, eta² = 0.52, large); Dunn (Holm): 9 of 10 pairs differ, not NASNet
        Mobile-Xception."
        """
        what = f"{self.value_label} between {self.group_label}"
        if not self.tested:
            return f"{what}: not tested, {self.reason}."
        row = self.result.iloc[0]
        if self.test == "kruskal":
            stat = f"Kruskal-Wallis H = {row['H']:.2f}"
        else:
            stat = f"ANOVA F({row['df_between']}, {row['df_within']}) = {row['F']:.2f}"
        stat += f", {_fmt_p(self.p)}, eta² = {row['eta_squared']:.2f}, {row['effect']}"
        verb = "differs" if self.significant else "does not differ significantly"
        sentence = f"{self.value_label} {verb} between {self.group_label} ({stat})"
        pairs = self.posthoc
        if len(pairs) > 1 or (len(pairs) == 1 and self.significant):
            name = "Dunn" if self.posthoc_test == "dunn" else "Tukey HSD"
            if self.posthoc_test == "dunn" and self.p_adjust != "none":
                adjust = {"holm": "Holm", "bonferroni": "Bonferroni", "fdr_bh": "BH"}
                name += f" ({adjust[self.p_adjust]})"
            sig = pairs["significant"].fillna(False).astype(bool)
            same = [
                f"{a}-{b}" for a, b in pairs.loc[~sig, ["group_a", "group_b"]].itertuples(False)
            ]
            if not same:
                tail = f"all {len(pairs)} pairs differ"
            elif len(same) == len(pairs):
                tail = "no pair differs"
            else:
                tail = f"{int(sig.sum())} of {len(pairs)} pairs differ, not {'; '.join(same)}"
            sentence += f"; {name}: {tail}"
        return sentence + "."


def _group_table(groups: _Groups) -> pd.DataFrame:
    rows = [
        {
            "group": g,
            "n": len(x),
            "median": float(np.median(x)) if len(x) else np.nan,
            "mean": float(x.mean()) if len(x) else np.nan,
            "std": float(x.std(ddof=1)) if len(x) > 1 else np.nan,
        }
        for g, x in groups
    ]
    return pd.DataFrame(rows, columns=["group", "n", "median", "mean", "std"])


def compare_groups(
    df: pd.DataFrame,
    value: str,
    by: str,
    alpha: float = 0.05,
    *,
    p_adjust: PAdjust = "holm",
    value_label: str | None = None,
    group_label: str | None = None,
) -> GroupComparison:
    """Compare ``value`` across the groups of ``by`` the way del Rey et al. do (section 3.7).

    1. Shapiro-Wilk in every group and Levene (median-centred) across them.
    2. Every group normal (p >= alpha) and variances equal (p >= alpha): one-way ANOVA with
       eta² = SS_between / SS_total, then Tukey's HSD. Otherwise (the paper's case):
       Kruskal-Wallis with eta² = (H - k + 1) / (n - k), then Dunn with ``p_adjust``.
    3. Fewer than 2 groups, or a group with fewer than 3 values (too few to check normality),
       give ``test="none"`` and a ``reason`` naming the groups; nothing is raised.

    Args:
        df: one row per run.
        value: the numeric column compared (e.g. ``"energy_per_image_j"``).
        by: the grouping column (e.g. ``"architecture"``).
        alpha: the significance level of the assumption checks, the test and the post-hoc.
        p_adjust: the adjustment of Dunn's p-values (see :func:`adjust_p`).
        value_label, group_label: names used by :meth:`GroupComparison.summary` (default:
            ``value`` and ``"<by> groups"``).
    """
    _check_alpha(alpha)
    if p_adjust not in P_ADJUST_METHODS:
        raise InputError(f"p_adjust={p_adjust!r}: expected one of {', '.join(P_ADJUST_METHODS)}")
    groups = _groups(df, value, by)
    k = len(groups)
    base: dict[str, Any] = {
        "value": value,
        "by": by,
        "value_label": value_label or value,
        "group_label": group_label or f"{by} groups",
        "alpha": alpha,
        "groups": _group_table(groups),
        "shapiro": shapiro_by_group(df, value, by, alpha=alpha),
        "levene": levene(df, value, by, alpha=alpha),
        "p_adjust": p_adjust,
    }
    small = [(g, len(x)) for g, x in groups if len(x) < MIN_GROUP_SIZE]
    if k < 2 or small:
        if k < 2:
            reason = f"too small: {_too_few_groups(k)}"
        else:
            listed = ", ".join(f"{g!s} (n = {n})" for g, n in small)
            reason = f"too small: each group needs at least {MIN_GROUP_SIZE} runs; {listed}"
        return GroupComparison(test="none", reason=reason, **base)

    shapiro, lev = base["shapiro"], base["levene"].iloc[0]
    not_normal = shapiro.loc[shapiro["normal"].fillna(False).eq(False), "group"].tolist()
    untestable = shapiro.loc[shapiro["normal"].isna(), "group"].tolist()
    unequal = pd.isna(lev["equal_variances"]) or not bool(lev["equal_variances"])
    if not not_normal and not unequal:
        reason = (
            f"every group is normal (Shapiro-Wilk p >= {alpha:g}) and the variances are equal "
            f"(Levene {_fmt_p(lev['p'])})"
        )
        return GroupComparison(
            test="anova",
            reason=reason,
            result=one_way_anova(df, value, by),
            posthoc_test="tukey",
            posthoc=tukey(df, value, by, alpha=alpha),
            **base,
        )
    why = []
    normal_fail = [g for g in not_normal if g not in untestable]
    if normal_fail:
        why.append(f"not normal (Shapiro-Wilk p < {alpha:g}): {_names(normal_fail)}")
    if untestable:
        why.append(f"normality untestable (all values equal): {_names(untestable)}")
    if unequal:
        if pd.isna(lev["p"]):
            why.append(f"equal variances untestable ({lev['note']})")
        else:
            why.append(f"variances differ (Levene {_fmt_p(lev['p'])})")
    result = kruskal(df, value, by)
    if result.iloc[0]["note"]:  # e.g. every value equal: nothing to rank
        return GroupComparison(
            test="none", reason=f"not testable: {result.iloc[0]['note']}", **base
        )
    return GroupComparison(
        test="kruskal",
        reason="; ".join(why),
        result=result,
        posthoc_test="dunn",
        posthoc=dunn(df, value, by, p_adjust, alpha=alpha),
        **base,
    )


# --- the paper's tables -----------------------------------------------------------------------


def paper_table(
    comparison: GroupComparison | Sequence[GroupComparison], kind: TableKind = "pairs"
) -> pd.DataFrame:
    """Lay one or more comparisons out like del Rey et al.'s tables, one block per variable.

    - ``kind="groups"`` (Tables 3-5): one row per group: ``variable, group, n, median,
      shapiro_W, shapiro_p, levene_statistic, levene_p, normally_distributed,
      equal_variances`` (the last four are per variable, repeated on its rows; a variable is
      normally distributed when every group is).
    - ``kind="test"`` (Table 7): one row per variable: ``variable, test, statistic_name,
      statistic, df, df_within, p, eta_squared, effect, k, n, reason`` (``df_within`` only for
      ANOVA's F).
    - ``kind="pairs"`` (the post-hoc results the paper gives in its text): one row per pair:
      ``variable, group_a, group_b, median_a, median_b, median_change_pct, posthoc,
      statistic_name, statistic, p_adjusted, significant, effect_size_name, effect_size``;
      ``median_change_pct = 100 (median_b - median_a) / median_a`` is the paper's "x% decrease"
      (section 4.1), ``statistic`` is Dunn's z or Tukey's mean difference and ``effect_size``
      Dunn's r or Tukey's Cohen's d.
    """
    comps = [comparison] if isinstance(comparison, GroupComparison) else list(comparison)
    if kind not in ("pairs", "groups", "test"):
        raise InputError(f"kind={kind!r}: expected 'pairs', 'groups' or 'test'")
    blocks = [_paper_block(c, kind) for c in comps]
    if not blocks:
        return _paper_block(None, kind)
    return pd.concat(blocks, ignore_index=True) if len(blocks) > 1 else blocks[0]


_PAPER_COLUMNS: dict[str, list[str]] = {
    "groups": [
        "variable", "group", "n", "median", "shapiro_W", "shapiro_p", "levene_statistic",
        "levene_p", "normally_distributed", "equal_variances",
    ],
    "test": [
        "variable", "test", "statistic_name", "statistic", "df", "df_within", "p", "eta_squared",
        "effect", "k", "n", "reason",
    ],
    "pairs": [
        "variable", "group_a", "group_b", "median_a", "median_b", "median_change_pct",
        "posthoc", "statistic_name", "statistic", "p_adjusted", "significant",
        "effect_size_name", "effect_size",
    ],
}  # fmt: skip


def _paper_block(c: GroupComparison | None, kind: str) -> pd.DataFrame:
    columns = _PAPER_COLUMNS[kind]
    if c is None:
        return pd.DataFrame(columns=columns)
    if kind == "groups":
        out = c.groups[["group", "n", "median"]].merge(
            c.shapiro[["group", "W", "p", "normal"]], on="group", how="left"
        )
        out = out.rename(columns={"W": "shapiro_W", "p": "shapiro_p"})
        lev = c.levene.iloc[0]
        out["levene_statistic"], out["levene_p"] = lev["statistic"], lev["p"]
        normal = out["normal"].astype("boolean")
        out["normally_distributed"] = bool(normal.all()) if normal.notna().all() else pd.NA
        out["equal_variances"] = lev["equal_variances"]
        out = out.astype({"normally_distributed": "boolean", "equal_variances": "boolean"})
    elif kind == "test":
        row: dict[str, Any] = dict.fromkeys(columns, np.nan)
        row.update(test=c.test, reason=c.reason, effect="", statistic_name="")
        row.update(k=len(c.groups), n=int(c.groups["n"].sum()))
        if c.tested:
            r = c.result.iloc[0]
            is_kw = c.test == "kruskal"
            row.update(
                statistic_name="H" if is_kw else "F",
                statistic=r["H"] if is_kw else r["F"],
                df=r["df"] if is_kw else r["df_between"],
                df_within=np.nan if is_kw else r["df_within"],
                p=r["p"],
                eta_squared=r["eta_squared"],
                effect=r["effect"],
            )
        out = pd.DataFrame([row])
    elif c.posthoc.empty:
        return pd.DataFrame(columns=columns)
    else:
        ph = c.posthoc
        out = ph[["group_a", "group_b", "median_a", "median_b"]].copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            out["median_change_pct"] = 100.0 * (ph["median_b"] - ph["median_a"]) / ph["median_a"]
        dunn_test = c.posthoc_test == "dunn"
        out["posthoc"] = c.posthoc_test
        out["statistic_name"] = "z" if dunn_test else "mean_diff"
        out["statistic"] = ph["z" if dunn_test else "mean_diff"]
        out["p_adjusted"] = ph["p_adjusted"]
        out["significant"] = ph["significant"]
        out["effect_size_name"] = "r" if dunn_test else "d"
        out["effect_size"] = ph["r" if dunn_test else "d"]
    out["variable"] = c.value_label
    return out[columns].reset_index(drop=True)
