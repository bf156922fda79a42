"""The command ``joulecast measure`` runs, as a process: started so that it ends with its
parent, and stopped when a later process finds it left behind.

On Linux, :func:`spawn` starts it through a small launcher (``_launch.py``, run isolated)
that asks the kernel for SIGTERM when its parent ends (``PR_SET_PDEATHSIG``) and then becomes
the command: a ``joulecast measure`` killed by SIGKILL takes its command down, and the
command may clean up. The request covers the command only, not the processes it starts
(they get their own signal where the command passes it on), and Linux sends it when the
*thread* that started the command ends: start it from a thread that outlives it. Elsewhere
(macOS, Windows) the command is started plainly and nothing ends it with its parent.

On every platform the run records the command's process (:class:`Started`); a process that
opens the store later and finds the run's measuring process gone stops what is left of the
command (:func:`stop_left_behind`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

# How long a command left behind has after SIGTERM before it gets SIGKILL.
STOP_GRACE_S = 3.0
# Start times of one process read at two moments differ by less (psutil rounds to ticks).
_SAME_START_S = 1.0

_LAUNCHER = Path(__file__).with_name("_launch.py")


@dataclass(frozen=True)
class Started:
    """A process as a run records it: its id, its start time (``psutil`` ``create_time``,
    so that a recycled id is not taken for it) and the process group to stop with it (None
    where stopping the group could reach processes it did not start)."""

    pid: int
    started_at: float | None
    pgid: int | None


def parent_death_signal() -> bool:
    """Whether :func:`spawn` can have a command signalled when its parent ends (Linux, with
    an interpreter to run the launcher)."""
    return (
        sys.platform.startswith("linux")
        and bool(sys.executable)
        and os.access(sys.executable, os.X_OK)
        and _LAUNCHER.is_file()
    )


def spawn(argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` with environment ``env`` as a child of this process, to get SIGTERM
    when this process ends where the platform allows (:func:`parent_death_signal`).

    The child stays in this process's process group: Ctrl-C, Ctrl-Z and a terminal's input
    reach it as they reach any command started from a shell.

    Raises:
        OSError: the command cannot be started (as :class:`subprocess.Popen` raises it).
    """
    args = [str(a) for a in argv]
    if not parent_death_signal():
        return subprocess.Popen(args, env=dict(env))
    read_fd, write_fd = os.pipe()
    try:
        launcher = [sys.executable, "-I", "-S", str(_LAUNCHER), str(os.getpid()), str(write_fd)]
        child = subprocess.Popen([*launcher, *args], env=dict(env), pass_fds=(write_fd,))
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        failed = pipe.read()  # EOF once the command runs: the exec closed the pipe
    if failed:
        child.wait()
        code = int(failed)
        raise OSError(code, os.strerror(code), args[0])
    return child


def started(pid: int) -> Started:
    """``pid`` as a run records it; its group only where ``pid`` or this process leads it
    (a group a shell or a runner made for this job), not a group this process merely joined
    (a script's, whose other processes are none of the command's). No group where the
    platform has none (Windows)."""
    try:
        at: float | None = float(psutil.Process(pid).create_time())
    except psutil.Error:
        at = None
    if not hasattr(os, "getpgid"):
        return Started(pid, at, None)
    try:
        pgid: int | None = os.getpgid(pid)
    except OSError:
        pgid = None
    leader = os.getpid() if os.getpgrp() == os.getpid() else None
    if pgid is not None and pgid not in (pid, leader):
        pgid = None
    return Started(pid, at, pgid)


def stop_left_behind(process: Started, *, grace_s: float | None = None) -> bool:
    """Stop a command whose ``joulecast measure`` is gone: SIGTERM to it, the processes it
    started and its recorded group; SIGKILL to what is left after ``grace_s`` (default
    :data:`STOP_GRACE_S`).

    Nothing is signalled where the process is gone, its id now names another process (its
    start time differs), or this process runs under it (it is this process, or one of its
    ancestors: a command reading its own run). Returns True once nothing of it is left to
    look after (stopped, or gone), False where it was left alone because this process runs
    under it or may not signal it.
    """
    try:
        proc = psutil.Process(process.pid)
        if process.started_at is None or (
            abs(proc.create_time() - process.started_at) >= _SAME_START_S
        ):
            return True
        me = psutil.Process()
        if proc.pid == me.pid or proc.pid in {p.pid for p in me.parents()}:
            return False
        tree = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return True
    except psutil.Error as exc:
        log.warning("process %d left running: cannot look at it (%s)", process.pid, exc)
        return False
    # A group is stopped only while the command is still in it: a group keeps its id while
    # it has members, so it is the group recorded, not a stranger's with a recycled id.
    group = process.pgid if _in_group(process.pid, process.pgid) else None
    log.warning(
        "stopping process %d%s, left running by a joulecast measure that is gone",
        process.pid,
        f" and its process group {group}" if group is not None else "",
    )
    if not _signal(tree, group, signal.SIGTERM):
        return False
    grace_s = STOP_GRACE_S if grace_s is None else grace_s
    alive = _wait_ended(tree, grace_s)
    left = group if group is not None and group_alive(group) else None
    if alive or left is not None:
        _signal(alive, left, signal.SIGKILL)
        _wait_ended(alive, grace_s)
    return True


def _wait_ended(procs: Sequence[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait up to ``timeout_s`` for ``procs`` to end; the ones still running.

    A zombie has ended (its parent has yet to reap it); none is reaped here, so a parent
    that is this process still gets its child's status.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in procs if _running(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def _running(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _in_group(pid: int, pgid: int | None) -> bool:
    if pgid is None or pgid == os.getpgrp():  # never this process's own group
        return False
    try:
        return os.getpgid(pid) == pgid
    except OSError:
        return False


def _signal(procs: Sequence[psutil.Process], pgid: int | None, signum: int) -> bool:
    """Send ``signum`` to ``procs`` and the group ``pgid``; False where it may not."""
    allowed = True
    if pgid is not None:
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            log.warning("process group %d: cannot signal it (%s)", pgid, exc)
            allowed = False
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            try:
                proc.send_signal(signum)
            except psutil.AccessDenied as exc:
                log.warning("process %d: cannot signal it (%s)", proc.pid, exc)
                allowed = False
    return allowed


def group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` has a process left (one this process may not signal
    counts)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
