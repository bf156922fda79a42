"""The study report: the paper's questions answered for the runs of a store.

:func:`build` computes the sections (data and cleaning, architectures, training environments,
the GPU power limit where the runs vary it, estimation parameters, power stabilization,
estimator accuracy) from a store; :func:`write_html`
renders them as one self-contained HTML file (figures embedded, no network), :func:`write_md`
as Markdown with its figures beside it, and :func:`write_tables` writes every table as CSV. A
section whose data is missing says what is missing instead of failing.
"""

from __future__ import annotations

import base64
import functools
import html
import logging
import re
import shutil
import tempfile
import time
import unicodedata
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from joulecast.errors import InputError

if TYPE_CHECKING:
    from joulecast.carbon import Intensity
from joulecast.outputs import write_atomic

log = logging.getLogger(__name__)

# Runs whose power profile is segmented for the stabilization section (FLUSS is the costly
# part of the report; the share is computed on a spread-out sample beyond this).
MAX_STABILITY_RUNS = 20
# Runs whose epoch table is read for the online forecasts (each needs its samples).
MAX_FORECAST_RUNS = 150
# Cells of the power profile figure: more than the figure's pixels across, whatever the run's
# length.
PROFILE_CELLS = 2000


def _spread(values: pd.Series, limit: int) -> list[Any]:
    """At most ``limit`` of ``values``, evenly spread over them."""
    items = list(values)
    if len(items) <= limit:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).astype(int)]


@dataclass
class Section:
    """One part of the report: prose, tables and figures, in that order."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)


@dataclass
class Report:
    """The computed report, ready to render."""

    title: str
    sections: list[Section]
    figures_dir: Path


def _slug(text: str) -> str:
    return "".join(c.lower() if c.isalnum() else "-" for c in text).strip("-")


def build(
    store: Any,
    *,
    study: str | None = None,
    group_by: Sequence[str] = ("architecture", "environment"),
    figures_dir: Path | None = None,
    intensity: Intensity | None = None,
    pue: float = 1.0,
) -> Report:
    """Compute every section of the report for the runs of ``store`` (or of one study);
    with an ``intensity`` (:mod:`joulecast.carbon`), a CO2e section too."""
    from joulecast.analysis.clean import clean
    from joulecast.analysis.data import run_table

    figures = Path(figures_dir or tempfile.mkdtemp(prefix="joulecast-report-"))
    figures.mkdir(parents=True, exist_ok=True)
    table = run_table(store, study=study)
    title = f"joulecast report: {study}" if study else f"joulecast report: {store.path.name}"
    sections: list[Section] = []
    data = Section("Data and cleaning")
    sections.append(data)
    if table.empty:
        data.paragraphs.append(
            "The store holds no runs" + (f" of study {study!r}" if study else "") + ": "
            "nothing to analyse. Measure runs (joulecast measure, joulecast study run) first."
        )
        return Report(title, sections, figures)
    cleaned, cleaning = clean(table)
    data.paragraphs.append(str(cleaning))
    data.tables.append(("Cleaning log", cleaning.to_frame()))
    data.paragraphs.append(
        "Energy is normalised per image processed in training, as the paper does (J/image, "
        "j_per_image): the run's energy over its training images plus one validation pass per "
        "finished epoch (epochs x the val_samples tag). J per training image (j_per_train_image) "
        "divides by the training images alone. Processing time per image counts the images "
        "J/image counts; GPU usage is the mean over the run. Energy figures include modelled "
        "devices where no sensor measured them (see each run's summary)."
    )
    # Cleaning removed the runs whose tag is not a count: a missing value here is a missing tag.
    untagged = int(cleaned["val_samples"].isna().sum())
    if untagged:
        data.paragraphs.append(
            f"{untagged} of the {len(cleaned)} runs kept carry no val_samples tag: no validation "
            "image is counted for them, so their J/image is their J per training image."
        )
    overview = _overview(cleaned)
    if not overview.empty:
        data.tables.append(("Runs kept, by group (medians)", overview))
    for factor, title_ in (
        ("architecture", "Architectures"),
        ("environment", "Training environments"),
    ):
        if factor in group_by or factor in ("architecture", "environment"):
            sections.append(_groups_section(cleaned, factor, title_, figures))
    for factor in group_by:
        if factor not in ("architecture", "environment"):
            sections.append(_groups_section(cleaned, factor, f"By {factor}", figures))
    caps = _power_limits(cleaned)
    if caps.nunique() >= 2:
        sections.append(_power_limit_section(cleaned.assign(power_limit_w=caps), figures))
    sections.append(_parameters_section(cleaned, figures))
    sections.append(_stability_section(store, cleaned, figures))
    sections.append(_estimators_section(store, cleaned, figures))
    if intensity is not None:
        sections.append(_carbon_section(store, cleaned, group_by, intensity, pue, figures))
    return Report(title, sections, figures)


def _carbon_section(
    store: Any,
    df: pd.DataFrame,
    group_by: Sequence[str],
    intensity: Intensity,
    pue: float,
    figures: Path,
) -> Section:
    """Each kept run's CO2e, and the CO2e by group of each factor compared."""
    from joulecast.analysis import plots
    from joulecast.carbon import run_emissions

    section = Section("CO2e")
    section.paragraphs.append(
        f"CO2e = energy x PUE ({pue:g}) x carbon intensity, the intensity from"
        f" {intensity.source} (docs/carbon.md)."
    )
    rows, skipped = [], []
    for run_id in df["run_id"].astype(int).tolist():
        try:
            e = run_emissions(store, run_id, intensity, pue)
        except InputError as exc:
            skipped.append(f"run {run_id}: {exc}")
            continue
        rows.append({"run_id": run_id, "co2e_g": e.co2e_g, "g_per_kwh": e.intensity_g_per_kwh})
    if skipped:
        section.paragraphs.append(
            f"{len(skipped)} run(s) without CO2e: " + "; ".join(skipped[:5]) + "."
        )
    if not rows:
        return section
    factors = [f for f in dict.fromkeys(["architecture", "environment", *group_by]) if f in df]
    runs = df[["run_id", "name", *factors, "energy_j"]].merge(pd.DataFrame(rows), on="run_id")
    section.tables.append(("CO2e by run", runs))
    for factor in factors:
        present = runs.dropna(subset=[factor])
        if present[factor].nunique() == 0:
            continue
        table = present.groupby(factor).agg(
            runs=("run_id", "count"),
            co2e_g_median=("co2e_g", "median"),
            co2e_g_total=("co2e_g", "sum"),
        )
        section.tables.append((f"CO2e by {factor}", table.reset_index()))
        path = plots.box_by_group(
            present, "co2e_g", factor, figures / f"box-{_slug(factor)}-co2e.png", label="CO2e (g)"
        )
        section.figures.append((f"CO2e per run by {factor}", path))
    return section


def _overview(df: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in ("architecture", "dataset", "environment") if df[c].notna().any()]
    if not keys or df.empty:
        return pd.DataFrame()
    grouped = df.groupby(keys, dropna=False)
    out = grouped.agg(
        runs=("run_id", "count"),
        j_per_image=("j_per_image", "median"),
        j_per_train_image=("j_per_train_image", "median"),
        s_per_image=("s_per_image", "median"),
        gpu_util_pct=("gpu_util_pct", "median"),
        f1=("f1", "median"),
    )
    return out.reset_index()


def _groups_section(df: pd.DataFrame, factor: str, title: str, figures: Path) -> Section:
    """RQ1/RQ2: does energy per image (and F1) differ between the levels of ``factor``?"""
    from joulecast.analysis import plots
    from joulecast.analysis.stats import compare_groups, paper_table
    from joulecast.analysis.tradeoffs import pareto_front, savings_statements

    section = Section(title)
    if factor not in df.columns or df[factor].dropna().nunique() == 0:
        section.paragraphs.append(
            f"No run has a {factor!r} tag: nothing to compare. Study runs carry their factors "
            "as tags; other runs can get them with joulecast measure --tag."
        )
        return section
    levels = df[factor].dropna().nunique()
    section.paragraphs.append(
        f"{len(df)} runs in {levels} group(s) of {factor}: "
        + ", ".join(f"{k} ({v})" for k, v in df[factor].value_counts().sort_index().items())
        + "."
    )
    slug = _slug(factor)
    for value, label in (("j_per_image", "J/image"), ("f1", "F1")):
        present = df.dropna(subset=[value, factor])
        if present.empty:
            section.paragraphs.append(f"{label}: no run has it (missing in every run).")
            continue
        comparison = compare_groups(present, value, factor, value_label=label, group_label=factor)
        section.paragraphs.append(comparison.summary())
        if comparison.tested:
            section.tables.append(
                (f"{label} by {factor}: assumptions", paper_table(comparison, kind="groups"))
            )
            section.tables.append(
                (f"{label} by {factor}: test", paper_table(comparison, kind="test"))
            )
            section.tables.append(
                (f"{label} by {factor}: pairs", paper_table(comparison, kind="pairs"))
            )
        path = plots.box_by_group(
            present, value, factor, figures / f"box-{slug}-{value}.png", label=label
        )
        section.figures.append((f"{label} by {factor}", path))
        if value == "j_per_image" and comparison.tested:
            qq = plots.qq_by_group(present, value, factor, figures / f"qq-{slug}-{value}.png")
            section.figures.append((f"Q-Q plots of {label} by {factor}", qq))
    front = pareto_front(df, cost="j_per_image", benefit="f1", by=factor)
    section.tables.append((f"Energy and F1 by {factor} (Pareto front)", front))
    statements = savings_statements(df, cost="j_per_image", benefit="f1", by=factor)
    if statements:
        section.paragraphs.append(
            "Trade-offs (medians): " + "; ".join(s.text() for s in statements[:6]) + "."
        )
    if df["f1"].notna().any():
        path = plots.tradeoff(df, front, figures / f"tradeoff-{slug}.png")
        section.figures.append((f"Energy per image vs F1 by {factor}", path))
    else:
        section.paragraphs.append("F1 is missing in every run: no energy/F1 trade-off.")
    return section


def _power_limits(df: pd.DataFrame) -> pd.Series:
    """Each run's GPU power limit in W, from its ``power_limit_w`` tag (a study factor set
    through NVML, :mod:`joulecast.study.powercap`); NaN where it has none."""
    values = df["tags"].map(lambda tags: tags.get("power_limit_w") if tags else None)
    return pd.to_numeric(values, errors="coerce").astype(float)


def _power_limit_section(df: pd.DataFrame, figures: Path) -> Section:
    """Energy, time and F1 against the GPU power limit the runs were given."""
    from joulecast.analysis import plots
    from joulecast.analysis.tradeoffs import savings_statements

    section = Section("GPU power limit")
    capped = df[df["power_limit_w"].notna()]
    benefit = "f1" if capped["f1"].notna().any() else "accuracy"
    label = "F1" if benefit == "f1" else "accuracy"
    levels = sorted(capped["power_limit_w"].unique())
    section.paragraphs.append(
        f"{len(capped)} runs at {len(levels)} GPU power limits "
        f"({', '.join(f'{w:g} W' for w in levels)}), each set through NVML on the run's GPUs "
        f"before it and put back after it (tag power_limit_w); {len(df) - len(capped)} runs "
        "without one are left out here. Energy, time and "
        f"{label} are medians; the changes are against the highest limit."
    )
    table = capped.groupby("power_limit_w").agg(
        runs=("run_id", "count"),
        energy_j=("energy_j", "median"),
        duration_s=("duration_s", "median"),
        j_per_image=("j_per_image", "median"),
        s_per_image=("s_per_image", "median"),
        **{benefit: (benefit, "median")},
    )
    top = table.iloc[-1]
    table["energy_change_pct"] = (table["energy_j"] / top["energy_j"] - 1) * 100
    table["time_change_pct"] = (table["duration_s"] / top["duration_s"] - 1) * 100
    section.tables.append((f"Energy, time and {label} by GPU power limit", table.reset_index()))
    names = pd.Categorical(
        [f"{w:g} W" for w in capped["power_limit_w"]],
        categories=[f"{w:g} W" for w in levels],
        ordered=True,
    )
    statements = savings_statements(
        capped.assign(limit=names), cost="j_per_image", benefit=benefit, by="limit"
    )
    if statements:
        section.paragraphs.append(
            "Trade-offs (medians): " + "; ".join(s.text() for s in statements[:6]) + "."
        )
    hue = "architecture" if capped["architecture"].nunique() > 1 else None
    for value in ("energy_j", "duration_s", benefit):
        if capped[value].notna().any():
            path = plots.effect_lines(
                capped, "power_limit_w", value, figures / f"power-limit-{value}.png", hue=hue
            )
            section.figures.append((f"{plots.LABELS[value]} by GPU power limit", path))
        else:
            section.paragraphs.append(f"{value}: no run has it (missing in every run).")
    return section


def _parameters_section(df: pd.DataFrame, figures: Path) -> Section:
    """RQ3: do GFLOPs, GPU usage, batch and input size predict energy and power?"""
    from joulecast.analysis import plots
    from joulecast.analysis.stats import spearman

    section = Section("Estimation parameters")
    rows = []
    pairs: tuple[tuple[str, str, Literal["greater", "less"]], ...] = (
        ("gflops", "j_per_image", "greater"),
        ("gflops", "gpu_util_pct", "greater"),
        ("gpu_util_pct", "avg_power_w", "greater"),
        ("batch_size", "j_per_image", "less"),
        ("input_size", "j_per_image", "greater"),
    )
    for x, y, alternative in pairs:
        pair = df[[x, y]].dropna()
        if len(pair) < 3 or pair[x].nunique() < 2:
            section.paragraphs.append(
                f"{y} vs {x}: too few runs with both ({len(pair)}) for a test."
            )
            continue
        result = spearman(pair, x, y, alternative=alternative).iloc[0]
        rows.append({"x": x, "y": y, **result.to_dict()})
    if rows:
        section.tables.append(("One-sided Spearman correlations", pd.DataFrame(rows)))
    for x, y, name in (
        ("gflops", "j_per_image", "energy-vs-gflops"),
        ("gflops", "gpu_util_pct", "usage-vs-gflops"),
    ):
        if df[[x, y]].dropna().shape[0] >= 2:
            path = plots.scatter_fit(df, x, y, figures / f"{name}.png", hue="architecture")
            section.figures.append((f"{y} vs {x}", path))
    if df[["gpu_util_pct", "avg_power_w"]].dropna().shape[0] >= 2:
        section.figures.append(
            (
                "Average power vs GPU usage, with TDP x usage",
                plots.power_vs_usage(df, figures / "power-vs-usage.png"),
            )
        )
    else:
        section.paragraphs.append("GPU power and usage: no run has GPU readings.")
    for factor in ("batch_size", "input_size"):
        if df[factor].dropna().nunique() >= 2:
            path = plots.effect_lines(
                df, factor, "j_per_image", figures / f"effect-{factor}.png", hue="architecture"
            )
            section.figures.append((f"J/image by {factor}", path))
        else:
            section.paragraphs.append(
                f"{factor}: fewer than two levels among the runs, no effect to show."
            )
    return section


def _stability_section(store: Any, df: pd.DataFrame, figures: Path) -> Section:
    """When does power stabilize? FLUSS on each run's power profile (a sample of runs)."""
    section = Section("Power stabilization")
    runs = df[df["epochs"].fillna(0) >= 3]
    if runs.empty:
        section.paragraphs.append("No run has 3 or more finished epochs: nothing to segment.")
        return section
    from joulecast.stability import stable_share, stored_stabilizing_epoch

    sample = runs[runs["run_id"].isin(_spread(runs["run_id"], MAX_STABILITY_RUNS))]
    found: list[int | None] = []
    first: tuple[int, pd.DataFrame, float] | None = None
    try:
        for run_id in sample["run_id"]:
            epochs = store.phases(int(run_id), "epoch").dropna(subset=["end_s"])
            result = stored_stabilizing_epoch(store, int(run_id), epochs)
            found.append(result.epoch)  # FLUSS's epoch, as `joulecast stability` counts
            if first is None and result.change_s is not None:
                first = (int(run_id), epochs, result.change_s)
    except InputError as exc:
        section.paragraphs.append(f"Stabilization not computed: {exc}.")
        return section
    share = stable_share(found)
    known = [e for e in found if e is not None]
    section.paragraphs.append(
        f"FLUSS on the power profiles of {len(sample)} run(s)"
        + (f" (a spread-out sample of {len(runs)})" if len(sample) < len(runs) else "")
        + f": a stable epoch was found in {len(known)}; "
        + (
            f"median {np.median(known):.0f}, 90% stable by epoch {_quantile_epoch(share, 0.9)}."
            if known
            else "none."
        )
    )
    section.tables.append(("Share of runs stable by epoch n", share))
    if first is not None:
        from joulecast.analysis import plots
        from joulecast.energy import stored_power_profile

        run_id, epochs, change = first
        profile = stored_power_profile(store, run_id, PROFILE_CELLS)
        section.figures.append(
            (
                f"Power profile of one run (mean power over {PROFILE_CELLS:,} equal spans), "
                "epochs shaded, the change marked",
                plots.power_profile(profile, epochs, change, figures / "power-profile.png"),
            )
        )
    return section


def _quantile_epoch(share: pd.DataFrame, q: float) -> str:
    hit = share.loc[share["share"] >= q, "epoch"]
    return str(int(hit.iloc[0])) if len(hit) else "never"


def _estimators_section(store: Any, df: pd.DataFrame, figures: Path) -> Section:
    """How good are the online forecasts and the offline estimates on these runs?"""
    from joulecast.analysis import plots
    from joulecast.energy import summarize
    from joulecast.forecast import evaluate

    section = Section("Estimator accuracy")
    tables = {}
    with_epochs = df.loc[df["epochs"].fillna(0) >= 3, "run_id"]
    for run_id in _spread(with_epochs, MAX_FORECAST_RUNS):
        epochs = summarize(store, int(run_id)).epochs.dropna(subset=["energy_j"])
        if len(epochs) >= 3:
            tables[int(run_id)] = epochs
    if tables:
        longest = max(len(t) for t in tables.values())
        stable = min(10, max(0, longest - 2))
        window = max(1, min(5, longest - stable - 1))
        sweep = evaluate(tables, windows=[window], stable_epochs=[stable])
        sampled = (
            f" (a spread-out sample of {len(with_epochs)})"
            if len(tables) < len(with_epochs)
            else ""
        )
        section.paragraphs.append(
            f"Online forecasts of {len(tables)} runs with epochs{sampled}, made after epoch "
            f"{stable + window} (stabilizing epoch {stable}, window {window}), against the "
            "measured sum of their epochs."
        )
        section.tables.append(("Online forecast errors", sweep))
    else:
        section.paragraphs.append("Online forecasts: no run has 3 or more finished epochs.")
    offline = _offline_rows(df)
    if offline is not None:
        frame, note = offline
        section.paragraphs.append(note)
        section.tables.append(("Offline estimates vs measured (per run, J)", frame.head(200)))
        errors = []
        for method in (
            "offline_epoch_energy_j",
            "offline_power_j",
            "mlco2_j",
            "green_algorithms_j",
        ):
            part = frame[["energy_j", method]].dropna()
            if len(part):
                err = part[method] - part["energy_j"]
                errors.append(
                    {
                        "method": method.removesuffix("_j").replace("_", "-"),
                        "runs": len(part),
                        "rmse_j": float(np.sqrt(np.mean(err**2))),
                        "mape_pct": float(np.mean(np.abs(err) / part["energy_j"]) * 100),
                    }
                )
        if errors:
            section.tables.append(("Offline methods vs measured energy", pd.DataFrame(errors)))
        part = frame[["energy_j", "offline_epoch_energy_j"]].dropna()
        if len(part):
            section.figures.append(
                (
                    "Offline epoch-energy estimate vs measured energy",
                    plots.predicted_vs_true(
                        part["energy_j"],
                        part["offline_epoch_energy_j"],
                        figures / "offline-vs-measured.png",
                        label="energy (J)",
                    ),
                )
            )
    else:
        section.paragraphs.append(
            "Offline estimates: no run has the GPU model, GFLOPs, dataset sizes, batch and "
            "input size the offline estimator needs (the built-in workload tags them)."
        )
    return section


def _offline_rows(df: pd.DataFrame) -> tuple[pd.DataFrame, str] | None:
    """Offline estimates of the runs that carry the offline features, beside their energy.

    Vectorized: one prediction call for every run, then the totals of each method (the same
    formulas as :func:`joulecast.offline.estimate.estimate`, with GPU usage as measured).
    """
    from joulecast.offline.baselines import RAM_W_PER_GB_GA
    from joulecast.offline.catalogue import Catalogue
    from joulecast.offline.models import default_estimator

    need = ["gflops", "train_samples", "val_samples", "batch_size", "input_size", "epochs"]
    usable = df.dropna(subset=[*need, "energy_j", "duration_s"])
    if usable.empty:
        return None
    catalogue = Catalogue.load()
    specs: dict[str, Any] = {}
    names = usable["gpu"]
    for name in names.dropna().unique():
        try:
            specs[str(name)] = catalogue.lookup(str(name))
        except InputError:
            continue
    known = names.map(lambda n: n in specs)
    usable, names = usable[known], names[known]
    if usable.empty:
        return None
    config = pd.DataFrame(
        {
            "gpu_cuda_cores": names.map(lambda n: specs[n].cuda_cores),
            "gpu_memory_gb": names.map(lambda n: specs[n].memory_gb),
            "gpu_tdp_w": names.map(lambda n: specs[n].tdp_w),
            "ram_gb": usable["ram_gb"].fillna(16.0),
            "gflops": usable["gflops"],
            "train_samples": usable["train_samples"],
            "val_samples": usable["val_samples"],
            "batch_size": usable["batch_size"],
            "input_height": usable["input_size"],
            "input_width": usable["input_size"],
        },
        index=usable.index,
    )
    predicted = default_estimator().predict(config)
    duration = usable["duration_s"].to_numpy(float)
    tdp = config["gpu_tdp_w"].to_numpy(float)
    util = (usable["gpu_util_pct"].fillna(100.0) / 100.0).to_numpy(float)
    frame = pd.DataFrame(
        {
            "run_id": usable["run_id"].to_numpy(),
            "energy_j": usable["energy_j"].to_numpy(float),
            "offline_epoch_energy_j": predicted["epoch_energy_j"].to_numpy(float)
            * usable["epochs"].to_numpy(float),
            "offline_power_j": predicted["avg_power_w"].to_numpy(float) * duration,
            "mlco2_j": tdp * duration,
            "green_algorithms_j": duration
            * (tdp * util + config["ram_gb"].to_numpy(float) * RAM_W_PER_GB_GA),
        }
    )
    return frame, (
        f"Offline estimates (the shipped model) of the {len(frame)} run(s) whose GPU the "
        "catalogue knows, beside their measured energy (GPU + modelled host parts); Green "
        "Algorithms with each run's measured GPU usage, PUE and PSF 1."
    )


# -- rendering ---------------------------------------------------------------------------------

_CSS = " ".join(
    [
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;",
        "color:#222}",
        "h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}",
        "table{border-collapse:collapse;margin:.8em 0;font-size:.85em;display:block;",
        "overflow-x:auto}",
        "th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}th{background:#f4f4f4}",
        "td:first-child,th:first-child{text-align:left}",
        "caption{text-align:left;font-weight:600;margin:.3em 0}",
        "figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}",
        "figcaption{font-size:.9em;color:#555}.meta{color:#666;font-size:.9em}",
    ]
)


def _fmt_frame(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
        elif out[col].dtype == object:
            out[col] = out[col].map(
                lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else v
            )
    return out


def write_html(report: Report, path: str | Path) -> Path:
    """One self-contained HTML file: figures embedded as data URIs, no external resources."""
    path = Path(path)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
        f"<p class='meta'>Made {time.strftime('%Y-%m-%d %H:%M')} by joulecast. Measured and "
        "modelled figures are labelled in each run's summary.</p>",
        "<nav><ol>"
        + "".join(
            f"<li><a href='#{_slug(s.title)}'>{html.escape(s.title)}</a></li>"
            for s in report.sections
        )
        + "</ol></nav>",
    ]
    for section in report.sections:
        parts.append(f"<section id='{_slug(section.title)}'><h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
        for caption, frame in section.tables:
            table = _fmt_frame(frame).to_html(index=False, border=0, escape=True)
            parts.append(
                table.replace("<thead>", f"<caption>{html.escape(caption)}</caption><thead>", 1)
            )
        for caption, figure in section.figures:
            data = base64.b64encode(Path(figure).read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        parts.append("</section>")
    parts.append("</body></html>")
    write_atomic(path, lambda tmp: Path(tmp).write_text("\n".join(parts), encoding="utf-8"))
    return path


def write_md(report: Report, path: str | Path) -> Path:
    """Markdown, with the figures copied into ``<name>_figures/`` beside it; each file is
    written whole (:func:`~joulecast.outputs.write_atomic`).

    Raises:
        InputError: the figure folder is a file or a symbolic link.
    """
    path = Path(path)
    fig_dir = path.with_name(f"{path.stem}_figures")
    if fig_dir.is_symlink():  # planted where the figures go, it would take them elsewhere
        raise InputError(f"{fig_dir}: a symbolic link; expected the report's figure folder")
    _folder(fig_dir)
    lines = [f"# {_md(report.title)}", ""]
    for section in report.sections:
        lines += [f"## {_md(section.title)}", ""]
        for p in section.paragraphs:
            lines += [_md(p), ""]
        for caption, frame in section.tables:
            table = _md_frame(frame)
            lines += [
                f"**{_md(caption)}**",
                "",
                table.to_markdown(index=False) if _has_tabulate() else _plain_md(table),
                "",
            ]
        for caption, figure in section.figures:
            target = fig_dir / Path(figure).name
            write_atomic(target, functools.partial(shutil.copyfile, figure))
            link = "/".join(urllib.parse.quote(part) for part in (fig_dir.name, target.name))
            lines += [f"![{_md(caption)}]({link})", ""]
    write_atomic(path, lambda tmp: Path(tmp).write_text("\n".join(lines), encoding="utf-8"))
    return path


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def _plain_md(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


# Markdown punctuation that starts markup anywhere in a line (links and images need "[", code
# "`", emphasis "*" and "_", tables "|", strikethrough "~"), and what starts it at a line's
# start (headings, lists, setext underlines).
_MD_INLINE = re.compile(r"([\\`*_\[\]|~])")
_MD_LINE_START = re.compile(r"^(\d+(?=[.)](?:\s|$))|)([#+=.)-])")


def _md(text: object) -> str:
    """Text from users (tags, run names, factor values) as Markdown that shows it as written.

    ``&``, ``<`` and ``>`` become HTML entities, so no tag (``<script>``, ``<img onerror>``)
    reaches a renderer; Markdown's own punctuation is escaped with a backslash, so no link,
    image or emphasis is made; control characters (line breaks among them) become spaces.
    """
    plain = "".join(" " if unicodedata.category(c) == "Cc" else c for c in str(text)).strip()
    escaped = _MD_INLINE.sub(r"\\\1", html.escape(plain, quote=False))
    return _MD_LINE_START.sub(r"\1\\\2", escaped)


def _md_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A table of the report formatted for Markdown: every header and text cell through _md."""
    out = _fmt_frame(frame)
    out.columns = [_md(c) for c in out.columns]
    return out.map(lambda v: _md(v) if isinstance(v, str) else v)


def write_tables(report: Report, folder: str | Path) -> list[Path]:
    """Every table of the report as a CSV file in ``folder`` (made where missing), each
    written whole.

    Raises:
        InputError: ``folder`` is a file.
    """
    folder = _folder(Path(folder))
    out = []
    for section in report.sections:
        for caption, frame in section.tables:
            path = folder / f"{_slug(section.title)}--{_slug(caption)}.csv"
            write_atomic(path, functools.partial(frame.to_csv, index=False))
            out.append(path)
    return out


def _folder(folder: Path) -> Path:
    """``folder``, made where missing, to write files in.

    Raises:
        InputError: ``folder`` is a file.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{folder}: not a folder; expected a folder to write in") from None
    return folder


def key_results(
    store: Any,
    *,
    study: str | None = None,
    group_by: Sequence[str] = ("architecture", "environment"),
) -> dict[str, Any]:
    """The report's key answers without figures: cleaning, group comparisons, trade-offs."""
    from joulecast.analysis.clean import clean
    from joulecast.analysis.data import run_table
    from joulecast.analysis.stats import compare_groups
    from joulecast.analysis.tradeoffs import savings_statements

    table = run_table(store, study=study)
    if table.empty:
        return {"runs": 0, "kept": 0, "cleaning": [], "comparisons": [], "tradeoffs": []}
    cleaned, cleaning = clean(table)
    comparisons: list[dict[str, Any]] = []
    tradeoffs: list[dict[str, Any]] = []
    for factor in group_by:
        if factor not in cleaned.columns or cleaned[factor].dropna().nunique() == 0:
            comparisons.append({"factor": factor, "value": None, "summary": f"no {factor} tag"})
            continue
        for value, label in (("j_per_image", "J/image"), ("f1", "F1")):
            present = cleaned.dropna(subset=[value, factor])
            if present.empty:
                comparisons.append(
                    {"factor": factor, "value": value, "summary": f"{label}: missing in every run"}
                )
                continue
            comparison = compare_groups(
                present, value, factor, value_label=label, group_label=factor
            )
            comparisons.append(
                {
                    "factor": factor,
                    "value": value,
                    "test": comparison.test,
                    "p": comparison.p if comparison.tested else None,
                    "summary": comparison.summary(),
                }
            )
        tradeoffs += [
            {"factor": factor, "text": s.text()}
            for s in savings_statements(cleaned, cost="j_per_image", benefit="f1", by=factor)
        ]
    return {
        "runs": len(table),
        "kept": len(cleaned),
        "cleaning": str(cleaning),
        "comparisons": comparisons,
        "tradeoffs": tradeoffs,
    }
