"""The run store: one SQLite file holding runs, their samples, phases and gaps.

WAL journal, a busy timeout and ``BEGIN IMMEDIATE`` writes let many processes share a file;
each process writes through one connection guarded by a lock. ``PRAGMA user_version`` holds
the version of the core schema (runs, samples, phases, gaps); older files are migrated
forward on open.

Other parts of joulecast keep their own tables in the same file through the public plumbing:
:meth:`Store.transaction`, :meth:`Store.query` and :meth:`Store.attached`. Each such component
owns its tables and their migrations, versioned apart from the core's in table
``schema_versions``: it calls :meth:`Store.ensure_schema` with its migrations before it uses
them, so a store gets a component's tables only once that component is used.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import psutil

import joulecast.ledger as ledger
from joulecast._version import __version__
from joulecast.errors import InputError, StoreError
from joulecast.inputs import STORE_ENV
from joulecast.processes import Started, stop_left_behind
from joulecast.records import (
    Gap,
    Phase,
    PhaseKind,
    Reading,
    RunStatus,
    check_overlaps,
    fit_phases,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

DEFAULT_STORE = "joulecast.db"
BUSY_TIMEOUT_S = 60.0
# A run on another host whose writer has been silent this long is taken as dead.
STALE_HEARTBEAT_S = 600.0

Migration: TypeAlias = str | Callable[[sqlite3.Connection], None]
"""One step of a schema: SQL statements (separated by ``;``, triggers allowed), or a function
that runs on the connection, inside the migration's transaction (to fill a new table, say)."""


# The schema version that added the energy aggregates.
_LEDGER_VERSION = 4


def _add_ledger(conn: sqlite3.Connection) -> None:
    """Version 4: the energy aggregates (joulecast.ledger), computed for the runs there.

    Raises:
        StoreError: a run is still being recorded, necessarily by an older joulecast, which
            could not write into the new ``samples`` columns.
    """
    keys = ("id", "host", "pid", "pid_started", "heartbeat_at")
    running = [
        dict(zip(keys, row, strict=True))
        for row in conn.execute(
            f"SELECT {', '.join(keys)} FROM runs WHERE status = ?", (RunStatus.RUNNING.value,)
        )
    ]
    now, host = time.time(), socket.gethostname()
    for row in running:
        if _writer_alive(row, host, now):
            raise StoreError(
                f"run {row['id']} is still being recorded by an older joulecast (process"
                f" {row['pid']} on {row['host']}); open this store with joulecast"
                f" {__version__} once that run has ended"
            )
    for statement in _statements(ledger.SCHEMA):
        conn.execute(statement)
    for (run_id,) in conn.execute("SELECT id FROM runs").fetchall():
        ledger.settle(conn, int(run_id))


# The core schema, one step per version: released steps never change; a change is a new step.
_MIGRATIONS: dict[int, Migration] = {
    1: """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        uid TEXT NOT NULL UNIQUE,
        name TEXT,
        tags TEXT NOT NULL DEFAULT '{}',
        host TEXT,
        pid INTEGER,
        pid_started REAL,
        hardware TEXT NOT NULL DEFAULT '{}',
        origin TEXT NOT NULL DEFAULT 'measure',
        status TEXT NOT NULL,
        exit_code INTEGER,
        signal TEXT,
        started_at REAL NOT NULL,
        ended_at REAL,
        start_mono_s REAL,
        duration_s REAL,
        interval_s REAL,
        heartbeat_at REAL,
        quality TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE samples (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        t_s REAL NOT NULL,
        device TEXT NOT NULL,
        power_w REAL,
        energy_j REAL,
        util_pct REAL,
        mem_used_mib REAL,
        temp_c REAL,
        source TEXT NOT NULL,
        measured INTEGER NOT NULL
    );
    CREATE INDEX samples_by_run ON samples(run_id, t_s);
    CREATE TABLE phases (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        idx INTEGER NOT NULL,
        start_s REAL NOT NULL,
        end_s REAL,
        samples INTEGER,
        metrics TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (run_id, kind, idx)
    );
    CREATE TABLE gaps (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        device TEXT NOT NULL,
        start_s REAL NOT NULL,
        end_s REAL,
        reason TEXT NOT NULL
    );
    """,
    # Version 2 created the study tables; since version 3 the study package owns them
    # (joulecast.study.state). A file made at version 2 keeps them, and the package adopts them.
    2: "",
    # The versions of the components' schemas (see Store.ensure_schema).
    3: """
    CREATE TABLE schema_versions (
        component TEXT PRIMARY KEY,
        version INTEGER NOT NULL
    );
    """,
    _LEDGER_VERSION: _add_ledger,
    # The command a run's process measures (joulecast measure's child), for as long as it may
    # run: a process that finds the run's owner gone stops it (joulecast.processes).
    5: """
    ALTER TABLE runs ADD COLUMN command_pid INTEGER;
    ALTER TABLE runs ADD COLUMN command_started REAL;
    ALTER TABLE runs ADD COLUMN command_pgid INTEGER;
    """,
}
SCHEMA_VERSION = max(_MIGRATIONS)

SAMPLE_COLUMNS = ledger.SAMPLE_COLUMNS
#: Rows per chunk of :meth:`Store.iter_samples`, unless told: a few tens of MB in pandas.
SAMPLE_CHUNK_ROWS = 100_000
# What one indexed read of Store.energy_at costs, in rows read in a scan (measured on a
# 4-device run: ~5 us against ~2.6 us; more devices make a read dearer, as it steps over
# their rows).
_READS_PER_ROW = 2


# File systems on which SQLite's WAL must not be used (its shared memory is per host).
_NETWORK_FS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "lustre",
        "gpfs",
        "beegfs",
        "fuse.beegfs",
        "panfs",
        "ceph",
        "fuse.ceph",
        "glusterfs",
        "fuse.glusterfs",
        "9p",
        "afs",
        "fuse.sshfs",
        "wekafs",
    }
)


def network_file_system(path: str | os.PathLike[str], mounts: str | None = None) -> bool:
    """Whether ``path`` lies on a network file system (NFS, Lustre, GPFS, BeeGFS, CIFS...).

    ``mounts`` is the text of ``/proc/mounts`` (read when None; False where it cannot be).
    """
    if mounts is None:
        try:
            with open("/proc/mounts", encoding="utf-8", errors="replace") as fh:
                mounts = fh.read()
        except OSError:
            return False
    target = os.path.realpath(os.path.abspath(os.fspath(path)))
    best, best_fs = "", ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_fs = point, fields[2].lower()
    return best_fs in _NETWORK_FS or best_fs.startswith("nfs")


# A store of any version has these; the ones added later come with the migration on open.
_CORE_TABLES = frozenset({"runs", "samples", "phases", "gaps"})


def check_store_file(path: str | os.PathLike[str]) -> bool:
    """Raise unless ``path`` is a joulecast store this joulecast can read; False if empty.

    The file is only read here (opened read-only): nothing is written to a bad file, as
    opening it as a :class:`Store` would (its schema).

    Raises:
        InputError: ``path`` is not a file.
        StoreError: ``path`` is not a joulecast store, or has a newer schema.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such store shard")
    try:
        conn = connect_readonly(path)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: not a joulecast store ({exc})") from exc
    with closing(conn):
        return _stored_version(conn, path, "upgrade joulecast to merge it") > 0


def _stored_version(conn: sqlite3.Connection, path: Path, newer: str) -> int:
    """The schema version of the store that ``conn`` reads (the file ``path``); 0 for an
    empty database, not yet a store.

    Raises:
        StoreError: the file is not a joulecast store, or has a newer schema (``newer`` says
            what to do then).
    """
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: not a joulecast store ({exc})") from exc
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema version {version} is newer than this joulecast understands "
            f"({SCHEMA_VERSION}); {newer}"
        )
    if version == 0 and not tables:
        return 0
    missing = sorted(_CORE_TABLES - tables)
    if version == 0 or missing:
        what = f"tables {', '.join(missing)} missing" if missing else "no schema version"
        raise StoreError(f"{path}: not a joulecast store ({what})")
    return version


@dataclass(frozen=True)
class StoreCheck:
    """What :func:`check_store` found in a store file."""

    path: Path
    schema_version: int
    runs: int
    samples: int | None  # None where they cannot be counted
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Nothing is wrong."""
        return not self.problems


def check_store(path: str | os.PathLike[str]) -> StoreCheck:
    """Check the store file at ``path`` through and through; it is only read.

    SQLite's full integrity check (every page, b-tree and record, and each index against
    its table) and its foreign keys, then joulecast's own: each run's energy aggregates
    against its samples (:func:`joulecast.ledger.verify`). It reads the whole file, some
    of it more than once: 5 to 10 s a million samples on a busy 2-core machine.

    Raises:
        InputError: ``path`` is not a file.
        StoreError: the file cannot be read as a store at all (not a database, another
            program's, a newer schema, a damaged schema).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such store file")
    with closing(_reader(path)) as conn:
        version = _stored_version(conn, path, "upgrade joulecast to check it")
        problems = _sqlite_problems(conn)
        ids: list[int] = []
        samples: int | None = 0
        if version:
            try:
                ids = [int(row[0]) for row in conn.execute("SELECT id FROM runs ORDER BY id")]
            except sqlite3.Error as exc:
                problems.append(f"the runs cannot be read ({exc})")
            try:
                samples = int(conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
            except sqlite3.Error:
                samples = None  # (damage that SQLite's check has named)
        for run_id in ids if version >= _LEDGER_VERSION else []:
            try:
                problems += [f"run {run_id}: {p}" for p in ledger.verify(conn, run_id)]
            except sqlite3.Error as exc:
                problems.append(f"run {run_id}: cannot be read ({exc})")
    return StoreCheck(path, version, len(ids), samples, tuple(problems))


def _sqlite_problems(conn: sqlite3.Connection) -> list[str]:
    """What SQLite's full integrity check and its foreign-key check find, a line each."""
    problems: list[str] = []
    try:
        for (found,) in conn.execute("PRAGMA integrity_check(100)"):
            if found != "ok":
                problems += [line for line in found.splitlines() if not line.startswith("***")]
    except sqlite3.Error as exc:
        problems.append(f"SQLite's integrity check stopped: {exc}")
    try:
        problems += [
            f"{n} row(s) of {table} name no row of {parent}"
            for table, parent, n in conn.execute(
                'SELECT "table", parent, COUNT(*) FROM pragma_foreign_key_check GROUP BY 1, 2'
            )
        ]
    except sqlite3.Error as exc:
        problems.append(f"SQLite's foreign-key check stopped: {exc}")
    return problems


def default_store_path() -> Path:
    """The store used when none is named: ``$JOULECAST_STORE`` or ``./joulecast.db``."""
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)


def _process_started(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None


def _writer_alive(row: Mapping[str, Any], host: str, now: float) -> bool:
    """Whether the process recording a run (its row's ``host``, ``pid``, ``pid_started`` and
    ``heartbeat_at``) may still be alive: on this host, that very process exists; on another,
    it wrote within :data:`STALE_HEARTBEAT_S`."""
    if row["host"] == host:
        started = _process_started(row["pid"]) if row["pid"] else None
        return started is not None and (
            row["pid_started"] is None or abs(started - row["pid_started"]) < 1.0
        )
    heartbeat = row["heartbeat_at"]
    return heartbeat is not None and now - heartbeat < STALE_HEARTBEAT_S


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _newest(migrations: Mapping[int, Migration]) -> int:
    """The newest version of ``migrations``; ValueError unless they are numbered 1, 2, ... n."""
    if not migrations or sorted(migrations) != list(range(1, len(migrations) + 1)):
        raise ValueError(f"migrations numbered {sorted(migrations)}: expected 1, 2, ... n")
    return len(migrations)


def _upgrade(
    conn: sqlite3.Connection, migrations: Mapping[int, Migration], found: int, what: str
) -> int:
    """Run on ``conn`` the steps after version ``found``; returns the newest version.

    Raises:
        StoreError: ``found`` is newer than the newest step (``what`` names the schema), or a
            step refuses to run.
    """
    newest = _newest(migrations)
    if found > newest:
        raise StoreError(
            f"{what} version {found} is newer than this joulecast understands ({newest}); "
            "upgrade joulecast"
        )
    for version in range(found + 1, newest + 1):
        step = migrations[version]
        if callable(step):
            try:
                step(conn)
            except StoreError as exc:
                raise StoreError(f"{what} version {version}: {exc}") from None
        else:
            for statement in _statements(step):
                conn.execute(statement)
    return newest


def _statements(script: str) -> Iterator[str]:
    """The SQL statements of ``script``; a ``;`` inside a trigger body or a string stays."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending
            pending = ""
    if pending.strip(" \t\r\n;"):
        yield pending  # incomplete: SQLite says what is wrong with it


def _damaged(path: str | os.PathLike[str], problem: object) -> StoreError:
    """The error of a store whose file SQLite finds damaged (``problem`` says how)."""
    return StoreError(
        f"{path}: the store file is damaged ({problem}); nothing is written to it:"
        f" `joulecast doctor --store {path}` lists the damage; restore the file from a backup"
    )


# SQLite's result codes (sqlite.org/rescode.html); an extended code holds its primary code
# in its low byte. (Python's sqlite3 has them as names too, but typeshed does not yet.)
_READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 8, 10, 11, 13, 14, 26
_READONLY_DBMOVED = _READONLY | 4 << 8


def _file_trouble(
    path: str | os.PathLike[str], exc: sqlite3.Error, *, writing: bool = False
) -> StoreError | None:
    """``exc`` as one line naming ``path`` where it says the file itself cannot be used (a
    full disk, damage, not a database, an I/O error; with ``writing``, a file that cannot be
    written or opened too); None for an error of a statement, which its caller sees as is."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    if primary == _FULL:
        return StoreError(f"{path}: the disk is full ({exc}); free some space and try again")
    if primary == _CORRUPT or (code is None and type(exc) is sqlite3.DatabaseError):
        return _damaged(path, exc)  # (ledger raises the bare class for aggregates it lacks)
    if primary == _NOTADB:
        return StoreError(f"{path}: not a joulecast store ({exc})")
    if primary == _IOERR:
        return StoreError(f"{path}: the file cannot be read or written ({exc})")
    if writing and code == _READONLY_DBMOVED:
        return StoreError(f"{path}: the file was moved or deleted while it was open")
    if writing and primary == _READONLY:
        return StoreError(
            f"{path}: cannot write into it: the file or its folder is read-only here ({exc});"
            " reading it (runs, show, report...) still works"
        )
    if writing and primary == _CANTOPEN:
        return StoreError(f"{path}: cannot open it ({exc})")
    return None


def connect_readonly(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A plain SQLite connection that can only read ``path``.

    For looking at a file before opening it as a :class:`Store`, which would migrate it.

    Raises:
        sqlite3.Error: ``path`` cannot be opened.
    """
    return sqlite3.connect(_readonly_uri(path), uri=True)


def _readonly_uri(path: str | os.PathLike[str]) -> str:
    return Path(path).resolve().as_uri() + "?mode=ro"


def _reader(path: Path) -> sqlite3.Connection:
    """A connection that can only read ``path``, an existing file; any thread may use it.

    SQLite reads a file in WAL mode through a shared-memory index (``-shm``) that it makes
    beside the file. Where it cannot (the folder is read-only here) and no ``-wal`` is there
    (no write waits to be merged into the file), the file is read as immutable instead.

    Raises:
        StoreError: the file cannot be read: not a store, damaged, or a ``-wal`` that needs
            a writable folder to be read.
    """
    uri = _readonly_uri(path)
    for immutable in (False, True):
        conn = sqlite3.connect(
            uri + ("&immutable=1" if immutable else ""),
            uri=True,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.Error as exc:
            conn.close()
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            wal = path.with_name(path.name + "-wal")
            if immutable or code not in (_READONLY, _CANTOPEN):
                raise _file_trouble(path, exc) or StoreError(
                    f"{path}: cannot be read ({exc})"
                ) from exc
            if wal.exists():
                raise StoreError(
                    f"{path}: writes not yet merged into the file wait in {wal.name}, and"
                    f" reading them needs write access to folder {path.parent} ({exc}): open"
                    " the store once where that folder can be written to"
                ) from exc
    raise AssertionError("unreachable")  # pragma: no cover


@functools.cache
def _attach_takes_uri() -> bool:
    """Whether ATTACH reads ``file:`` URIs on a connection not opened with ``uri=True``."""
    conn = sqlite3.connect(":memory:")
    try:
        return any(row[0] == "USE_URI" for row in conn.execute("PRAGMA compile_options"))
    finally:
        conn.close()


class Store:
    """A run store backed by one SQLite file; safe to share between threads and processes.

    Opened ``read_only``, it only reads the file: a file that cannot be written (a read-only
    file or folder) can be read, and nothing is written into a damaged one. Missing or empty,
    the file is an empty store, and is not created. The writes a read needs are made where
    the file can be written, through a store opened for writing for the moment: an older
    schema is upgraded (or, where the file cannot be written, refused), and the runs of
    processes that are gone are marked interrupted (or left as they are).
    """

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, read_only: bool = False
    ) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self._lock = threading.RLock()
        self._attached = 0  # files attached now (see _translated)
        self.closed = False
        self.read_only = False  # until the schema is in place (an empty store's, in memory)
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a directory, expected a store file")
        if not self.path.parent.exists():
            raise StoreError(f"{self.path}: folder {self.path.parent} does not exist")
        if read_only:
            self._open_to_read()
            self.read_only = True
            return
        existed = self.path.is_file() and self.path.stat().st_size > 0
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            try:
                self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                if existed:
                    self._refuse_damage()
                # WAL's shared memory works only among processes of one host: on a network
                # file system (a node shard read by another node, a store on a cluster's
                # home) the rollback journal, whose locks the file system carries, is used.
                want = "delete" if network_file_system(self.path) else "wal"
                mode = self._conn.execute(f"PRAGMA journal_mode = {want}").fetchone()[0]
                if mode.lower() != want:
                    log.warning("%s: %s journal not available (got %s)", self.path, want, mode)
                self._conn.execute("PRAGMA synchronous = NORMAL")
                self._conn.execute("PRAGMA foreign_keys = ON")
                self._migrate()
            except BaseException:
                self._conn.close()
                raise
        except sqlite3.Error as exc:
            trouble = _file_trouble(self.path, exc, writing=True)
            raise trouble or StoreError(f"{self.path}: not a joulecast store ({exc})") from exc
        self.mark_interrupted()

    def _open_to_read(self) -> None:
        """Open the file read-only (see the class's ``read_only``)."""
        if not (self.path.is_file() and self.path.stat().st_size > 0):
            self._open_empty()
            return
        self._conn = _reader(self.path)
        try:
            version = _stored_version(self._conn, self.path, "upgrade joulecast to read it")
            if version == 0:
                self._conn.close()
                self._open_empty()
            elif version < SCHEMA_VERSION or any(self._left_behind()):
                self._conn.close()
                self._write_for_reading(version)
                self._conn = _reader(self.path)
        except BaseException:
            self._conn.close()
            raise

    def _open_empty(self) -> None:
        """An empty store in memory, for a file that holds none yet."""
        self._conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self._migrate()

    def _write_for_reading(self, version: int) -> None:
        """Upgrade schema ``version`` and mark the runs of processes that are gone, through
        a store opened for writing for the moment, where the file can be written.

        Raises:
            StoreError: the schema is older than this joulecast reads, and cannot be upgraded.
        """
        if version == SCHEMA_VERSION and not os.access(self.path, os.W_OK):
            log.info("%s: runs whose process is gone stay 'running' (read-only)", self.path)
            return  # (an attempt would read the whole file first, to check it)
        try:
            Store(self.path).close()
        except StoreError as exc:
            why = str(exc).removeprefix(f"{self.path}: ")
            if version < SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {version} must be upgraded to"
                    f" {SCHEMA_VERSION} before this joulecast can read it, and that failed:"
                    f" {why}"
                ) from exc
            log.info("%s: runs whose process is gone stay 'running' (%s)", self.path, why)

    def _refuse_damage(self) -> None:
        """Raise unless SQLite's quick check finds the file sound: its pages, b-trees and
        records (not whether the indexes match their tables). Writing into a damaged file
        would spread the damage. It reads the whole file: a million samples (90 MB) take
        0.25 s on a quiet core, 0.6 s on a busy 2-core machine.

        Raises:
            StoreError: the file is damaged.
        """
        found = [str(row[0]) for row in self._conn.execute("PRAGMA quick_check(1)")]
        if found != ["ok"]:
            lines = [line for f in found for line in f.splitlines() if not line.startswith("***")]
            raise _damaged(self.path, "; ".join(lines)[:300])

    # -- plumbing ---------------------------------------------------------------------------

    # The public part serves extensions: a subsystem that keeps its own tables in the store
    # (the study package) writes and reads them through these, never through the connection.

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed when the block ends and rolled back if it raises.

        It begins with ``BEGIN IMMEDIATE``: the file's write lock is taken at the start (waiting
        up to :data:`BUSY_TIMEOUT_S` for other writers), so the transaction never fails half-way
        when a read would have to become a write. The store's lock is held for the block, so
        other threads of this process wait; transactions do not nest.

        Yields:
            The store's connection, for ``execute``/``executemany`` inside the block only;
            never commit or roll back on it.

        Raises:
            StoreError: the write cannot begin (another writer holds the file past the busy
                timeout, or a transaction is already open), or the commit fails.
        """
        with self._lock:
            if self.read_only:
                raise StoreError(f"{self.path}: opened read-only: nothing can be written into it")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                trouble = _file_trouble(self.path, exc, writing=True)
                raise trouble or StoreError(f"{self.path}: cannot start a write ({exc})") from exc
            try:
                with self._translated(writing=True):
                    yield self._conn
            except BaseException:
                self._rollback()
                raise
            else:
                try:
                    self._conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback()
                    trouble = _file_trouble(self.path, exc, writing=True)
                    raise trouble or StoreError(f"{self.path}: commit failed ({exc})") from exc

    def _rollback(self) -> None:
        """Roll back the open transaction, if SQLite has not already: it rolls back by itself
        on some errors (a full disk), and a ROLLBACK then would hide the error behind "no
        transaction is active"."""
        if not self._conn.in_transaction:
            return
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:  # the error that led here says more
            log.warning("%s: rollback failed (%s)", self.path, exc)

    @contextmanager
    def _translated(self, *, writing: bool = False) -> Iterator[None]:
        """SQLite errors in the block that say the store's file cannot be used (damage, a full
        disk...; ``writing``: a read-only file too) become one :class:`StoreError` naming it;
        with another file attached, they are left as they are, since they may be that file's
        (its caller names it)."""
        try:
            yield
        except Exception as exc:
            cause = exc if isinstance(exc, sqlite3.Error) else exc.__cause__  # pandas wraps
            if self._attached or not isinstance(cause, sqlite3.Error):
                raise
            trouble = _file_trouble(self.path, cause, writing=writing)
            if trouble is None:
                raise
            raise trouble from exc

    def query(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[dict[str, Any]]:
        """Run one SQL statement and return its rows, each a dict keyed by column name.

        Meant for reads; inside a :meth:`transaction` block it sees that block's writes. A
        statement that returns no rows (no columns) gives an empty list.

        Args:
            sql: one statement, with ``?`` (or ``:name``) placeholders.
            params: the values of the placeholders.

        Raises:
            sqlite3.Error: the statement is invalid or names a table the file does not have.
        """
        with self._lock, self._translated():
            cur = self._conn.execute(sql, params)
            if cur.description is None:
                return []
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    # The names the store's own methods use.
    _write = transaction
    _query = query

    @contextmanager
    def attached(self, path: str | os.PathLike[str], alias: str) -> Iterator[None]:
        """Attach another SQLite file to the store's connection as schema ``alias``.

        Inside the block, :meth:`query` and :meth:`transaction` reach its tables as
        ``alias.table`` (and the store's own as ``main.table``), so rows can be copied across
        with ``INSERT ... SELECT``. The file is attached read-only where this SQLite reads
        ``file:`` URIs (otherwise read-write; it is still only read unless written to), and
        detached when the block ends. Open transactions inside the block, not the block inside
        a transaction (SQLite refuses to detach a file a transaction still holds). The block
        holds the store's lock throughout, so no other thread of this process sees the schema.

        Args:
            path: the SQLite file to attach.
            alias: the schema name it gets: a plain identifier, not ``main`` or ``temp``.

        Raises:
            ValueError: ``alias`` is not a plain identifier, or is ``main`` or ``temp``.
            StoreError: the file cannot be attached (not a database, unreadable).
        """
        if not alias.isidentifier() or not alias.isascii() or alias.lower() in ("main", "temp"):
            raise ValueError(f"alias {alias!r}: expected a plain identifier other than main/temp")
        source = _readonly_uri(path) if _attach_takes_uri() else str(path)
        with self._lock:
            try:
                self._conn.execute(f"ATTACH DATABASE ? AS {alias}", (source,))
            except sqlite3.Error as exc:
                raise StoreError(f"{path}: cannot attach it to {self.path} ({exc})") from exc
            self._attached += 1
            try:
                yield
            finally:
                self._attached -= 1
                self._conn.execute(f"DETACH DATABASE {alias}")

    def _migrate(self) -> None:
        with self._write() as conn:
            found = int(conn.execute("PRAGMA user_version").fetchone()[0])
            version = _upgrade(conn, _MIGRATIONS, found, f"{self.path}: schema")
            if version != found:
                conn.execute(f"PRAGMA user_version = {version}")

    def close(self) -> None:
        """Close the connection; the store object is unusable afterwards."""
        with self._lock:
            self._conn.close()
            self.closed = True

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """The schema version of the open file."""
        return int(self._query("PRAGMA user_version")[0]["user_version"])

    def ensure_schema(self, component: str, migrations: Mapping[int, Migration]) -> int:
        """Create or upgrade the tables of ``component``, a part of joulecast with its own tables.

        The file records each component's version in table ``schema_versions``; the steps
        after it run in order in one transaction (another process upgrading at the same time
        waits, then finds nothing left to do). When the file is up to date this is one read,
        so a component calls it each time it opens a store, before it uses its tables.

        Args:
            component: the component's name, e.g. ``"studies"``.
            migrations: version to step, numbered 1, 2, ... n. A released step never changes:
                a change of schema is a new step.

        Returns:
            The component's version now in the file: the newest step.

        Raises:
            StoreError: the file holds a newer version of the component than ``migrations``
                reach (upgrade joulecast), or a step or the write fails (nothing is changed).
            ValueError: ``component`` is empty, or ``migrations`` are not numbered 1 to n.
        """
        if not component:
            raise ValueError("component: expected a name")
        newest = _newest(migrations)
        found = self.component_versions().get(component)
        if found == newest:
            return newest
        if self.read_only:
            raise StoreError(
                f"{self.path}: opened read-only, and its {component} tables are "
                + ("missing" if found is None else f"at version {found}")
                + f" (this joulecast uses version {newest}): open it once for writing"
            )
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT version FROM schema_versions WHERE component = ?", (component,)
            ).fetchone()
            found = int(row[0]) if row else 0
            if found != newest:
                try:
                    _upgrade(conn, migrations, found, f"{self.path}: {component} schema")
                except sqlite3.Error as exc:
                    raise StoreError(
                        f"{self.path}: {component} schema: upgrade from version {found} "
                        f"failed ({exc})"
                    ) from exc
                conn.execute(
                    "INSERT INTO schema_versions (component, version) VALUES (?, ?)"
                    " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (component, newest),
                )
                log.info(
                    "%s: %s schema upgraded from %d to %d", self.path, component, found, newest
                )
        return newest

    def component_versions(self) -> dict[str, int]:
        """The schema version of each component whose tables the file holds (see ensure_schema)."""
        rows = self.query("SELECT component, version FROM schema_versions ORDER BY component")
        return {str(r["component"]): int(r["version"]) for r in rows}

    # -- runs -------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        hardware: Mapping[str, Any] | None = None,
        origin: str = "measure",
        started_at: float | None = None,
        start_mono_s: float | None = None,
        interval_s: float | None = None,
        status: RunStatus = RunStatus.RUNNING,
        uid: str | None = None,
    ) -> int:
        """Insert a run owned by this process and return its id.

        ``uid`` names the run across stores (a node's run of a distributed job); default a
        new random one.

        Raises:
            StoreError: a run with ``uid`` is already in the store.
        """
        with self._write() as conn:
            if (
                uid is not None
                and conn.execute("SELECT 1 FROM runs WHERE uid = ?", (uid,)).fetchone()
            ):
                raise StoreError(f"{self.path}: a run with uid {uid!r} is already there")
            return self._insert_run(
                conn,
                uid=uid,
                name=name,
                tags=tags,
                hardware=hardware,
                origin=origin,
                started_at=started_at,
                start_mono_s=start_mono_s,
                interval_s=interval_s,
                status=status,
            )

    def _insert_run(
        self,
        conn: sqlite3.Connection,
        *,
        name: str | None,
        tags: Mapping[str, str] | None,
        hardware: Mapping[str, Any] | None,
        origin: str,
        started_at: float | None,
        start_mono_s: float | None,
        interval_s: float | None,
        status: RunStatus,
        uid: str | None = None,
    ) -> int:
        pid = os.getpid()
        now = time.time()
        cur = conn.execute(
            "INSERT INTO runs (uid, name, tags, host, pid, pid_started, hardware, origin, status,"
            " started_at, start_mono_s, interval_s, heartbeat_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                uid if uid is not None else uuid.uuid4().hex,
                name,
                _json(dict(tags or {})),
                socket.gethostname(),
                pid,
                _process_started(pid),
                _json(dict(hardware or {})),
                origin,
                status.value,
                started_at if started_at is not None else now,
                start_mono_s,
                interval_s,
                now,
            ),
        )
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def finish_run(
        self,
        run_id: int,
        status: RunStatus,
        *,
        duration_s: float | None = None,
        exit_code: int | None = None,
        signal: str | None = None,
        quality: Mapping[str, Any] | None = None,
    ) -> None:
        """Set a run's final status, exit code or signal, duration and quality figures; its
        command (:meth:`record_command`) has ended."""
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET status = ?, exit_code = ?, signal = ?, ended_at = ?,"
                " duration_s = COALESCE(?, duration_s), quality = COALESCE(?, quality),"
                " heartbeat_at = ?, command_pid = NULL, command_started = NULL,"
                " command_pgid = NULL WHERE id = ?",
                (
                    status.value,
                    exit_code,
                    signal,
                    time.time(),
                    duration_s,
                    _json(dict(quality)) if quality is not None else None,
                    time.time(),
                    run_id,
                ),
            )

    def update_run(
        self,
        run_id: int,
        *,
        hardware: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Merge hardware facts or tags into a run."""
        row = self.run(run_id)
        with self._write() as conn:
            if hardware is not None:
                merged = {**row["hardware"], **hardware}
                conn.execute("UPDATE runs SET hardware = ? WHERE id = ?", (_json(merged), run_id))
            if tags is not None:
                merged = {**row["tags"], **tags}
                conn.execute("UPDATE runs SET tags = ? WHERE id = ?", (_json(merged), run_id))

    def recording(self, run_id: int) -> bool:
        """Whether run ``run_id`` is still being recorded: ``running``, and its process alive
        (on another host, writing within :data:`STALE_HEARTBEAT_S`). False once that process
        is gone, even before a store opened since marks the run interrupted.

        Raises:
            InputError: no run has that id.
        """
        row = self.run(run_id)
        if row["status"] != RunStatus.RUNNING.value:
            return False
        return _writer_alive(row, socket.gethostname(), time.time())

    def record_command(self, run_id: int, process: Started) -> None:
        """Record the command that the run's process runs and measures (``joulecast
        measure``'s child), until :meth:`finish_run`: if the run's process dies first, the
        next process to open the store on this host stops it (:meth:`mark_interrupted`)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET command_pid = ?, command_started = ?, command_pgid = ?"
                " WHERE id = ?",
                (process.pid, process.started_at, process.pgid, run_id),
            )

    def mark_interrupted(self) -> list[int]:
        """Mark as interrupted the runs left ``running`` by a process that no longer exists,
        and stop the commands those processes left running on this host
        (:func:`joulecast.processes.stop_left_behind`)."""
        dead, left = self._left_behind()
        if dead:
            with self._write() as conn:
                for run_id in dead:
                    # Duration: up to the last sample that reached the store.
                    conn.execute(
                        "UPDATE runs SET status = ?, ended_at = heartbeat_at, duration_s ="
                        " (SELECT MAX(t_s) FROM samples WHERE run_id = runs.id)"
                        " WHERE id = ? AND status = ?",
                        (RunStatus.INTERRUPTED.value, run_id, RunStatus.RUNNING.value),
                    )
            log.info("%s: marked interrupted: runs %s", self.path, dead)
        # After the write, so that waiting for a command to end holds no lock on the file.
        stopped = [run_id for run_id, process in left.items() if stop_left_behind(process)]
        if stopped:
            with self._write() as conn:
                conn.executemany(
                    "UPDATE runs SET command_pid = NULL, command_started = NULL,"
                    " command_pgid = NULL WHERE id = ?",
                    [(run_id,) for run_id in stopped],
                )
        return dead

    def _left_behind(self) -> tuple[list[int], dict[int, Started]]:
        """The runs left ``running`` by a process that no longer exists, and the commands
        such processes left on this host (by run)."""
        host = socket.gethostname()
        now = time.time()
        dead: list[int] = []
        left: dict[int, Started] = {}
        for row in self._query(
            "SELECT id, status, host, pid, pid_started, heartbeat_at, command_pid,"
            " command_started, command_pgid FROM runs WHERE status = ? OR command_pid IS NOT NULL",
            (RunStatus.RUNNING.value,),
        ):
            if _writer_alive(row, host, now):
                continue
            if row["status"] == RunStatus.RUNNING.value:
                dead.append(int(row["id"]))
            if row["command_pid"] is not None and row["host"] == host:
                left[int(row["id"])] = Started(
                    row["command_pid"], row["command_started"], row["command_pgid"]
                )
        return dead, left

    def resolve(self, ref: str | int) -> int:
        """Turn ``ref`` (an id, ``last``, a uid prefix or a unique name) into a run id."""
        text = str(ref).strip()
        if text == "last":
            rows = self._query("SELECT MAX(id) AS id FROM runs")
            if rows[0]["id"] is None:
                raise InputError(f"{self.path}: the store has no runs")
            return int(rows[0]["id"])
        if text.isascii() and text.isdigit():
            # An id SQLite cannot hold is no run's id (and a name may not be all digits).
            wide = len(text) > 18
            rows = [] if wide else self._query("SELECT id FROM runs WHERE id = ?", (int(text),))
        else:
            rows = self._query(
                "SELECT id FROM runs WHERE name = ? OR uid LIKE ? ORDER BY id", (text, text + "%")
            )
        if not rows:
            raise InputError(
                f"{self.path}: no run {text[:60]!r} (expected an id, a name or 'last')"
            )
        if len(rows) > 1:
            ids = ", ".join(str(r["id"]) for r in rows)
            raise InputError(f"{self.path}: run {text!r} is ambiguous (ids {ids}); give an id")
        return int(rows[0]["id"])

    def run(self, run_id: int) -> dict[str, Any]:
        """One run's row, with JSON columns decoded."""
        rows = self._query("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise InputError(f"{self.path}: no run with id {run_id}")
        row = rows[0]
        for key in ("tags", "hardware", "quality"):
            row[key] = json.loads(row[key] or "{}")
        return row

    def runs(self) -> pd.DataFrame:
        """All runs, newest last, with their epoch count and energy (all devices; NaN where
        no device has any)."""
        import pandas as pd

        rows = self._query(
            "SELECT r.id, r.name, r.status, r.origin, r.host, r.started_at, r.duration_s,"
            " r.exit_code, r.signal, r.tags,"
            " (SELECT COUNT(*) FROM phases p WHERE p.run_id = r.id AND p.kind = 'epoch') AS epochs,"
            f" (SELECT SUM({ledger.ENERGY_SQL}) FROM device_energy d WHERE d.run_id = r.id)"
            " AS energy_j FROM runs r ORDER BY r.id"
        )
        frame = pd.DataFrame(
            rows,
            columns=[
                "id",
                "name",
                "status",
                "origin",
                "host",
                "started_at",
                "duration_s",
                "exit_code",
                "signal",
                "tags",
                "epochs",
                "energy_j",
            ],
        )
        frame["energy_j"] = frame["energy_j"].astype(float)
        frame["tags"] = [json.loads(t or "{}") for t in frame["tags"]]
        return frame

    # -- samples, phases, gaps --------------------------------------------------------------

    @staticmethod
    def _sample_rows(run_id: int, readings: Iterable[Reading], t0: float) -> list[tuple[Any, ...]]:
        return [
            (
                run_id,
                r.t_s - t0,
                r.device,
                r.power_w,
                r.energy_j,
                r.util_pct,
                r.mem_used_mib,
                r.temp_c,
                r.source,
                int(r.measured),
            )
            for r in readings
        ]

    def write_batch(
        self,
        run_id: int,
        readings: Sequence[Reading] = (),
        *,
        t0: float = 0.0,
        phases: Sequence[Phase] = (),
        gaps: Sequence[Gap] = (),
        quality: Mapping[str, Any] | None = None,
    ) -> None:
        """Append readings (``t_s`` shifted by ``-t0``), upsert phases, record gaps; one commit."""
        sample_rows = self._sample_rows(run_id, readings, t0)
        with self._write() as conn:
            ledger.append(conn, run_id, sample_rows)
            self._upsert_phases(conn, run_id, phases)
            if gaps:
                conn.executemany(
                    "INSERT INTO gaps VALUES (?, ?, ?, ?, ?)",
                    [(run_id, g.device, g.start_s, g.end_s, g.reason) for g in gaps],
                )
            if quality is not None:
                conn.execute(
                    "UPDATE runs SET heartbeat_at = ?, quality = ? WHERE id = ?",
                    (time.time(), _json(dict(quality)), run_id),
                )
            else:
                conn.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (time.time(), run_id))

    @staticmethod
    def _upsert_phases(conn: sqlite3.Connection, run_id: int, phases: Sequence[Phase]) -> None:
        if phases:
            conn.executemany(
                "INSERT INTO phases VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, kind, idx) DO UPDATE SET start_s = excluded.start_s,"
                " end_s = excluded.end_s, samples = excluded.samples, metrics = excluded.metrics",
                [
                    (
                        run_id,
                        p.kind.value,
                        p.index,
                        p.start_s,
                        p.end_s,
                        p.samples,
                        _json(p.metrics),
                    )
                    for p in phases
                ],
            )

    def write_phases(self, run_id: int, phases: Sequence[Phase]) -> None:
        """Insert or replace phases (matched on kind and index).

        They are checked against the run's other phases and, once the run has ended, against
        its samples' span of time, as :meth:`import_run` checks phases (a phase reaching past
        it is clipped with a :class:`~joulecast.errors.JoulecastWarning`).

        Raises:
            InputError: A phase overlaps another of its kind, or lies outside the samples of
                an ended run.
        """
        if not phases:
            return
        with self._write() as conn:
            what = f"run {run_id}"
            keys = {(p.kind.value, p.index) for p in phases}
            kinds = sorted({kind for kind, _ in keys})
            rows = conn.execute(
                "SELECT kind, idx, start_s, end_s FROM phases WHERE run_id = ?"
                f" AND kind IN ({', '.join('?' * len(kinds))})",
                (run_id, *kinds),
            )
            kept = [Phase(PhaseKind(k), i, s, e) for k, i, s, e in rows if (k, i) not in keys]
            check_overlaps([*kept, *phases], what)
            status = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            first_s, last_s = conn.execute(
                "SELECT (SELECT MIN(t_s) FROM samples WHERE run_id = ?),"
                " (SELECT MAX(t_s) FROM samples WHERE run_id = ?)",
                (run_id, run_id),
            ).fetchone()
            if status is not None and status[0] != RunStatus.RUNNING.value and last_s is not None:
                phases = fit_phases(phases, first_s, last_s, what)
            self._upsert_phases(conn, run_id, phases)

    def add_phase_metrics(
        self,
        run_id: int,
        kind: str,
        index: int,
        metrics: Mapping[str, Any],
        *,
        overwrite: bool = True,
    ) -> bool:
        """Add ``metrics`` to a stored phase's metrics in one write transaction.

        Other processes' metrics written meanwhile are kept; with ``overwrite`` False, so are
        the values of keys the phase already has. Returns False if the phase is not stored.
        """
        where = (run_id, kind, index)
        with self._write() as conn:
            row = conn.execute(
                "SELECT metrics FROM phases WHERE run_id = ? AND kind = ? AND idx = ?", where
            ).fetchone()
            if row is None:
                return False
            stored = json.loads(row[0] or "{}")
            merged = {**stored, **metrics} if overwrite else {**metrics, **stored}
            conn.execute(
                "UPDATE phases SET metrics = ? WHERE run_id = ? AND kind = ? AND idx = ?",
                (_json(merged), *where),
            )
        return True

    def import_run(
        self,
        *,
        samples: pd.DataFrame | Iterable[pd.DataFrame],
        phases: Sequence[Phase] = (),
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        hardware: Mapping[str, Any] | None = None,
        origin: str = "import",
        started_at: float | None = None,
        uid: str | None = None,
        replace: bool = False,
        status: RunStatus = RunStatus.COMPLETED,
        gaps: Sequence[Gap] = (),
        duration_s: float | None = None,
        phases_from: str = "phases",
    ) -> int:
        """Write a whole recorded run in one transaction; on any error nothing is written.

        ``samples`` holds the sample columns: one frame, or frames taken one after another
        (the chunks of a long trace: memory holds one at a time). A device whose rows go back
        in time, within a frame or from one frame to the next, has its energy aggregates
        computed once, after the last frame. ``uid`` names the run (default: a random one);
        with ``replace``, a run already holding it is removed in the same transaction.
        ``duration_s`` defaults to the last sample or phase end.

        ``phases`` are checked against the samples' span of time
        (:func:`~joulecast.records.fit_phases`; ``phases_from`` names them in messages): one
        reaching past it is clipped to it with a :class:`~joulecast.errors.JoulecastWarning`.
        Without samples they are checked against each other only.

        Raises:
            InputError: A frame lacks sample columns, a phase lies outside the samples' span,
                or two phases of one kind overlap.
            StoreError: A run with ``uid`` is already there (without ``replace``).
        """
        import pandas as pd

        frames = [samples] if isinstance(samples, pd.DataFrame) else samples
        with self._write() as conn:
            held = conn.execute("SELECT id FROM runs WHERE uid = ?", (uid,)).fetchone()
            if held is not None and not replace:
                raise StoreError(f"{self.path}: a run with uid {uid!r} is already there")
            if held is not None:
                delete_run_rows(conn, int(held[0]))
            run_id = self._insert_run(
                conn,
                name=name,
                tags=tags,
                hardware=hardware,
                origin=origin,
                started_at=started_at,
                start_mono_s=None,
                interval_s=None,
                status=status,
                uid=uid,
            )
            first_s: float | None = None
            last_s: float | None = None
            unsettled: set[str] = set()
            for frame in frames:
                missing = [c for c in SAMPLE_COLUMNS if c not in frame.columns]
                if missing:
                    raise InputError(f"samples frame lacks columns {missing}")
                if len(frame):
                    earliest, latest = float(frame["t_s"].min()), float(frame["t_s"].max())
                    first_s = earliest if first_s is None else min(first_s, earliest)
                    last_s = latest if last_s is None else max(last_s, latest)
                cells = frame.loc[:, list(SAMPLE_COLUMNS)].astype(object)
                cells = cells.where(pd.notna(cells), None)
                rows = [(run_id, *row) for row in cells.itertuples(index=False, name=None)]
                unsettled.update(ledger.append(conn, run_id, rows, defer=True))
            if unsettled:
                ledger.settle(conn, run_id, sorted(unsettled))
            if first_s is not None and last_s is not None:
                phases = fit_phases(phases, first_s, last_s, phases_from)
            else:
                check_overlaps(phases, phases_from)
            self._upsert_phases(conn, run_id, phases)
            if gaps:
                conn.executemany(
                    "INSERT INTO gaps VALUES (?, ?, ?, ?, ?)",
                    [(run_id, g.device, g.start_s, g.end_s, g.reason) for g in gaps],
                )
            duration = last_s if last_s is not None else 0.0
            if phases:
                duration = max(duration, max((p.end_s or p.start_s) for p in phases))
            if duration_s is not None:
                duration = duration_s
            conn.execute(
                "UPDATE runs SET ended_at = started_at + ?, duration_s = ? WHERE id = ?",
                (duration, duration, run_id),
            )
        return run_id

    def samples(
        self, run_id: int, start_s: float | None = None, end_s: float | None = None
    ) -> pd.DataFrame:
        """A run's samples ordered by device and time; ``t_s`` is seconds since run start.

        ``start_s``/``end_s`` keep only samples in that span of time.
        """
        import pandas as pd

        sql, params = _samples_query(run_id, start_s, end_s)
        with self._lock, self._translated():
            frame = pd.read_sql_query(
                sql + " ORDER BY device, t_s, rowid", self._conn, params=params
            )
        return _sample_types(frame)

    def iter_samples(
        self,
        run_id: int,
        *,
        start_s: float | None = None,
        end_s: float | None = None,
        chunk_rows: int = SAMPLE_CHUNK_ROWS,
    ) -> Iterator[pd.DataFrame]:
        """A run's samples in time order, at most ``chunk_rows`` rows at a time.

        Each chunk has the columns and types of :meth:`samples`; rows come in time order
        (ties in the order they were written), through the (run, time) index, so memory holds
        one chunk whatever the run's length. One statement on a read-only connection of its
        own reads them: the chunks are one snapshot of the run, and the store's writers are
        never held up. A run without samples gives no chunk.

        Args:
            run_id: The run.
            start_s: Keep only samples at or after this time.
            end_s: Keep only samples at or before this time.
            chunk_rows: Rows per chunk at most.

        Raises:
            InputError: ``chunk_rows`` is below 1.
            StoreError: The file cannot be read (from the iterator).
        """
        if chunk_rows < 1:
            raise InputError(f"chunk_rows: got {chunk_rows}, expected 1 or more")
        sql, params = _samples_query(run_id, start_s, end_s)
        return _sample_chunks(self.path, sql + " ORDER BY t_s, rowid", params, chunk_rows)

    def phases(self, run_id: int, kind: str | None = None) -> pd.DataFrame:
        """A run's phases (all kinds, or one), ordered by kind and index."""
        import pandas as pd

        sql = (
            "SELECT kind, idx AS 'index', start_s, end_s, samples, metrics FROM phases"
            " WHERE run_id = ?"
        )
        params: list[Any] = [run_id]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        rows = self._query(sql + " ORDER BY kind, idx", params)
        frame = pd.DataFrame(
            rows, columns=["kind", "index", "start_s", "end_s", "samples", "metrics"]
        )
        frame["metrics"] = [json.loads(m or "{}") for m in frame["metrics"]]
        frame["samples"] = frame["samples"].astype("Int64")
        frame["start_s"] = frame["start_s"].astype(float)
        frame["end_s"] = frame["end_s"].astype(float)
        return frame

    def gaps(self, run_id: int) -> pd.DataFrame:
        """A run's recorded sensor gaps."""
        import pandas as pd

        rows = self._query(
            "SELECT device, start_s, end_s, reason FROM gaps WHERE run_id = ? ORDER BY start_s",
            (run_id,),
        )
        return pd.DataFrame(rows, columns=["device", "start_s", "end_s", "reason"])

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """Reads in the block see one state of the file (a read transaction), unless a
        transaction is open already; the caller holds the lock."""
        if self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN")
        try:
            yield
        finally:
            self._conn.execute("COMMIT")

    def device_energy(self, run_id: int) -> dict[str, ledger.DeviceState]:
        """Each device's energy aggregates, kept as the run's samples were written."""
        with self._lock, self._translated():
            return ledger.load_states(self._conn, run_id)

    def energy_at(
        self,
        run_id: int,
        t_s: Sequence[float] | np.ndarray,
        *,
        track: ledger.Track = "energy",
        devices: Collection[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Each device's (or each of ``devices``') cumulative energy at the times ``t_s``,
        from the aggregates: what
        :meth:`joulecast.energy.EnergyCurve.at` gives on the raw samples, without reading them.

        ``track`` ``"power"`` gives the trapezoid of each device's power readings instead of
        its energy (which is its counter where it has one). Each time costs two indexed reads
        per device; where that would cost more than reading the run's rows once, in time
        order and in chunks, they are read once instead.
        """
        import numpy as np

        times = np.asarray(t_s, dtype=float)
        with self._lock, self._translated(), self._snapshot():
            states = ledger.load_states(self._conn, run_id)
            rows = sum(s.rows for s in states.values())
            if devices is not None:
                states = {d: s for d, s in states.items() if d in devices}
            if _READS_PER_ROW * 2 * len(times) * len(states) > rows:
                return ledger.energy_scan(self._conn, run_id, states, times, track=track)
            return ledger.energy_at(self._conn, run_id, states, times, track=track)

    def delete_run(self, run_id: int) -> None:
        """Remove a run with its samples, phases and gaps."""
        with self._write() as conn:
            delete_run_rows(conn, run_id)

    # -- bulk reads: many runs at once ------------------------------------------------------

    def phases_of_runs(
        self, run_ids: Sequence[int], kinds: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """The phases of many runs (all kinds, or ``kinds``), ordered by run, kind and index.

        The columns of :meth:`phases`, after a ``run_id`` column.
        """
        import numpy as np
        import pandas as pd

        rows: list[dict[str, Any]] = []
        for batch in _id_batches(run_ids):
            sql = (
                "SELECT run_id, kind, idx AS 'index', start_s, end_s, samples, metrics"
                f" FROM phases WHERE run_id IN ({', '.join('?' * len(batch))})"
            )
            params: list[Any] = list(batch)
            if kinds is not None:
                sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
                params += list(kinds)
            rows += self._query(sql + " ORDER BY run_id, kind, idx", params)
        frame = pd.DataFrame(
            rows, columns=["run_id", "kind", "index", "start_s", "end_s", "samples", "metrics"]
        )
        if len(run_ids) > _ID_BATCH:
            frame = frame.sort_values(["run_id", "kind", "index"], ignore_index=True)
        frame["run_id"] = frame["run_id"].astype(np.int64)
        frame["metrics"] = [json.loads(m or "{}") for m in frame["metrics"]]
        frame["samples"] = frame["samples"].astype("Int64")
        frame["start_s"] = frame["start_s"].astype(float)
        frame["end_s"] = frame["end_s"].astype(float)
        return frame


# The tables of a run's rows, each keyed to its run by ``run_id``.
RUN_TABLES = ("samples", "device_energy", "phases", "gaps")


def _columns(conn: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA {schema}.table_info({table})")]


def _shared_columns(conn: sqlite3.Connection, schema: str, table: str, key: str) -> str:
    """The columns of ``table`` in both ``main`` and ``schema``, in main's order, less ``key``."""
    theirs = set(_columns(conn, schema, table))
    return ", ".join(f'"{c}"' for c in _columns(conn, "main", table) if c != key and c in theirs)


def copy_attached_run(conn: sqlite3.Connection, schema: str, run_id: int) -> int:
    """Copy run ``run_id`` of the attached store ``schema`` into ``main`` under a new id, with
    its samples (and their energy aggregates), device aggregates, phases and gaps, in the
    caller's transaction; every column both files have comes across as it is. Returns the
    new id."""
    run_cols = _shared_columns(conn, schema, "runs", "id")
    cur = conn.execute(
        f"INSERT INTO main.runs ({run_cols}) SELECT {run_cols} FROM {schema}.runs WHERE id = ?",
        (run_id,),
    )
    assert cur.lastrowid is not None
    new_id = int(cur.lastrowid)
    for table in RUN_TABLES:
        cols = _shared_columns(conn, schema, table, "run_id")
        conn.execute(
            f"INSERT INTO main.{table} (run_id, {cols}) SELECT ?, {cols} FROM {schema}.{table}"
            " WHERE run_id = ? ORDER BY rowid",
            (new_id, run_id),
        )
    return new_id


def delete_run_rows(conn: sqlite3.Connection, run_id: int) -> None:
    """Remove a run and its rows, in the caller's transaction."""
    for table in RUN_TABLES:
        conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
    conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))


def _samples_query(
    run_id: int, start_s: float | None, end_s: float | None
) -> tuple[str, list[Any]]:
    """The query of a run's samples (the sample columns) in ``[start_s, end_s]``, unordered."""
    sql = f"SELECT {', '.join(SAMPLE_COLUMNS)} FROM samples WHERE run_id = ?"
    params: list[Any] = [run_id]
    if start_s is not None:
        sql += " AND t_s >= ?"
        params.append(start_s)
    if end_s is not None:
        sql += " AND t_s <= ?"
        params.append(end_s)
    return sql, params


def _sample_types(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (the sample columns as SQLite gives them) with :meth:`Store.samples`' types."""
    frame["t_s"] = frame["t_s"].astype(float)
    frame["measured"] = frame["measured"].astype(bool)
    for col in ("power_w", "energy_j", "util_pct", "mem_used_mib", "temp_c"):
        frame[col] = frame[col].astype(float)
    return frame


@contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection of its own, so that a long read never holds up the writers."""
    conn = _reader(path)
    with closing(conn):
        try:
            yield conn
        except sqlite3.DatabaseError as exc:
            trouble = _file_trouble(path, exc)
            raise trouble or StoreError(f"{path}: not a readable joulecast store ({exc})") from exc


def _sample_chunks(
    path: Path, sql: str, params: Sequence[Any], chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """The rows of ``sql`` (the sample columns), ``chunk_rows`` at a time, as frames."""
    with _read_only(path) as conn:
        cursor = conn.execute(sql, params)
        while rows := cursor.fetchmany(chunk_rows):
            yield sample_frame(rows)


def sample_frame(rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    """Records of the sample columns (None where a value is missing) as a frame with the
    types of :meth:`Store.samples`."""
    import pandas as pd

    return _sample_types(pd.DataFrame.from_records(rows, columns=list(SAMPLE_COLUMNS)))


def open_store(path: str | os.PathLike[str] | None = None, *, read_only: bool = False) -> Store:
    """Open (creating if needed) the store at ``path``, ``$JOULECAST_STORE`` or ./joulecast.db;
    ``read_only``: only to read it (see :class:`Store`)."""
    return Store(path, read_only=read_only)


_ID_BATCH = 500  # ids per IN (...) list, under SQLite's bound-parameter limit


def _id_batches(ids: Sequence[int]) -> list[list[int]]:
    """``ids`` in lists short enough for one ``IN (...)`` each."""
    return [[int(i) for i in ids[k : k + _ID_BATCH]] for k in range(0, len(ids), _ID_BATCH)]
