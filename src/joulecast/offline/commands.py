"""The offline-estimation commands: ``estimate``, ``fit-offline``, ``evaluate-estimators``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pandas as pd

from joulecast.energy import J_PER_KWH
from joulecast.errors import InputError
from joulecast.inputs import finite_arg, parse_duration, whole_arg
from joulecast.offline.bounds import COLUMN_MAX, MAX_HOLDOUT, MAX_N_ITER
from joulecast.outputs import check_output, print_json
from joulecast.verbs import Verbs, add_carbon_options, carbon_of, console, shown, store_of

# Bounds of the Green Algorithms and carbon options: far above any data centre (PUE 1.0-3),
# repetition count or grid (some 1,000 gCO2e/kWh at worst).
MAX_PSF = 1e6


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

    intensity = carbon_of(args, hourly=False)
    options = {"pue": args.pue, "psf": args.psf, "intensity": intensity}
    if args.data:
        estimator = _estimator(args.model)
        from joulecast.offline.features import read_runs

        table = read_runs(args.data, gpus_file=args.gpus)
        rows = estimate_table(table, estimator, **options)
        if args.json:
            print_json(rows)
            return 0
        out = console()
        _print_batch(rows, out, carbon=intensity is not None)
        out.print(shown(_carbon_line(intensity, args.pue)))
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
    for col in ("method", "kJ", "kWh", *(["gCO2e"] if intensity else [])):
        table.add_column(col, justify="left" if col == "method" else "right")
    for e in result.estimates:
        cells = [e.method, "-", "-", *(["-"] if intensity else [])]
        if e.energy_j is not None:
            cells[1:3] = [f"{e.energy_j / 1e3:,.1f}", f"{e.energy_j / J_PER_KWH:,.3f}"]
            if e.gco2e is not None:
                cells[3] = f"{e.gco2e:,.1f}"
        table.add_row(*cells)
    out.print(table)
    out.print(shown(_carbon_line(intensity, args.pue)))
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


def _carbon_line(intensity: Any, pue: float) -> str:
    """Where the CO2e figures' intensity came from, or how to give one."""
    import os

    from joulecast.carbon import ZONE_ENV, no_intensity

    if intensity is None:
        zone = os.environ.get(ZONE_ENV, "").strip()
        passed = f"; ${ZONE_ENV} is hourly, passed over for a planned training" if zone else ""
        return no_intensity(hourly=False) + passed
    return (
        f"CO2e at {intensity.g_per_kwh:,.1f} gCO2e/kWh ({intensity.source}), PUE {pue:g}"
        " (Green Algorithms' energy already holds it)"
    )


def _print_batch(rows: list[dict[str, Any]], out: Any, carbon: bool) -> None:
    from rich.table import Table

    table = Table(title="estimated energy per configuration (modelled)")
    columns = ("row", "power W", "epoch kJ", "total kJ", "method", "MLCO2 kJ", "GA kJ")
    for col in (*columns, *(["total gCO2e"] if carbon else [])):
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
            *([_num(r.get("gco2e"), 1)] if carbon else []),
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
    from joulecast.offline.features import STABLE_ENERGY, TARGETS, target_values
    from joulecast.offline.models import CV, evaluate_models

    given = {"holdout": args.holdout, "n_iter": args.n_iter, "seed": args.paper_seed}
    paper_options = {k: v for k, v in given.items() if v is not None}
    if paper_options and args.protocol != "paper":
        raise InputError("--holdout, --n-iter and --paper-seed: only with --protocol paper")
    table, source = _training_table(args)
    targets = [t for t in TARGETS if t in table.columns]
    if not targets:
        raise InputError(f"{source}: no target column ({', '.join(TARGETS)})")
    paper_rows = None
    if args.protocol == "paper":
        from joulecast.offline.paper import paper_protocol

        stable = [STABLE_ENERGY] if STABLE_ENERGY in table.columns else []
        for t in stable:
            target_values(table, t, source=source)  # a bad value, before minutes of searching
        paper_frames = [
            paper_protocol(table, target=t, source=source, **paper_options)
            for t in [*targets, *stable]
        ]
        paper_rows = pd.concat(paper_frames, ignore_index=True)
    cv = args.cv or ("grouped" if args.protocol == "paper" else "both")
    protocols: list[CV] = ["random", "grouped"] if cv == "both" else [cast(CV, cv)]
    frames = [
        evaluate_models(table, target=t, cv=p, seed=args.seed, grid=args.grid)
        for t in targets
        for p in protocols
    ]
    cv_rows = pd.concat(frames, ignore_index=True)
    held = None
    if args.plot or has_totals(table):
        split: CV = "random" if cv == "random" else "grouped"
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
        if paper_rows is not None:
            paper = json.loads(paper_rows.to_json(orient="records"))
            rows = [{"protocol": "paper", **r} for r in paper] + [
                {"protocol": "joulecast", **r} for r in rows
            ]
        print_json(rows)
        return 0
    if paper_rows is not None:
        _print_paper(paper_rows, console())
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
            table.add_row(str(r.model), *_cv_cells(r, scale), *_test_cells(r, scale))
        out.print(table)


def _cv_cells(r: Any, scale: float) -> list[str]:
    """R², RMSE, MAE (in the unit ``scale`` divides to) and MAPE of a row, for a table."""
    return [f"{r.r2:.3f}", f"{r.rmse / scale:.3f}", f"{r.mae / scale:.3f}", f"{100 * r.mape:.1f}%"]


def _test_cells(r: Any, scale: float) -> list[str]:
    return [f"{r.test_r2:.3f}", f"{r.test_rmse / scale:.3f}"]


_PAPER_TABLES = {
    "avg_power_w": "Table 8",
    "epoch_energy_j": "Table 9, initial epochs included",
    "epoch_energy_stable_j": "Table 9, initial epochs left out",
}


def _print_paper(frame: pd.DataFrame, out: Any) -> None:
    from rich.table import Table

    for target, group in frame.groupby("target", sort=False):
        unit, scale = ("W", 1.0) if target == "avg_power_w" else ("kJ", 1e3)
        first = group.iloc[0]
        held = int(first["n_test"]) > 0
        split = (
            f"5-fold CV on {first['n_train']} runs, {first['n_test']} held out"
            if held
            else f"5-fold CV on the {first['n_train']} runs as given"
        )
        table = Table(
            title=f"{target} ({_PAPER_TABLES[str(target)]}): the paper's procedure, {split},"
            f" randomized search of {first['n_iter']} draws, seed {first['seed']}"
        )
        test = ["test R2", f"test RMSE {unit}"] if held else []
        for col in ("model", "R2", f"RMSE {unit}", f"MAE {unit}", "MAPE", *test, "params"):
            table.add_column(col, justify="left" if col in ("model", "params") else "right")
        for r in group.itertuples():
            cells = _test_cells(r, scale) if held else []
            table.add_row(str(r.model), *_cv_cells(r, scale), *cells, shown(str(r.params)))
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
        "--psf",
        type=finite_arg(0.0, MAX_PSF, above=True),
        default=1.0,
        help="Green Algorithms PSF (1)",
    )
    p.add_argument("--model", help="an estimator saved by fit-offline (default: the shipped one)")
    p.add_argument("--data", help="CSV of configurations: estimate every row")
    add_carbon_options(p, hourly=False)

    def _training_args(
        p: argparse.ArgumentParser, protocols: list[str], default: str | None, said: str
    ) -> None:
        p.add_argument("--data", help="run table (CSV)")
        p.add_argument(
            "--from-store", action="store_true", help="the completed GPU runs of the store"
        )
        p.add_argument(
            "--cv",
            choices=protocols,
            default=default,
            help=f"grouped (leave-configuration-out) or random 5-fold CV ({said})",
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
    _training_args(p, ["grouped", "random"], "grouped", "grouped")
    p.add_argument("-o", "--output", required=True, help="model file to write (JSON)")

    p = verbs.add(
        "evaluate-estimators",
        cmd_evaluate_estimators,
        "cross-validate every offline regressor and compare every method",
    )
    _training_args(p, ["both", "grouped", "random"], None, "both; grouped with --protocol paper")
    p.add_argument(
        "--plot", metavar="PNG", help="predicted vs measured on the held-out runs (Fig. 11)"
    )
    p.add_argument(
        "--protocol",
        choices=["joulecast", "paper"],
        default="joulecast",
        help="paper: also the paper's procedure for its Tables 8 and 9, as its replication"
        " package runs it (joulecast)",
    )
    p.add_argument(
        "--n-iter",
        type=whole_arg(1, MAX_N_ITER),
        help="--protocol paper: draws of each randomized search (100)",
    )
    p.add_argument(
        "--holdout",
        type=finite_arg(0.0, MAX_HOLDOUT),
        help="--protocol paper: share of the runs held out, 0 for none (0.3)",
    )
    p.add_argument(
        "--paper-seed",
        type=whole_arg(0, 2**32 - 1),
        help="--protocol paper: seed of its split, draws and folds (2022)",
    )
