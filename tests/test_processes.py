"""joulecast.processes: the measured command ends with its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from joulecast.processes import parent_death_signal, spawn

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
