"""The ``joulecast`` command: thin verbs over the public API.

Every verb that prints data takes ``--json``. Errors joulecast reports on purpose print one
line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from joulecast.energy import RunSummary, j_to_kwh, summarize
from joulecast.errors import InputError, JoulecastError, JoulecastWarning
from joulecast.inputs import (
    MAX_EPOCHS,
    MAX_INPUT_SIZE,
    REPLAY_GPUS_ENV,
    RUN_UID_ENV,
    SHARD_DIR_ENV,
    finite_arg,
    key_values,
    quote,
    whole_arg,
)
from joulecast.outputs import print_json as _print_json
from joulecast.outputs import write_atomic
from joulecast.store import Store, default_store_path
from joulecast.verbs import (
    Parser,
    Verbs,
    add_carbon_options,
    carbon_of,
    console,
    shown,
    store_of,
)

log = logging.getLogger("joulecast")


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def print_summary(summary: RunSummary, out: Any) -> None:
    """Print a run's totals, per-device sources, epochs and warnings as rich tables."""
    from rich.table import Table

    status = summary.status
    if summary.signal:
        status += f" ({summary.signal})"
    elif summary.exit_code not in (None, 0):
        status += f" (exit {summary.exit_code})"
    out.print(
        f"[bold]run {summary.run_id}[/bold] {shown(summary.name or '')}  {status}  "
        f"{summary.duration_s:,.1f} s"
    )
    if summary.tags.get("job_node_names"):  # merged from a distributed job's node shards
        names = summary.tags["job_node_names"].split(",")
        out.print(
            shown(
                f"job {summary.tags.get('job', '?')}: {len(names)} node(s) ({', '.join(names)}),"
                " every node's devices, rank 0's epochs"
            )
        )
    table = Table(title="energy by device", title_justify="left")
    for col in ("device", "energy J", "kWh", "mean W", "how"):
        table.add_column(col, justify="left" if col in ("device", "how") else "right")
    for device, d in summary.devices.items():
        how = f"{d.origin.value} ({d.source}, {d.method})"
        table.add_row(
            shown(device),
            _fmt(d.energy_j),
            f"{j_to_kwh(d.energy_j):.6f}",
            _fmt(d.mean_power_w),
            shown(how),
        )
    replayed = any(d.replayed for d in summary.devices.values())
    table.add_row(
        "total",
        _fmt(summary.energy_j),
        f"{j_to_kwh(summary.energy_j):.6f}",
        _fmt(summary.mean_power_w),
        f"measured {_fmt(summary.energy_j_measured)} J + "
        + (f"replayed {_fmt(summary.energy_j_replayed)} J + " if replayed else "")
        + f"modelled {_fmt(summary.energy_j_modelled)} J",
        style="bold",
    )
    out.print(table)
    if len(summary.epochs):
        ep = Table(title="epochs", title_justify="left")
        for col in ("epoch", "start s", "duration s", "energy J", "mean W", "samples", "J/sample"):
            ep.add_column(col, justify="right")
        for row in summary.epochs.to_dict("records"):
            samples = row["samples"]
            ep.add_row(
                str(row["index"]),
                _fmt(row["start_s"], 2),
                _fmt(row["duration_s"], 2),
                "unmeasured" if row.get("unmeasured") else _fmt(row["energy_j"]),
                _fmt(row["mean_power_w"]),
                "-" if samples is None or samples != samples else str(int(samples)),
                _fmt(row["j_per_sample"], 4),
            )
        out.print(ep)
    if summary.j_per_sample is not None:
        out.print(f"J per sample processed: {summary.j_per_sample:.4f}")
    if summary.test is not None:
        scores = ", ".join(
            f"{k} {v:.4f}" for k, v in summary.test["metrics"].items() if isinstance(v, float)
        )
        out.print(
            f"test split: {summary.test['samples'] or '-'} samples, "
            f"{_fmt(summary.test['energy_j'])} J; {shown(scores)}"
        )
    q = summary.quality
    if q.get("ticks"):
        stored = ", ".join(
            f"{d} {'-' if v.rate_hz is None else f'{v.rate_hz:,.1f} Hz'}"
            for d, v in summary.devices.items()
        )
        out.print(
            f"sampling: asked {_fmt(1 / q['interval_s'])} Hz, stored {shown(stored or 'nothing')}; "
            f"{q['ticks']} ticks at {_fmt(q.get('achieved_hz'))} Hz, "
            f"{q.get('missed_deadlines', 0)} missed"
        )
    for warning in summary.warnings:
        out.print(f"[yellow]warning:[/yellow] {shown(warning)}")


# -- carbon ----------------------------------------------------------------------------------


def _emissions_line(store: Store, run_id: int, source: Any, pue: float) -> str:
    from joulecast.carbon import NO_INTENSITY, run_emissions

    return NO_INTENSITY if source is None else run_emissions(store, run_id, source, pue).describe()


# -- verbs ---------------------------------------------------------------------------------


def cmd_measure(args: argparse.Namespace) -> int:
    """Run a command as a child, sampling until it exits; exit with its exit code."""
    from joulecast.command import MeasuredCommand, pass_through
    from joulecast.distributed import current_job

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    carbon_of(args)  # a bad intensity option is refused before the command runs
    run_uid = getattr(args, "run_uid", None)
    if getattr(args, "per_node", False) and not current_job(uid=run_uid).samples_node:
        pass_through(command)  # another rank of this node: its local rank 0 samples
    measured = MeasuredCommand(
        command,
        store=args.store,
        name=args.name,
        tags=key_values(args.tag, "--tag"),
        interval_s=args.interval,
        gpus=not args.no_gpu,
        replay_gpus=getattr(args, "replay_gpus", None),
        epochs=getattr(args, "epochs", None),
        forecast_method=getattr(args, "forecast_method", "epoch-energy"),
        stable_epoch=getattr(args, "stable_epoch", "auto"),
        window=getattr(args, "window", 5),
        run_uid=run_uid,
        shard_dir=getattr(args, "shard_dir", None),
        prometheus=getattr(args, "prometheus", None),
        prometheus_textfile=getattr(args, "prometheus_textfile", None),
    )
    measured.start()
    if measured.exporter is not None and measured.exporter.url and not args.quiet:
        print(f"joulecast: metrics at {measured.exporter.url}", file=sys.stderr, flush=True)
    forward = {s: signal.signal(s, lambda n, _f: measured.send_signal(n)) for s in _FORWARDED}
    try:
        summary = measured.wait()
    finally:
        for s, handler in forward.items():
            signal.signal(s, handler)
    if not args.quiet:
        out = console(stderr=True)
        print_summary(summary, out)
        try:
            store = store_of(args, read_only=True)
            pue = getattr(args, "pue", 1.0)
            out.print(shown(_emissions_line(store, summary.run_id, carbon_of(args), pue)))
        except JoulecastError as exc:  # the run is measured and kept: say why, keep its exit
            out.print(f"[yellow]warning:[/yellow] {shown(str(exc))}")
    if summary.signal is not None:
        return 128 + signal.Signals[summary.signal].value
    return int(summary.exit_code or 0)


_FORWARDED = (signal.SIGINT, signal.SIGTERM)


def cmd_collect(args: argparse.Namespace) -> int:
    """Merge the node shards of distributed jobs into the store, one run per job."""
    from joulecast.distributed import shard_folder
    from joulecast.jobs import merge_jobs

    store = store_of(args)
    paths = args.shards or [shard_folder(store.path)]
    results = merge_jobs(store, paths, partial=args.partial)
    if args.json:
        _print_json([dataclasses.asdict(r) for r in results])
        return 0
    out = console()
    if not results:
        out.print(shown(f"no distributed job's node runs in {', '.join(map(str, paths))}"))
    for r in results:
        where = f"run {r.run_id}" if r.run_id is not None else "not merged"
        out.print(
            shown(
                f"job {r.job}: {r.outcome} ({where}; {r.nodes} of {r.nodes_expected} node(s),"
                f" {len(r.devices)} device(s), {r.status or 'status unknown'})"
            )
        )
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """List the runs in the store."""
    store = store_of(args, read_only=True)
    frame = store.runs()
    source = carbon_of(args)
    emissions, notes_by_run = _runs_emissions(store, frame, source, args.pue)
    if args.json:
        records = json.loads(frame.to_json(orient="records"))
        if source is not None:
            for record in records:
                e = emissions.get(record["id"])
                record.update(
                    e.to_dict()
                    if e
                    else {
                        "co2e_g": None,
                        "intensity_g_per_kwh": None,
                        "intensity_source": source.source,
                        "pue": args.pue,
                        "co2e_note": notes_by_run[record["id"]],
                    }
                )
        _print_json(records)
        return 0
    from rich.table import Table

    table = Table()
    columns = ("id", "name", "status", "origin", "started", "duration s", "epochs", "energy kWh")
    co2 = ("CO2e g",) if source is not None else ()
    for col in (*columns, *co2, "tags"):
        table.add_column(col)
    for row in frame.to_dict("records"):
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["started_at"]))
        table.add_row(
            str(row["id"]),
            shown(row["name"] or ""),
            shown(row["status"]),
            shown(row["origin"]),
            started,
            _fmt(row["duration_s"]),
            str(row["epochs"]),
            _fmt(j_to_kwh(row["energy_j"]), 4),
            *([_fmt(e.co2e_g, 2) if (e := emissions.get(row["id"])) else "-"] if co2 else []),
            shown(" ".join(f"{k}={v}" for k, v in row["tags"].items())),
        )
    out = console()
    out.print(table)
    if source is not None:
        out.print(shown(f"CO2e: intensity from {source.source}, PUE {args.pue:g}"))
    for run_id, note in notes_by_run.items():
        out.print(f"[yellow]warning:[/yellow] run {run_id}: {shown(note)}")
    return 0


def _runs_emissions(
    store: Store, frame: Any, source: Any, pue: float
) -> tuple[dict[int, Any], dict[int, str]]:
    """Each run's :class:`joulecast.carbon.Emissions`; a run the intensity does not cover is
    left out, and why is said by run id."""
    from joulecast.carbon import run_emissions

    emissions: dict[int, Any] = {}
    notes: dict[int, str] = {}
    if source is None:
        return emissions, notes
    for run_id in frame["id"].tolist():
        try:
            emissions[int(run_id)] = run_emissions(store, int(run_id), source, pue)
        except InputError as exc:
            notes[int(run_id)] = f"no CO2e: {exc}"
    return emissions, notes


def cmd_show(args: argparse.Namespace) -> int:
    """Print a run's summary."""
    from joulecast.carbon import run_emissions

    source = carbon_of(args)  # a bad option is refused before anything is printed
    store = store_of(args, read_only=True)
    summary = summarize(store, store.resolve(args.run))
    if args.json:
        data = summary.to_dict()
        if source is None:
            data.update(co2e_g=None, intensity_g_per_kwh=None, intensity_source=None, pue=args.pue)
        else:
            emissions = run_emissions(
                store, summary.run_id, source, args.pue, energy_j=summary.energy_j
            )
            data.update(emissions.to_dict())
        _print_json(data)
    else:
        line = _emissions_line(store, summary.run_id, source, args.pue)
        out = console()
        print_summary(summary, out)
        out.print(shown(line))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a run's samples and phases as CSV or Parquet."""
    from joulecast.traces import export_run

    store = store_of(args, read_only=True)
    paths = export_run(store, store.resolve(args.run), args.output, format=args.format)
    if args.json:
        _print_json({"files": [str(p) for p in paths]})
    else:
        for p in paths:
            print(p)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Import a neutral trace or an nvidia-smi log as a run."""
    from joulecast.traces import import_nvidia_smi, import_trace

    store = store_of(args)
    tags = key_values(args.tag, "--tag")
    if args.kind == "trace":
        run_id = import_trace(store, args.power, args.phases, name=args.name, tags=tags)
    else:
        run_id = import_nvidia_smi(store, args.log, args.phases, name=args.name, tags=tags)
    if args.json:
        _print_json({"run_id": run_id})
    else:
        print(run_id)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Print which sensors work here and how to fix the others; with ``--store``, check a
    run store through and through instead (exit 2 if anything is wrong)."""
    if args.store is not None:
        return _doctor_store(Path(args.store) if args.store else default_store_path(), args.json)
    from joulecast.sensors import detect

    sensors, reports = detect()
    details = {}
    for sensor in sensors:
        describe = getattr(sensor, "describe", None)
        details[getattr(sensor, "name", type(sensor).__name__)] = describe() if describe else {}
        sensor.close()
    if args.json:
        _print_json(
            [
                {
                    "sensor": r.name,
                    "found": r.found,
                    "devices": r.devices,
                    "measured": r.measured,
                    "reason": r.reason,
                    "fix": r.fix,
                    "details": details.get(r.name, {}),
                }
                for r in reports
            ]
        )
        return 0
    out = console()
    for r in reports:
        if r.found:
            kind = "measured" if r.measured else "modelled power / measured load"
            if r.name == "replay":
                kind = "replayed from a recorded trace, not this machine's hardware"
            found = shown(f"{r.name:<11} {', '.join(r.devices)}  ({kind})")
            out.print(f"[green]found[/green]   {found}")
            for device, info in details.get(r.name, {}).items():
                facts = ", ".join(f"{k}={v}" for k, v in info.items() if v is not None)
                out.print(shown(f"            {device}: {facts}"))
        else:
            out.print(f"[red]missing[/red] {shown(f'{r.name:<11} {r.reason}')}")
            if r.fix:
                out.print(f"            fix: {shown(r.fix)}")
    return 0


def _doctor_store(path: Path, as_json: bool) -> int:
    """Check the store at ``path``; print ok or the problems found."""
    from joulecast.store import check_store

    found = check_store(path)
    if as_json:
        _print_json(
            {
                "store": str(found.path),
                "ok": found.ok,
                "schema_version": found.schema_version,
                "runs": found.runs,
                "samples": found.samples,
                "problems": list(found.problems),
            }
        )
        return 0 if found.ok else 2
    out = console()
    samples = "?" if found.samples is None else f"{found.samples:,}"
    what = f"schema version {found.schema_version}, {found.runs} run(s), {samples} samples"
    if found.ok:
        out.print(
            shown(
                f"{found.path}: ok ({what}): SQLite's integrity check and the energy"
                " aggregates agree"
            )
        )
        return 0
    out.print(shown(f"{found.path}: {len(found.problems)} problem(s) ({what}):"))
    for problem in found.problems:
        out.print(shown(f"  {problem}"))
    return 2


def cmd_demo(args: argparse.Namespace) -> int:
    """Measure a small CPU training end to end and print its summary."""
    ns = argparse.Namespace(
        store=args.store,
        interval=args.interval,
        name="demo",
        tag=["demo=1"],
        quiet=False,
        no_gpu=False,
        command=[sys.executable, "-m", "joulecast.demo", "--epochs", str(args.epochs)],
    )
    return cmd_measure(ns)


def cmd_flops(args: argparse.Namespace) -> int:
    """Print the forward-pass GFLOPs of a built-in architecture."""
    from joulecast.offline.flops import architecture_flops

    result = architecture_flops(args.arch, args.input_size, classes=args.classes)
    if args.json:
        _print_json(result.to_dict())
    else:
        print(
            f"{result.model} at {result.input_size}x{result.input_size}: "
            f"{result.gflops:.3f} GFLOPs, {result.params:,} parameters"
        )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train one of the paper's workloads, measured (or joining ``joulecast measure``)."""
    from joulecast.study.workloads.train import config_from_args, train

    result = train(config_from_args(args), store=args.store)
    if args.json:
        _print_json(result.to_dict())
    else:
        m = result.test_metrics
        auc = "-" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
        print(
            f"run {result.run_id}: test accuracy {m['accuracy']:.3f}, F1 ({m['average']}) "
            f"{m['f1']:.3f}, ROC AUC {auc}"
        )
    return 0


# -- parser --------------------------------------------------------------------------------


#: Sampling intervals a user may ask for, in seconds.
_INTERVAL_ARG = finite_arg(0.001, 3600.0)
#: Epoch counts and epoch numbers a user may give.
_EPOCHS_ARG = whole_arg(1, MAX_EPOCHS)
_EPOCH_ARG = whole_arg(0, MAX_EPOCHS)
#: FLUSS's subsequence length and window, in points of the resampled series.
_POINTS_MAX = 100_000


def _stable_epoch_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return _EPOCH_ARG(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{quote(text)}: expected an epoch number or 'auto' (epochs 0 to {MAX_EPOCHS})"
        ) from None


def _write_csv(path: Path, frame: Any) -> None:
    """Write ``frame`` to ``path`` whole or not at all."""
    write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))


def cmd_forecast(args: argparse.Namespace) -> int:
    """Forecast a run's total energy from its first K epochs; beside the truth if finished."""
    from joulecast.forecast import forecast_run

    store = store_of(args, read_only=True)
    found = forecast_run(
        store,
        store.resolve(args.run),
        after=args.after,
        total_epochs=args.total_epochs,
        method=args.method,
        stable_epoch=args.stable_epoch,
        window=args.window,
        duration=args.duration,
    )
    if args.json:
        _print_json(found.to_dict())
        return 0
    result = found.forecast
    out = console()
    out.print(
        f"run {found.run_id}: {result.method} forecast after {found.after} of "
        f"{result.total_epochs} epochs: [bold]{result.total_j / 1e3:,.2f} kJ[/bold] "
        f"(90% {result.low_j / 1e3:,.2f} to {result.high_j / 1e3:,.2f} kJ)"
    )
    if found.true_j is not None and found.error_j is not None:
        pct = "-" if found.error_pct is None else f"{found.error_pct:+.1f}%"
        out.print(
            f"measured {found.true_j / 1e3:,.2f} kJ: error {found.error_j / 1e3:+,.2f} kJ ({pct})"
        )
    for note in result.notes:
        out.print(f"note: {note}")
    return 0


def cmd_stability(args: argparse.Namespace) -> int:
    """Find when runs' power stabilizes (FLUSS); over several runs, the share stable by epoch n."""
    from joulecast.stability import plot, plot_share, runs_stability

    store = store_of(args, read_only=True)
    ids = _run_ids(store, args.runs, args.all, "stability")
    found = runs_stability(
        store, ids, m=args.m, L=args.L, normalize=args.normalize, group_by=args.group_by
    )
    results, groups, shares, top = found.runs, found.groups, found.shares, found.top_epoch
    if args.plot:
        if len(results) == 1:
            plot(results[0][1], results[0][2], args.plot)
        else:
            plot_share(shares, args.plot)
    if args.json:
        rows = [{"run_id": run_id, **result.to_dict()} for run_id, result, _ in results]
        if len(ids) == 1 and not args.all:
            _print_json(rows[0])
        else:
            _print_json(
                {
                    "runs": rows,
                    "share": {
                        k: json.loads(v.to_json(orient="records")) for k, v in shares.items()
                    },
                }
            )
        return 0
    out = console()
    for run_id, result, _ in results:
        if result.change_s is None:
            out.print(f"run {run_id}: no regime change found: {result.reason}")
        else:
            settled = (
                f"; epoch energy settled from epoch {result.settled_epoch}"
                if result.settled_epoch is not None and result.settled_epoch != result.epoch
                else ""
            )
            out.print(
                f"run {run_id}: power changes regime at {result.change_s:,.1f} s; stabilizing "
                f"epoch {result.epoch} (grid {result.resolution_s:g} s, m={result.m}, "
                f"L={result.L}){settled}" + (f"; {result.reason}" if result.reason else "")
            )
    if len(results) > 1:
        from rich.table import Table

        table = Table(title="share of runs stable by epoch n")
        table.add_column("epoch n", justify="right")
        for key, values in groups.items():
            table.add_column(f"{key} ({len(values)} runs)", justify="right")
        for n in range(top + 1):
            table.add_row(str(n), *(f"{100 * shares[k]['share'].iloc[n]:.0f}%" for k in groups))
        out.print(table)
    return 0


def _run_ids(store: Store, runs: list[str], every: bool, verb: str) -> list[int]:
    """The ids of ``runs`` (ids, names, 'last'), or of every completed run with ``every``."""
    if every:
        frame = store.runs()
        ids = [int(i) for i in frame.loc[frame["status"] == "completed", "id"]]
        if not ids:
            raise InputError(f"{verb}: the store has no completed run")
        return ids
    if not runs:
        raise InputError(f"{verb}: give run ids or --all")
    return [store.resolve(r) for r in runs]


def cmd_forecast_eval(args: argparse.Namespace) -> int:
    """Errors of the forecasting methods over finished runs, swept over w and the stable epoch."""
    from joulecast.forecast import evaluate, finished_epochs, plot_sweep

    store = store_of(args, read_only=True)
    ids = _run_ids(store, args.runs, args.all, "forecast-eval")
    tables = {i: t for i in ids if not (t := finished_epochs(store, i)).empty}
    if not tables:
        raise InputError("forecast-eval: none of the runs has finished epochs")
    result = evaluate(
        tables,
        windows=range(1, max(args.max_window, args.window) + 1),
        stable_epochs=range(0, max(args.max_stable, args.stable_epoch) + 1),
        random_start=args.random_start,
        seed=args.seed,
        duration=args.duration,
    )
    if args.csv:
        _write_csv(Path(args.csv), result)
    if args.plot:
        plot_sweep(result, args.plot, stable_epoch=args.stable_epoch, window=args.window)
    if args.json:
        _print_json(json.loads(result.to_json(orient="records")))
        return 0
    from rich.table import Table

    start = "random window start" if args.random_start else "window from the stabilizing epoch"
    duration = "true" if args.duration == "true" else "projected"
    table = Table(
        title=f"forecast errors over {len(tables)} runs ({start}; power method with the "
        f"{duration} training duration)"
    )
    for col in ("method", "setting", "w", "stable", "runs", "RMSE kJ", "MAE kJ", "MAPE %"):
        table.add_column(col, justify="right", no_wrap=True)
    for method, group in result.groupby("method", sort=False):
        at = (group["window"] == args.window) & (group["stable_epoch"] == args.stable_epoch)
        chosen = group[at]
        if method == "first-epoch":
            chosen = group
        picks = [("best", group.sort_values("rmse_j").iloc[0])]
        if not chosen.empty and method != "first-epoch":
            picks.insert(0, ("chosen", chosen.iloc[0]))
        for label, row in picks:
            table.add_row(
                str(method),
                label,
                str(row["window"]),
                "-" if method == "first-epoch" else str(row["stable_epoch"]),
                str(row["runs"]),
                f"{row['rmse_j'] / 1e3:.3f}",
                f"{row['mae_j'] / 1e3:.3f}",
                f"{row['mape_pct']:.2f}",
            )
    out = console()
    out.print(table)
    chosen_rows = result[
        (result["window"] == args.window) & (result["stable_epoch"] == args.stable_epoch)
    ]
    if chosen_rows.empty:
        out.print(
            f"note: no run has the {args.stable_epoch + args.window + 1} epochs that w="
            f"{args.window} from epoch {args.stable_epoch} needs (the window and one epoch to "
            "forecast): only the best settings are shown"
        )
    for label, target in (("table", args.csv), ("figure", args.plot)):
        if target:
            out.print(f"{label}: {target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``joulecast`` command."""
    from joulecast._version import __version__

    parser = Parser(
        prog="joulecast", description="Measure, forecast and estimate the energy of DL training."
    )
    parser.add_argument("--version", action="version", version=f"joulecast {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    verbs = Verbs(parser.add_subparsers(dest="verb", required=True, metavar="COMMAND"))
    register(verbs)
    from joulecast.analysis import commands as analysis_commands
    from joulecast.offline import commands as offline_commands
    from joulecast.study import commands as study_commands

    for module in (offline_commands, analysis_commands, study_commands):
        module.register(verbs)
    return parser


def register(verbs: Verbs) -> None:
    """Add the measurement, run and forecasting verbs."""
    p = verbs.add("measure", cmd_measure, "run a command and measure its energy", json=False)
    p.add_argument("--interval", type=_INTERVAL_ARG, default=0.1, help="seconds (0.1)")
    p.add_argument("--name", help="run name (default: the command)")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    gpu = p.add_mutually_exclusive_group()
    gpu.add_argument("--no-gpu", action="store_true", help="do not sample GPUs")
    gpu.add_argument(
        "--replay-gpus",
        metavar="TRACE",
        help="dry run: sample the GPUs of a recorded power.csv, replayed in real time, instead "
        f"of this machine's (default: ${REPLAY_GPUS_ENV})",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no summary at the end")
    p.add_argument(
        "--epochs",
        type=_EPOCHS_ARG,
        metavar="N",
        help="planned epochs: print a live forecast of the total energy as epochs end",
    )
    p.add_argument(
        "--forecast-method",
        choices=["epoch-energy", "power", "first-epoch"],
        default="epoch-energy",
        help="live forecast method (epoch-energy)",
    )
    p.add_argument("--window", type=_EPOCHS_ARG, default=5, help="stable epochs averaged (5)")
    p.add_argument(
        "--stable-epoch",
        type=_stable_epoch_arg,
        default="auto",
        help="first stable epoch, or 'auto': found in the run (auto)",
    )
    prom = p.add_argument_group("Prometheus (docs/prometheus.md)")
    prom.add_argument(
        "--prometheus",
        metavar="[ADDR:]PORT",
        help="serve live power, energy, epoch and forecast at http://ADDR:PORT/metrics"
        " (ADDR defaults to 127.0.0.1, this machine only; 0.0.0.0 opens it to the network)",
    )
    prom.add_argument(
        "--prometheus-textfile",
        metavar="PATH",
        help="write the same metrics to PATH (a .prom file in node_exporter's textfile"
        " collector folder), replaced whole every second",
    )
    job = p.add_argument_group("distributed jobs (docs/distributed.md)")
    job.add_argument(
        "--per-node",
        action="store_true",
        help="one measuring process per node: on a rank that is not its node's local rank 0"
        " (SLURM_LOCALID, LOCAL_RANK), run the command unmeasured",
    )
    job.add_argument(
        "--run-uid",
        metavar="UID",
        help="the job's identity, shared by its nodes: the node's run goes to its node shard"
        f" (default ${RUN_UID_ENV}, SLURM's job id)",
    )
    job.add_argument(
        "--shard-dir",
        metavar="DIR",
        help=f"folder of the node shards (default ${SHARD_DIR_ENV}, else STORE.shards)",
    )
    add_carbon_options(p)
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")

    p = verbs.add("collect", cmd_collect, "merge distributed jobs' node shards into one run each")
    p.add_argument(
        "shards",
        nargs="*",
        metavar="PATH",
        help="node shard files or folders (default: STORE.shards beside the store)",
    )
    p.add_argument(
        "--partial",
        action="store_true",
        help="merge a job even when some of its nodes' shards are missing",
    )

    add_carbon_options(verbs.add("runs", cmd_runs, "list runs"))

    p = verbs.add("show", cmd_show, "show a run's energy summary")
    p.add_argument("run", help="run id, name, or 'last'")
    add_carbon_options(p)

    p = verbs.add("export", cmd_export, "export a run's samples and phases")
    p.add_argument("run", help="run id, name, or 'last'")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv")
    p.add_argument("-o", "--output", default=".", help="folder to write into (.)")

    imports = verbs.group("import", "import a recorded trace as a run", dest="kind")
    for kind, help_text in (
        ("trace", "neutral power.csv (+ phases.csv)"),
        ("nvidia-smi", "a CSV log written by nvidia-smi --query-gpu ... --format=csv"),
    ):
        p = imports.add(kind, cmd_import, help_text)
        if kind == "trace":
            p.add_argument("--power", required=True, help="power.csv")
        else:
            p.add_argument("log", help="nvidia-smi CSV log")
        p.add_argument("--phases", help="phases.csv")
        p.add_argument("--name")
        p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")

    p = verbs.add(
        "doctor",
        cmd_doctor,
        "show which sensors work here and how to fix the rest, or check a run store",
        store=False,
    )
    p.add_argument(
        "--store",
        nargs="?",
        const="",
        metavar="PATH",
        help="check this run store instead (no PATH: $JOULECAST_STORE or ./joulecast.db):"
        " SQLite's full integrity check and the energy aggregates against the samples",
    )

    p = verbs.add("flops", cmd_flops, "forward-pass GFLOPs of a built-in architecture")
    p.add_argument(
        "arch", help="mobilenet_v2, nasnet_mobile, resnet50, xception, vgg16 or inception_v3"
    )
    p.add_argument(
        "--input-size", type=whole_arg(1, MAX_INPUT_SIZE), default=128, help="pixels (128)"
    )
    p.add_argument(
        "--classes", type=whole_arg(1, 100_000), default=10, help="outputs of the Dense head (10)"
    )

    from joulecast.study.workloads.train import add_arguments

    p = verbs.add("train", cmd_train, "train one of the paper's workloads, measured")
    add_arguments(p)

    p = verbs.add("forecast", cmd_forecast, "forecast a run's total energy from its first epochs")
    p.add_argument("run", help="run id, name, or 'last'")
    p.add_argument("--after", type=_EPOCHS_ARG, help="use only the first K epochs (default: all)")
    p.add_argument(
        "--method", choices=["epoch-energy", "power", "first-epoch"], default="epoch-energy"
    )
    p.add_argument("--total-epochs", type=_EPOCHS_ARG, help="planned epochs (default: the run's)")
    p.add_argument("--window", type=_EPOCHS_ARG, default=5, help="stable epochs averaged (5)")
    p.add_argument(
        "--stable-epoch",
        type=_stable_epoch_arg,
        default="auto",
        help="first stable epoch, or 'auto': FLUSS, else the epochs' energy (auto)",
    )
    p.add_argument(
        "--duration",
        choices=["projected", "true"],
        default="projected",
        help="training duration of the power method: projected, or the finished run's (projected)",
    )

    p = verbs.add("stability", cmd_stability, "find when runs' power stabilizes (FLUSS)")
    p.add_argument("runs", nargs="*", help="run ids, names, or 'last'")
    p.add_argument("--all", action="store_true", help="every completed run in the store")
    p.add_argument("--group-by", metavar="TAG", help="share stable by epoch per value of a tag")
    p.add_argument(
        "--m", type=whole_arg(3, _POINTS_MAX), default=10, help="subsequence length, points (10)"
    )
    p.add_argument(
        "--L", type=whole_arg(1, _POINTS_MAX), default=10, help="FLUSS window, points (10)"
    )
    p.add_argument(
        "--normalize",
        action="store_true",
        help="z-normalize subsequences (stumpy's default; blind to power level changes)",
    )
    p.add_argument(
        "--plot",
        metavar="PNG",
        help="one run: its profile and arc curve; several: the share stable by epoch (Fig. 9)",
    )

    p = verbs.add("forecast-eval", cmd_forecast_eval, "forecast errors over finished runs")
    p.add_argument("runs", nargs="*", help="run ids or names")
    p.add_argument("--all", action="store_true", help="every completed run in the store")
    p.add_argument("--max-window", type=_EPOCHS_ARG, default=20, help="sweep w = 1..N (20)")
    p.add_argument(
        "--max-stable", type=_EPOCH_ARG, default=20, help="sweep stabilizing epoch 0..N (20)"
    )
    p.add_argument("--window", type=_EPOCHS_ARG, default=5, help="chosen window (5)")
    p.add_argument("--stable-epoch", type=_EPOCH_ARG, default=10, help="chosen stable epoch (10)")
    p.add_argument(
        "--random-start", action="store_true", help="start each window at a random stable epoch"
    )
    p.add_argument(
        "--seed", type=whole_arg(0, 2**32 - 1), default=0, help="seed of --random-start (0)"
    )
    p.add_argument(
        "--duration",
        choices=["projected", "true"],
        default="projected",
        help="Eq. 1's training duration: projected from the epochs seen (a live forecast's) or "
        "the run's true one (the paper's Table 10) (projected)",
    )
    p.add_argument("--csv", metavar="PATH", help="write the whole sweep as CSV")
    p.add_argument("--plot", metavar="PNG", help="save RMSE vs w and vs stable epoch (Fig. 10)")

    p = verbs.add("demo", cmd_demo, "measure a small CPU training end to end", json=False)
    p.add_argument("--epochs", type=_EPOCHS_ARG, default=3)
    p.add_argument("--interval", type=_INTERVAL_ARG, default=0.1)


_PYTHON_SHOWWARNING = warnings.showwarning


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """joulecast's own warnings as one line, as its log's; others as Python shows them."""
    if issubclass(category, JoulecastWarning):
        print(f"joulecast: WARNING: {message}", file=sys.stderr)
    else:
        _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``joulecast`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="joulecast: %(levelname)s: %(message)s",
    )
    warnings.showwarning = _show_warning
    try:
        return int(args.fn(args))
    except JoulecastError as exc:
        print(f"joulecast: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        from joulecast.outputs import reader_gone

        return reader_gone()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
