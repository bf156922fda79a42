"""Merge a distributed job's node shards into one run: what ``joulecast collect`` does.

Each node of a multi-node job writes its own run to a node shard
(:func:`joulecast.distributed.node_store`), tagged with the job's identity (``job``), the
node's name and rank, and the rank it holds. :func:`merge_jobs` gathers the node runs of
every job found in the shards and writes each job as one run of the target store, whose
``uid`` is the job's identity:

- every node's devices, named for the job (``gpu:<node>:<index>``, ``ram:<node>``), so no
  device is counted twice and the energy is summed across nodes;
- the phases (epochs, steps) of the node that holds global rank 0;
- one time base: each node's times are shifted by its start's distance from the job's first
  start (the nodes' wall clocks, which a cluster keeps in step);
- the worst status of its nodes (failed, then interrupted, then completed).

A job is merged once all its nodes' runs are found and none is still running (its process
alive, or on another host writing within :data:`joulecast.store.STALE_HEARTBEAT_S`); until
then it is reported and left for a later merge, as the study shard merge does. Merging is
idempotent: a job already merged from the same node runs, in the same state, is left as it
is; one whose shards changed (a node that ended since, or a shard found later with
``partial``) is written again in place, in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sqlite3
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import joulecast.ledger as ledger
from joulecast.distributed import node_device
from joulecast.errors import InputError, StoreError
from joulecast.records import RunStatus
from joulecast.store import Store, check_store_file, copy_attached_run, delete_run_rows

log = logging.getLogger(__name__)

__all__ = ["JobMerge", "merge_jobs", "shard_files"]

Outcome = Literal["merged", "updated", "unchanged", "running", "incomplete", "conflict", "failed"]
_STAGE, _NODE = "joulecast_staged", "joulecast_node"
# How far apart the nodes' clocks may be: the runs of one job overlap in time within it.
_SKEW_S = 1.0
# The tags that describe one node's run, not the job's.
_NODE_TAGS = ("job_node", "job_node_rank", "job_rank")
_WORST = (RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.COMPLETED)


@dataclass(frozen=True)
class JobMerge:
    """What merging one job did.

    Attributes:
        job: the job's identity (the merged run's ``uid``).
        outcome: ``merged`` (new), ``updated`` (written again: its shards changed),
            ``unchanged``, ``running`` (a node still runs: not merged now),
            ``incomplete`` (nodes' shards missing: not merged without ``partial``) or
            ``conflict`` (a node rank found twice, more nodes than the job had, node runs
            that do not overlap in time, or another run under this identity in the target:
            not merged) or ``failed`` (a shard could not be read through: not merged).
        run_id: the merged run in the target (None when not merged).
        nodes: the node runs found.
        nodes_expected: the nodes the job had.
        devices: the merged run's devices.
        status: the merged run's status (or the job's, as far as found).
    """

    job: str
    outcome: Outcome
    run_id: int | None
    nodes: int
    nodes_expected: int
    devices: list[str] = field(default_factory=list)
    status: str = ""


@dataclass(frozen=True)
class _NodeRun:
    path: Path
    run_id: int
    row: dict[str, Any]
    rows: int
    phases: int
    energy_j: float

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.row["tags"])

    def tag_int(self, key: str, default: int) -> int:
        text = str(self.tags.get(key, ""))
        return int(text) if text.isascii() and text.isdigit() and len(text) < 9 else default


def shard_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The store files named: files as they are, folders' ``*.db`` files by name.

    Raises:
        InputError: a path does not exist.
    """
    out: dict[Path, Path] = {}  # each file once, however it is named
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.db") if p.is_file())
        elif path.is_file():
            found = [path]
        else:
            raise InputError(f"{path}: no such shard file or folder")
        for file in found:
            out.setdefault(file.resolve(), file)
    return list(out.values())


def merge_jobs(
    target: Store, shards: Iterable[str | os.PathLike[str]], *, partial: bool = False
) -> list[JobMerge]:
    """Merge every job found in ``shards`` (files or folders) into ``target``, one run each.

    ``partial`` merges a job even when some of its nodes' shards are missing (never while a
    node runs). A shard that is the target itself, or a file that is no joulecast store, is
    passed over with a warning; runs merged from shards before are no nodes.

    Raises:
        InputError: a shard does not exist.
    """
    found: dict[str, list[_NodeRun]] = {}
    for path in shard_files(shards):
        if _same_file(path, target.path):
            log.warning("%s: is the target store itself; not merged into itself", path)
            continue
        try:  # looked at read-only first: nothing is written into a file that is no store
            if not check_store_file(path):
                continue
            runs = _node_runs(path)
        except (StoreError, sqlite3.Error) as exc:
            log.warning("%s: cannot be read (%s); passed over", path, exc)
            continue
        for node in runs:
            found.setdefault(str(node.tags["job"]), []).append(node)
    return [_merge_or_fail(target, job, nodes, partial) for job, nodes in sorted(found.items())]


def _merge_or_fail(target: Store, job: str, nodes: list[_NodeRun], partial: bool) -> JobMerge:
    """:func:`_merge_job`, or ``failed`` where a shard cannot be read through (a damaged
    page): the other jobs are merged all the same, and nothing of this one is written."""
    try:
        return _merge_job(target, job, nodes, partial)
    except (StoreError, sqlite3.Error) as exc:
        log.warning("job %s: not merged: %s", job, exc)
        expected = max(n.tag_int("job_nodes", 1) for n in nodes)
        return JobMerge(job, "failed", None, len(nodes), expected, status="failed")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _node_runs(path: Path) -> list[_NodeRun]:
    """The runs of ``path`` that belong to a job, with what the merge needs of them."""
    # Opened as a store: an older schema is migrated, the runs of dead processes marked
    # (where the file can be written).
    with Store(path, read_only=True) as shard:
        out: list[_NodeRun] = []
        for row in shard.query("SELECT id FROM runs ORDER BY id"):
            run = shard.run(int(row["id"]))
            # A job's merged run (it has the shards' signature) is no node of it.
            if not run["tags"].get("job") or "job_shards" in run["tags"]:
                continue
            states = shard.device_energy(int(row["id"]))
            phases = shard.query(
                "SELECT COUNT(*) AS n FROM phases WHERE run_id = ?", (int(row["id"]),)
            )
            out.append(
                _NodeRun(
                    path=path,
                    run_id=int(row["id"]),
                    row=run,
                    rows=sum(s.rows for s in states.values()),
                    energy_j=sum(s.energy_j for s in states.values() if not math.isnan(s.energy_j)),
                    phases=int(phases[0]["n"]),
                )
            )
    return out


def _names_as_tagged(nodes: list[_NodeRun]) -> list[str]:
    return [str(n.tags.get("job_node") or n.row["host"] or "node") for n in nodes]


def _names(nodes: list[_NodeRun]) -> list[str]:
    """Each node run's name in the job: its node's, made unique by its rank where shared."""
    names = _names_as_tagged(nodes)
    if len(set(names)) == len(names):
        return names
    ranked = [
        f"{name}.{n.tag_int('job_node_rank', i)}"
        for i, (name, n) in enumerate(zip(names, nodes, strict=True))
    ]
    if len(set(ranked)) == len(ranked):
        return ranked
    return [f"{name}.{i}" for i, name in enumerate(names)]


def _leader(nodes: list[_NodeRun]) -> _NodeRun:
    """The node run holding global rank 0 (else the lowest node rank)."""
    for node in nodes:
        if node.tags.get("job_rank") == "0":
            return node
    return min(nodes, key=lambda n: n.tag_int("job_node_rank", 1 << 30))


def _conflict(nodes: list[_NodeRun], expected: int) -> str | None:
    """Why ``nodes`` cannot be one job's node runs; None when they can."""
    ranks: dict[int, Path] = {}
    for node in nodes:
        rank = node.tag_int("job_node_rank", -1)
        if rank in ranks:
            return (
                f"node rank {rank} is in both {ranks[rank]} and {node.path} (two copies of the"
                " job, or two jobs under one identity: collect each into a store of its own)"
            )
        ranks[rank] = node.path
    if len(nodes) > expected:
        return f"{len(nodes)} node runs for a job of {expected} nodes"
    starts = [float(n.row["started_at"]) for n in nodes]
    spans = [(t, float(n.row["duration_s"] or 0.0)) for t, n in zip(starts, nodes, strict=True)]
    if not _overlap(spans):
        return "its node runs do not overlap in time (a node's run of another attempt?)"
    return None


def _span(nodes: list[_NodeRun]) -> tuple[float, float]:
    """(start, duration) of the node runs together."""
    start = min(float(n.row["started_at"]) for n in nodes)
    end = max(float(n.row["started_at"]) + float(n.row["duration_s"] or 0.0) for n in nodes)
    return start, end - start


def _overlap(spans: list[tuple[float, float]]) -> bool:
    """Whether every (start, duration) shares a moment with every other, within _SKEW_S."""
    return max(t for t, _ in spans) <= min(t + d for t, d in spans) + _SKEW_S


def _signature(nodes: list[_NodeRun]) -> str:
    state = sorted(
        (
            str(n.row["uid"]),
            str(n.row["status"]),
            n.rows,
            n.phases,
            n.row["duration_s"],
            n.row["started_at"],
            round(n.energy_j, 6),
        )
        for n in nodes
    )
    return hashlib.sha256(json.dumps(state, default=str).encode()).hexdigest()[:16]


def _merge_job(target: Store, job: str, nodes: list[_NodeRun], partial: bool) -> JobMerge:
    nodes = sorted(nodes, key=lambda n: (n.tag_int("job_node_rank", 0), str(n.row["uid"])))
    expected = max(n.tag_int("job_nodes", 1) for n in nodes)
    statuses = [RunStatus(n.row["status"]) for n in nodes]
    if RunStatus.RUNNING in statuses:
        log.warning(
            "job %s: %d of %d node run(s) still running; not merged now",
            job,
            statuses.count(RunStatus.RUNNING),
            len(nodes),
        )
        return JobMerge(job, "running", None, len(nodes), expected, status="running")
    if len(nodes) < expected and not partial:
        log.warning(
            "job %s: the shards of %d of %d nodes found; not merged (merge what is there with"
            " partial / --partial)",
            job,
            len(nodes),
            expected,
        )
        return JobMerge(job, "incomplete", None, len(nodes), expected)
    clash = _conflict(nodes, expected)
    if clash is not None:
        log.warning("job %s: %s: not merged", job, clash)
        return JobMerge(job, "conflict", None, len(nodes), expected, status="conflict")
    status = next(s for s in _WORST if s in statuses)
    signature = _signature(nodes)
    held = target.query("SELECT id, tags, started_at, duration_s FROM runs WHERE uid = ?", (job,))
    if held and not _overlap(
        [(float(held[0]["started_at"]), float(held[0]["duration_s"] or 0.0)), _span(nodes)]
    ):
        log.warning(
            "job %s: run %d in %s is another run under this identity (another time): not"
            " merged (collect into another store)",
            job,
            int(held[0]["id"]),
            target.path,
        )
        return JobMerge(job, "conflict", None, len(nodes), expected, status="conflict")
    if held and json.loads(held[0]["tags"] or "{}").get("job_shards") == signature:
        run_id = int(held[0]["id"])
        devices = sorted(target.device_energy(run_id))
        return JobMerge(job, "unchanged", run_id, len(nodes), expected, devices, status.value)
    names = _names(nodes)
    start = min(float(n.row["started_at"]) for n in nodes)
    offsets = [float(n.row["started_at"]) - start for n in nodes]
    leader = _leader(nodes)
    ends = [off + float(n.row["duration_s"] or 0.0) for off, n in zip(offsets, nodes, strict=True)]
    tags = {k: v for k, v in leader.tags.items() if k not in _NODE_TAGS}
    tags.update(
        job=job,
        job_nodes=str(expected),
        job_nodes_found=str(len(nodes)),
        job_node_names=",".join(names),
        job_shards=signature,
    )
    hardware = dict(leader.row["hardware"])
    hardware["gpu_models"] = sorted(
        {str(m) for n in nodes for m in (n.row["hardware"].get("gpu_models") or [])}
    )
    hardware["nodes"] = {
        name: {k: n.row["hardware"].get(k) for k in ("hostname", "cpu_model", "gpu_models")}
        for name, n in zip(names, nodes, strict=True)
    }
    origins = {str(n.row["origin"]) for n in nodes}
    # Built in a staging file next to the target, node by node (a file can be attached only
    # outside a transaction, and only a few at once), then copied into the target in one
    # transaction: a reader never sees half a job, whatever the number of nodes.
    with tempfile.TemporaryDirectory(dir=target.path.parent, prefix=".joulecast-merge-") as tmp:
        with Store(Path(tmp) / "job.db") as stage:
            staged = stage.create_run(
                name=leader.row["name"],
                tags=tags,
                hardware=hardware,
                origin="replay" if "replay" in origins else str(leader.row["origin"]),
                started_at=start,
                interval_s=leader.row["interval_s"],
                status=status,
                uid=job,
            )
            for node, name, offset in zip(nodes, names, offsets, strict=True):
                # A job merged without all its nodes has only their energy: no J/sample.
                whole = len(nodes) >= expected
                _stage_node(stage, staged, node, name, offset, phases=node is leader, samples=whole)
            with stage.transaction() as w:
                w.execute(
                    "UPDATE runs SET duration_s = ?, ended_at = started_at + ?, pid = NULL"
                    " WHERE id = ?",
                    (max(ends), max(ends), staged),
                )
        with target.attached(Path(tmp) / "job.db", _STAGE), target.transaction() as w:
            for old in w.execute("SELECT id FROM main.runs WHERE uid = ?", (job,)).fetchall():
                delete_run_rows(w, int(old[0]))
            run_id = copy_attached_run(w, _STAGE, staged)
    outcome: Outcome = "updated" if held else "merged"
    devices = sorted(target.device_energy(run_id))
    log.info(
        "job %s: %s as run %d (%d node(s), %d device(s))",
        job,
        outcome,
        run_id,
        len(nodes),
        len(devices),
    )
    return JobMerge(job, outcome, run_id, len(nodes), expected, devices, status.value)


def _stage_node(
    stage: Store,
    staged: int,
    node: _NodeRun,
    name: str,
    offset: float,
    *,
    phases: bool,
    samples: bool,
) -> None:
    """Copy one node run into the staged run: samples, aggregates and gaps on the job's time
    base with its devices named for the job; its phases too for the leader's (with the
    job's samples processed unless ``samples`` is False)."""
    # Opened as a store while attached, so that its WAL is readable.
    with Store(node.path) as shard, stage.attached(node.path, _NODE):
        devices = {d: node_device(d, name) for d in shard.device_energy(node.run_id)}
        gap_devices = {
            str(r["device"])
            for r in shard.query(
                "SELECT DISTINCT device FROM gaps WHERE run_id = ?", (node.run_id,)
            )
        }
        with stage.transaction() as w:
            ledger.copy_shifted(w, _NODE, node.run_id, staged, offset_s=offset, devices=devices)
            for device in sorted(gap_devices):
                w.execute(
                    f"INSERT INTO main.gaps (run_id, device, start_s, end_s, reason)"
                    f" SELECT ?, ?, start_s + ?, end_s + ?, reason FROM {_NODE}.gaps"
                    " WHERE run_id = ? AND device = ? ORDER BY rowid",
                    (staged, node_device(device, name), offset, offset, node.run_id, device),
                )
            if phases:
                w.execute(
                    "INSERT INTO main.phases (run_id, kind, idx, start_s, end_s, samples, metrics)"
                    # A node's run keeps the job's samples in its metrics (see _common.Session).
                    " SELECT ?, kind, idx, start_s + ?, end_s + ?, CASE WHEN ? THEN"
                    " COALESCE(samples, json_extract(metrics, '$.job_samples')) END, metrics"
                    f" FROM {_NODE}.phases WHERE run_id = ?",
                    (staged, offset, offset, int(samples), node.run_id),
                )
