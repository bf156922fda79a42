"""Merge store shards: the store files that the jobs of a study write, one each, into one store.

Every run of a shard whose ``uid`` the target does not hold yet is copied with its samples,
phases and gaps, in one write transaction per run: the shard is attached read-only to the
target's connection and rows are copied with ``INSERT ... SELECT``, the run getting a new id.
Merging is idempotent: a run already in the target (same ``uid``) is skipped, so collecting
the same shards again adds nothing.

A run still ``running`` in a shard is copied only once its owner is gone. The shard is first
opened as a :class:`~joulecast.store.Store`, which migrates an older schema and marks
interrupted the runs whose process no longer exists (on another host: whose writer has been
silent for :data:`~joulecast.store.STALE_HEARTBEAT_S`); the runs left ``running`` after that
are skipped, counted in :attr:`MergeResult.running`, and picked up by a later merge.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from joulecast.errors import InputError, StoreError
from joulecast.records import RunStatus
from joulecast.store import Store, check_store_file, copy_attached_run

log = logging.getLogger(__name__)

_ALIAS = "joulecast_shard"


@dataclass(frozen=True)
class MergeResult:
    """What a merge did.

    Attributes:
        merged: ``(shard path, run id in the shard, new run id in the target)`` per copied run.
        skipped: runs not copied because the target already holds them (same ``uid``).
        shards: shard files read.
        running: runs not copied because they are still running in their shard.
    """

    merged: list[tuple[str, int, int]] = field(default_factory=list)
    skipped: int = 0
    shards: int = 0
    running: int = 0


def shard_paths(folder: str | os.PathLike[str]) -> list[Path]:
    """The store files (``*.db``) in ``folder``, sorted by name; ``-wal``/``-shm`` files are not.

    Raises:
        InputError: ``folder`` is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder of store shards")
    return sorted(p for p in root.glob("*.db") if p.is_file())


def merge_shards(target: Store, shards: Iterable[str | os.PathLike[str]]) -> MergeResult:
    """Merge every shard into ``target`` (see :func:`merge_shard`); the results summed.

    All shards are checked before any is merged, so a bad one stops the merge with nothing
    written. A shard that is the target file itself is passed over with a warning, so a
    folder holding both the shards and the target can be collected.

    Raises:
        InputError: a shard does not exist.
        StoreError: a shard is not a joulecast store, has a newer schema, or cannot be read.
    """
    paths: list[Path] = []
    for shard in shards:
        path = Path(shard)
        if _same_file(path, target.path):
            log.warning("%s: is the target store itself; not merged into itself", path)
            continue
        check_store_file(path)
        paths.append(path)
    merged: list[tuple[str, int, int]] = []
    skipped = running = 0
    for path in paths:
        result = merge_shard(target, path)
        merged.extend(result.merged)
        skipped += result.skipped
        running += result.running
    return MergeResult(merged=merged, skipped=skipped, shards=len(paths), running=running)


def merge_shard(target: Store, shard: str | os.PathLike[str]) -> MergeResult:
    """Copy into ``target`` the runs of ``shard`` that it does not hold yet.

    Each run is copied with its samples, phases and gaps in one transaction, under a new id;
    tags, status, quality and every other column come across as they are. Runs already in the
    target (same ``uid``) are skipped, and so are runs whose process is still running.

    Raises:
        InputError: ``shard`` does not exist or is the target file itself.
        StoreError: ``shard`` is not a joulecast store, has a newer schema version than this
            joulecast, or cannot be read; nothing of it is written then.
    """
    path = Path(shard)
    if _same_file(path, target.path):
        raise InputError(f"{path}: is the target store itself; cannot merge a store into itself")
    if not check_store_file(path):
        log.warning("%s: an empty database, not yet a store; nothing to merge", path)
        return MergeResult(shards=1)
    # Opening it as a store migrates an older schema and marks interrupted the runs whose
    # process is gone; it stays open while it is read so its WAL is readable.
    with Store(path):
        result = _copy_runs(target, path)
    log.info(
        "%s: merged %d run(s) into %s; %d already there, %d still running",
        path,
        len(result.merged),
        target.path,
        result.skipped,
        result.running,
    )
    return result


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _copy_runs(target: Store, path: Path) -> MergeResult:
    merged: list[tuple[str, int, int]] = []
    skipped = running = 0
    with target.attached(path, _ALIAS):
        ids = [r["id"] for r in target.query(f"SELECT id FROM {_ALIAS}.runs ORDER BY id")]
        for old_id in ids:
            try:
                with target.transaction() as w:
                    outcome = _copy_run(w, int(old_id))
            except sqlite3.Error as exc:
                raise StoreError(
                    f"{path}: copying run {old_id} into {target.path} failed ({exc})"
                ) from exc
            if outcome == "running":
                running += 1
                log.warning(
                    "%s: run %d is still running (its process is alive, or on another "
                    "host wrote to the shard recently); not merged now",
                    path,
                    old_id,
                )
            elif outcome == "present":
                skipped += 1
            elif isinstance(outcome, int):
                merged.append((str(path), int(old_id), outcome))
    return MergeResult(merged=merged, skipped=skipped, shards=1, running=running)


def _copy_run(w: sqlite3.Connection, old_id: int) -> int | Literal["present", "running", "gone"]:
    """Copy one run inside the caller's transaction: its new id, or why it was not copied."""
    row = w.execute(f"SELECT uid, status FROM {_ALIAS}.runs WHERE id = ?", (old_id,)).fetchone()
    if row is None:  # deleted from the shard since it was listed
        return "gone"
    uid, status = row
    if w.execute("SELECT 1 FROM main.runs WHERE uid = ?", (uid,)).fetchone() is not None:
        return "present"
    if status == RunStatus.RUNNING.value:
        return "running"
    return copy_attached_run(w, _ALIAS, old_id)
