#!/usr/bin/env python
"""Sampler overhead benchmark: what joulecast's sampling costs, measured side by side.

Part (a): the monitor alone (main thread idle) at 100 Hz and at the default 10 Hz, with the
sensors found on this machine (GPU sensing off) plus a ReplaySensor playing a synthetic
2-GPU trace, writing to a temporary SQLite store: achieved rate, tick-interval p50/p99 and their
deviation from the target, missed deadlines, and the CPU time of the sampler and writer threads
as a share of one core. Beside them, the "wake-up floor": the CPU a bare Python thread uses
just to wake on the same grid (time.sleep, as the sampler does; nothing else), i.e. what no Python sampler on this
machine can go below.

Part (b): the wall time of a fixed CPU PyTorch training loop (MLP on random data, fixed steps)
under: no measurement, no measurement again (A/A control: shows the noise), joulecast.measure
at 100 ms and at 10 ms, and CodeCarbon's OfflineEmissionsTracker (measure_power_secs=1).
Conditions are interleaved in a fresh random order every round; each round's ratios are taken against that
round's baseline, and the median and spread of those per-round ratios are reported.

Run:  python benchmarks/sampler_overhead.py [--quick] [--json PATH]
See benchmarks/README.md for what each figure means. Not a pytest test.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

import joulecast
from joulecast.monitor import Monitor, host_facts
from joulecast.sensors import Sensor, detect_sensors, sensor_name
from joulecast.sensors.replay import ReplaySensor
from joulecast.store import Store

SAMPLER_CPU_TARGET_PCT = 1.0  # of one core, at 100 Hz
SLOWDOWN_TARGET_PCT = 0.5


def log(msg: str) -> None:
    """Progress goes to stderr so stdout holds only the figures."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- load from other processes ----------------------------------------------------------------


class LoadMeter:
    """CPU used over a window by everything on this machine but this process and its children.

    The machine is small (a benchmark of a fraction of a percent drowns in a neighbour's
    load), so every figure is taken with this running and contaminated windows are redone.
    """

    @staticmethod
    def _now() -> tuple[float, float, float, float]:
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
        # Ours: this process and its children waited for (the out-of-process sampler).
        mine = os.times()
        own = mine.user + mine.system + mine.children_user + mine.children_system
        return busy, getattr(t, "steal", 0.0), own, time.perf_counter()

    def __enter__(self) -> LoadMeter:
        self._start = self._now()
        self.foreign_pct_core = 0.0
        self.steal_pct_core = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        b0, s0, p0, w0 = self._start
        b1, s1, p1, w1 = self._now()
        wall = max(w1 - w0, 1e-9)
        # /proc/stat counts in 10 ms ticks: clip the rounding below zero.
        self.foreign_pct_core = max(0.0, 100.0 * ((b1 - b0) - (p1 - p0)) / wall)
        self.steal_pct_core = 100.0 * (s1 - s0) / wall


def wait_quiet(threshold_pct: float, max_wait_s: float, what: str) -> dict[str, float]:
    """Wait until other processes use under ``threshold_pct`` of a core over 1 s (or give up)."""
    t0 = time.perf_counter()
    announced = False
    while True:
        with LoadMeter() as m:
            time.sleep(1.0)
        waited = time.perf_counter() - t0
        if m.foreign_pct_core < threshold_pct:
            return {"waited_s": waited, "foreign_pct_core": m.foreign_pct_core}
        if waited > max_wait_s:
            log(
                f"{what}: machine still busy after {waited:.0f} s ({m.foreign_pct_core:.0f}% of a"
                " core used by other processes); going on"
            )
            return {"waited_s": waited, "foreign_pct_core": m.foreign_pct_core}
        if not announced:
            log(
                f"{what}: other processes use {m.foreign_pct_core:.0f}% of a core; waiting for"
                f" < {threshold_pct:g}% (at most {max_wait_s:g} s)"
            )
            announced = True


# -- sensors ---------------------------------------------------------------------------------


def synthetic_trace(n_gpus: int = 2, seconds: float = 600.0, hz: float = 10.0) -> pd.DataFrame:
    """A looping multi-GPU trace with every optional column, so replay interpolates all of them."""
    t = np.arange(0.0, seconds, 1.0 / hz)
    frames = []
    for i in range(n_gpus):
        power = 250.0 + 60.0 * np.sin(2 * np.pi * t / 7.0 + i) + 10.0 * np.sin(2 * np.pi * t * 3.1)
        frames.append(
            pd.DataFrame(
                {
                    "t_s": t,
                    "device": f"gpu:{i}",
                    "power_w": power,
                    "energy_j": np.concatenate([[0.0], np.cumsum(power[:-1] / hz)]),
                    "util_pct": 90.0 + 5.0 * np.sin(t + i),
                    "mem_used_mib": 30_000.0 + i,
                    "temp_c": 60.0 + 5.0 * np.sin(t / 30.0 + i),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


_TRACE: pd.DataFrame | None = None


def bench_sensors(interval_s: float, n_gpus: int, pid: int | None = None) -> list[Sensor]:
    """What detection finds here with GPU sensing off (host, and RAPL where readable), plus a
    ReplaySensor playing ``n_gpus`` synthetic GPUs in place of NVML. The host sensor follows
    process ``pid`` (default: this one) and its children."""
    global _TRACE
    sensors = detect_sensors(gpus=False, interval_s=interval_s, pid=pid)
    if n_gpus:
        if _TRACE is None or _TRACE["device"].nunique() != n_gpus:
            _TRACE = synthetic_trace(n_gpus)
        sensors.append(ReplaySensor(_TRACE, loop=True))
    return sensors


def describe_sensors(sensors: list[Sensor]) -> str:
    return " + ".join(f"{sensor_name(s)}[{','.join(s.devices())}]" for s in sensors)


# -- part (a): the sampler alone -------------------------------------------------------------


def sampler_run(interval_s: float, seconds: float, n_gpus: int, store_dir: Path) -> dict[str, Any]:
    """Run a Monitor for ``seconds`` with the main thread asleep; return its quality figures."""
    store = Store(store_dir / f"sampler-{interval_s * 1000:g}ms.db")
    sensors = bench_sensors(interval_s, n_gpus)
    described = describe_sensors(sensors)
    monitor = Monitor(sensors, store, interval_s=interval_s, name=f"sampler-{interval_s}")
    gc.collect()
    proc0 = time.process_time()
    with LoadMeter() as load:
        run_id = monitor.start()
        time.sleep(seconds)
        monitor.stop()
    proc_cpu_s = time.process_time() - proc0
    q = monitor.quality()
    n_rows = len(store.samples(run_id))
    store.close()
    elapsed = q["ticks"] / q["achieved_hz"] if q.get("achieved_hz") else seconds
    return {
        "interval_s": interval_s,
        "target_hz": 1.0 / interval_s,
        "seconds": elapsed,
        "sensors": described,
        "ticks": q["ticks"],
        "achieved_hz": q["achieved_hz"],
        "tick_interval_p50_s": q.get("tick_interval_p50_s"),
        "tick_interval_p99_s": q.get("tick_interval_p99_s"),
        "missed_deadlines": q["missed_deadlines"],
        "write_errors": q["write_errors"],
        "dropped_readings": q["dropped_readings"],
        "sampler_cpu_s": q["sampler_cpu_s"],
        "writer_cpu_s": q["writer_cpu_s"],
        "sampler_cpu_pct_core": 100.0 * q["sampler_cpu_s"] / elapsed,
        "writer_cpu_pct_core": 100.0 * q["writer_cpu_s"] / elapsed,
        # Whole process over start..stop (includes start/stop work in the main thread).
        "process_cpu_pct_core": 100.0 * proc_cpu_s / elapsed,
        "rows_written": n_rows,
        "foreign_pct_core": load.foreign_pct_core,
        "steal_pct_core": load.steal_pct_core,
    }


def sampler_figures(
    interval_s: float, seconds: float, n_gpus: int, store_dir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """:func:`sampler_run` on a quiet machine: redone (up to ``--attempts``) while disturbed."""
    tries = []
    for attempt in range(args.attempts):
        wait_quiet(args.max_foreign_pct, args.max_wait_s, f"(a) {1 / interval_s:g} Hz")
        fig = sampler_run(interval_s, seconds, n_gpus, store_dir)
        fig["attempt"] = attempt + 1
        tries.append(fig)
        if fig["foreign_pct_core"] < args.max_foreign_pct:
            break
        log(
            f"(a) {1 / interval_s:g} Hz: other processes used {fig['foreign_pct_core']:.0f}% of a"
            " core meanwhile; redoing"
        )
    best = min(tries, key=lambda f: f["foreign_pct_core"])
    best["discarded_attempts"] = len(tries) - 1
    return best


def wakeup_floor(interval_s: float, seconds: float) -> dict[str, Any]:
    """CPU of a bare Python thread waking on a ``start + k * interval`` grid via time.sleep."""
    out: dict[str, Any] = {}

    def loop() -> None:
        next_t = time.monotonic()
        end = next_t + seconds
        wakes = 0
        cpu0 = time.thread_time()
        while True:
            next_t += interval_s
            if next_t > end:
                break
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            wakes += 1
        out["cpu_s"] = time.thread_time() - cpu0
        out["wakes"] = wakes

    thread = threading.Thread(target=loop, name="bench-floor", daemon=True)
    thread.start()
    thread.join()
    return {
        "interval_s": interval_s,
        "seconds": seconds,
        "wakes": out["wakes"],
        "cpu_pct_core": 100.0 * out["cpu_s"] / seconds,
        "us_per_wake": 1e6 * out["cpu_s"] / max(out["wakes"], 1),
    }


# -- part (b): training slowdown ------------------------------------------------------------


class Trainer:
    """A fixed MLP training loop on random data; every segment starts from the same weights."""

    def __init__(self, features: int, hidden: int, batch: int, seed: int = 0) -> None:
        import torch

        self.torch = torch
        torch.manual_seed(seed)
        nn = torch.nn
        self.model = nn.Sequential(
            nn.Linear(features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 10),
        )
        self.init_state = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.batch = batch
        self.n_batches = 16
        self.x = torch.randn(self.n_batches * batch, features)
        self.y = torch.randint(0, 10, (self.n_batches * batch,))
        self.reset()

    def reset(self) -> None:
        self.model.load_state_dict(self.init_state)
        self.opt = self.torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)

    def run(self, steps: int) -> float:
        f = self.torch.nn.functional
        loss = None
        for i in range(steps):
            j = (i % self.n_batches) * self.batch
            xb, yb = self.x[j : j + self.batch], self.y[j : j + self.batch]
            self.opt.zero_grad(set_to_none=True)
            loss = f.cross_entropy(self.model(xb), yb)
            loss.backward()
            self.opt.step()
        return float(loss.item()) if loss is not None else float("nan")


@dataclass
class Condition:
    """One way of running the loop: ``start`` returns a handle that ``stop`` finishes."""

    key: str
    label: str
    start: Callable[[], Any]
    stop: Callable[[Any], dict[str, Any]]
    is_baseline: bool = False
    interval_s: float | None = None


def _nothing_start() -> None:
    return None


def _nothing_stop(_: Any) -> dict[str, Any]:
    return {}


def joulecast_condition(key: str, interval_s: float, n_gpus: int, store_dir: Path) -> Condition:
    def start() -> Any:
        # Sensor detection belongs to joulecast's setup cost, as hardware probing is CodeCarbon's.
        sensors = bench_sensors(interval_s, n_gpus)
        ctx = joulecast.measure(
            name=key,
            store=store_dir / f"{key}.db",
            interval_s=interval_s,
            sensors=sensors,
            join=False,
        )
        run = ctx.__enter__()
        return ctx, run

    def stop(handle: Any) -> dict[str, Any]:
        ctx, run = handle
        ctx.__exit__(None, None, None)
        quality = run.store.run(run.run_id)["quality"]
        run.close()  # measure.__exit__ leaves a store it opened itself open
        return {"quality": quality}

    return Condition(key, f"joulecast {interval_s * 1000:g} ms", start, stop, interval_s=interval_s)


def child_sampler(argv: list[str]) -> int:
    """``--child-sampler PID INTERVAL STORE GPUS``: a Monitor in this (separate) process that
    samples process PID, as ``joulecast measure -- CMD`` does; stops on a line on stdin and
    prints its quality figures as one JSON line."""
    pid, interval_s, store_path, n_gpus = int(argv[0]), float(argv[1]), argv[2], int(argv[3])
    store = Store(store_path)
    monitor = Monitor(bench_sensors(interval_s, n_gpus, pid=pid), store, interval_s=interval_s)
    monitor.start()
    print("ready", flush=True)
    sys.stdin.readline()
    monitor.stop()
    print(json.dumps(monitor.quality(), default=str), flush=True)
    store.close()
    return 0


def process_condition(key: str, interval_s: float, n_gpus: int, store_dir: Path) -> Condition:
    """joulecast sampling this process from another process (no shared GIL)."""

    def start() -> Any:
        child = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child-sampler",
                str(os.getpid()),
                str(interval_s),
                str(store_dir / f"{key}.db"),
                str(n_gpus),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        line = child.stdout.readline()
        if line.strip() != "ready":
            child.kill()
            raise RuntimeError(f"child sampler did not start (said {line!r})")
        return child

    def stop(child: Any) -> dict[str, Any]:
        out, _ = child.communicate("stop\n", timeout=60)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        return {"quality": json.loads(lines[-1])} if lines else {}

    return Condition(
        key,
        f"joulecast {interval_s * 1000:g} ms, other proc",
        start,
        stop,
        interval_s=interval_s,
    )


def codecarbon_condition(measure_power_secs: float) -> Condition | None:
    try:
        from codecarbon import OfflineEmissionsTracker
    except ImportError:
        return None
    logging.getLogger("codecarbon").setLevel(logging.ERROR)

    def start() -> Any:
        tracker = OfflineEmissionsTracker(
            country_iso_code="USA",
            measure_power_secs=measure_power_secs,
            save_to_file=False,
            log_level="error",
        )
        tracker.start()
        sched = getattr(tracker, "_scheduler", None)
        # CodeCarbon swallows its own exceptions: check it is really sampling.
        active = bool(sched is not None and not getattr(sched, "_stopped", True))
        return tracker, active

    def stop(handle: Any) -> dict[str, Any]:
        tracker, active = handle
        emissions = tracker.stop()
        return {"active": active, "emissions_kg": emissions}

    return Condition("codecarbon", f"codecarbon offline {measure_power_secs:g} s", start, stop)


@dataclass
class Result:
    loop_s: list[float] = field(default_factory=list)
    setup_s: list[float] = field(default_factory=list)
    teardown_s: list[float] = field(default_factory=list)
    proc_cpu_s: list[float] = field(default_factory=list)
    extra: list[dict[str, Any]] = field(default_factory=list)


def run_segment(cond: Condition, trainer: Trainer, steps: int, res: Result) -> None:
    trainer.reset()
    gc.collect()
    t0 = time.perf_counter()
    handle = cond.start()
    t1 = time.perf_counter()
    c1 = time.process_time()
    trainer.run(steps)
    c2 = time.process_time()
    t2 = time.perf_counter()
    extra = cond.stop(handle)
    t3 = time.perf_counter()
    res.setup_s.append(t1 - t0)
    res.loop_s.append(t2 - t1)
    res.teardown_s.append(t3 - t2)
    res.proc_cpu_s.append(c2 - c1)
    res.extra.append(extra)


def spread(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {
        "median": float(np.median(arr)),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "q25": float(np.percentile(arr, 25)),
        "q75": float(np.percentile(arr, 75)),
    }


def median_ci(values: list[float], n: int = 4000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of the median (rounds resampled with replacement)."""
    arr = np.asarray(values, dtype=float)
    if len(arr) < 2:
        return float(arr[0]), float(arr[0])
    rng = np.random.default_rng(seed)
    meds = np.median(rng.choice(arr, size=(n, len(arr)), replace=True), axis=1)
    return float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


MIN_ROUNDS_FOR_VERDICT = 8


def verdict(ci: list[float], target: float, rounds: int) -> str:
    """MET / MISSED only when the whole 95 % interval is on one side of the target."""
    if rounds < MIN_ROUNDS_FOR_VERDICT:
        return f"NO VERDICT (under {MIN_ROUNDS_FOR_VERDICT} rounds)"
    if ci[1] < target:
        return "MET"
    if ci[0] >= target:
        return "MISSED"
    return "NOT RESOLVED"


def training_block(
    threads: int,
    conditions: list[Condition],
    args: argparse.Namespace,
    rng: random.Random,
) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    trainer = Trainer(args.features, args.hidden, args.batch)
    trainer.run(30)  # warm up allocator and kernels
    trainer.reset()
    t = time.perf_counter()
    trainer.run(40)
    step_s = (time.perf_counter() - t) / 40
    steps = args.steps or max(10, round(args.loop_seconds / step_s))
    log(f"threads={threads}: {step_s * 1000:.2f} ms/step -> {steps} steps per segment")
    # One untimed baseline segment so the first timed one is not the first long run.
    trainer.reset()
    trainer.run(min(steps, max(10, steps // 4)))

    results = {c.key: Result() for c in conditions}
    orders: list[list[str]] = []
    discarded: list[dict[str, Any]] = []
    kept_foreign: list[float] = []
    attempt = 0
    while len(orders) < args.repeats:
        r = len(orders)
        # A fresh random order each round: no condition keeps a fixed neighbour or position,
        # so drift and carry-over effects spread over all conditions alike.
        order = list(conditions)
        rng.shuffle(order)
        attempt += 1
        last_chance = attempt >= args.repeats * args.attempts
        wait_quiet(args.max_foreign_pct, args.max_wait_s, f"(b) threads={threads}")
        log(f"threads={threads} round {r + 1}/{args.repeats}: {' '.join(c.key for c in order)}")
        round_res = {c.key: Result() for c in conditions}
        foreign = []
        for cond in order:
            with LoadMeter() as load:
                run_segment(cond, trainer, steps, round_res[cond.key])
            foreign.append(load.foreign_pct_core)
        if max(foreign) >= args.max_foreign_pct and not last_chance:
            log(
                f"threads={threads} round {r + 1}: other processes used up to {max(foreign):.0f}%"
                " of a core during it; discarded, redoing"
            )
            discarded.append({"order": [c.key for c in order], "foreign_pct_core": foreign})
            continue
        orders.append([c.key for c in order])
        kept_foreign.extend(foreign)
        for key, rr in round_res.items():
            res = results[key]
            res.loop_s += rr.loop_s
            res.setup_s += rr.setup_s
            res.teardown_s += rr.teardown_s
            res.proc_cpu_s += rr.proc_cpu_s
            res.extra += rr.extra

    # Each tool is compared with the mean of the round's two unmeasured segments (baseline and
    # A/A), which halves the reference's own noise; the A/A control is baseline vs A/A.
    base = results["none"]
    aa = results.get("none_aa")
    if aa is not None:
        ref = [(x + y) / 2 for x, y in zip(base.loop_s, aa.loop_s, strict=True)]
        ref_cpu = [(x + y) / 2 for x, y in zip(base.proc_cpu_s, aa.proc_cpu_s, strict=True)]
    else:
        ref, ref_cpu = base.loop_s, base.proc_cpu_s
    out_conds = []
    for cond in conditions:
        res = results[cond.key]
        if cond.key == "none_aa":
            against, against_cpu = base.loop_s, base.proc_cpu_s
        else:
            against, against_cpu = ref, ref_cpu
        ratios = [a / b for a, b in zip(res.loop_s, against, strict=True)]
        extra_cpu = [
            100.0 * (c - cb) / b
            for c, cb, b in zip(res.proc_cpu_s, against_cpu, against, strict=True)
        ]
        entry: dict[str, Any] = {
            "key": cond.key,
            "label": cond.label,
            "interval_s": cond.interval_s,
            "loop_s": res.loop_s,
            "setup_s": res.setup_s,
            "teardown_s": res.teardown_s,
            "proc_cpu_s": res.proc_cpu_s,
            "loop_s_median": statistics.median(res.loop_s),
            "setup_s_median": statistics.median(res.setup_s),
            "teardown_s_median": statistics.median(res.teardown_s),
            "ratio_vs_baseline": ratios,
            "slowdown_pct": {k: 100.0 * (v - 1.0) for k, v in spread(ratios).items()},
            "slowdown_pct_ci95": [100.0 * (v - 1.0) for v in median_ci(ratios)],
            "extra_process_cpu_pct_core": spread(extra_cpu),
        }
        quals = [e["quality"] for e in res.extra if "quality" in e]
        if quals:
            elapsed = [q["ticks"] / q["achieved_hz"] for q in quals if q.get("achieved_hz")]
            entry["under_load"] = {
                "achieved_hz": statistics.median(q["achieved_hz"] for q in quals),
                "tick_interval_p50_s": statistics.median(q["tick_interval_p50_s"] for q in quals),
                "tick_interval_p99_s": statistics.median(q["tick_interval_p99_s"] for q in quals),
                "missed_deadlines": sum(q["missed_deadlines"] for q in quals),
                "sampler_cpu_pct_core": statistics.median(
                    100.0 * q["sampler_cpu_s"] / e for q, e in zip(quals, elapsed, strict=True)
                ),
                "writer_cpu_pct_core": statistics.median(
                    100.0 * q["writer_cpu_s"] / e for q, e in zip(quals, elapsed, strict=True)
                ),
            }
        if cond.key == "codecarbon":
            entry["codecarbon_active"] = [e.get("active") for e in res.extra]
        out_conds.append(entry)
    return {
        "threads": threads,
        "step_s": step_s,
        "steps": steps,
        "orders": orders,
        "discarded_rounds": discarded,
        "foreign_pct_core_median": statistics.median(kept_foreign),
        "foreign_pct_core_max": max(kept_foreign),
        "conditions": out_conds,
    }


# -- reporting --------------------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{x:+.2f}%"


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    a = report["args"]
    print("joulecast sampler overhead benchmark")
    print(
        f"machine: {m['cpu_model']}, {m['cpu_logical_cores']} logical cores; python {m['python']},"
        f" torch {m['torch']}, codecarbon {m['codecarbon']}, joulecast {m['joulecast']}"
    )
    print(f"command: {report['command']}")
    print()
    if report["sampler"]:
        print(
            f"(a) SAMPLER ALONE: main thread idle, {a['sampler_seconds']:g} s per rate,"
            " temporary SQLite store"
        )
        print(f"    sensors: {report['sampler'][0]['sensors']}")
        print(
            "    rate     achieved    tick p50 (vs target)     tick p99 (vs target)     missed"
            "  sampler CPU  writer CPU  wake-up floor  other procs"
        )
        for s, fl in zip(report["sampler"], report["floor"], strict=True):
            tgt = s["interval_s"] * 1000
            p50 = s["tick_interval_p50_s"] * 1000
            p99 = s["tick_interval_p99_s"] * 1000
            print(
                f"SAMPLER {s['target_hz']:>3.0f} Hz {s['achieved_hz']:7.2f} Hz "
                f"{p50:8.3f} ms ({p50 - tgt:+7.3f} ms) {p99:8.3f} ms ({p99 - tgt:+7.3f} ms) "
                f"{s['missed_deadlines']:6d}  {s['sampler_cpu_pct_core']:5.2f}% core "
                f"{s['writer_cpu_pct_core']:5.2f}% core {fl['cpu_pct_core']:5.2f}% core  "
                f"{s['foreign_pct_core']:5.1f}% core"
            )
        for s in report["sampler"]:
            if s["target_hz"] >= 99:
                ok = s["sampler_cpu_pct_core"] < SAMPLER_CPU_TARGET_PCT
                print(
                    f"    target: sampler CPU < {SAMPLER_CPU_TARGET_PCT:g}% of a core at 100 Hz:"
                    f" {'MET' if ok else 'MISSED'} ({s['sampler_cpu_pct_core']:.2f}%;"
                    f" sampler+writer {s['sampler_cpu_pct_core'] + s['writer_cpu_pct_core']:.2f}%)"
                )
        print()
    for block in report["training"]:
        print(
            f"(b) TRAINING SLOWDOWN: torch threads={block['threads']}, MLP"
            f" {a['features']}-{a['hidden']}-{a['hidden']}-10, batch {a['batch']},"
            f" {block['steps']} steps/segment (~{block['steps'] * block['step_s']:.1f} s),"
            f" {len(block['orders'])} rounds in random order"
            f" ({len(block['discarded_rounds'])} disturbed rounds redone)"
        )
        print(
            "    slowdown: per round, loop time / mean of the round's two unmeasured loops - 1"
            " (A/A control: A/A loop / baseline loop - 1); median over rounds, 95% bootstrap"
            " interval of that median, min..max and IQR over rounds; extra CPU: process CPU"
            " above the same reference, % of a core"
        )
        print(
            "    condition                           loop s   slowdown   95% CI of median   "
            "min..max            IQR                 extra CPU  setup s  stop s"
        )
        for c in block["conditions"]:
            sd = c["slowdown_pct"]
            if c["key"] == "none":
                mid = f"{'(baseline)':>9}   {'':<18} {'':<19} {'':<19} {'':>9}"
            else:
                extra = c["extra_process_cpu_pct_core"]["median"]
                lo, hi = c["slowdown_pct_ci95"]
                mid = (
                    f"{pct(sd['median']):>9}   {pct(lo) + '..' + pct(hi):<18} "
                    f"{pct(sd['min']) + '..' + pct(sd['max']):<19} "
                    f"{pct(sd['q25']) + '..' + pct(sd['q75']):<19} {extra:+8.2f}%"
                )
            print(
                f"SLOWDOWN t={block['threads']} {c['label']:<31} {c['loop_s_median']:7.3f} {mid}"
                f" {c['setup_s_median']:7.3f} {c['teardown_s_median']:7.3f}"
            )
        for c in block["conditions"]:
            u = c.get("under_load")
            if u:
                tgt = 1000 * c["interval_s"]
                print(
                    f"    under load, {c['label']}: {u['achieved_hz']:.2f} Hz, tick p50"
                    f" {u['tick_interval_p50_s'] * 1000:.3f} ms, p99"
                    f" {u['tick_interval_p99_s'] * 1000:.3f} ms"
                    f" ({u['tick_interval_p99_s'] * 1000 - tgt:+.3f} ms), missed"
                    f" {u['missed_deadlines']}, sampler CPU {u['sampler_cpu_pct_core']:.2f}% core,"
                    f" writer {u['writer_cpu_pct_core']:.2f}% core"
                )
            if c.get("codecarbon_active") is not None and not all(c["codecarbon_active"]):
                print("    WARNING: CodeCarbon's scheduler was not running in some segments")
        print(
            f"    other processes during kept rounds: median {block['foreign_pct_core_median']:.1f}%,"
            f" max {block['foreign_pct_core_max']:.1f}% of a core"
        )
        by_key = {c["key"]: c for c in block["conditions"]}
        aa = by_key.get("none_aa")
        if aa:
            lo, hi = aa["slowdown_pct_ci95"]
            print(
                f"    noise (A/A control): {pct(aa['slowdown_pct']['median'])},"
                f" 95% CI {pct(lo)}..{pct(hi)}: differences inside this are not resolved"
            )
        for key in ("jc_100ms", "jc_10ms", "jc_proc_10ms"):
            if key in by_key:
                c = by_key[key]
                lo, hi = c["slowdown_pct_ci95"]
                print(
                    f"    target: {c['label']} slowdown < {SLOWDOWN_TARGET_PCT:g}%:"
                    f" {verdict(c['slowdown_pct_ci95'], SLOWDOWN_TARGET_PCT, len(block['orders']))}"
                    f" (median {pct(c['slowdown_pct']['median'])}, 95% CI {pct(lo)}..{pct(hi)})"
                )
        if "codecarbon" in by_key:
            parts = []
            for key in ("codecarbon", "jc_100ms", "jc_10ms"):
                if key in by_key:
                    c = by_key[key]
                    lo, hi = c["slowdown_pct_ci95"]
                    parts.append(
                        f"{c['label']} {pct(c['slowdown_pct']['median'])} ({pct(lo)}..{pct(hi)})"
                    )
            print("    side by side: " + "; ".join(parts))
        print()
    print(f"total benchmark time: {report['total_s']:.0f} s")


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="~1-minute run (overrides sizes)")
    p.add_argument(
        "--smoke", action="store_true", help="~15-second run for tests: figures are meaningless"
    )
    p.add_argument("--sampler-seconds", type=float, default=20.0, help="part (a) per rate")
    p.add_argument("--floor-seconds", type=float, default=None, help="wake-up floor per rate")
    p.add_argument("--repeats", type=int, default=14, help="rounds of part (b), >= 1")
    p.add_argument("--loop-seconds", type=float, default=2.5, help="target length of a segment")
    p.add_argument("--steps", type=int, default=0, help="fix steps per segment (0: calibrate)")
    p.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated")
    p.add_argument("--features", type=int, default=256)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--gpus", type=int, default=2, help="devices in the replayed trace")
    p.add_argument("--no-codecarbon", action="store_true", help="leave CodeCarbon out")
    p.add_argument(
        "--no-process", action="store_true", help="leave out joulecast sampling from a 2nd process"
    )
    p.add_argument("--codecarbon-secs", type=float, default=1.0, help="measure_power_secs")
    p.add_argument("--skip-sampler", action="store_true", help="skip part (a)")
    p.add_argument("--skip-training", action="store_true", help="skip part (b)")
    p.add_argument("--seed", type=int, default=0, help="seed of the condition order")
    p.add_argument(
        "--max-foreign-pct",
        type=float,
        default=5.0,
        help="CPU (%% of a core) other processes may use during a figure before it is redone",
    )
    p.add_argument("--max-wait-s", type=float, default=60.0, help="longest wait for quiet")
    p.add_argument(
        "--attempts", type=int, default=3, help="tries per figure / per round while disturbed"
    )
    p.add_argument("--json", type=Path, default=None, help="write all figures here")
    args = p.parse_args(argv)
    if args.quick:
        args.sampler_seconds = 5.0
        args.repeats = 3
        args.loop_seconds = 2.0
        args.threads = "1"
    if args.smoke:  # the quickest run that still prints every figure line (for the test)
        args.sampler_seconds = 1.0
        args.floor_seconds = 1.0
        args.repeats = 1
        args.loop_seconds = 0.3
        args.threads = "1"
        args.max_wait_s = 0.0
        args.attempts = 1
    if args.floor_seconds is None:
        args.floor_seconds = min(args.sampler_seconds, 10.0)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    args.thread_list = [int(t) for t in str(args.threads).split(",") if t.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child-sampler":
        return child_sampler(argv[1:])
    args = parse_args(argv)
    if os.environ.pop("JOULECAST_RUN_ID", None):
        log("ignoring JOULECAST_RUN_ID: the benchmark measures its own runs")
    t_start = time.perf_counter()
    try:
        import torch

        torch_version = torch.__version__
        torch.set_num_interop_threads(1)
    except ImportError:
        torch_version = None
    try:
        import codecarbon

        cc_version = getattr(codecarbon, "__version__", "?")
    except ImportError:
        cc_version = None
    facts = host_facts()
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "cpu_model": facts["cpu_model"],
            "cpu_logical_cores": facts["cpu_logical_cores"],
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch_version,
            "codecarbon": cc_version,
            "joulecast": joulecast.__version__,
        },
        "sampler": [],
        "floor": [],
        "training": [],
    }
    with tempfile.TemporaryDirectory(prefix="joulecast-bench-") as tmp:
        store_dir = Path(tmp)
        if not args.skip_sampler:
            for interval in (0.01, 0.1):
                log(f"(a) sampler at {1 / interval:g} Hz for {args.sampler_seconds:g} s")
                report["sampler"].append(
                    sampler_figures(interval, args.sampler_seconds, args.gpus, store_dir, args)
                )
                log(f"(a) wake-up floor at {1 / interval:g} Hz for {args.floor_seconds:g} s")
                report["floor"].append(wakeup_floor(interval, args.floor_seconds))
        if not args.skip_training:
            if torch_version is None:
                log("(b) skipped: PyTorch is not installed")
            else:
                conditions = [
                    Condition("none", "none (baseline)", _nothing_start, _nothing_stop, True),
                    Condition("none_aa", "none (A/A control)", _nothing_start, _nothing_stop),
                    joulecast_condition("jc_100ms", 0.1, args.gpus, store_dir),
                    joulecast_condition("jc_10ms", 0.01, args.gpus, store_dir),
                ]
                if not args.no_process:
                    conditions.append(process_condition("jc_proc_10ms", 0.01, args.gpus, store_dir))
                cc = None if args.no_codecarbon else codecarbon_condition(args.codecarbon_secs)
                if cc is not None:
                    conditions.append(cc)
                elif not args.no_codecarbon:
                    log("(b) CodeCarbon is not installed: left out")
                rng = random.Random(args.seed)
                for threads in args.thread_list:
                    report["training"].append(training_block(threads, conditions, args, rng))
    report["total_s"] = time.perf_counter() - t_start
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        log(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
