"""Do the offline estimator's warnings and intervals know when its estimates are far off?

Leave one configuration out: for each of the run table's distinct configurations, the shipped
model's specs (hyperparameters as shipped) are refitted on the other configurations' runs, their
intervals calibrated on those runs alone (``OfflineEstimator.fit_intervals``), and the held-out
configuration estimated. Its error is the prediction over the mean of its measured runs, less 1.
Printed side by side, per target:

- *ranges only*: the warnings joulecast gave before (a feature outside its training range);
- *applicability*: those and the new ones (factors never seen together, distance to the nearest
  training configuration above 1, an ensemble's members disagreeing), and the interval.

For each: the share of held-out configurations warned, the share of those more than 50% off
that were warned, the median absolute error of the warned and of the others, and the interval's
coverage of the configurations' mean and of their single runs.

    python benchmarks/offline_applicability.py [--data CSV] [--model JSON] [--list]
        [--protocol one|five|both]

``--protocol five`` holds a fifth of the configurations out at a time (grouped 5-fold)
instead: fewer left to learn from, and to calibrate on; ``both`` (the default) prints both.
Needs scikit-learn; about 4 minutes on 2 busy cores. The hyperparameters were chosen on every
configuration, the held-out one included, so the errors are slightly optimistic; the intervals
and warnings are not (they see only the other configurations).
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut

from joulecast.offline.features import RAW_FEATURES, configuration_groups, feature_frame, read_runs
from joulecast.offline.models import OfflineEstimator

DATA = Path(__file__).parents[1] / "src" / "joulecast" / "offline" / "data" / "paper_runs_train.csv"
FAR_OFF = 0.5


def shipped_model() -> dict[str, Any]:
    resource = importlib.resources.files("joulecast.offline") / "data" / "default_model.json"
    data: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return data


def held_out(df: pd.DataFrame, model: dict[str, Any], splitter: Any) -> pd.DataFrame:
    """One row per (held-out configuration, target): error, warnings, interval."""
    features = feature_frame(df)
    groups = configuration_groups(features)
    targets = list(model["targets"])
    rows = []
    for train_at, test_at in splitter.split(df, groups=groups):
        train = df.iloc[train_at]
        data = {k: v for k, v in model.items() if k != "applicability"}
        data |= {
            "rows": train[RAW_FEATURES + targets].to_numpy(dtype=float).tolist(),
            "n_runs": len(train),
            "n_configurations": len(np.unique(groups[train_at])),
        }
        estimator = OfflineEstimator.from_dict(data, source="held out").fit_intervals()
        for group in np.unique(groups[test_at]):
            rows += _assess(estimator, df[groups == group], targets)
    return pd.DataFrame(rows)


def _assess(estimator: OfflineEstimator, test: pd.DataFrame, targets: list[str]) -> list[dict]:
    """The rows of :func:`held_out` for one held-out configuration's runs."""
    rows = []
    row = test.head(1)
    predicted = estimator.predict(row).iloc[0]
    today = estimator.out_of_range(row)
    (domain,) = estimator.applicability(row)
    labels = [c for c in ("gpu", "architecture", "dataset") if c in test.columns]
    label = " ".join(str(test.iloc[0][c]) for c in labels)
    label += f" b{test.iloc[0]['batch_size']:.0f} {test.iloc[0]['input_height']:.0f}px"
    for target in targets:
        measured = test[target].to_numpy(dtype=float)
        low, high = domain.intervals.get(target, (np.nan, np.nan))
        reasons = {
            "range": bool(domain.out_of_range),
            "unseen": bool(domain.unseen),
            "far": domain.distance > 1.0,
            "spread": any(w.startswith(f"{target}: the ensemble") for w in domain.warnings),
        }
        rows.append(
            {
                "target": target,
                "configuration": label,
                "runs": len(test),
                "error": float(predicted[target]) / measured.mean() - 1.0,
                "warned_today": bool(today),
                "warned": bool(domain.warnings),
                "distance": domain.distance,
                **reasons,
                "low": low,
                "high": high,
                "mean_inside": bool(low <= measured.mean() <= high),
                "runs_inside": float(np.mean((low <= measured) & (measured <= high))),
                "width": high / low,
            }
        )
    return rows


def _median(values: pd.Series) -> str:
    return f"{100 * values.abs().median():.1f}%" if len(values) else "–"


def summary(frame: pd.DataFrame) -> str:
    """The side-by-side figures of one target."""
    off = frame["error"].abs() > FAR_OFF
    n, n_off = len(frame), int(off.sum())
    lines = [f"{'':44} {'ranges only':>14} {'applicability':>14}"]

    def line(name: str, today: str, new: str) -> None:
        lines.append(f"{name:44} {today:>14} {new:>14}")

    t, w = frame["warned_today"], frame["warned"]
    line("held-out configurations warned", f"{int(t.sum())}/{n}", f"{int(w.sum())}/{n}")
    line(
        f"of those >{FAR_OFF:.0%} off, warned",
        f"{int((t & off).sum())}/{n_off}",
        f"{int((w & off).sum())}/{n_off}",
    )
    line("median |error|, warned", _median(frame["error"][t]), _median(frame["error"][w]))
    line("median |error|, not warned", _median(frame["error"][~t]), _median(frame["error"][~w]))
    banded = frame["low"].notna()
    line("interval covers the measured mean", "–", f"{int(frame['mean_inside'].sum())}/{n}")
    runs_inside = np.average(frame["runs_inside"][banded], weights=frame["runs"][banded])
    line("interval covers single runs", "–", f"{100 * runs_inside:.1f}%")
    width = float(np.exp(np.log(frame["width"][banded]).median()))
    line("median interval width (high / low)", "–", f"x{width:.2f}")
    reasons = ", ".join(f"{r} {int(frame[r].sum())}" for r in ("range", "unseen", "far", "spread"))
    lines.append(f"warned for (a configuration may have several reasons): {reasons}")
    # The distance above which to warn is a choice (joulecast: 1); what others would give.
    others = frame[["range", "unseen", "spread"]].any(axis=1)
    for limit in (0.5, 0.75, 1.0, 1.5):
        w = others | (frame["distance"] > limit)
        lines.append(
            f"  warning from a distance above {limit:g}: {int(w.sum())}/{n} warned,"
            f" {int((w & off).sum())}/{n_off} of those >{FAR_OFF:.0%} off"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA), help="run table (default: the shipped one)")
    parser.add_argument("--model", help="model file whose specs to refit (default: the shipped)")
    parser.add_argument("--list", action="store_true", help="also list every configuration")
    parser.add_argument(
        "--protocol",
        choices=["one", "five", "both"],
        default="both",
        help="hold out one configuration at a time, a fifth of them (grouped 5-fold), or both",
    )
    args = parser.parse_args()
    df = read_runs(args.data)
    model = json.loads(Path(args.model).read_text()) if args.model else shipped_model()
    protocols = {
        "one": ("one configuration held out at a time", LeaveOneGroupOut()),
        "five": (
            "a fifth of the configurations held out at a time (grouped 5-fold)",
            GroupKFold(5),
        ),
    }
    for key in ("one", "five") if args.protocol == "both" else (args.protocol,):
        title, splitter = protocols[key]
        start = time.perf_counter()
        frame = held_out(df, model, splitter)
        n_configurations = len(frame) // frame["target"].nunique()
        print(
            f"\n== {args.data}: {len(df)} runs, {n_configurations} configurations; {title}"
            f" ({time.perf_counter() - start:.0f} s)"
        )
        for target, part in frame.groupby("target", sort=False):
            print(f"\n{target}")
            print(summary(part))
            if args.list:
                shown = part.sort_values("distance")[
                    ["configuration", "error", "distance", "warned_today", "warned", "low", "high"]
                ]
                print(shown.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
