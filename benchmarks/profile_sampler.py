#!/usr/bin/env python
"""Where the sampler's CPU goes: an ablation, warm micro-timings, and cProfile of both threads.

1. Ablation (main thread idle, same sensors as sampler_overhead.py, ``--gpus`` replayed
   GPUs): the sampler thread's CPU at 100 Hz and 10 Hz for a bare wake-up loop, the Monitor
   with a no-op sensor, with the ReplaySensor alone, with the host sensors alone, and with
   both. Differences between rows are what each part costs in place (cold caches after every
   sleep included).
2. Warm micro-timings (tight loop, no sleeping): one ReplaySensor.read(), one search of
   the replayed instants, one HostSensor.read(), the process-tree scan, Monitor._tick() with a no-op
   sensor and with every sensor, and Store.write_batch() of half a second of 100 Hz readings.
3. cProfile of the sampler thread and of the writer thread in a 100 Hz run (profiling inflates
   the totals; read the shares, not the absolute figures).

Run:  python benchmarks/profile_sampler.py [--seconds 10] [--top 25] [--gpus 8]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sampler_overhead import bench_sensors, synthetic_trace, wakeup_floor

from joulecast.monitor import Monitor
from joulecast.records import Reading
from joulecast.sensors import Sensor
from joulecast.sensors.host import HostSensor
from joulecast.sensors.replay import ReplaySensor
from joulecast.store import Store


class NoopSensor:
    name = "noop"

    def devices(self) -> list[str]:
        return ["noop"]

    def read(self) -> list[Reading]:
        return []

    def close(self) -> None:
        pass


def monitor_cpu(
    sensors: list[Any], interval_s: float, seconds: float, store: Store
) -> dict[str, Any]:
    monitor = Monitor(sensors, store, interval_s=interval_s, gap_after_s=1e9)
    monitor.start()
    time.sleep(seconds)
    monitor.stop()
    q = monitor.quality()
    elapsed = q["ticks"] / q["achieved_hz"]
    return {
        "sampler_pct": 100.0 * q["sampler_cpu_s"] / elapsed,
        "writer_pct": 100.0 * q["writer_cpu_s"] / elapsed,
        "us_per_tick": 1e6 * q["sampler_cpu_s"] / max(q["ticks"], 1),
        "ticks": q["ticks"],
    }


def ablation(seconds: float, rounds: int, gpus: int, store: Store) -> None:
    trace = synthetic_trace(gpus)

    def host_only(iv: float) -> list[Sensor]:
        return bench_sensors(iv, 0)

    def replay_only(iv: float) -> list[Sensor]:
        return [ReplaySensor(trace, loop=True)]

    def both(iv: float) -> list[Sensor]:
        return bench_sensors(iv, gpus)

    rows: list[tuple[str, Callable[[float], dict[str, Any]]]] = [
        ("bare wake-up loop (floor)", lambda iv: _floor(iv, seconds)),
        ("Monitor + no-op sensor", lambda iv: monitor_cpu([NoopSensor()], iv, seconds, store)),
        (
            f"Monitor + replay ({gpus} GPUs)",
            lambda iv: monitor_cpu(replay_only(iv), iv, seconds, store),
        ),
        ("Monitor + host sensors", lambda iv: monitor_cpu(host_only(iv), iv, seconds, store)),
        ("Monitor + host + replay", lambda iv: monitor_cpu(both(iv), iv, seconds, store)),
    ]
    print(
        f"1. ABLATION: sampler-thread CPU, main thread idle, {seconds:g} s each, median of"
        f" {rounds} interleaved rounds"
    )
    print(
        f"   {'configuration':<28} {'100 Hz: % core':>15} {'us/tick':>8}   "
        f"{'10 Hz: % core':>14} {'us/tick':>8}   writer % core (100 Hz)"
    )
    results: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for _ in range(rounds):
        for name, fn in rows:
            for iv in (0.01, 0.1):
                results.setdefault((name, iv), []).append(fn(iv))
    for name, _ in rows:
        cells = []
        for iv in (0.01, 0.1):
            rs = results[(name, iv)]
            cells.append(
                (
                    float(np.median([r["sampler_pct"] for r in rs])),
                    float(np.median([r["us_per_tick"] for r in rs])),
                )
            )
        writer = [float(r["writer_pct"]) for r in results[(name, 0.01)] if r["writer_pct"]]
        wtxt = f"{np.median(writer):.2f}" if writer else "-"
        print(
            f"   {name:<28} {cells[0][0]:14.2f}% {cells[0][1]:8.0f}   "
            f"{cells[1][0]:13.2f}% {cells[1][1]:8.0f}   {wtxt}"
        )
    print()


def _floor(interval_s: float, seconds: float) -> dict[str, Any]:
    f = wakeup_floor(interval_s, seconds)
    return {"sampler_pct": f["cpu_pct_core"], "us_per_tick": f["us_per_wake"], "writer_pct": None}


def per_call_us(fn: Callable[[], Any], n: int) -> float:
    fn()
    t = time.thread_time()
    for _ in range(n):
        fn()
    return 1e6 * (time.thread_time() - t) / n


def micro(gpus: int, store_dir: Path) -> None:
    print("2. WARM MICRO-TIMINGS (tight loop, thread CPU per call)")
    trace = synthetic_trace(gpus)
    replay = ReplaySensor(trace, loop=True)
    group = replay._groups[0]
    pos = 3.3
    host_due = HostSensor(model_cpu=True, tree_refresh_s=1e9)
    host_tree = HostSensor(model_cpu=True, tree_refresh_s=0.0)
    mon = Monitor([NoopSensor()], Store(store_dir / "micro.db"), interval_s=0.01, gap_after_s=1e9)
    noop_devs: list[tuple[Sensor, list[str]]] = [(NoopSensor(), ["noop"])]
    both = bench_sensors(0.01, gpus)
    both_devs = [(s, s.devices()) for s in both]
    for s, _ in both_devs:
        s.read()
    mon_both = Monitor(both, Store(store_dir / "micro2.db"), interval_s=0.01, gap_after_s=1e9)
    import psutil

    root = psutil.Process()
    store = Store(store_dir / "micro3.db")
    run_id = store.create_run(name="micro")
    # Half a second at 100 Hz: the replayed GPUs and the host (process, ram, cpu) every tick.
    batch = [
        Reading(1.0 + i * 0.01, f"gpu:{g}", 250.0, "replay", True, 1e3, 90.0, 3e4, 60.0)
        for i in range(50)
        for g in range(gpus)
    ]
    batch += [
        Reading(1.0 + i * 0.01, d, 1.0, "psutil", False, None, 100.0, 1e3)
        for i in range(50)
        for d in ("process", "ram", "cpu")
    ]
    items = [
        (f"ReplaySensor.read() ({gpus} GPUs x 5 columns)", lambda: replay.read(), 5000),
        ("  one _Group.at() (bisect) on 6000 instants", lambda: group.at(pos), 20000),
        ("  ReplaySensor.clock()/position_s", lambda: replay.position_s, 20000),
        ("HostSensor.read(), tree cached", lambda: host_due.read(), 3000),
        ("HostSensor.read(), with tree rescan", lambda: host_tree.read(), 300),
        ("  psutil children(recursive=True)", lambda: root.children(recursive=True), 300),
        ("Monitor._tick(), no-op sensor", lambda: mon._tick(noop_devs), 20000),
        ("Monitor._tick(), host + replay", lambda: mon_both._tick(both_devs), 3000),
        (
            "Store.write_batch(), 0.5 s of 100 Hz readings",
            lambda: store.write_batch(run_id, batch, t0=0.0),
            100,
        ),
        ("Monitor.quality() (no percentiles while running)", lambda: mon.quality(), 5000),
    ]
    for name, fn, n in items:
        print(f"   {name:<52} {per_call_us(fn, n):9.1f} us")
    print(f"   (processes on this machine: {len(psutil.pids())})")
    print()


def profiled(seconds: float, top: int, gpus: int, store: Store) -> None:
    profs: dict[str, cProfile.Profile] = {}

    class ProfiledMonitor(Monitor):
        def _sample_loop(self) -> None:
            prof = profs.setdefault("sampler", cProfile.Profile(time.thread_time))
            prof.runcall(super()._sample_loop)

        def _write_loop(self) -> None:
            prof = profs.setdefault("writer", cProfile.Profile(time.thread_time))
            prof.runcall(super()._write_loop)

    mon = ProfiledMonitor(bench_sensors(0.01, gpus), store, interval_s=0.01)
    mon.start()
    time.sleep(seconds)
    mon.stop()
    q = mon.quality()
    print(
        f"3. cPROFILE at 100 Hz, {seconds:g} s, {q['ticks']} ticks (thread CPU clock; profiling"
        " inflates totals)"
    )
    for name in ("sampler", "writer"):
        buf = io.StringIO()
        st = pstats.Stats(profs[name], stream=buf)
        st.sort_stats("tottime").print_stats(top)
        text = buf.getvalue()
        body = text[text.find("   ncalls") :]
        print(f"   -- {name} thread, top {top} by own time:")
        for line in body.splitlines():
            if line.strip():
                print("   " + line)
        print()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="length of each ablation run")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the ablation")
    p.add_argument("--top", type=int, default=20, help="functions shown per profiled thread")
    p.add_argument("--gpus", type=int, default=8, help="devices in the replayed trace")
    p.add_argument("--skip-ablation", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="joulecast-prof-") as tmp:
        store = Store(Path(tmp) / "prof.db")
        if not args.skip_ablation:
            ablation(args.seconds, args.rounds, args.gpus, store)
        micro(args.gpus, Path(tmp))
        profiled(args.seconds, args.top, args.gpus, store)
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
