"""GPU power limits and locked clocks as study factors, set through NVML around each run.

A study may give ``power_limit_w`` (the board power limit, W) and ``gpu_clocks_mhz`` (the
graphics clock, locked at that many MHz) as factors or fixed parameters (:data:`GPU_FACTORS`).
They are not passed to the workload; they are tags of the run. Before each run that has one,
the runner sets it on every GPU the run sees (``CUDA_VISIBLE_DEVICES``) and afterwards puts
back what was there, whether the run completed, failed or timed out, or the runner was stopped.

The previous setting is written to the store (table ``gpu_settings``, component
:data:`COMPONENT`) before the GPU is changed, and deleted once it is back. A runner killed in
between (SIGKILL, a lost machine) leaves the row behind: the next runner of the study on this
host puts the GPU back before it does anything else (:meth:`GpuControl.restore_leftovers`).

Under SLURM each job sets its own node's GPUs (:func:`on_node`), keeping the previous
settings in files of the study's folder (:class:`FileLedger`) rather than the store, which
jobs on other machines must not write; the next job on that host, or the next local runner
there, puts back what a killed job left, and every ``study run`` lists what is left
(:meth:`FileLedger.left`, :func:`left_line`).

NVML cannot read a clock lock back, so locked clocks are put back by unlocking them
(``nvmlDeviceResetGpuLockedClocks``): a lock an administrator had set before is lifted too.
Setting either needs root (NVML answers ``NVML_ERROR_NO_PERMISSION`` otherwise);
:meth:`GpuControl.check` finds that out, and every level outside a GPU's range, before the
first run, by setting each GPU's power limit to the value it already has.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from joulecast.errors import InputError, JoulecastError, OutputError, SensorUnavailable
from joulecast.inputs import is_number, quote, read_file
from joulecast.outputs import write_atomic

if TYPE_CHECKING:
    from joulecast.store import Migration, Store
    from joulecast.study.design import PlannedRun, Study

log = logging.getLogger(__name__)

GPU_FACTORS: tuple[str, ...] = ("power_limit_w", "gpu_clocks_mhz")
"""Factors set on the GPUs around a run, not passed to the workload."""
MAX_POWER_LIMIT_W = 10_000.0
"""The largest ``power_limit_w`` a study file may give (beyond any one GPU)."""
MAX_CLOCK_MHZ = 10_000
"""The largest ``gpu_clocks_mhz`` a study file may give."""

COMPONENT = "gpu_settings"
MIGRATIONS: dict[int, Migration] = {
    # One row per GPU setting changed and not yet put back. ``original``: the power limit
    # before, in mW; NULL for locked clocks (put back by unlocking).
    1: """
    CREATE TABLE IF NOT EXISTS gpu_settings (
        host TEXT NOT NULL,
        gpu_uuid TEXT NOT NULL,
        setting TEXT NOT NULL,
        original INTEGER,
        value INTEGER NOT NULL,
        study TEXT NOT NULL,
        run_key TEXT NOT NULL,
        set_at REAL NOT NULL,
        PRIMARY KEY (host, gpu_uuid, setting)
    );
    """,
}
_POWER = "power_limit"
_CLOCKS = "locked_clocks"
_NO_PERMISSION = 4
_NOT_SUPPORTED = 3
_ROOT = (
    "changing a GPU's power limit or clocks needs root: run the study as root (or with sudo), "
    "or leave power_limit_w and gpu_clocks_mhz out"
)
LEDGER_FOLDER = "gpu_settings"
"""The folder of a study's folder where its jobs keep the settings to put back."""
_FIELDS = ("gpu_uuid", "setting", "original", "value", "study", "run_key", "set_at")
_MAX_BYTES = 64 * 1024  # a setting is some 300 bytes


class Ledger(Protocol):
    """Where the settings to put back are kept: each is there before its GPU is changed and
    leaves once the GPU is back."""

    def entries(self, host: str, study: str) -> list[dict[str, Any]]: ...
    def held(self, host: str, uuid: str, study: str) -> dict[str, Any] | None: ...
    def add(self, host: str, entry: dict[str, Any]) -> None: ...
    def remove(self, host: str, uuid: str, setting: str) -> None: ...


class StoreLedger:
    """The settings to put back, in the store's ``gpu_settings`` table (one row per GPU
    setting changed and not yet put back)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.ensure_schema(COMPONENT, MIGRATIONS)

    def entries(self, host: str, study: str) -> list[dict[str, Any]]:
        """``study``'s settings left on ``host``: clocks first (the reverse of the order they
        were set in)."""
        rows = self.store.query(
            "SELECT gpu_uuid, setting, original, value, run_key FROM gpu_settings"
            " WHERE host = ? AND study = ? ORDER BY gpu_uuid, setting = 'power_limit'",
            (host, study),
        )
        return [dict(row) for row in rows]

    def held(self, host: str, uuid: str, study: str) -> dict[str, Any] | None:
        """A setting of GPU ``uuid`` on ``host`` that another study than ``study`` left."""
        rows = self.store.query(
            "SELECT setting, study, run_key FROM gpu_settings WHERE host = ? AND gpu_uuid = ?"
            " AND study != ?",
            (host, uuid, study),
        )
        return dict(rows[0]) if rows else None

    def add(self, host: str, entry: dict[str, Any]) -> None:
        """Keep ``entry`` (the :data:`_FIELDS`); one already there for its GPU and setting (a
        put-back that failed) stays, with the older, true original."""
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO gpu_settings (host, gpu_uuid, setting, original, value,"
                " study, run_key, set_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (host, *(entry[k] for k in _FIELDS)),
            )

    def remove(self, host: str, uuid: str, setting: str) -> None:
        """Forget the ``setting`` of GPU ``uuid`` on ``host`` (it is back)."""
        with self.store.transaction() as conn:
            conn.execute(
                "DELETE FROM gpu_settings WHERE host = ? AND gpu_uuid = ? AND setting = ?",
                (host, uuid, setting),
            )


class FileLedger:
    """The settings to put back, one JSON file each in ``folder`` (a study's
    :data:`LEDGER_FOLDER`), for the jobs of a study on other machines.

    A file is written whole (:func:`~joulecast.outputs.write_atomic`) before its GPU is changed
    and removed once the GPU is back: no file is ever rewritten, and each holds one setting of
    one GPU, which one job at a time holds (SLURM gives a GPU to one job), so jobs on many
    nodes share the folder without a lock; SQLite on a shared file system could not.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, host: str, uuid: str, setting: str) -> Path:
        # Percent-encoding never leaves "/" or "@" in a part: the name is a file of the folder.
        name = "@".join(urllib.parse.quote(part, safe="") for part in (host, uuid, setting))
        return self.folder / f"{name}.json"

    def scan(self) -> tuple[list[tuple[Path, dict[str, Any]]], list[tuple[Path, str]]]:
        """Every setting in the folder with its file, whichever host and study left it; and
        each file of it that cannot be read as one, with why."""
        entries, unreadable = [], []
        for path in sorted(self.folder.glob("*.json")):
            found = _read_entry(path)
            if isinstance(found, str):
                unreadable.append((path, found))
            else:
                entries.append((path, found))
        return entries, unreadable

    def left(self) -> list[dict[str, Any]]:
        """Every setting in the folder, for an operator: each with its ``file`` and ``error``
        (None; for a file that cannot be read, why, with the host, GPU and setting its name
        gives and None for the rest)."""
        entries, unreadable = self.scan()
        out = [{"file": str(path), **entry, "error": None} for path, entry in entries]
        for path, why in unreadable:
            parts = [urllib.parse.unquote(p) for p in path.stem.split("@")]
            host, uuid, setting = parts if len(parts) == 3 else (None, None, None)
            lost = dict.fromkeys(("original", "value", "study", "run_key", "set_at"))
            out.append(
                {
                    "file": str(path),
                    "host": host,
                    "gpu_uuid": uuid,
                    "setting": setting,
                    **lost,
                    "error": why,
                }
            )
        return out

    def _all(self) -> list[dict[str, Any]]:
        entries, unreadable = self.scan()
        for path, why in unreadable:
            log.warning("%s: not a GPU setting to put back, left alone (%s)", path, why)
        return [entry for _, entry in entries]

    def entries(self, host: str, study: str) -> list[dict[str, Any]]:
        """``study``'s settings left on ``host``: clocks first (the reverse of the order they
        were set in)."""
        rows = [e for e in self._all() if e["host"] == host and e["study"] == study]
        return sorted(rows, key=lambda e: (e["gpu_uuid"], e["setting"] == _POWER))

    def held(self, host: str, uuid: str, study: str) -> dict[str, Any] | None:
        """A setting of GPU ``uuid`` on ``host`` that another study than ``study`` left."""
        return next(
            (
                e
                for e in self._all()
                if e["host"] == host and e["gpu_uuid"] == uuid and e["study"] != study
            ),
            None,
        )

    def add(self, host: str, entry: dict[str, Any]) -> None:
        """Keep ``entry`` (the :data:`_FIELDS`), durably; one already there for its GPU and
        setting (a put-back that failed) stays, with the older, true original.

        Raises:
            InputError: A power limit's file is there but cannot be read (empty after a lost
                node, not JSON, a symbolic link): the limit to put back is unknown.
            OutputError: The folder or the file cannot be written.
        """
        path = self._path(host, entry["gpu_uuid"], entry["setting"])
        if os.path.lexists(path):
            found = _read_entry(path)
            if not isinstance(found, str):
                return
            if entry["setting"] == _POWER:
                # The limit to put back is lost: setting another would go unnoticed for good.
                raise InputError(_unreadable(path, host, entry["gpu_uuid"], found))
            # Clocks are put back by unlocking them, whatever the lost file said.
            log.warning("%s: cannot be read (%s); written anew", path, found)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"{self.folder}: the folder of GPU settings to put back cannot be created: "
                f"{exc.strerror or exc}; nothing is set"
            ) from exc
        text = json.dumps({"host": host, **entry})
        # Durable: a node lost after the GPU is changed must leave the file whole, not empty.
        write_atomic(path, lambda tmp: Path(tmp).write_text(text), durable=True)

    def remove(self, host: str, uuid: str, setting: str) -> None:
        """Forget the ``setting`` of GPU ``uuid`` on ``host`` (it is back)."""
        self._path(host, uuid, setting).unlink(missing_ok=True)


def _read_entry(path: Path) -> dict[str, Any] | str:
    """The setting ``path`` holds, or why it holds none (a symbolic link is not followed)."""
    try:
        data = read_file(path, "a GPU setting to put back", max_bytes=_MAX_BYTES, regular=True)
    except InputError as exc:
        return str(exc).removeprefix(f"{path}: ")
    if not data.strip():
        return "empty"
    try:
        entry = json.loads(data)
    except ValueError:
        return "not JSON"
    if not isinstance(entry, dict) or not _valid(entry):
        return "not a setting as joulecast writes it"
    return entry


def _unreadable(path: Path, host: str, uuid: str, why: str) -> str:
    """Why a power limit is refused where the file of one left before cannot be read."""
    return (
        f"{path}: a power limit left to put back that cannot be read ({why}): the limit "
        f"{uuid} had before is unknown, so nothing is set; check it on {host} "
        f"(nvidia-smi -q -d POWER -i {uuid}), set it back if need be, then delete the file"
    )


LEFT_HEADER = (
    "GPU settings left set by jobs of the study killed outright (SIGKILL, a lost node); the "
    "study's next job on that host and GPU puts each back, or put it back by hand as root on "
    "that host with the command given, then delete its file:"
)
"""What precedes the lines of :func:`left_line`."""


def left_line(entry: dict[str, Any]) -> str:
    """One line on a setting of :meth:`FileLedger.left`: where, what, since when, and the
    ``nvidia-smi`` command that puts it back."""
    where = f"{entry['host']} {entry['gpu_uuid']}"
    if entry.get("error") is not None:
        return (
            f"{where}: {entry['setting']}, in a file that cannot be read ({entry['error']}): "
            f"what to put back is unknown; {entry['file']}"
        )
    since = "at an unknown time"
    with contextlib.suppress(TypeError, ValueError, OverflowError, OSError):  # not a time
        stamp = datetime.datetime.fromtimestamp(entry["set_at"]).astimezone()
        since = f"since {stamp.isoformat(sep=' ', timespec='seconds')}"
    if entry["setting"] == _POWER:
        was, now = entry["original"] / 1000, entry["value"] / 1000
        what = f"power limit {now:g} W {since} (run {entry['run_key']}), was {was:g} W"
        command = f"nvidia-smi -i {entry['gpu_uuid']} -pl {was:g}"
    else:
        what = f"clocks locked at {entry['value']} MHz {since} (run {entry['run_key']})"
        command = f"nvidia-smi -i {entry['gpu_uuid']} -rgc"
    return f"{where}: {what}: {command}; {entry['file']}"


def _valid(entry: dict[str, Any]) -> bool:
    """Whether ``entry`` read from a ledger file is one :class:`FileLedger` wrote."""
    texts = ("host", "gpu_uuid", "study", "run_key")
    return (
        all(isinstance(entry.get(k), str) for k in texts)
        and entry.get("setting") in (_POWER, _CLOCKS)
        and isinstance(entry.get("value"), int)
        # Clocks are put back by unlocking them; a power limit to the value it had.
        and (
            entry.get("original") is None
            if entry["setting"] == _CLOCKS
            else isinstance(entry.get("original"), int)
        )
    )


def check_values(values: Sequence[tuple[str, str, Any]], where: str) -> None:
    """Refuse a ``power_limit_w`` that is not a positive number of W up to
    :data:`MAX_POWER_LIMIT_W`, or a ``gpu_clocks_mhz`` that is not a whole number of MHz from 1
    to :data:`MAX_CLOCK_MHZ`, among ``values`` (``(field, name, value)`` of a study file)."""
    for field_name, name, value in values:
        if name == "power_limit_w" and (
            not is_number(value, positive=True) or value > MAX_POWER_LIMIT_W
        ):
            raise InputError(
                f"{where}: {field_name}: {quote(value)}: expected a positive number of W, "
                f"at most {MAX_POWER_LIMIT_W:g}"
            )
        if name == "gpu_clocks_mhz" and (
            not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_CLOCK_MHZ
        ):
            raise InputError(
                f"{where}: {field_name}: {quote(value)}: expected a whole number of MHz from 1 "
                f"to {MAX_CLOCK_MHZ}"
            )


@dataclass(frozen=True)
class GpuSettings:
    """What to set on the GPUs for one run; None: leave as it is."""

    power_limit_w: float | None = None
    gpu_clocks_mhz: int | None = None

    @classmethod
    def of(cls, study: Study, run: PlannedRun) -> GpuSettings:
        """The settings of ``run``: its factors, else the study's fixed parameters."""
        values = {**study.fixed, **run.factors}
        power = values.get("power_limit_w")
        clocks = values.get("gpu_clocks_mhz")
        return cls(float(power) if power is not None else None, int(clocks) if clocks else None)

    def __bool__(self) -> bool:
        return self.power_limit_w is not None or self.gpu_clocks_mhz is not None

    @property
    def power_limit_mw(self) -> int | None:
        """The power limit in NVML's mW."""
        return None if self.power_limit_w is None else round(self.power_limit_w * 1000)


@dataclass(frozen=True)
class _Gpu:
    device: str
    uuid: str
    name: str
    handle: Any
    shared: bool

    def text(self) -> str:
        return f"{self.device} ({self.name}, {self.uuid})"


class GpuControl:
    """Sets and puts back the power limit and locked clocks of the GPUs a run sees.

    Args:
        store: Where the settings to put back are kept: a store (its ``gpu_settings`` table)
            or a :class:`Ledger`.
        study: The study's name (a runner puts back only its own study's settings).
        nvml: The ``pynvml`` module (tests pass a fake); default: imported.
        visible: ``CUDA_VISIBLE_DEVICES`` (default: this process's).
        order: ``CUDA_DEVICE_ORDER`` (default: this process's).
        host: This machine's name in the store (default: the host name).
        echo: Where notices go (a setting put back, one that could not be).
        all_gpus: Put back the settings left on every GPU of this machine, not only on those
            a run here sees (a job leaves the GPUs it was not given alone: another job may
            hold them).

    NVML is started on first use and shut down by :meth:`close`.
    """

    def __init__(
        self,
        store: Store | Ledger,
        study: str,
        *,
        nvml: Any = None,
        visible: str | None = None,
        order: str | None = None,
        host: str | None = None,
        echo: Callable[[str], None] = print,
        all_gpus: bool = True,
    ) -> None:
        from joulecast.store import Store

        self.ledger = StoreLedger(store) if isinstance(store, Store) else store
        self.study = study
        self.host = host or socket.gethostname()
        self.echo = echo
        self._module = nvml
        self._visible = visible
        self._order = order
        self._nv: Any = None
        self._gpus: list[_Gpu] | None = None
        self._all = all_gpus

    # -- NVML --------------------------------------------------------------------------------

    def _nvml(self) -> Any:
        if self._nv is None:
            from joulecast.sensors.nvml import load_nvml

            try:
                self._nv = load_nvml(self._module)
            except SensorUnavailable as exc:
                raise InputError(
                    f"power_limit_w and gpu_clocks_mhz need an NVIDIA GPU seen through NVML: {exc}"
                ) from exc
        return self._nv

    def gpus(self) -> list[_Gpu]:
        """The GPUs a run started here sees."""
        if self._gpus is None:
            from joulecast.sensors.nvml import visible_gpus

            nv = self._nvml()
            try:
                found = visible_gpus(nv, self._visible, self._order)
            except nv.NVMLError as exc:
                raise InputError(f"NVML could not list the GPUs: {exc}") from exc
            self._gpus = [
                _Gpu(f"gpu:{i}", gid.uuid, gid.name, handle, shared)
                for i, (gid, handle, shared) in enumerate(found)
            ]
        return self._gpus

    def close(self) -> None:
        """Shut NVML down, if it was started."""
        if self._nv is not None:
            with contextlib.suppress(self._nv.NVMLError):
                self._nv.nvmlShutdown()
            self._nv = None
            self._gpus = None

    # -- before any run ------------------------------------------------------------------------

    def check(self, levels: Sequence[GpuSettings], where: str) -> None:
        """Refuse, before any run, what the GPUs here would refuse during one.

        Every power limit must lie in each GPU's range (``nvmlDeviceGetPowerManagementLimit
        Constraints``), every clock at most its maximum graphics clock; the user must be
        allowed to set them (found out by setting each GPU's power limit to the value it has,
        or by unlocking its clocks, which the first run's end does anyway); no GPU may be a
        MIG slice (the setting would change the whole GPU under other users) or hold a
        setting another study has not put back.

        Raises:
            InputError: The first thing refused, in one line naming the GPU and the value.
        """
        nv = self._nvml()
        gpus = self.gpus()
        if not gpus:
            raise InputError(f"{where}: power_limit_w/gpu_clocks_mhz: no visible NVIDIA GPU")
        powers = sorted({s.power_limit_w for s in levels if s.power_limit_w is not None})
        clocks = sorted({s.gpu_clocks_mhz for s in levels if s.gpu_clocks_mhz is not None})
        for gpu in gpus:
            if gpu.shared:
                raise InputError(
                    f"{where}: {gpu.text()} is shared through MIG: its power limit and clocks "
                    "are the whole GPU's; refusing to change them"
                )
            self._check_held(gpu)
            if powers:
                low, high = self._call(
                    nv.nvmlDeviceGetPowerManagementLimitConstraints,
                    gpu,
                    "read the power limit range of",
                )
                for watts in powers:
                    if not low <= round(watts * 1000) <= high:
                        raise InputError(
                            f"{where}: power_limit_w {watts:g}: outside the range of "
                            f"{gpu.text()}: expected {low / 1000:g} to {high / 1000:g} W"
                        )
            if clocks:
                top = self._call(
                    nv.nvmlDeviceGetMaxClockInfo, gpu, "read the clocks of", nv.NVML_CLOCK_GRAPHICS
                )
                for mhz in clocks:
                    if mhz > top:
                        raise InputError(
                            f"{where}: gpu_clocks_mhz {mhz}: above the highest graphics clock of"
                            f" {gpu.text()}: expected at most {top} MHz"
                        )
        # Rights last, once every value is known to fit: these calls change nothing (but a
        # clock lock, which the first run's end lifts anyway).
        for gpu in gpus:
            if powers:
                current = self._call(
                    nv.nvmlDeviceGetPowerManagementLimit, gpu, "read the power limit of"
                )
                self._call(
                    nv.nvmlDeviceSetPowerManagementLimit, gpu, "set the power limit of", current
                )
            if clocks:
                self._call(nv.nvmlDeviceResetGpuLockedClocks, gpu, "unlock the clocks of")

    def _check_held(self, gpu: _Gpu) -> None:
        row = self.ledger.held(self.host, gpu.uuid, self.study)
        if row is not None:
            raise InputError(
                f"{gpu.text()}: its {str(row['setting']).replace('_', ' ')} was set by study "
                f"{row['study']!r} (run {row['run_key']}) and not yet put back: wait for that "
                "study to end, or run it again to put it back"
            )

    def _call(self, fn: Callable[..., Any], gpu: _Gpu, what: str, *args: Any) -> Any:
        """``fn(handle, *args)``, NVML's errors as one line that says what to do."""
        nv = self._nv
        try:
            return fn(gpu.handle, *args)
        except nv.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code == _NO_PERMISSION:
                raise InputError(f"cannot {what} {gpu.text()}: NVML: {exc}: {_ROOT}") from exc
            if code == _NOT_SUPPORTED:
                raise InputError(
                    f"cannot {what} {gpu.text()}: NVML: {exc}: this GPU does not support it"
                ) from exc
            raise InputError(f"cannot {what} {gpu.text()}: NVML: {exc}") from exc

    # -- around each run -------------------------------------------------------------------------

    @contextlib.contextmanager
    def applied(self, settings: GpuSettings, run_key: str) -> Iterator[None]:
        """Set ``settings`` on the GPUs for the block; put back what was there after it.

        Each previous setting is in the store before its GPU is changed and leaves it once
        the GPU is back, so a runner killed in the block leaves what
        :meth:`restore_leftovers` needs. Settings are put back however the block ends.

        Raises:
            InputError: A setting was refused (nothing of this run is left set).
        """
        if not settings:
            yield
            return
        nv = self._nvml()
        try:
            for gpu in self.gpus():
                mw = settings.power_limit_mw
                if mw is not None:
                    original = self._call(
                        nv.nvmlDeviceGetPowerManagementLimit, gpu, "read the power limit of"
                    )
                    self._remember(gpu, _POWER, original, mw, run_key)
                    self._set(gpu, _POWER, nv.nvmlDeviceSetPowerManagementLimit, mw)
                mhz = settings.gpu_clocks_mhz
                if mhz is not None:
                    self._remember(gpu, _CLOCKS, None, mhz, run_key)
                    self._set(gpu, _CLOCKS, nv.nvmlDeviceSetGpuLockedClocks, mhz, mhz)
            yield
        finally:
            self._put_back()

    def _set(self, gpu: _Gpu, setting: str, fn: Callable[..., Any], *args: Any) -> None:
        """``fn(handle, *args)``; refused, the GPU is unchanged: its row leaves the store."""
        what = "set the power limit of" if setting == _POWER else "lock the clocks of"
        try:
            self._call(fn, gpu, what, *args)
        except InputError:
            self._forget(gpu.uuid, setting)
            raise

    def restore_leftovers(self) -> list[str]:
        """Put back the settings this study's last runner left on this host's GPUs (it was
        killed during a run); returns one line per setting put back."""
        return self._put_back()

    def _remember(
        self, gpu: _Gpu, setting: str, original: int | None, value: int, run_key: str
    ) -> None:
        values = (gpu.uuid, setting, original, value, self.study, run_key, time.time())
        self.ledger.add(self.host, dict(zip(_FIELDS, values, strict=True)))

    def _put_back(self) -> list[str]:
        """Put back every setting of this study on this host; a row leaves the store only once
        its GPU is back. NVML failures are told, not raised: the row stays for next time."""
        rows = self.ledger.entries(self.host, self.study)
        if not rows:
            return []
        nv = self._nvml()
        by_uuid = {g.uuid: g for g in self.gpus()}
        if not self._all:
            rows = [r for r in rows if r["gpu_uuid"] in by_uuid]
        elif any(r["gpu_uuid"] not in by_uuid for r in rows):
            by_uuid.update(self._all_gpus())
        done: list[str] = []
        for row in rows:
            uuid, setting = str(row["gpu_uuid"]), str(row["setting"])
            gpu = by_uuid.get(uuid)
            if gpu is None:
                self.echo(f"{uuid}: not found through NVML: its {setting} stays to put back")
                continue
            try:
                if setting == _POWER:
                    nv.nvmlDeviceSetPowerManagementLimit(gpu.handle, int(row["original"]))
                    line = (
                        f"{gpu.text()}: power limit put back to {int(row['original']) / 1000:g} W"
                    )
                else:
                    nv.nvmlDeviceResetGpuLockedClocks(gpu.handle)
                    line = f"{gpu.text()}: clocks unlocked"
            except nv.NVMLError as exc:
                self.echo(
                    f"{gpu.text()}: could not put its {setting.replace('_', ' ')} back ({exc}); "
                    "it is tried again when the study runs next"
                )
                continue
            self._forget(uuid, setting)
            log.info("%s (run %s)", line, row["run_key"])
            done.append(line)
        return done

    def _forget(self, uuid: str, setting: str) -> None:
        self.ledger.remove(self.host, uuid, setting)

    def _all_gpus(self) -> dict[str, _Gpu]:
        """Every GPU of this machine, visible or not (a setting left on one the runner no
        longer sees is put back too)."""
        nv = self._nv
        out: dict[str, _Gpu] = {}
        try:
            for i in range(nv.nvmlDeviceGetCount()):
                handle = nv.nvmlDeviceGetHandleByIndex(i)
                uuid = nv.nvmlDeviceGetUUID(handle)
                uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
                out[uuid] = _Gpu(f"nvml:{i}", uuid, "", handle, False)
        except nv.NVMLError as exc:
            log.warning("NVML could not list the GPUs: %s", exc)
        return out


@dataclass(frozen=True)
class JobGpus:
    """What a study's job sets on the GPUs of the node it runs on, around its run.

    It travels to the node with the job (submitit pickles it): ``nvml`` is None there (the
    node imports ``pynvml``) but where a test passes its fake.
    """

    settings: GpuSettings
    ledger: Path
    study: str
    run_key: str
    where: str
    nvml: Any = None


@dataclass(frozen=True)
class GpuRefused:
    """A job's node refused the run's GPU settings; nothing of the run was started there."""

    host: str
    message: str


T = TypeVar("T")


def on_node(
    job: JobGpus, task: Callable[[], T], echo: Callable[[str], None] = print
) -> T | GpuRefused:
    """``task()`` with ``job``'s settings set on the GPUs this node's run sees, and put back
    after it however it ends (an exception, a signal turned into one).

    First puts back what a job of the study killed on this host left on those GPUs (only
    those: another job may hold the others), then checks range and permission as
    :meth:`GpuControl.check` does before a local study's first run. The settings to put back
    are kept in ``job.ledger`` (:class:`FileLedger`), so a job killed outright leaves them for
    the next job of the study on this host, or the next runner here, to put back.

    Returns:
        What ``task`` returns, or :class:`GpuRefused` (one line) where this node refused a
        setting, had no NVIDIA GPU or could not keep the ledger: ``task`` is not called.
    """
    control = GpuControl(
        FileLedger(job.ledger), job.study, nvml=job.nvml, echo=echo, all_gpus=False
    )
    with contextlib.ExitStack() as stack:
        stack.callback(control.close)
        try:
            for line in control.restore_leftovers():
                echo(f"left set by a job of the study, put back: {line}")
            control.check([job.settings], job.where)
            stack.enter_context(control.applied(job.settings, job.run_key))
        except JoulecastError as exc:
            return GpuRefused(control.host, str(exc))
        result = task()
    return result


def study_settings(study: Study, planned: Sequence[PlannedRun]) -> list[GpuSettings]:
    """The distinct GPU settings of ``planned`` runs (none where no run has any)."""
    seen: dict[GpuSettings, None] = {}
    for run in planned:
        settings = GpuSettings.of(study, run)
        if settings:
            seen[settings] = None
    return list(seen)
