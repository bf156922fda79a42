"""joulecast.processes: the measured command ends with its parent."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from joulecast.processes import Started, parent_death_signal, spawn, started, stop_left_behind
from joulecast.store import Store

linux_only = pytest.mark.skipif(not parent_death_signal(), reason="parent-death signal: Linux")

# A parent that starts `sleep` through spawn, says the child's pid, and waits.
PARENT = """
    import sys, time
    from joulecast.processes import spawn
    child = spawn(["sleep", "60"], {"PATH": "/usr/bin:/bin"})
    print(child.pid, flush=True)
    time.sleep(60)
"""


def _gone(pid: int, timeout_s: float) -> bool:
    """Whether ``pid`` has ended (or is a zombie waiting for its reaper) within the time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@linux_only
def test_a_child_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(PARENT)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert psutil.Process(child).ppid() == parent.pid
        parent.kill()
        parent.wait(30)
        assert _gone(child, 20.0), "the child outlived its parent"
    finally:
        parent.kill()
        parent.wait(30)


@linux_only
def test_the_launcher_ends_the_child_when_the_parent_is_already_gone() -> None:
    # The parent named is not this process's: the child's parent "ended" before the request.
    from joulecast import processes

    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-S", str(processes._LAUNCHER), "1", str(write_fd), "true"],
            pass_fds=(write_fd,),
            timeout=60,
        )
    finally:
        os.close(write_fd)
        os.close(read_fd)
    assert proc.returncode == -signal.SIGTERM


def test_a_command_that_cannot_start_raises_as_popen_does(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as found:
        spawn([str(tmp_path / "missing")], dict(os.environ))
    assert found.value.strerror == os.strerror(2)
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(PermissionError):
        spawn([str(script)], dict(os.environ))


def test_the_command_gets_its_arguments_environment_and_default_signals(tmp_path: Path) -> None:
    out = tmp_path / "out"
    signals = "exec grep -E '^Sig(Ign|Blk)' /proc/self/status"
    shell = f'echo "$1 $JC_TEST" > "$2"; {signals} >> "$2"'
    child = spawn(["sh", "-c", shell, "sh", "a b", out], {**os.environ, "JC_TEST": "yes"})
    assert child.wait(60) == 0
    # SIGPIPE and the rest as a plain Popen leaves them (Python ignores SIGPIPE itself).
    direct = subprocess.run(["sh", "-c", signals], capture_output=True, text=True)
    assert out.read_text() == "a b yes\n" + direct.stdout


@pytest.fixture
def left(tmp_path: Path) -> Iterator[list[int]]:
    """The pids of processes a test leaves behind on purpose: killed when it ends."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _orphan(tmp_path: Path, body: str, left: list[int]) -> tuple[int, int]:
    """Start ``sh -c body`` in a session of its own, left behind by a parent that ends at once
    (as a command whose joulecast measure died is): its pid and the pid it writes to ``pid``
    (both put in ``left``)."""
    pid_file = tmp_path / "pid"
    launcher = (
        "import subprocess, sys\n"
        f"p = subprocess.Popen(['sh', '-c', {body!r}], start_new_session=True,"
        " stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(p.pid)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", launcher], capture_output=True, text=True, timeout=60
    )
    command = int(out.stdout)
    left.append(command)
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, "the command did not start"
        time.sleep(0.02)
    left.append(int(pid_file.read_text()))
    return command, left[-1]


def test_a_command_left_behind_is_stopped_with_its_group(tmp_path: Path, left: list[int]) -> None:
    # The command starts a process that leaves it (a daemon): still in its group.
    body = f"(sleep 60 & echo $! > {tmp_path / 'pid'}); exec sleep 61"
    command, daemon = _orphan(tmp_path, body, left)
    found = started(command)
    assert found.pgid == command and found.started_at is not None
    assert stop_left_behind(found, grace_s=10.0)
    assert _gone(command, 10.0) and _gone(daemon, 10.0)


def test_a_command_ignoring_sigterm_gets_sigkill(tmp_path: Path, left: list[int]) -> None:
    body = f"trap '' TERM; echo $$ > {tmp_path / 'pid'}; while :; do sleep 0.05; done"
    command, _ = _orphan(tmp_path, body, left)
    assert stop_left_behind(started(command), grace_s=0.3)
    assert _gone(command, 10.0)


def test_a_recycled_pid_or_this_process_is_left_alone(tmp_path: Path, left: list[int]) -> None:
    command, _ = _orphan(tmp_path, f"echo $$ > {tmp_path / 'pid'}; exec sleep 60", left)
    recycled = Started(command, psutil.Process(command).create_time() + 5.0, command)
    assert stop_left_behind(recycled, grace_s=0.1)  # nothing left to look after: not it
    assert not _gone(command, 0.3)
    assert not stop_left_behind(started(os.getpid()), grace_s=0.1)


def test_a_command_reading_its_own_run_does_not_stop_itself(
    tmp_path: Path, left: list[int]
) -> None:
    # A process under the command (a worker it started) finds it left behind: it is let be.
    code = (
        "import os; from joulecast.processes import started, stop_left_behind;"
        "print(stop_left_behind(started(os.getppid()), grace_s=0.1))"
    )
    answer = tmp_path / "answer"
    body = f'echo $$ > {tmp_path / "pid"}; "$0" -c "{code}" > {answer}; exec sleep 60'
    command, _ = _orphan(tmp_path, body.replace('"$0"', shlex.quote(sys.executable)), left)
    deadline = time.monotonic() + 30
    while not (answer.exists() and answer.read_text()):
        assert time.monotonic() < deadline, "no answer"
        time.sleep(0.02)
    assert answer.read_text() == "False\n"
    assert not _gone(command, 0.3)


def test_a_group_is_recorded_only_where_the_command_or_this_process_leads_it() -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        mine = os.getpgrp() == os.getpid()
        assert started(child.pid).pgid == (os.getpid() if mine else None)
    finally:
        child.kill()
        child.wait()
    assert started(2**22 + 7).started_at is None  # no such process


def test_a_platform_without_process_groups_records_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "getpgid")  # as on Windows
    found = started(os.getpid())
    assert found.pgid is None and found.started_at == psutil.Process().create_time()


def test_opening_the_store_stops_the_command_of_a_run_whose_owner_is_gone(
    tmp_path: Path, left: list[int]
) -> None:
    command, _ = _orphan(tmp_path, f"echo $$ > {tmp_path / 'pid'}; exec sleep 60", left)
    store = Store(tmp_path / "s.db")
    gone = store.create_run(name="gone")
    store.record_command(gone, started(command))
    live = store.create_run(name="live")
    store.record_command(live, started(command))
    # The first run's owner is gone (a start time that is not this process's).
    store.query("UPDATE runs SET pid_started = 1.0 WHERE id = ?", (gone,))
    store.close()
    with Store(tmp_path / "s.db") as again:
        assert again.run(gone)["status"] == "interrupted"
        assert again.run(gone)["command_pid"] is None  # looked after: not again
        assert again.run(live)["status"] == "running"
        assert again.run(live)["command_pid"] == command  # its owner (this process) lives
    assert _gone(command, 10.0)
