"""Executing a study's plan: each run in its own process under ``joulecast measure``.

The runner takes the plan from the store (:mod:`joulecast.study.state`), warms the GPU up once,
then runs every planned run still to do in plan order, with a cooldown between runs. Each run is
``joulecast measure --store STORE --tag study_key=... -- <workload argv>``, so the run, its
samples and its epochs land in the store like any other measured run. A run's outcome is
``completed``, ``oom`` (out of memory on the GPU or the host), ``timeout`` or ``failed``, with
the end of its output kept as the error text. Only one runner works on a study at a time (a
lock file beside the store); a runner killed at any point, even by SIGKILL, can be started again
and carries on: completed runs are never redone, and the run in flight is tried again until it
has had the study's ``max_attempts`` (a run that fails on its own is not).

A run with a GPU power limit or locked clocks (:mod:`joulecast.study.powercap`) has them set
on its GPUs just before it starts and put back as it ends, however it ends; a runner killed
during it leaves them for the next runner of the study to put back before anything else. The
local executor checks them (range, permission) before the first run; under the other
executors each job sets them on its node and checks them there (:func:`run_capped`).

Executors: ``local`` runs each run as a child process here; ``slurm`` submits each run as a job
through submitit (``submitit-local`` does the same on this machine, for tests), each writing its
own store shard under the study folder, merged into the store as it finishes.

A run whose job spans several nodes (:meth:`~joulecast.study.design.PlannedRun.job_size`) is
one measuring task per node, each writing its node's run to a node shard in a folder of its
own under the study folder; :func:`joulecast.jobs.merge_jobs` joins them into one run of the
store once the job ends. ``submitit-local`` simulates the nodes as tasks of one local job
(:func:`run_node`): every simulated node samples the same machine.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joulecast.errors import InputError, JoulecastError, StoreError
from joulecast.inputs import MAX_DURATION_S, NODE_ENV, NODE_RANK_ENV, NODES_ENV, finite, whole
from joulecast.monitor import MIN_INTERVAL_S
from joulecast.processes import group_alive
from joulecast.store import Store
from joulecast.study.design import MAX_ATTEMPTS_LIMIT, PlannedRun, Study, argv, plan
from joulecast.study.powercap import (
    LEDGER_FOLDER,
    LEFT_HEADER,
    FileLedger,
    GpuControl,
    GpuRefused,
    GpuSettings,
    JobGpus,
    left_line,
    on_node,
    study_settings,
)
from joulecast.study.state import StudyState

log = logging.getLogger(__name__)

EXECUTORS = ("local", "slurm", "submitit-local")
# Text in a run's output that means it ran out of memory (PyTorch, TensorFlow/Keras, CUDA,
# the C++ runtime, Python).
OOM_MARKERS = (
    "CUDA out of memory",
    "OutOfMemoryError",
    "RESOURCE_EXHAUSTED",
    "std::bad_alloc",
    "MemoryError",
    "Cannot allocate memory",
)
# Only the end of a failed run's output is searched: frameworks warn about memory pressure
# earlier in runs that then fail for another reason.
OOM_LINES = 8
TAIL_CHARS = 2000
KILL_GRACE_S = 10.0
POLL_S = 1.0
"""How often the runner looks whether a job's tasks have ended (submitit's own wait: 1 s)."""


@dataclass(frozen=True)
class Outcome:
    """How one run ended."""

    status: str
    run_id: int | None
    error: str | None
    duration_s: float


def classify(returncode: int, output_tail: str, timed_out: bool) -> tuple[str, str | None]:
    """The outcome of a run from its exit status and the end of its output."""
    if timed_out:
        return "timeout", f"stopped after the study's timeout; {_last_lines(output_tail)}"
    if returncode == 0:
        return "completed", None
    last = "\n".join([ln for ln in output_tail.splitlines() if ln.strip()][-OOM_LINES:])
    if any(marker in last for marker in OOM_MARKERS):
        return "oom", _last_lines(output_tail)
    if returncode in (137, -9):
        # A child killed by SIGKILL that the runner did not kill: most often the kernel's OOM
        # killer.
        tail = _last_lines(output_tail)
        return "oom", f"killed by SIGKILL (likely the host's OOM killer); {tail}"
    return "failed", f"exit status {returncode}; {_last_lines(output_tail)}"


def _last_lines(text: str, n: int = 6) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])[-TAIL_CHARS:]


def measured_argv(
    study: Study,
    run: PlannedRun,
    store_path: Path,
    interval_s: float,
    *,
    run_uid: str | None = None,
    shard_dir: Path | None = None,
) -> list[str]:
    """The command that runs ``run`` under ``joulecast measure`` into ``store_path``.

    With ``run_uid`` and ``shard_dir`` it is one node's part of a multi-node job: the node's
    run goes to its node shard in ``shard_dir`` (``joulecast measure --run-uid --shard-dir``).
    """
    cmd = [
        sys.executable,
        "-m",
        "joulecast",
        "measure",
        "--store",
        str(store_path),
        "--interval",
        str(interval_s),
        "--name",
        run.name(study),
        "-q",
    ]
    for key, value in run.tags(study).items():
        cmd += ["--tag", f"{key}={value}"]
    if run_uid is not None:
        cmd += ["--run-uid", run_uid]
    if shard_dir is not None:
        cmd += ["--shard-dir", str(shard_dir)]
    return [*cmd, "--", *argv(study, run)]


def execute(
    cmd: list[str],
    log_path: Path,
    timeout_s: float | None,
    on_start: Callable[[int], None] | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[int, bool, str]:
    """Run ``cmd`` in its own process group, output to ``log_path``; kill it at the timeout.

    ``on_start`` gets the child's pid (its process group) once it runs. Any exception while
    waiting (Ctrl-C, a signal) stops the group before it propagates. ``env``: the child's
    environment (default: this process's). Returns the exit status, whether it timed out, and
    the end of its output.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(
        _open_no_link(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), "wb"
    ) as out:
        child = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        timed_out = False
        try:
            if on_start is not None:
                on_start(child.pid)
            returncode = child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(child.pid, child)
            returncode = child.wait()
        except BaseException:
            _kill_group(child.pid, child)
            child.wait()
            raise
    return returncode, timed_out, _tail(log_path)


def run_node(
    cmd: list[str], log_path: Path, timeout_s: float | None, simulated_nodes: int = 0
) -> tuple[int, bool, str]:
    """One node's task of a multi-node job, run by submitit: :func:`execute` of ``cmd``, its
    output to the node's own log beside ``log_path`` (``<stem>.node<rank>.log``).

    On SLURM (one task per node) the command finds its node's rank and the job's nodes in
    SLURM's variables. With ``simulated_nodes`` this task is one of that many simulated nodes
    of one machine, the tasks of one local job: the command is told its node's rank, the
    node count and a name of its own (``<host>-node<rank>``) through ``$JOULECAST_NODE_RANK``,
    ``$JOULECAST_NODES`` and ``$JOULECAST_NODE``. A simulation only: every simulated node
    samples the same machine, so the job's energy counts it once per node.
    """
    import submitit

    rank = submitit.JobEnvironment().global_rank
    env = None
    if simulated_nodes:
        env = {
            **os.environ,
            NODE_RANK_ENV: str(rank),
            NODES_ENV: str(simulated_nodes),
            NODE_ENV: f"{socket.gethostname()}-node{rank}",
        }
    node_log = log_path.with_name(f"{log_path.stem}.node{rank}{log_path.suffix}")
    return execute(cmd, node_log, timeout_s, env=env)


def run_capped(
    gpus: JobGpus, simulated: bool, task: Callable[..., tuple[int, bool, str]], *args: Any
) -> tuple[int, bool, str] | GpuRefused:
    """``task(*args)`` (:func:`execute` or :func:`run_node`) as a job's task, with the run's
    GPU power limit and clocks set on this node's GPUs around it
    (:func:`~joulecast.study.powercap.on_node`).

    SIGTERM and SIGHUP (SLURM's ``scancel``, its time limit, a preemption; submitit itself
    only logs SIGTERM) stop the run as Ctrl-C does, so the GPUs are put back before the job
    ends; only SIGKILL leaves them set, for the next job of the study on this host. The task is
    the job process's own entry point, so it may take these signals over while it runs. Of
    ``simulated`` nodes (tasks of one local job, on one machine) only node 0 sets them: the
    nodes share this machine's GPUs.
    """
    if simulated:
        import submitit

        if submitit.JobEnvironment().global_rank != 0:
            return task(*args)
    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            previous[signum] = signal.signal(signum, _stop)
    try:
        return on_node(gpus, lambda: task(*args))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _worst(results: list[tuple[int, bool, str]]) -> tuple[int, bool, str]:
    """The end of a multi-node job from its nodes' ends: the first node that failed on its own
    (the others often fail or hang after it), else the first that timed out, else node 0."""
    for k, (returncode, timed_out, tail) in enumerate(results):
        if returncode != 0 and not timed_out:
            return returncode, False, f"{tail}\n(node {k} of {len(results)})"
    for k, (returncode, timed_out, tail) in enumerate(results):
        if timed_out:
            return returncode, True, f"{tail}\n(node {k} of {len(results)})"
    return results[0]


def _kill_group(pgid: int, child: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the process group (``joulecast measure`` forwards it), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_S
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            break
        if child is None and not group_alive(pgid):
            break
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 8 * TAIL_CHARS))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def find_run(store: Store, study: str, key: str) -> int | None:
    """The newest run of the store made for ``key`` of ``study``."""
    rows = store.query(
        "SELECT id FROM runs WHERE json_extract(tags, '$.study') = ?"
        " AND json_extract(tags, '$.study_key') = ? ORDER BY id DESC LIMIT 1",
        (study, key),
    )
    return int(rows[0]["id"]) if rows else None


def _open_no_link(path: Path, flags: int, mode: int) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` (in a shared folder, a link planted
    there would make this process truncate or lock the file it points to).

    Raises:
        InputError: ``path`` is a symbolic link.
    """
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{path}: is a symbolic link; not followed") from exc
        raise


@contextlib.contextmanager
def study_lock(store_path: Path, name: str) -> Iterator[None]:
    """Hold the one-runner-per-study lock; InputError if another runner holds it."""
    lock_path = store_path.with_name(f"{store_path.name}.study-{_safe(name)}.lock")
    fd = _open_no_link(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"study {name!r}: another runner is working on it ({lock_path})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def study_folder(store_path: Path, study: Study) -> Path:
    """Where a study's logs and shards go: beside the store."""
    return store_path.parent / f"{store_path.stem}-{_safe(study.name)}"


def gpu_present() -> bool:
    """True when NVML sees a GPU here."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return bool(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return False


@dataclass
class Progress:
    """Counts and timings for the progress line."""

    total: int
    done_before: int
    started: float
    completed: int = 0
    failed: int = 0
    energy_j: float = 0.0
    run_seconds: float = 0.0
    runs_here: int = 0

    def line(self, remaining: int) -> str:
        elapsed = time.monotonic() - self.started
        eta = ""
        if self.runs_here:
            per_run = elapsed / self.runs_here
            eta = f", ETA {_clock(per_run * remaining)}"
        return (
            f"{self.done_before + self.completed + self.failed}/{self.total} done"
            f" ({self.failed} not completed), elapsed {_clock(elapsed)}{eta},"
            f" {self.energy_j / 1e3:,.1f} kJ measured so far"
        )


def _clock(seconds: float) -> str:
    whole = round(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Runner:
    """Runs a study's remaining planned runs.

    Args:
        study: the study (from :func:`joulecast.study.design.load_study`).
        store_path: the run store; the plan is stored there too.
        executor: ``local``, ``slurm`` or ``submitit-local``.
        interval_s: sampling interval of each run, at least
            :data:`~joulecast.monitor.MIN_INTERVAL_S`.
        echo: where progress lines go.
        only: run only the planned runs with these factor values (as text).
        max_attempts: attempts of a run whose runner dies during them (default: the study's
            :attr:`~joulecast.study.design.Study.max_attempts`).
        nvml: the ``pynvml`` module that sets GPU power limits and clocks (tests pass a
            fake, which travels to each job under the submitit executors); default: imported
            where the study has them.
    """

    def __init__(
        self,
        study: Study,
        store_path: str | os.PathLike[str],
        *,
        executor: str = "local",
        interval_s: float = 0.1,
        echo: Callable[[str], None] = print,
        only: dict[str, str] | None = None,
        max_attempts: int | None = None,
        nvml: Any = None,
    ) -> None:
        if executor not in EXECUTORS:
            raise InputError(f"executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
        self.max_attempts = study.max_attempts
        if max_attempts is not None:
            self.max_attempts = whole(max_attempts, "max_attempts", lo=1, hi=MAX_ATTEMPTS_LIMIT)
        self.study = study
        self.store_path = Path(store_path).resolve()
        self.executor = executor
        self.interval_s = finite(interval_s, "interval_s", lo=MIN_INTERVAL_S, hi=MAX_DURATION_S)
        self.echo = echo
        self.folder = study_folder(self.store_path, study)
        self.only = dict(only or {})
        self.nvml = nvml
        self._gpus: GpuControl | None = None
        for key in self.only:
            if key not in study.factors and not any(key in c for c in study.combinations):
                raise InputError(f"--only {key}: not a factor of study {study.name!r}")
        if executor == "local":
            for run in plan(study):
                nodes = run.job_size(study)[0]
                if nodes > 1 and self._selected(run):
                    raise InputError(
                        f"study {study.name!r}: run {run.key} asks for nodes = {nodes}, and the"
                        " local executor runs one node: use --executor slurm (or submitit-local,"
                        " which simulates the nodes on this machine)"
                    )

    def run(self) -> dict[str, int]:
        """Run every planned run still to do; returns the study's counts by status.

        SIGTERM and SIGHUP stop the run under way (its process group) and put it back in the
        plan, as Ctrl-C does.
        """
        previous = {}
        for signum in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                previous[signum] = signal.signal(signum, _stop)
        try:
            return self._run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _run(self) -> dict[str, int]:
        planned = plan(self.study)
        with Store(self.store_path) as store, contextlib.ExitStack() as stack:
            with study_lock(self.store_path, self.study.name):
                state = StudyState.open(store, self.study, planned)
                self._kill_leftovers(state)
                if self.executor == "local" and study_settings(self.study, planned):
                    self._gpus = self._restore_gpus(store, stack)
                self._report_left_settings()
                self._record_finished_leftovers(store, state)
                again, given_up = state.recover(self.max_attempts)
                if again:
                    self.echo(f"in flight when the last runner stopped, tried again: {again}")
                if given_up:
                    self.echo(
                        f"in flight when the runner stopped, {self.max_attempts} times: "
                        f"recorded failed: {given_up}"
                    )
                by_position = {r.position: r for r in planned}
                runs = state.runs()
                planned_now = runs.loc[runs["status"] == "planned", "position"]
                done = len(runs) - len(planned_now)
                todo = [
                    by_position[int(p)] for p in planned_now if self._selected(by_position[int(p)])
                ]
                progress = Progress(len(runs), done, time.monotonic())
                if todo and self._gpus is not None:
                    levels = [GpuSettings.of(self.study, r) for r in todo]
                    self._gpus.check([s for s in levels if s], str(self.study.path))
                if todo:
                    self._warm_up()
                try:
                    if self.executor == "local":
                        self._run_local(store, state, todo, progress)
                    else:
                        self._run_submitit(store, state, todo, progress)
                except (StoreError, sqlite3.OperationalError, OSError) as exc:
                    if _disk_full(exc):
                        counts = state.counts()
                        raise InputError(
                            f"the disk is full ({exc}): study stopped with "
                            f"{counts['remaining']} run(s) still planned; free space and run "
                            "it again to continue"
                        ) from exc
                    if isinstance(exc, OSError):  # a run could not be started or logged
                        counts = state.counts()
                        raise JoulecastError(
                            f"{exc}: study stopped with {counts['remaining']} run(s) still "
                            "planned; run it again to continue once this is put right"
                        ) from exc
                    raise
            return state.counts()

    def _restore_gpus(self, store: Store, stack: contextlib.ExitStack[Any]) -> GpuControl:
        """Put back what a runner or a job of the study killed on this host left set on its
        GPUs; returns the control that sets each run's GPUs here."""
        control = GpuControl(store, self.study.name, nvml=self.nvml, echo=self.echo)
        stack.callback(control.close)
        for line in control.restore_leftovers():
            self.echo(f"left set by the last runner, put back: {line}")
        jobs = GpuControl(
            FileLedger(self.folder / LEDGER_FOLDER), self.study.name, nvml=self.nvml, echo=self.echo
        )
        stack.callback(jobs.close)
        for line in jobs.restore_leftovers():
            self.echo(f"left set by a job of the study, put back: {line}")
        return control

    def _report_left_settings(self) -> None:
        """Tell the GPU settings jobs of the study left set (on other hosts, or here where the
        local runner could not put them back): only a job on that host can."""
        left = FileLedger(self.folder / LEDGER_FOLDER).left()
        if left:
            self.echo(LEFT_HEADER)
            for entry in left:
                self.echo(f"  {left_line(entry)}")

    def _selected(self, run: PlannedRun) -> bool:
        """Whether ``run`` is among those ``only`` selects (by factor value, as text)."""
        return all(str(run.factors.get(k)) == v for k, v in self.only.items())

    # -- local ---------------------------------------------------------------------------

    def _run_local(
        self, store: Store, state: StudyState, todo: list[PlannedRun], progress: Progress
    ) -> None:
        for i, run in enumerate(todo):
            if i and self.study.cooldown_s > 0:
                self.echo(f"cooldown {self.study.cooldown_s:g} s")
                time.sleep(self.study.cooldown_s)
            attempt = state.claim(run.position)
            start = time.monotonic()
            try:
                cmd = measured_argv(self.study, run, self.store_path, self.interval_s)
                log_path = self.folder / "logs" / f"{run.key}-a{attempt}.log"
                with self._gpu_settings(run):
                    returncode, timed_out, tail = self._execute_local(state, run, cmd, log_path)
            except BaseException:  # stopped, a full disk, any error: back to the plan
                state.release(run.position)
                raise
            outcome = self._record(store, state, run, returncode, timed_out, tail, start)
            self._report(run, outcome, progress, len(todo) - i - 1, store)

    def _gpu_settings(self, run: PlannedRun) -> contextlib.AbstractContextManager[None]:
        """The run's GPU power limit and clocks, set for the block (none: nothing done)."""
        if self._gpus is None:
            return contextlib.nullcontext()
        return self._gpus.applied(GpuSettings.of(self.study, run), run.key)

    def _execute_local(
        self, state: StudyState, run: PlannedRun, cmd: list[str], log_path: Path
    ) -> tuple[int, bool, str]:
        def started(pid: int) -> None:
            # The process group, so a later runner can stop it if this one dies mid-run.
            state.set_job(run.position, f"local:{pid}:{_create_time(pid):.3f}")

        return execute(cmd, log_path, self.study.timeout_s, started)

    def _kill_leftovers(self, state: StudyState) -> None:
        """Stop the process group of a run left in flight by a runner that was killed."""
        runs = state.runs()
        for job in runs.loc[runs["status"] == "running", "job_id"].dropna():
            parts = str(job).split(":")
            if parts[0] != "local" or len(parts) != 3:
                continue
            pgid, started = int(parts[1]), float(parts[2])
            if _leader_started_at(pgid, started):
                self.echo(f"stopping the processes left by the last runner (group {pgid})")
                _kill_group(pgid)

    def _record_finished_leftovers(self, store: Store, state: StudyState) -> None:
        """Record as completed the runs left in flight that completed after their runner died."""
        runs = state.runs()
        for r in runs[runs["status"] == "running"].itertuples():
            run_id = find_run(store, self.study.name, r.key)
            if run_id is None:
                continue
            row = store.run(run_id)
            if row["status"] == "completed" and (row["started_at"] or 0) >= (r.started_at or 0) - 5:
                state.finish(int(r.position), "completed", run_id=run_id)
                self.echo(f"{r.key}: completed after the last runner stopped; recorded")

    # -- submitit ------------------------------------------------------------------------

    def _executor(self) -> Any:
        try:
            import submitit
        except ImportError as exc:
            raise InputError(
                "the slurm executor needs submitit: pip install 'joulecast[slurm]'"
            ) from exc
        cluster = "local" if self.executor == "submitit-local" else "slurm"
        try:
            executor = submitit.AutoExecutor(folder=self.folder / "submitit", cluster=cluster)
        except RuntimeError as exc:  # submitit's "Could not detect srun"
            raise InputError(
                f"--executor {self.executor}: {exc} (no srun on PATH: not on a SLURM cluster?);"
                " run the study here with --executor local, or from a SLURM login node"
            ) from exc
        slurm = dict(self.study.slurm)
        params: dict[str, Any] = {"name": f"joulecast-{_safe(self.study.name)}"}
        if self.study.timeout_s:
            params["timeout_min"] = max(1, math.ceil(self.study.timeout_s / 60) + 5)
        if slurm.get("time_min"):
            params["timeout_min"] = int(slurm["time_min"])
        if cluster == "slurm":
            params["gpus_per_node"] = int(slurm.get("gpus_per_node", 1))
            if slurm.get("cpus_per_task"):
                params["cpus_per_task"] = int(slurm["cpus_per_task"])
            if slurm.get("partition"):
                params["slurm_partition"] = slurm["partition"]
            extra = dict(slurm.get("extra") or {})
            if slurm.get("account"):
                extra["account"] = slurm["account"]
            if extra:
                params["slurm_additional_parameters"] = extra
        executor.update_parameters(**params)
        return executor

    def _run_submitit(
        self, store: Store, state: StudyState, todo: list[PlannedRun], progress: Progress
    ) -> None:
        from joulecast.study.shards import merge_shard

        executor = self._executor()
        shards = self.folder / "shards"
        shards.mkdir(parents=True, exist_ok=True)
        # The job size _executor asked for; a run of another size asks for its own.
        size = (1, int(self.study.slurm.get("gpus_per_node", 1)))
        for i, run in enumerate(todo):
            if i and self.study.cooldown_s > 0:
                time.sleep(self.study.cooldown_s)
            attempt = state.claim(run.position)
            start = time.monotonic()
            job = None
            try:
                shard = shards / f"{run.key}-a{attempt}.db"
                log_path = self.folder / "logs" / f"{run.key}-a{attempt}.log"
                if run.job_size(self.study) != size:
                    size = run.job_size(self.study)
                    executor.update_parameters(**self._job_parameters(*size))
                nodes = size[0]
                mem = run.factors.get("ram_gb") or self.study.slurm.get("mem_gb")
                if mem and self.executor == "slurm":
                    executor.update_parameters(mem_gb=float(mem))
                if nodes == 1:
                    cmd = measured_argv(self.study, run, shard, self.interval_s)
                    job = self._submit(executor, run, execute, cmd, log_path, self.study.timeout_s)
                else:
                    # A folder and an identity of this job's own: a job stopped with its
                    # runner leaves its shards out of the next attempt's merge, which reuses
                    # the number.
                    token = uuid.uuid4().hex[:8]
                    uid = f"{self.study.name}/{run.key}-a{attempt}-{token}"
                    folder = shards / f"{run.key}-a{attempt}-{token}"
                    cmd = measured_argv(
                        self.study, run, shard, self.interval_s, run_uid=uid, shard_dir=folder
                    )
                    simulated = nodes if self.executor == "submitit-local" else 0
                    job = self._submit(
                        executor, run, run_node, cmd, log_path, self.study.timeout_s, simulated
                    )
                state.set_job(run.position, f"{self.executor}:{job.job_id}")
                results = _task_results(job, nodes, run.key)
            except BaseException:  # stopped, a full disk, any error: back to the plan
                if job is not None:
                    with contextlib.suppress(Exception):
                        job.cancel()
                state.release(run.position)
                raise
            note = None
            if nodes == 1:
                returncode, timed_out, tail = results[0]
                if shard.exists():
                    merge_shard(store, shard)
            else:
                returncode, timed_out, tail = _worst(results)
                note = self._merge_job(store, folder, uid, nodes)
            outcome = self._record(store, state, run, returncode, timed_out, tail, start, note)
            self._report(run, outcome, progress, len(todo) - i - 1, store)

    def _submit(
        self,
        executor: Any,
        run: PlannedRun,
        task: Callable[..., tuple[int, bool, str]],
        *args: Any,
    ) -> Any:
        """Submit ``task(*args)`` as ``run``'s job; with the run's GPU settings around it on
        each node where it has some (:func:`run_capped`)."""
        settings = GpuSettings.of(self.study, run)
        if self.executor == "submitit-local":
            # A job must see the GPUs it sets: SLURM gives it its gpus_per_node, submitit's
            # local executor none unless asked (0: as before for a run without settings).
            executor.update_parameters(gpus_per_node=run.job_size(self.study)[1] if settings else 0)
        if not settings:
            return executor.submit(task, *args)
        gpus = JobGpus(
            settings,
            self.folder / LEDGER_FOLDER,
            self.study.name,
            run.key,
            str(self.study.path),
            self.nvml,
        )
        simulated = self.executor == "submitit-local" and run.job_size(self.study)[0] > 1
        return executor.submit(run_capped, gpus, simulated, task, *args)

    def _job_parameters(self, nodes: int, gpus_per_node: int) -> dict[str, int]:
        """submitit's parameters for a job of ``nodes`` nodes, one measuring task on each."""
        if self.executor == "slurm":
            return {"nodes": nodes, "tasks_per_node": 1, "gpus_per_node": gpus_per_node}
        # submitit's local executor runs one node: each simulated node is a task of it.
        return {"tasks_per_node": nodes}

    def _merge_job(self, store: Store, folder: Path, uid: str, nodes: int) -> str | None:
        """Merge a multi-node job's node shards into one run of ``store``; what is amiss."""
        from joulecast.jobs import merge_jobs

        merges = merge_jobs(store, [folder]) if folder.is_dir() else []
        mine = next((m for m in merges if m.job == uid), None)
        if mine is None:
            return f"no node of the job left a shard in {folder}"
        if mine.outcome == "running":
            return (
                f"a node's run in {folder} still looks running: not merged "
                "(joulecast study collect merges it once it has ended)"
            )
        if mine.outcome in ("conflict", "failed"):
            return f"the node shards in {folder} could not be merged ({mine.outcome}; see the log)"
        if mine.outcome == "incomplete":
            missing = _missing_nodes(folder, uid, nodes)
            merge_jobs(store, [folder], partial=True)
            return (
                f"node(s) {', '.join(map(str, missing))} of {nodes} left no shard: the run holds"
                " the other nodes' energy only"
            )
        return None

    # -- shared --------------------------------------------------------------------------

    def _record(
        self,
        store: Store,
        state: StudyState,
        run: PlannedRun,
        returncode: int,
        timed_out: bool,
        tail: str,
        start: float,
        note: str | None = None,
    ) -> Outcome:
        """Record how ``run`` ended; ``note``: what makes its measurement incomplete, if any."""
        status, error = classify(returncode, tail, timed_out)
        run_id = find_run(store, self.study.name, run.key)
        if status == "completed" and run_id is None:
            status, error = "failed", "exited 0 but no measured run was found in the store"
        if note is not None:
            status = "failed" if status == "completed" else status
            error = note if error is None else f"{note}; {error}"
        state.finish(run.position, status, run_id=run_id, error=error)
        return Outcome(status, run_id, error, time.monotonic() - start)

    def _report(
        self, run: PlannedRun, outcome: Outcome, progress: Progress, remaining: int, store: Store
    ) -> None:
        progress.runs_here += 1
        if outcome.status == "completed":
            progress.completed += 1
        else:
            progress.failed += 1
        energy = ""
        if outcome.run_id is not None:
            from joulecast.energy import summarize

            try:
                e = summarize(store, outcome.run_id).energy_j
                progress.energy_j += e
                energy = f", {e / 1e3:,.2f} kJ"
            except Exception as exc:  # the progress line must not stop the study
                log.debug("no energy for run %s: %s", outcome.run_id, exc)
        note = f": {outcome.error[:200]}" if outcome.error else ""
        self.echo(
            f"[{run.position + 1}] {run.name(self.study)}: {outcome.status} in "
            f"{outcome.duration_s:.1f} s{energy}{note}"
        )
        self.echo(f"  {progress.line(remaining)}")

    def _warm_up(self) -> None:
        seconds = self.study.warmup_s
        if seconds <= 0:
            return
        if not gpu_present():
            self.echo(f"no GPU here: the {seconds:g} s warm-up is skipped")
            return
        self.echo(f"warming the GPU up for {seconds:g} s")
        cmd = [sys.executable, "-m", "joulecast.study.warmup", "--seconds", str(seconds)]
        returncode, _, tail = execute(cmd, self.folder / "logs" / "warmup.log", seconds + 120)
        if returncode != 0:
            self.echo(f"warm-up failed, going on without it: {_last_lines(tail, 2)}")


def _task_results(job: Any, tasks: int, key: str) -> list[tuple[int, bool, str]]:
    """Each task's :func:`execute` result; a task that failed itself (scheduler, node) as exit
    status 1 with the reason.

    Every task is watched, not each in turn: a node that refuses is seen at once, not after
    node 0's task, which waits for it until the study's timeout.

    Raises:
        InputError: A task's node refused the run's GPU settings (:class:`GpuRefused`): the
            study stops there, as when a setting is refused to the local executor.
    """
    pending = dict(enumerate([job] if tasks == 1 else [job.task(k) for k in range(tasks)]))
    out: dict[int, tuple[int, bool, str]] = {}
    while True:
        for k, task in list(pending.items()):
            if not task.done():
                continue
            del pending[k]
            try:
                result = task.result()
            except Exception as exc:  # the job itself failed (scheduler, node)
                result = (1, False, f"job {job.job_id} failed: {exc}")
            if isinstance(result, GpuRefused):
                raise InputError(
                    f"run {key} refused on {result.host}, back in the plan; study stopped: "
                    f"{result.message}"
                )
            out[k] = result
        if not pending:
            return [out[k] for k in range(tasks)]
        time.sleep(POLL_S)


def _missing_nodes(folder: Path, uid: str, nodes: int) -> list[int]:
    """The node ranks of job ``uid`` below ``nodes`` without a run in ``folder``'s shards."""
    from joulecast.jobs import shard_files

    found = set()
    for path in shard_files([folder]):
        with Store(path) as shard:
            found |= {
                str(tags.get("job_node_rank"))
                for tags in shard.runs()["tags"]
                if tags.get("job") == uid
            }
    return [k for k in range(nodes) if str(k) not in found]


class Stopped(KeyboardInterrupt):
    """The runner was asked to stop by a signal."""


def _stop(signum: int, _frame: Any) -> None:
    raise Stopped(f"stopped by {signal.Signals(signum).name}")


def _create_time(pid: int) -> float:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return time.time()


def _leader_started_at(pgid: int, started: float) -> bool:
    """True when process ``pgid`` is alive, leads its group and was started at ``started``.

    Anything else (the leader gone, the id reused by another process) is left alone.
    """
    import psutil

    try:
        proc = psutil.Process(pgid)
        return os.getpgid(pgid) == pgid and abs(proc.create_time() - started) < 2.0
    except (ProcessLookupError, PermissionError, psutil.Error):
        return False


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    return "disk is full" in str(exc) or "database or disk is full" in str(exc)
