"""``joulecast study plan|run|status|collect``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from joulecast.errors import InputError
from joulecast.inputs import MAX_DURATION_S, finite_arg, key_values, whole_arg
from joulecast.outputs import print_json
from joulecast.verbs import Handler, Verbs, console, shown


def _store_path(args: argparse.Namespace) -> Path:
    from joulecast.store import default_store_path

    return Path(args.store) if args.store else default_store_path()


def _load(args: argparse.Namespace) -> Any:
    from joulecast.study.design import load_study

    return load_study(args.file)


def cmd_plan(args: argparse.Namespace) -> int:
    """Print (and store) a study's randomized plan, its counts and its expected time."""
    from joulecast.store import Store
    from joulecast.study.design import plan
    from joulecast.study.state import StudyState

    study = _load(args)
    planned = plan(study)
    from joulecast.study.runner import study_lock

    store_path = _store_path(args)
    with Store(store_path) as store:
        with study_lock(store_path.resolve(), study.name):
            state = StudyState.open(store, study, planned)
        status = state.runs()
        expected = _expected(store, study, status)
    data = {
        "study": study.name,
        "combinations": len(study.combinations),
        "repetitions": study.repetitions,
        "planned": len(planned),
        "remaining": int(status["status"].isin(["planned", "running"]).sum()),
        "expected": expected,
        "runs": [
            {"position": r.position, "key": r.key, "seed": r.seed, **r.factors} for r in planned
        ],
    }
    if args.json:
        print_json(data)
        return 0
    out = console()
    out.print(
        shown(
            f"study {study.name}: {len(study.combinations)} combinations x {study.repetitions} "
            f"repetitions = {len(planned)} runs ({data['remaining']} to do), order fixed by seed "
            f"{study.seed}"
        )
    )
    for note in expected["notes"]:
        out.print(shown(note))
    limit = len(planned) if args.all else min(len(planned), 20)
    for r in planned[:limit]:
        factors = " ".join(f"{k}={v}" for k, v in r.factors.items())
        out.print(shown(f"  {r.position + 1:4d}  {r.key}  seed {r.seed}  {factors}"))
    if limit < len(planned):
        out.print(f"  ... {len(planned) - limit} more (--all to list them)")
    return 0


def _expected(store: Any, study: Any, status: Any) -> dict[str, Any]:
    """Expected time and energy of the runs to do, from the study's finished runs."""
    from joulecast.energy import summarize

    remaining = int(status["status"].isin(["planned", "running"]).sum())
    fixed_s = (study.warmup_s if remaining else 0.0) + study.cooldown_s * max(0, remaining - 1)
    durations, energies = [], []
    for run_id in status.loc[status["status"] == "completed", "run_id"].dropna():
        summary = summarize(store, int(run_id))
        durations.append(summary.duration_s)
        energies.append(summary.energy_j)
    notes = [f"warm-up and cooldowns: {fixed_s / 60:,.1f} min"]
    out: dict[str, Any] = {"fixed_s": fixed_s, "duration_s": None, "energy_j": None}
    if durations:
        mean_s = sum(durations) / len(durations)
        mean_j = sum(energies) / len(energies)
        out["duration_s"] = fixed_s + mean_s * remaining
        out["energy_j"] = mean_j * remaining
        notes.append(
            f"expected for the {remaining} runs to do: {out['duration_s'] / 3600:,.2f} h and "
            f"{out['energy_j'] / 1e3:,.1f} kJ (mean of the {len(durations)} completed runs)"
        )
    else:
        offline = offline_expectation(study, status, _gpu_name())
        if offline is not None:
            out["duration_s"] = fixed_s + offline["duration_s"]
            out["energy_j"] = offline["energy_j"]
            notes.append(offline["note"])
        else:
            notes.append(
                "run time and energy: unknown until runs complete (the offline estimate needs "
                "a GPU here and the built-in workload)"
            )
    out["notes"] = notes
    return out


def offline_expectation(study: Any, status: Any, gpu: str | None) -> dict[str, Any] | None:
    """Offline (pre-training) estimate of the time and energy of the runs still to do.

    Applies to the built-in workload on a GPU the catalogue knows, for datasets whose sizes are
    known before loading (under each run's split); None otherwise, or when any run to do is
    out of its reach.
    """
    import json

    from joulecast.study.design import BUILTIN, plan

    if gpu is None or study.workload != BUILTIN:
        return None
    todo = set(status.loc[status["status"].isin(["planned", "running"]), "position"])
    energy = duration = 0.0
    warnings: set[str] = set()
    # Repetitions of a combination train the same configuration: each is estimated once.
    known: dict[str, tuple[float, float, list[str]] | None] = {}
    for run in plan(study):
        if run.position not in todo:
            continue
        p = {**run.params, **run.factors}
        key = json.dumps(p, sort_keys=True, default=str)
        if key not in known:
            known[key] = _configuration_expectation(p, gpu)
        found = known[key]
        if found is None:
            return None
        energy += found[0]
        duration += found[1]
        warnings.update(found[2])
    caveat = (
        f"; outside the model's training ranges: {', '.join(sorted(warnings))}" if warnings else ""
    )
    return {
        "energy_j": energy,
        "duration_s": duration,
        "note": (
            f"offline estimate on {gpu} for the {len(todo)} runs to do: "
            f"{duration / 3600:,.2f} h of training and {energy / 1e3:,.1f} kJ (modelled){caveat}"
        ),
    }


def _configuration_expectation(
    p: dict[str, Any], gpu: str
) -> tuple[float, float, list[str]] | None:
    """The offline epoch-energy estimate (J), the training duration (s) and the features out of
    the model's training ranges for one run's parameters ``p``; None out of its reach."""
    from joulecast.offline.estimate import estimate_training
    from joulecast.study.workloads.architectures import ONE_STEP
    from joulecast.study.workloads.datasets import expected_sizes

    sizes = expected_sizes(
        p.get("dataset"),
        split=p.get("split", "holdout"),
        samples=int(p.get("samples", 400)),
    )
    if sizes is None:
        return None
    epochs = p.get("epochs", [5, 5])
    steps = [int(e) for e in epochs] if isinstance(epochs, list) else [int(epochs)]
    # Architectures trained in one step train only the first step's epochs.
    total_epochs = steps[0] if p.get("arch") in ONE_STEP else sum(steps)
    try:
        result = estimate_training(
            gpu=gpu,
            arch=p.get("arch"),
            input_size=int(p.get("input_size", 128)),
            batch_size=int(p.get("batch_size", 32)),
            train_samples=sizes[0],
            val_samples=sizes[1],
            epochs=total_epochs,
            ram_gb=float(p["ram_gb"]) if "ram_gb" in p else None,
        )
    except InputError:
        return None
    by = {e.method: e for e in result.estimates}
    energy_j = by["offline-epoch-energy"].energy_j
    if energy_j is None or result.duration_s is None:
        return None
    out = list(result.applicability.out_of_range) if result.applicability is not None else []
    return energy_j, result.duration_s, out


def _gpu_name() -> str | None:
    """The first GPU NVML sees here, if any."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            if not pynvml.nvmlDeviceGetCount():
                return None
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
            return name.decode() if isinstance(name, bytes) else str(name)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None


def cmd_run(args: argparse.Namespace) -> int:
    """Run the study's remaining planned runs."""
    from joulecast.study.runner import Runner

    study = _load(args)
    runner = Runner(
        study,
        _store_path(args),
        executor=args.executor,
        interval_s=args.interval,
        echo=lambda line: print(line, file=sys.stderr, flush=True),
        only=key_values(args.only, "--only", "FACTOR=VALUE"),
        max_attempts=args.max_attempts,
    )
    counts = runner.run()
    if args.json:
        print_json({"study": study.name, **counts})
        return 0
    console().print(
        f"study {study.name}: {counts['completed']} completed, {counts['oom']} out of memory, "
        f"{counts['timeout']} timed out, {counts['failed']} failed, of {counts['planned']} "
        f"planned; {counts['remaining']} to do"
    )
    return 0




def status_data(store_path: Path, study: Any) -> dict[str, Any]:
    """The study's progress as JSON-ready data."""
    from joulecast.store import Store
    from joulecast.study.state import StudyState

    with Store(store_path, read_only=True) as store:
        state = StudyState.find(store, study.name)
        if state is None:
            raise InputError(
                f"{store_path}: no study {study.name!r} (run `joulecast study plan` or `run`)"
            )
        runs = state.runs()
        counts = state.counts()
    from joulecast.study.powercap import LEDGER_FOLDER, FileLedger
    from joulecast.study.runner import study_folder

    left = FileLedger(study_folder(store_path.resolve(), study) / LEDGER_FOLDER).left()
    return {
        "study": study.name,
        **counts,
        "gpu_settings_left": left,
        "runs": [
            {
                "position": int(r.position),
                "key": r.key,
                "run_id": None if r.run_id is None or r.run_id != r.run_id else int(r.run_id),
                "status": r.status,
                "attempts": int(r.attempts),
                "interrupted": int(r.interrupted),
                "seed": int(r.seed),
                "error": r.error,
                **r.factors,
            }
            for r in runs.itertuples()
        ],
    }


def cmd_status(args: argparse.Namespace) -> int:
    """Summarize a study's progress."""
    study = _load(args)
    data = status_data(_store_path(args), study)
    if args.json:
        print_json(data)
        return 0
    out = console()
    out.print(
        f"study {shown(study.name)}: {data['completed']} completed, {data['oom']} out of memory, "
        f"{data['timeout']} timed out, {data['failed']} failed, {data['running']} running, "
        f"{data['remaining']} to do, of {data['planned']}"
    )
    for r in data["runs"]:
        # A run retried after its runner died shows its attempts, even once completed.
        retried = f" (attempt {r['attempts']}, {r['interrupted']} interrupted)"
        if r["status"] not in ("completed", "planned") or r["interrupted"]:
            line = f"  {r['key']}: {r['status']}{retried if r['interrupted'] else ''}"
            out.print(shown(f"{line} {r['error'] or ''}"[:300]))
    if data["gpu_settings_left"]:
        from joulecast.study.powercap import LEFT_HEADER, left_line

        out.print(shown(LEFT_HEADER))
        for entry in data["gpu_settings_left"]:
            out.print(shown(f"  {left_line(entry)}"))
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    """Merge the study's store shards into the store and record the runs they hold.

    The shards are the folder's store files (one per single-node job) and the node shards in
    its subfolders (one subfolder per multi-node job, merged into one run each).
    """
    from joulecast.jobs import merge_jobs
    from joulecast.store import Store
    from joulecast.study.runner import find_run, study_folder
    from joulecast.study.shards import merge_shards, shard_paths
    from joulecast.study.state import StudyState

    study = _load(args)
    store_path = _store_path(args)
    folder = study_folder(store_path.resolve(), study) / "shards"
    if args.shards:
        folder = Path(args.shards)
    paths = shard_paths(folder) if folder.is_dir() else []
    jobs = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not paths and not jobs:
        raise InputError(f"{folder}: no store shards to collect")
    with Store(store_path) as store:
        result = merge_shards(store, paths)
        merges = merge_jobs(store, jobs) if jobs else []
        state = StudyState.find(store, study.name)
        recorded = 0
        if state is not None:
            runs = state.runs()
            for r in runs.itertuples():
                if r.status == "completed":
                    continue
                run_id = find_run(store, study.name, r.key)
                if run_id is not None and store.run(run_id)["status"] == "completed":
                    state.finish(int(r.position), "completed", run_id=run_id)
                    recorded += 1
    data = {
        "shards": result.shards,
        "merged": len(result.merged),
        "skipped": result.skipped,
        "jobs_merged": sum(m.outcome in ("merged", "updated") for m in merges),
        "jobs_left": sum(m.outcome not in ("merged", "updated", "unchanged") for m in merges),
        "recorded": recorded,
    }
    if args.json:
        print_json(data)
        return 0
    jobs_text = ""
    if merges:
        jobs_text = (
            f"; {data['jobs_merged']} multi-node job(s) merged, {data['jobs_left']} left"
            " (a node still running or without a shard)"
        )
    console().print(
        f"{result.shards} shard(s): {len(result.merged)} run(s) merged, {result.skipped} "
        f"already in the store{jobs_text}; {recorded} planned run(s) recorded as completed"
    )
    return 0


def register(verbs: Verbs) -> None:
    """Add ``joulecast study plan|run|status|collect``."""
    from joulecast.monitor import MIN_INTERVAL_S
    from joulecast.study.design import MAX_ATTEMPTS_LIMIT

    study = verbs.group("study", "controlled energy studies", dest="study_verb")

    def add(name: str, fn: Handler, help_text: str) -> argparse.ArgumentParser:
        p = study.add(name, fn, help_text)
        p.add_argument("file", help="study file (TOML or YAML)")
        return p

    p = add("plan", cmd_plan, "print and store the randomized plan, counts and expected time")
    p.add_argument("--all", action="store_true", help="list every planned run")
    p = add("run", cmd_run, "run the planned runs still to do (resumes where it stopped)")
    p.add_argument("--executor", choices=["local", "slurm", "submitit-local"], default="local")
    p.add_argument(
        "--interval",
        type=finite_arg(MIN_INTERVAL_S, MAX_DURATION_S),
        default=0.1,
        help="sampling interval, s (0.1)",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="FACTOR=VALUE",
        help="run only the planned runs with this factor value (e.g. environment=cloud)",
    )
    p.add_argument(
        "--max-attempts",
        type=whole_arg(1, MAX_ATTEMPTS_LIMIT),
        metavar="N",
        help="attempts of a run whose runner dies during it (default: the study's max_attempts,"
        " else 3)",
    )
    add("status", cmd_status, "summarize a study's progress")
    p = add("collect", cmd_collect, "merge a study's store shards into the store")
    p.add_argument("--shards", help="folder of shards (default: the study folder's shards/)")
