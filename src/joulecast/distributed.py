"""Where this process stands in a distributed job: its ranks, its node, the job's identity.

A distributed job is one run. Each node has one sampler, the node's local rank 0 (or the
``joulecast measure`` process that wraps the node's ranks); the other ranks mark nothing.
When the job spans several nodes (or a shard folder is named), each node writes its run to a
node shard, ``<folder>/<job>.<node rank>.<node>.db``, under a run ``uid`` derived from the
job's identity; :func:`joulecast.jobs.merge_job_shards` joins the shards into one run.

The launchers' variables are read as they set them: torchrun (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``GROUP_RANK``, ``GROUP_WORLD_SIZE``, ``TORCHELASTIC_RUN_ID``) before SLURM
(``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NTASKS``, ``SLURM_NODEID``, ``SLURM_NNODES``,
``SLURM_JOB_ID``, ``SLURM_STEP_ID``): under ``srun torchrun`` the ranks are torchrun's.
``$JOULECAST_NODE_RANK`` and ``$JOULECAST_NODES`` give the node's rank and the job's nodes
where no launcher does (a simulated node of a study, a launcher of one's own). Without any
of these, a ``torch.distributed`` process group the training already initialized gives the
ranks (``torch.multiprocessing.spawn``: one machine, so local rank = rank).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from joulecast.errors import InputError, warn
from joulecast.inputs import (
    NODE_ENV,
    NODE_RANK_ENV,
    NODES_ENV,
    RUN_UID_ENV,
    SHARD_DIR_ENV,
    whole,
)

if TYPE_CHECKING:
    from joulecast.store import Store

log = logging.getLogger(__name__)

__all__ = [
    "Job",
    "current_job",
    "node_device",
    "node_gpus",
    "launched_job",
    "next_attempt",
    "node_store",
    "shard_folder",
]

# Characters kept from a job id or node name in a shard's file name.
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# torchrun's run id when none is given (--rdzv-id): shared by every job, so no identity.
_NO_ID = "none"
_MAX_RANK = 1 << 24
#: Between a job's identity and its attempt's number (``exp@2``).
ATTEMPT_MARK = "@"
#: The longest job identity taken.
MAX_UID_CHARS = 200
# The longest part of a shard's file name taken from the job or the node (a name stays
# under the file systems' 255 bytes); a longer one is cut and a digest of it added.
_NAME_PART = 80


@dataclass(frozen=True)
class Job:
    """This process's place in a job (a single process is a job of one).

    Attributes:
        rank: global rank.
        local_rank: rank on this node; 0 samples the node.
        world_size: processes in the job.
        node_rank: this node's index in the job.
        nodes: nodes in the job (1 when the launcher does not say).
        uid: the job's identity shared by its nodes, or None when there is none.
        node: this node's name (``$JOULECAST_NODE``, else the host name).
        launcher: ``"torchrun"`` (torchrun's variables, or DeepSpeed's and the like),
            ``"slurm"``, ``"torch.distributed"`` (an initialized process group alone) or
            ``"none"``.
        uid_given: the identity was given (``uid``, ``$JOULECAST_RUN_UID``), not a launcher's.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    node_rank: int = 0
    nodes: int = 1
    uid: str | None = None
    node: str = ""
    launcher: str = "none"
    uid_given: bool = False

    @property
    def distributed(self) -> bool:
        """True when the job has more than one process."""
        return self.world_size > 1

    @property
    def samples_node(self) -> bool:
        """True for the process that samples this node (its local rank 0)."""
        return self.local_rank == 0

    @property
    def leader(self) -> bool:
        """True for global rank 0: it marks the job's phases and decides on early stopping."""
        return self.rank == 0

    @property
    def multinode(self) -> bool:
        """True when the job spans more than one node."""
        return self.nodes > 1

    def node_run_uid(self) -> str:
        """The ``uid`` of this node's run in its shard (the job's uid, the node's rank)."""
        if self.uid is None:
            raise InputError("this job has no identity: set JOULECAST_RUN_UID (or --run-uid)")
        return f"{self.uid}/node{self.node_rank}"

    def shard_path(self, folder: str | os.PathLike[str]) -> Path:
        """This node's shard file in ``folder``."""
        uid = _file_part(self.uid or "job", "job")
        node = _file_part(self.node, "node")
        return Path(folder) / f"{uid}.{self.node_rank}.{node}.db"

    def tags(self) -> dict[str, str]:
        """The tags a node's run carries: what the merge needs to join it with the others."""
        tags = {
            "job_node": self.node,
            "job_node_rank": str(self.node_rank),
            "job_nodes": str(self.nodes),
            "job_world_size": str(self.world_size),
            "job_launcher": self.launcher,
        }
        if self.launcher != "none":  # a process that wraps the ranks holds none of them
            tags["job_rank"] = str(self.rank)
        if self.uid is not None:
            tags["job"] = self.uid
        return tags

    def rank_tags(self) -> dict[str, str]:
        """What a rank that joins its node's run (under ``joulecast measure``) adds to its
        tags: its ranks, not the job's identity or node name, which the sampler chose."""
        return {k: v for k, v in self.tags().items() if k not in ("job", "job_node")}


def _file_part(text: str, default: str) -> str:
    """``text`` made safe for a file name: other characters as ``_``, cut at
    :data:`_NAME_PART` characters with a digest of the whole where longer."""
    safe = _SAFE.sub("_", text).strip("._") or default
    if len(safe) <= _NAME_PART:
        return safe
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{safe[:_NAME_PART]}-{digest}"


def _int(env: Mapping[str, str], *names: str) -> int | None:
    """The first of ``names`` set in ``env`` as a plain whole number (ASCII digits)."""
    for name in names:
        text = env.get(name, "").strip()
        if text:
            return whole(text, name, hi=_MAX_RANK)
    return None


def _process_group() -> tuple[int, int] | None:
    """(rank, world size) of the training's initialized ``torch.distributed`` process group
    of two or more processes, when nothing in the environment says."""
    dist = getattr(sys.modules.get("torch"), "distributed", None)
    try:
        if dist is None or not dist.is_available() or not dist.is_initialized():
            return None
        rank, world = int(dist.get_rank()), int(dist.get_world_size())
    except Exception:  # a process group in an odd state: a process of its own
        return None
    return (rank, world) if world > 1 else None


def _slurm_nodes(env: Mapping[str, str]) -> int | None:
    return _int(env, "SLURM_STEP_NUM_NODES", "SLURM_NNODES", "SLURM_JOB_NUM_NODES")


def current_job(
    env: Mapping[str, str] | None = None, *, uid: str | None = None, node: str | None = None
) -> Job:
    """This process's :class:`Job`, from the launchers' variables in ``env`` (default: ours).

    ``uid`` (else ``$JOULECAST_RUN_UID``, else ``SLURM_JOB_ID.SLURM_STEP_ID``, else
    ``TORCHELASTIC_RUN_ID`` unless it is torchrun's default ``none``) names the job; a
    restarted torchrun attempt (``TORCHELASTIC_RESTART_COUNT``) or requeued SLURM job
    (``SLURM_RESTART_COUNT``) is a job of its own.

    Raises:
        InputError: a launcher variable is not a whole number.
    """
    env = os.environ if env is None else env
    node_name = node or env.get(NODE_ENV) or socket.gethostname()
    torchrun = "LOCAL_RANK" in env and "RANK" in env
    slurm = "SLURM_PROCID" in env or "SLURM_JOB_ID" in env
    if torchrun:
        launcher = "torchrun"
        rank = _int(env, "RANK") or 0
        local_rank = _int(env, "LOCAL_RANK") or 0
        world = _int(env, "WORLD_SIZE") or 1
        # torchrun says GROUP_*, DeepSpeed's launcher CROSS_*; else the processes per node
        # (LOCAL_WORLD_SIZE, DeepSpeed's LOCAL_SIZE) tell the node, else SLURM.
        per_node = _int(env, "LOCAL_WORLD_SIZE", "LOCAL_SIZE")
        node_rank = _int(env, "GROUP_RANK", "CROSS_RANK")
        nodes = _int(env, "GROUP_WORLD_SIZE", "CROSS_SIZE")
        if node_rank is None and per_node:
            node_rank = rank // per_node
        if nodes is None and per_node:
            nodes = -(-world // per_node)
        if node_rank is None:
            node_rank = (_int(env, "SLURM_NODEID") if slurm else None) or 0
        if nodes is None:
            nodes = (_slurm_nodes(env) if slurm else None) or 1
    elif slurm:
        launcher = "slurm"
        rank = _int(env, "SLURM_PROCID") or 0
        local_rank = _int(env, "SLURM_LOCALID") or 0
        world = _int(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS") or 1
        node_rank = _int(env, "SLURM_NODEID") or 0
        nodes = _slurm_nodes(env) or 1
    else:
        launcher, rank, local_rank, world, node_rank, nodes = "none", 0, 0, 1, 0, 1
        group = _process_group()
        if group is not None:  # torch.multiprocessing.spawn and the like: one machine
            launcher, (rank, world) = "torch.distributed", group
            local_rank = rank
    # Where no launcher tells the node (a simulated node, a launcher of one's own), these do.
    told_rank, told_nodes = _int(env, NODE_RANK_ENV), _int(env, NODES_ENV)
    if told_rank is not None and told_nodes is not None and told_rank >= told_nodes:
        raise InputError(
            f"{NODE_RANK_ENV}={told_rank} with {NODES_ENV}={told_nodes}: expected a node rank"
            " below the node count"
        )
    node_rank = told_rank if told_rank is not None else node_rank
    nodes = told_nodes if told_nodes is not None else nodes
    if uid is not None and not uid.strip():
        raise InputError("run uid: expected text, got an empty one")
    job_uid = uid or env.get(RUN_UID_ENV) or None
    given = job_uid is not None
    if job_uid is None and env.get("SLURM_JOB_ID"):
        step = env.get("SLURM_STEP_ID")
        job_uid = f"slurm-{env['SLURM_JOB_ID']}" + (f".{step}" if step else "")
    if job_uid is not None and not given:
        requeued = env.get("SLURM_RESTART_COUNT", "0")
        job_uid += f".r{requeued}" if requeued not in ("", "0") else ""
    if job_uid is None and torchrun:
        elastic = env.get("TORCHELASTIC_RUN_ID", _NO_ID)
        if elastic and elastic != _NO_ID:
            restart = env.get("TORCHELASTIC_RESTART_COUNT", "0")
            job_uid = f"torchrun-{elastic}" + (f".r{restart}" if restart not in ("", "0") else "")
    if given and job_uid is not None and ATTEMPT_MARK in job_uid:
        raise InputError(
            f"run uid {job_uid[:40]!r}: {ATTEMPT_MARK!r} is kept for a job's attempts"
            f" (<uid>{ATTEMPT_MARK}2, ...)"
        )
    if job_uid is not None and not (job_uid.isprintable() and len(job_uid) <= MAX_UID_CHARS):
        raise InputError(
            f"run uid {job_uid[:40]!r}: expected printable text of at most {MAX_UID_CHARS}"
            " characters"
        )
    if rank >= world > 1:
        raise InputError(f"rank {rank} of a job of {world} processes: expected a rank below it")
    return Job(
        rank=rank,
        local_rank=local_rank,
        world_size=max(world, rank + 1),
        node_rank=node_rank,
        nodes=max(nodes, node_rank + 1),
        uid=job_uid,
        node=node_name,
        launcher=launcher,
        uid_given=given,
    )


def launched_job(job: Job, argv: Sequence[str]) -> Job:
    """``job`` of a process that wraps ``argv`` (``joulecast measure -- torchrun ...``), with the
    node's rank and the job's nodes that torchrun's ``--node-rank`` and ``--nnodes`` give,
    where neither the environment nor ``$JOULECAST_NODE_RANK`` did. Only torchrun's own
    options are read (those before the training script)."""
    start = _torchrun_at(argv)
    if job.launcher != "none" or NODE_RANK_ENV in os.environ or start is None:
        return job
    options: dict[str, str] = {}
    args = list(argv[start:])
    i = 0
    while i < len(args) and args[i].startswith("-"):  # the first positional is the script
        name, eq, value = args[i].partition("=")
        takes_value = not eq and name not in _TORCHRUN_FLAGS
        if name.replace("_", "-") in ("--nnodes", "--node-rank"):
            options[name.replace("_", "-")] = value if eq else (args[i + 1 : i + 2] or [""])[0]
        i += 2 if takes_value else 1
    low, _, high = options.get("--nnodes", "").partition(":")
    rank_text = options.get("--node-rank", "")
    if high and high != low:
        warn(
            f"torchrun --nnodes={low}:{high} is elastic: set {NODE_RANK_ENV} and {NODES_ENV} to"
            " name this node's run"
        )
        return job
    if not (low.isascii() and low.isdigit()):
        return job
    nodes = int(low)
    node_rank = int(rank_text) if rank_text.isascii() and rank_text.isdigit() else None
    if node_rank is None:
        if nodes > 1:
            warn(
                f"torchrun assigns this node its rank itself: set {NODE_RANK_ENV} to name"
                " this node's run"
            )
        return replace(job, nodes=max(nodes, 1))
    return replace(job, node_rank=node_rank, nodes=max(nodes, node_rank + 1, 1))


# torchrun's options that take no value.
_TORCHRUN_FLAGS = frozenset(
    {"--standalone", "--no-python", "--no_python", "--run-path", "--run_path", "-m", "--module"}
)


def _torchrun_at(argv: Sequence[str]) -> int | None:
    """Where torchrun's own options begin in ``argv`` (``torchrun``, ``uv run torchrun``,
    ``python [-u ...] -m torch.distributed.run``); None where it starts no torchrun."""
    head = list(argv[:8])
    for i, arg in enumerate(head):
        if os.path.basename(arg) == "torchrun":
            return i + 1
        if arg == "-m" and i + 1 < len(head):
            module = head[i + 1]
            return (
                i + 2 if module in ("torch.distributed.run", "torch.distributed.launch") else None
            )
    return None


def shard_folder(
    store_path: str | os.PathLike[str], folder: str | os.PathLike[str] | None = None
) -> Path:
    """Where node shards go: ``folder``, else ``$JOULECAST_SHARD_DIR``, else ``<store>.shards``
    beside the store (what ``joulecast collect`` reads by default)."""
    chosen = folder or os.environ.get(SHARD_DIR_ENV)
    if chosen:
        return Path(chosen)
    path = Path(store_path)
    return path.with_name(path.stem + ".shards")


def node_store(
    job: Job, store_path: str | os.PathLike[str], folder: str | os.PathLike[str] | None = None
) -> tuple[Path, str | None]:
    """The store file this node's sampler writes, and its run's uid (None: a random one).

    A job over several nodes, or one whose identity or shard ``folder`` is named (``--run-uid``
    or ``$JOULECAST_RUN_UID``; here or ``$JOULECAST_SHARD_DIR``), writes to its node shard
    (:meth:`Job.shard_path`, the folder made if missing) under :meth:`Job.node_run_uid`;
    anything else to ``store_path``. A multi-node job without an identity cannot be joined:
    each node's run stays its own, with a warning.
    """
    named = folder is not None or bool(os.environ.get(SHARD_DIR_ENV)) or job.uid_given
    if not (job.multinode or (named and (job.distributed or job.uid_given))):
        return Path(store_path), None
    if job.uid is None:
        warn(
            f"a job over {job.nodes} nodes has no identity (set JOULECAST_RUN_UID or --run-uid,"
            f" torchrun --rdzv-id, or run under SLURM): each node's run stays its own, in"
            f" {store_path}"
        )
        return Path(store_path), None
    shards = shard_folder(store_path, folder)
    try:
        shards.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{shards}: cannot make the shard folder ({exc.strerror})") from exc
    return job.shard_path(shards), job.node_run_uid()


def next_attempt(job: Job, store: Store) -> Job:
    """``job``, or its next attempt where its node's run is already in ``store`` (the node's
    shard): a job run again under the same identity (a fixed ``--rdzv-id`` or
    ``JOULECAST_RUN_UID``, a second ``measure()`` block in one script) becomes ``<uid>@2``,
    ``<uid>@3``... Each node looks at its own shard, so the nodes agree where their shards
    have the same history (the merge refuses node runs that do not overlap in time)."""
    if job.uid is None:
        return job
    attempt, candidate = 1, job
    while store.query("SELECT 1 FROM runs WHERE uid = ?", (candidate.node_run_uid(),)):
        attempt += 1
        candidate = replace(job, uid=f"{job.uid}{ATTEMPT_MARK}{attempt}")
    if attempt > 1:
        warn(
            f"job {job.uid} already ran into {store.path}: this is its attempt {attempt},"
            f" job {candidate.uid}"
        )
    return candidate


def node_gpus(job: Job, env: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """The GPUs a node's sampler reads, as ``CUDA_VISIBLE_DEVICES`` and ``CUDA_DEVICE_ORDER``
    values: under SLURM, those of the node's tasks together (``SLURM_STEP_GPUS``, else
    ``SLURM_JOB_GPUS``: SLURM's GPU ids, in PCI bus order as NVML numbers them), since each
    task may see only its own through ``CUDA_VISIBLE_DEVICES``; ``(None, None)`` elsewhere
    (under torchrun the node's ranks see the same GPUs as its sampler)."""
    env = os.environ if env is None else env
    if not job.distributed:
        return None, None
    ids = env.get("SLURM_STEP_GPUS") or env.get("SLURM_JOB_GPUS")
    if not ids:
        return None, None
    entries = [e.strip() for e in ids.split(",")]
    if not all(e.isascii() and e.isdigit() and len(e) < 6 for e in entries):
        log.warning("SLURM's GPU ids %r are not plain indices: sampling the visible GPUs", ids[:80])
        return None, None
    return ",".join(entries), "PCI_BUS_ID"


def node_device(device: str, node: str) -> str:
    """A node's device named for the whole job: ``gpu:0`` on ``n1`` is ``gpu:n1:0``, ``ram``
    is ``ram:n1``."""
    kind, sep, rest = device.partition(":")
    return f"{kind}:{node}:{rest}" if sep else f"{device}:{node}"
