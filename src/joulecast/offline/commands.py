"""The offline-estimation commands: ``estimate``, ``fit-offline``, ``evaluate-estimators``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from joulecast.energy import J_PER_KWH
from joulecast.errors import InputError
from joulecast.inputs import finite_arg, parse_duration, whole_arg
from joulecast.offline.bounds import COLUMN_MAX
from joulecast.outputs import check_output, print_json
from joulecast.verbs import Verbs, console, shown, store_of

# Bounds of the Green Algorithms and carbon options: far above any data centre (PUE 1.0-3),
# repetition count or grid (some 1,000 gCO2e/kWh at worst).
MAX_PUE = 10.0
MAX_PSF = 1e6
MAX_INTENSITY_G_PER_KWH = 1e5


def _column(name: str, *, whole: bool = True) -> Callable[[str], Any]:
    """An argparse ``type`` for an option that sets a run-table column, within its bound."""
    hi = COLUMN_MAX[name]
    return whole_arg(1, int(hi)) if whole else finite_arg(0.0, hi, above=True)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _estimator(path: str | None) -> Any:
    from joulecast.offline.models import OfflineEstimator, default_estimator

    return OfflineEstimator.load(path) if path else default_estimator()


def cmd_estimate(args: argparse.Namespace) -> int:
    """Estimate the energy of a planned training (or of every row of a CSV)."""
    from joulecast.offline.estimate import estimate_table, estimate_training

    options = {"pue": args.pue, "psf": args.psf, "intensity_g_per_kwh": args.intensity}
    if args.data:
        estimator = _estimator(args.model)
        from joulecast.offline.features import read_runs

        table = read_runs(args.data, gpus_file=args.gpus)
        rows = estimate_table(table, estimator, **options)
        if args.json:
            print_json(rows)
            return 0
        _print_batch(rows, console())
        return 0
    result = estimate_training(
        gpu=args.gpu,
        batch_size=args.batch_size,
        train_samples=args.train_samples,
        val_samples=args.val_samples,
        arch=args.arch,
        gflops=args.gflops,
        input_size=args.input_size,
        input_height=args.input_height,
        input_width=args.input_width,
        ram_gb=args.ram_gb,
        epochs=args.epochs,
        duration_s=args.duration,
        gpu_util_pct=args.gpu_util,
        gpus_file=args.gpus,
        model=args.model,
        **options,
    )
    if args.json:
        print_json(result.rows())
        return 0
    out = console()
    for note in result.notes:
        out.print(f"[dim]{shown(note)}[/dim]")
    from rich.table import Table

    table = Table(title="estimated energy of the whole training (modelled, not measured)")
    for col in ("method", "kJ", "kWh", *(["gCO2e"] if args.intensity else [])):
        table.add_column(col, justify="left" if col == "method" else "right")
    for e in result.estimates:
        cells = [e.method, "-", "-", *(["-"] if args.intensity else [])]
        if e.energy_j is not None:
            cells[1:3] = [f"{e.energy_j / 1e3:,.1f}", f"{e.energy_j / J_PER_KWH:,.3f}"]
            if args.intensity:
                cells[3] = f"{e.gco2e:,.0f}"
        table.add_row(*cells)
    out.print(table)
    domain = result.applicability
    share = f"{domain.coverage:.0%} " if domain is not None and domain.coverage else ""
    for e in result.estimates:
        band = ""
        if e.low_j is not None and e.high_j is not None:
            band = f"{share}interval {e.low_j / 1e3:,.1f}..{e.high_j / 1e3:,.1f} kJ"
        how = "; ".join(x for x in (e.basis, band, e.note) if x)
        out.print(shown(f"  {e.method}: {how}"))
    if result.duration_estimated and result.duration_s is not None:
        out.print(
            f"duration: {result.duration_s / 3600:,.2f} h, from the offline models "
            "(give --duration for the power-based estimate)"
        )
    if domain is not None:
        out.print(
            f"distance to the nearest training configuration: {domain.distance:.2f} (above 1:"
            " farther than 9 in 10 training configurations lie from their nearest)"
        )
    for warning in result.warnings:
        out.print(f"[yellow]warning: {shown(warning)}: an extrapolation, trust it less[/yellow]")
    return 0


def _print_batch(rows: list[dict[str, Any]], out: Any) -> None:
    from rich.table import Table

    table = Table(title="estimated energy per configuration (modelled)")
    for col in ("row", "power W", "epoch kJ", "total kJ", "method", "MLCO2 kJ", "GA kJ"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["row"]),
            _num(r["avg_power_w"], 1),
            _num(r["epoch_energy_j"], 1e3),
            _num(r.get("energy_j"), 1e3),
            shown(r.get("energy_method", "-")),
            _num(r.get("mlco2_j"), 1e3),
            _num(r.get("green_algorithms_j"), 1e3),
        )
    out.print(table)
    if rows and not rows[0]["band_calibrated"]:
        from joulecast.offline.domain import UNCALIBRATED

        out.print(f"[dim]{UNCALIBRATED}[/dim]")
    for r in rows:
        low, high = r.get("low_j"), r.get("high_j")
        if low is not None and high is not None:
            out.print(
                f"row {r['row']}: total {low / 1e3:,.1f}..{high / 1e3:,.1f} kJ (interval),"
                f" distance {r['distance']:.2f} to the nearest training configuration"
            )
        for warning in r["warnings"]:
            out.print(f"[yellow]row {r['row']}: warning: {shown(warning)}[/yellow]")


def _num(value: float | None, scale: float) -> str:
    return "-" if value is None else f"{value / scale:,.1f}"


def _training_table(args: argparse.Namespace) -> tuple[pd.DataFrame, str]:
    if args.data and args.from_store:
        raise InputError("give --data CSV or --from-store, not both")
    if args.data:
        from joulecast.offline.features import read_runs

        return read_runs(args.data), str(args.data)
    if args.from_store:
        from joulecast.offline.store_table import runs_table

        s = store_of(args, read_only=True)
        table, skipped = runs_table(s)
        for why, n in skipped.items():
            print(f"joulecast: {n} run(s) left out: {why}", flush=True)
        return table, str(s.path)
    raise InputError("give the training runs: --data CSV or --from-store")


def cmd_fit_offline(args: argparse.Namespace) -> int:
    """Fit the offline estimators on a run table and save them."""
    from joulecast.offline.features import TARGETS
    from joulecast.offline.models import OfflineEstimator

    output = Path(args.output)
    check_output(output)
    table, source = _training_table(args)
    targets = [t for t in TARGETS if t in table.columns]
    if not targets:
        raise InputError(f"{source}: no target column ({', '.join(TARGETS)})")
    estimator = OfflineEstimator(grid=args.grid).fit(
        table, targets, cv=args.cv, seed=args.seed, source=source
    )
    estimator.save(output)
    if args.json:
        print_json({"model": str(output), **estimator.to_dict()["models"]})
        return 0
    out = console()
    out.print(shown(estimator.card()))
    out.print(shown(f"saved: {output}"))
    return 0


def cmd_evaluate_estimators(args: argparse.Namespace) -> int:
    """Cross-validation table of every regressor, and the held-out totals of every method."""
    from joulecast.offline.evaluation import (
        has_totals,
        holdout,
        plot_predicted_vs_true,
        totals_table,
    )
    from joulecast.offline.features import TARGETS
    from joulecast.offline.models import CV, evaluate_models

    table, source = _training_table(args)
    targets = [t for t in TARGETS if t in table.columns]
    if not targets:
        raise InputError(f"{source}: no target column ({', '.join(TARGETS)})")
    protocols: list[CV] = ["random", "grouped"] if args.cv == "both" else [args.cv]
    frames = [
        evaluate_models(table, target=t, cv=cv, seed=args.seed, grid=args.grid)
        for t in targets
        for cv in protocols
    ]
    cv_rows = pd.concat(frames, ignore_index=True)
    held = None
    if args.plot or has_totals(table):
        split: CV = "random" if args.cv == "random" else "grouped"
        held = holdout(table, cv=split, seed=args.seed, grid=args.grid)
        if args.plot:
            plot_predicted_vs_true(held, args.plot)
    if args.json:
        rows = json.loads(cv_rows.to_json(orient="records"))
        if held is not None:
            rows += [
                {"target": "energy_j", "cv": "holdout", "model": r["method"], **r}
                for r in totals_table(held)
            ]
        print_json(rows)
        return 0
    _print_cv(cv_rows, console())
    if held is not None:
        _print_totals(held, console())
    if args.plot:
        console().print(f"figure: {args.plot}")
    return 0


def _print_cv(frame: pd.DataFrame, out: Any) -> None:
    from rich.table import Table

    for (target, cv), group in frame.groupby(["target", "cv"], sort=False):
        unit, scale = ("W", 1.0) if target == "avg_power_w" else ("kJ", 1e3)
        table = Table(title=f"{target}: {cv} 5-fold CV on 70%, then the held-out 30%")
        for col in (
            "model",
            "R2",
            f"RMSE {unit}",
            f"MAE {unit}",
            "MAPE",
            "test R2",
            f"test RMSE {unit}",
        ):
            table.add_column(col, justify="right" if col != "model" else "left")
        for r in group.sort_values("rmse").itertuples():
            table.add_row(
                str(r.model),
                f"{r.r2:.3f}",
                f"{r.rmse / scale:.3f}",
                f"{r.mae / scale:.3f}",
                f"{100 * r.mape:.1f}%",
                f"{r.test_r2:.3f}",
                f"{r.test_rmse / scale:.3f}",
            )
        out.print(table)


def _print_totals(held: Any, out: Any) -> None:
    if held.totals is None:
        out.print("no total-energy comparison: the table lacks duration_s, epochs and energy_j")
        return
    from rich.table import Table

    table = Table(
        title=f"total energy of {held.test_runs} held-out runs (fitted on {held.train_runs})"
    )
    for col in ("method", "RMSE kJ", "MAE kJ", "MAPE"):
        table.add_column(col, justify="right" if col != "method" else "left")
    for r in held.totals.sort_values("rmse_j").itertuples():
        table.add_row(
            str(r.method), f"{r.rmse_j / 1e3:,.2f}", f"{r.mae_j / 1e3:,.2f}", f"{r.mape_pct:.1f}%"
        )
    out.print(table)


def register(verbs: Verbs) -> None:
    """Add ``estimate``, ``fit-offline`` and ``evaluate-estimators``."""
    p = verbs.add(
        "estimate",
        cmd_estimate,
        "estimate a planned training's energy before it starts",
    )
    p.add_argument("--gpu", help='GPU model, e.g. "RTX 3090" or "NVIDIA H100 80GB HBM3"')
    p.add_argument("--gpus", metavar="CSV", help="your own GPU catalogue rows (add or override)")
    p.add_argument("--arch", help="built-in architecture (its GFLOPs come from a shipped table)")
    p.add_argument(
        "--gflops", type=_column("gflops", whole=False), help="forward-pass GFLOPs of one sample"
    )
    p.add_argument("--input-size", type=_column("input_height"), help="square input side, px")
    p.add_argument("--input-height", type=_column("input_height"))
    p.add_argument("--input-width", type=_column("input_width"))
    p.add_argument("--batch-size", type=_column("batch_size"))
    p.add_argument("--train-samples", type=_column("train_samples"))
    p.add_argument("--val-samples", type=_column("val_samples"))
    p.add_argument("--epochs", type=_column("epochs"), help="planned epochs")
    p.add_argument("--duration", type=_duration, help="planned duration: 2h, 90m, 1h30m, seconds")
    p.add_argument(
        "--ram-gb",
        type=_column("ram_gb", whole=False),
        help="RAM of the training machine (default: this one's)",
    )
    p.add_argument(
        "--gpu-util",
        type=_column("gpu_util_pct", whole=False),
        help="expected GPU usage %% for Green Algorithms (100)",
    )
    p.add_argument(
        "--pue",
        type=finite_arg(0.0, MAX_PUE, above=True),
        default=1.0,
        help="Green Algorithms PUE (1)",
    )
    p.add_argument(
        "--psf",
        type=finite_arg(0.0, MAX_PSF, above=True),
        default=1.0,
        help="Green Algorithms PSF (1)",
    )
    p.add_argument(
        "--intensity",
        type=finite_arg(0.0, MAX_INTENSITY_G_PER_KWH, above=True),
        help="carbon intensity, gCO2e/kWh",
    )
    p.add_argument("--model", help="an estimator saved by fit-offline (default: the shipped one)")
    p.add_argument("--data", help="CSV of configurations: estimate every row")

    def _training_args(p: argparse.ArgumentParser, protocols: list[str], default: str) -> None:
        p.add_argument("--data", help="run table (CSV)")
        p.add_argument(
            "--from-store", action="store_true", help="the completed GPU runs of the store"
        )
        p.add_argument(
            "--cv",
            choices=protocols,
            default=default,
            help=f"grouped (leave-configuration-out) or random 5-fold CV ({default})",
        )
        p.add_argument(
            "--grid", choices=["full", "small"], default="full", help="hyperparameter grids"
        )
        p.add_argument("--seed", type=whole_arg(0, 2**32 - 1), default=0)

    p = verbs.add(
        "fit-offline",
        cmd_fit_offline,
        "fit the offline estimators on your runs",
    )
    _training_args(p, ["grouped", "random"], "grouped")
    p.add_argument("-o", "--output", required=True, help="model file to write (JSON)")

    p = verbs.add(
        "evaluate-estimators",
        cmd_evaluate_estimators,
        "cross-validate every offline regressor and compare every method",
    )
    _training_args(p, ["both", "grouped", "random"], "both")
    p.add_argument(
        "--plot", metavar="PNG", help="predicted vs measured on the held-out runs (Fig. 11)"
    )
