"""HostSensor: process-tree load through psutil and the modelled RAM and CPU power."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from joulecast.errors import SensorUnavailable
from joulecast.records import Reading
from joulecast.sensors.host import (
    RAM_W_PER_GB,
    HostSensor,
    _proc_children_supported,
    _ProcessClock,
    cpu_tdp_w,
)
from joulecast.store import Store
from tests.fakes import FakeClock

BUSY = [sys.executable, "-c", "while True: pass"]
IDLE = ["sleep", "30"]


# The parent of the processes a test starts: its tree holds just them, whatever other children
# the test process has (a multiprocessing resource tracker started by an earlier test, say).
_PARENT = """
import json, subprocess, sys
kids = {}
for line in sys.stdin:
    cmd, arg = json.loads(line)
    if cmd == "start":
        kid = subprocess.Popen(arg)
        kids[kid.pid] = kid
        print(kid.pid, flush=True)
    else:
        kid = kids.pop(arg)
        kid.kill()
        kid.wait()
        print("killed", flush=True)
"""


class Child:
    """A process started under a :class:`Tree`."""

    def __init__(self, tree: Tree, pid: int) -> None:
        self.tree, self.pid = tree, pid

    def kill(self) -> None:
        """Kill it and wait until its parent has reaped it."""
        self.tree.ask("kill", self.pid)


class Tree:
    """A parent process of our own whose children are the processes a test starts."""

    def __init__(self) -> None:
        self.parent = subprocess.Popen(
            [sys.executable, "-c", _PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.parent.pid

    def ask(self, command: str, arg: object) -> str:
        assert self.parent.stdin is not None and self.parent.stdout is not None
        self.parent.stdin.write(json.dumps([command, arg]) + "\n")
        self.parent.stdin.flush()
        return self.parent.stdout.readline().strip()

    def start(self, argv: list[str]) -> Child:
        """Start ``argv`` and wait until it has replaced the forked copy of the parent."""
        pid = int(self.ask("start", argv))
        target = os.path.basename(argv[0])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if os.path.basename(psutil.Process(pid).exe()) == target or (
                    psutil.Process(pid).name() == target
                ):
                    break
            except psutil.Error:
                pass
            time.sleep(0.005)
        return Child(self, pid)

    def close(self) -> None:
        for child in psutil.Process(self.pid).children(recursive=True):
            child.kill()
        self.parent.kill()
        self.parent.wait()


@pytest.fixture
def tree() -> Iterator[Tree]:
    t = Tree()
    yield t
    t.close()


def by_device(readings: list[Reading]) -> dict[str, Reading]:
    return {r.device: r for r in readings}


def test_ram_power_is_rss_gb_times_0375_and_labelled_modelled() -> None:
    s = HostSensor()
    got = by_device(s.read())
    assert set(got) == {"process", "ram"}
    rss_bytes = got["process"].mem_used_mib * 2**20  # type: ignore[operator]
    assert rss_bytes == pytest.approx(psutil.Process().memory_info().rss, rel=0.05)
    ram = got["ram"]
    assert ram.power_w == pytest.approx(rss_bytes / 1e9 * 0.375)
    assert RAM_W_PER_GB == 0.375
    assert (ram.measured, ram.source) == (False, "ram-model")
    assert (got["process"].measured, got["process"].power_w) == (True, None)
    assert got["process"].util_pct is None  # no interval yet


def stop(pid: int) -> None:
    """Stop ``pid`` and wait until it is stopped (SIGSTOP is delivered asynchronously)."""
    proc = psutil.Process(pid)
    proc.suspend()
    deadline = time.monotonic() + 30
    while proc.status() != psutil.STATUS_STOPPED and time.monotonic() < deadline:
        time.sleep(0.001)


def busy_while_stopped(pid: int, cpu_s: float = 0.3, timeout_s: float = 120.0) -> float:
    """Let the stopped busy process ``pid`` run until it has used ``cpu_s`` of CPU time, then
    stop it again; the CPU seconds it used. However loaded the machine, the time it took does
    not matter: the tests pass that CPU time as the wall time of a fake clock. (CPU times
    count in clock ticks of 10 ms: the sensor's reading may differ from this one by a tick or
    two, hence the tests' 10 % margin.)"""
    proc = psutil.Process(pid)
    start = sum(proc.cpu_times()[:2])
    proc.resume()
    deadline = time.monotonic() + timeout_s
    while sum(proc.cpu_times()[:2]) - start < cpu_s and time.monotonic() < deadline:
        time.sleep(0.01)
    stop(pid)
    return sum(proc.cpu_times()[:2]) - start


def test_util_over_a_busy_child(tree: Tree, clock: FakeClock) -> None:
    child = tree.start(BUSY)
    stop(child.pid)
    s = HostSensor(tree.pid, include_root=False, min_interval_s=0.0, clock=clock)
    first = by_device(s.read())
    assert first["process"].util_pct is None
    clock.advance(busy_while_stopped(child.pid))  # as long as it was busy: one core's worth
    got = by_device(s.read())
    # one core busy = 100 %; the test process itself is not counted
    assert got["process"].util_pct == pytest.approx(100.0, abs=10.0)
    child_rss = psutil.Process(child.pid).memory_info().rss
    assert got["process"].mem_used_mib == pytest.approx(child_rss / 2**20, rel=0.2)
    assert "cpu" not in got  # not modelled unless asked


def test_idle_child_is_near_zero(tree: Tree) -> None:
    tree.start(IDLE)
    s = HostSensor(tree.pid, include_root=False, min_interval_s=0.0)
    s.read()
    time.sleep(0.2)
    assert by_device(s.read())["process"].util_pct < 10.0  # type: ignore[operator]


def test_modelled_cpu_power_is_tdp_times_core_share(tree: Tree, clock: FakeClock) -> None:
    child = tree.start(BUSY)
    stop(child.pid)
    s = HostSensor(tree.pid, include_root=False, model_cpu=True, tdp_w=120.0,
                   min_interval_s=0.0, clock=clock)
    assert s.devices() == ["process", "ram", "cpu"]
    assert "cpu" not in by_device(s.read())  # needs an interval
    clock.advance(busy_while_stopped(child.pid))
    got = by_device(s.read())
    cpu, util = got["cpu"], got["process"].util_pct
    assert util == pytest.approx(100.0, abs=10.0)
    cores = psutil.cpu_count(logical=True)
    assert cpu.power_w == pytest.approx(120.0 * min(1.0, util / (100.0 * cores)))
    assert (cpu.measured, cpu.source, cpu.util_pct) == (False, "tdp-model", util)
    assert s.describe()["cpu"] == {
        "model": "tdp_w x tree_cpu_share",
        "tdp_w": 120.0,
        "tdp_from": "argument",
    }


def test_cpu_share_is_capped_at_all_cores(clock: FakeClock) -> None:
    # A fake clock that barely moves makes the measured CPU time exceed wall time.
    s = HostSensor(model_cpu=True, tdp_w=100.0, min_interval_s=0.0, clock=clock)
    s.read()
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    clock.advance(1e-6)
    assert by_device(s.read())["cpu"].power_w == 100.0


def test_reads_closer_than_min_interval_return_nothing(clock: FakeClock) -> None:
    s = HostSensor(min_interval_s=0.2, clock=clock)
    assert len(s.read()) == 2
    clock.advance(0.1)
    assert s.read() == []
    clock.advance(0.1)
    assert {r.device for r in s.read()} == {"process", "ram"}


@pytest.mark.parametrize("process_clocks", [True, False], ids=["clock-statm", "psutil"])
def test_every_read_is_stored_whatever_the_interval(
    clock: FakeClock, store: Store, process_clocks: bool
) -> None:
    # 10 Hz for 3 s on a machine without GPU or RAPL: every tick must give a reading of each
    # device, through the process clocks or psutil alike.
    s = HostSensor(model_cpu=True, tdp_w=100.0, clock=clock)
    s._process_clocks = s._process_clocks and process_clocks
    run_id = store.create_run(name="host")
    for _ in range(31):
        store.write_batch(run_id, s.read(), t0=1000.0)
        clock.advance(0.1)
    counts = store.samples(run_id).groupby("device").size().to_dict()
    assert counts == {"process": 31, "ram": 31, "cpu": 30}  # cpu % needs a previous read
    kinds = {type(m).__name__ for m in s._procs.values()}
    assert kinds == ({"_ProcessClock"} if s._process_clocks else {"_PsutilProcess"})
    s.close()
    assert s._procs == {}


def test_process_clock_agrees_with_psutil_and_follows_its_process(
    tree: Tree,
) -> None:
    own = _ProcessClock(os.getpid())
    cpu_before, rss = own.usage()
    times, info = psutil.Process().cpu_times(), psutil.Process().memory_info()
    cpu_after, _ = own.usage()
    # CPU time only grows; psutil's falls between two reads (to its clock ticks, 10 ms).
    assert cpu_before - 0.02 <= times.user + times.system <= cpu_after + 0.02
    assert rss == pytest.approx(info.rss, rel=0.05)
    own.close()
    child = tree.start(IDLE)
    stat = _ProcessClock(child.pid)
    assert min(stat.usage()) >= 0  # readable while the process lives
    child.kill()
    with pytest.raises(OSError):  # gone: even a reused pid is not read through this file
        stat.usage()
    stat.close()
    stat.close()


def test_cpu_time_is_not_counted_in_clock_ticks(clock: FakeClock) -> None:
    # 15 ms of CPU in 15 ms: 100 %, where 10 ms clock ticks would give 67 % or 133 %.
    s = HostSensor(clock=clock)
    if not s._process_clocks:
        pytest.skip("no process CPU clock here")
    s.read()
    end = time.process_time() + 0.015
    while time.process_time() < end:
        pass
    clock.advance(0.015)
    assert 95.0 < by_device(s.read())["process"].util_pct < 125.0  # type: ignore[operator]


def test_a_child_that_exits_is_dropped_and_its_file_closed(
    clock: FakeClock, tree: Tree
) -> None:
    child = tree.start(IDLE)
    s = HostSensor(tree.pid, include_root=False, clock=clock)
    s.read()
    member = s._procs[child.pid]
    child.kill()
    clock.advance(0.01)
    assert by_device(s.read())["process"].mem_used_mib == 0.0
    assert child.pid not in s._procs
    if isinstance(member, _ProcessClock):
        with pytest.raises(ProcessLookupError):
            member.usage()  # closed


def test_children_joining_are_seen_after_tree_refresh(
    clock: FakeClock, tree: Tree
) -> None:
    s = HostSensor(tree.pid, include_root=False, min_interval_s=0.0, tree_refresh_s=1.0,
                   clock=clock)
    assert by_device(s.read())["process"].mem_used_mib == 0.0  # no children yet
    first = tree.start(IDLE)
    clock.advance(0.1)
    # An empty tree is looked at on every read: a command started late is seen at once.
    s.read()
    assert set(s._procs) == {first.pid}
    second = tree.start(IDLE)
    period = 1.0 if _proc_children_supported() else 5.0
    clock.advance(period / 2)
    s.read()
    assert set(s._procs) == {first.pid}  # tree not refreshed yet
    clock.advance(period / 2)
    s.read()
    assert set(s._procs) == {first.pid, second.pid}


def test_describe_and_missing_process() -> None:
    s = HostSensor()
    facts = s.describe()
    assert facts["ram"] == {"model": "rss_gb x w_per_gb", "w_per_gb": 0.375}
    assert facts["process"] == {"pid": os.getpid(), "logical_cores": psutil.cpu_count()}
    assert "cpu" not in facts and s.devices() == ["process", "ram"]
    with pytest.raises(SensorUnavailable, match="process 2147483646 not found"):
        HostSensor(2**31 - 2)


def test_cpu_tdp_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    unknown = tmp_path / "cpuinfo"
    unknown.write_text("model name\t: Intel(R) Xeon(R) Processor\nphysical id\t: 0\n")
    assert cpu_tdp_w(unknown) == 85.0  # a CPU model the table does not know
    monkeypatch.setenv("JOULECAST_CPU_TDP_W", "65")
    assert cpu_tdp_w() == 65.0
    assert HostSensor(model_cpu=True).describe()["cpu"]["tdp_w"] == 65.0
    monkeypatch.setenv("JOULECAST_CPU_TDP_W", "lots")
    with pytest.raises(SensorUnavailable) as info:
        HostSensor(model_cpu=True)
    assert "JOULECAST_CPU_TDP_W" in info.value.fix
    for text in ("-5", "0", "1e308", "inf", "nan", "\u0668\u0665"):
        monkeypatch.setenv("JOULECAST_CPU_TDP_W", text)
        with pytest.raises(SensorUnavailable, match="expected a finite number above 0 to 2000"):
            cpu_tdp_w()
    assert HostSensor(model_cpu=False).devices() == ["process", "ram"]  # TDP not needed
