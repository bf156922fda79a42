"""Stores in a bad state (a full disk, damaged, read-only): every command says so in one line,
exits 2, and the store's runs stay as they were."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

from joulecast import cli
from joulecast.errors import StoreError
from joulecast.store import SCHEMA_VERSION, Store
from tests.store_formats import old_store


def samples(rows: int = 2000, device: str = "gpu:0") -> pd.DataFrame:
    t = np.arange(rows) * 0.1
    return pd.DataFrame(
        {
            "t_s": t,
            "device": device,
            "power_w": 100.0 + 10.0 * np.sin(t),
            "energy_j": None,
            "util_pct": 50.0,
            "mem_used_mib": None,
            "temp_c": None,
            "source": "nvml",
            "measured": True,
        }
    )


def make_store(path: Path, runs: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with Store(path) as store:
        for i in range(runs):
            store.import_run(samples=samples(), name=f"r{i}")
    return path


def trace(folder: Path, rows: int = 3000) -> Path:
    path = folder / "power.csv"
    lines = "".join(f"{i * 0.1:.1f},0,{100 + i % 7}\n" for i in range(rows))
    path.write_text("t_s,gpu_index,power_w\n" + lines)
    return path


def run_count(path: Path) -> int:
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
    finally:
        conn.close()


def one_line(capsys: pytest.CaptureFixture[str], path: Path) -> str:
    """The error line the command printed, checked: one line, naming the file."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"joulecast: error: {path}: "), err
    return err


def full_disk(path: Path) -> Store:
    """The store at ``path``, on a disk as good as full: SQLite may not grow the file."""
    store = Store(path)
    pages = store.query("PRAGMA page_count")[0]["page_count"]
    store.query(f"PRAGMA max_page_count = {pages}")
    return store


# -- a full disk ------------------------------------------------------------------------------


def test_a_full_disk_says_so_and_keeps_nothing_of_the_write(tmp_path: Path) -> None:
    path = make_store(tmp_path / "s.db", runs=1)
    with full_disk(path) as store:
        with pytest.raises(StoreError, match=r"s\.db: the disk is full \(database or disk"):
            store.import_run(samples=samples(20_000), name="big")
        assert len(store.runs()) == 1
        store.query("PRAGMA max_page_count = 1000000")
        store.import_run(samples=samples(20_000), name="big")  # the connection is still good
    assert run_count(path) == 2


def test_a_full_disk_is_one_line_from_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_store(tmp_path / "s.db", runs=1)
    monkeypatch.setattr(cli, "store_of", lambda args, **_: full_disk(Path(args.store)))
    power = trace(tmp_path, rows=20_000)
    assert cli.main(["import", "trace", "--store", str(path), "--power", str(power)]) == 2
    assert "the disk is full" in one_line(capsys, path)
    assert run_count(path) == 1


# -- read-only stores -------------------------------------------------------------------------


class _CapHeader(ctypes.Structure):
    _fields_: ClassVar = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_: ClassVar = [
        (name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")
    ]


_CAP_VERSION_3 = 0x20080522
_DAC_CAPS = 1 << 1 | 1 << 2  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


def _capabilities(
    libc: ctypes.CDLL, data: ctypes.Array[_CapData] | None = None
) -> ctypes.Array[_CapData]:
    """This thread's capabilities (capget), or set them to ``data`` (capset)."""
    header = _CapHeader(_CAP_VERSION_3, 0)
    if data is None:
        data = (_CapData * 2)()
        if libc.capget(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capget")
    elif libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    return data


@contextmanager
def file_permissions_apply() -> Iterator[None]:
    """File permissions bind this thread in the block, as they bind an ordinary user: as root,
    its capabilities to pass them by are set aside (on Linux) and taken up again after."""
    if os.geteuid() != 0:
        yield
        return
    if sys.platform != "linux":
        pytest.skip("root passes file permissions by, and only Linux lets a test set that aside")
    libc = ctypes.CDLL(None, use_errno=True)
    caps = _capabilities(libc)
    saved = caps[0].effective
    caps[0].effective &= ~_DAC_CAPS
    _capabilities(libc, caps)
    try:
        yield
    finally:
        caps[0].effective = saved
        _capabilities(libc, caps)


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], Path]]:
    """Makes a file (and with it its folder) read-only: ``read_only(file)``; the folder is
    writable again after the test, for its clean-up."""
    folders: list[Path] = []

    def make(path: Path, folder_too: bool = True) -> Path:
        path.chmod(0o444)
        if folder_too:
            path.parent.chmod(0o555)
            folders.append(path.parent)
        return path

    yield make
    for folder in folders:
        folder.chmod(0o755)


def test_a_read_only_store_is_listed_shown_and_exported(
    tmp_path: Path, read_only: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = read_only(make_store(tmp_path / "shared" / "s.db"))
    out = tmp_path / "out"
    out.mkdir()
    with file_permissions_apply():
        assert cli.main(["runs", "--store", str(path), "--json"]) == 0
        assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["r0", "r1", "r2"]
        assert cli.main(["show", "r1", "--store", str(path), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["energy_j"] > 0
        assert cli.main(["export", "2", "--store", str(path), "-o", str(out)]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 2  # power and phases
        assert cli.main(["analyze", "--store", str(path), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["runs"] == 3
        assert cli.main(["doctor", "--store", str(path)]) == 0
        assert capsys.readouterr().out.startswith(f"{path}: ok")
        assert cli.main(["import", "trace", "--store", str(path), "--power", str(trace(out))]) == 2
        err = one_line(capsys, path)
        assert "cannot write into it: the file or its folder is read-only" in err
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.db"]
    assert run_count(path) == 3
    assert len(pd.read_csv(out / "run-2-power.csv")) == 2000


def test_a_read_only_store_is_reported(
    tmp_path: Path, read_only: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    path = read_only(make_store(tmp_path / "shared" / "s.db"))
    report = tmp_path / "report.md"
    with file_permissions_apply():
        assert cli.main(["report", "--store", str(path), "-o", str(report), "--format", "md"]) == 0
    assert capsys.readouterr().out.startswith(f"report: {report}") and report.read_text()


def test_a_read_only_file_in_a_writable_folder(
    tmp_path: Path, read_only: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = read_only(make_store(tmp_path / "s.db"), folder_too=False)
    with file_permissions_apply():
        assert cli.main(["runs", "--store", str(path), "--json"]) == 0
        assert len(json.loads(capsys.readouterr().out)) == 3
        argv = ["measure", "--store", str(path), "--no-gpu", "-q", "--", sys.executable, "-c", ""]
        assert cli.main(argv) == 2
        assert "read-only here" in one_line(capsys, path)
    assert run_count(path) == 3


def _leftover_wal(path: Path, folder: Path) -> Path:
    """A copy in ``folder`` of the store at ``path`` with a write still in its ``-wal`` (as a
    writer that died leaves it)."""
    folder.mkdir()
    with Store(path) as store:
        store.query("PRAGMA wal_autocheckpoint = 0")
        store.import_run(samples=samples(), name="in the wal")
        for name in (path.name, path.name + "-wal", path.name + "-shm"):
            shutil.copy(path.with_name(name), folder / name)
    return folder / path.name


def test_a_read_only_store_with_a_leftover_wal_is_read_whole(
    tmp_path: Path, read_only: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    copy = read_only(_leftover_wal(make_store(tmp_path / "s.db"), tmp_path / "copy"))
    for name in ("s.db-wal", "s.db-shm"):
        (copy.parent / name).chmod(0o444)
    with file_permissions_apply():
        assert cli.main(["runs", "--store", str(copy), "--json"]) == 0
    names = [r["name"] for r in json.loads(capsys.readouterr().out)]
    assert names == ["r0", "r1", "r2", "in the wal"]


def test_a_leftover_wal_that_cannot_be_read_is_one_line(
    tmp_path: Path, read_only: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    copy = _leftover_wal(make_store(tmp_path / "s.db"), tmp_path / "copy")
    (copy.parent / "s.db-shm").unlink()  # its index, which only a writable folder can rebuild
    read_only(copy)
    with file_permissions_apply():
        assert cli.main(["runs", "--store", str(copy)]) == 2
    err = one_line(capsys, copy)
    assert "writes not yet merged into the file wait in s.db-wal" in err
    assert f"write access to folder {copy.parent}" in err


def test_a_missing_store_reads_as_empty_and_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "none.db"
    assert cli.main(["runs", "--store", str(path), "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
    assert not path.exists()
    with Store(path, read_only=True) as store:
        assert store.runs().empty and store.read_only
        with pytest.raises(StoreError, match=r"none\.db: opened read-only: nothing can be"):
            store.create_run(name="x")
    assert not path.exists()


def test_an_older_schema_is_upgraded_for_reading_where_it_can_be_written(
    tmp_path: Path, read_only: Callable[..., Path]
) -> None:
    writable, fixed = tmp_path / "w" / "old.db", tmp_path / "r" / "old.db"
    for path in (writable, fixed):
        path.parent.mkdir()
        old_store(path, 1)
    with Store(writable, read_only=True) as store:
        assert store.schema_version == SCHEMA_VERSION and len(store.runs()) == 1
    read_only(fixed)
    with file_permissions_apply(), pytest.raises(StoreError) as info:
        Store(fixed, read_only=True)
    message = str(info.value)
    assert message.startswith(f"{fixed}: schema version 1 must be upgraded to {SCHEMA_VERSION}")
    assert "read-only here" in message


def test_a_dead_writers_run_stays_running_in_a_store_that_cannot_be_written(
    tmp_path: Path, read_only: Callable[..., Path]
) -> None:
    path = tmp_path / "shared" / "s.db"
    path.parent.mkdir()
    code = (
        "import os, joulecast.store as s\n"
        f"st = s.Store({str(path)!r})\n"
        "st.create_run(name='orphan')\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    read_only(path)
    with file_permissions_apply(), Store(path, read_only=True) as store:
        assert store.runs()["status"].tolist() == ["running"]
    path.parent.chmod(0o755)
    path.chmod(0o644)
    with Store(path, read_only=True) as store:  # where it can be written, it is marked
        assert store.runs()["status"].tolist() == ["interrupted"]


# -- damaged files ----------------------------------------------------------------------------


@pytest.fixture
def discard() -> Iterator[list[Path]]:
    """Stores damaged on purpose, removed after the test (the aggregates check would fail
    on them)."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        for name in (path.name, path.name + "-wal", path.name + "-shm"):
            path.with_name(name).unlink(missing_ok=True)


def garble(path: Path) -> Path:
    """Overwrite the middle third of ``path`` with noise (the same noise every time)."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(size // 3)
        fh.write(np.random.default_rng(0).bytes(size // 3))
    return path


def test_a_damaged_store_is_not_opened_for_writing(tmp_path: Path, discard: list[Path]) -> None:
    path = garble(make_store(tmp_path / "s.db"))
    discard.append(path)
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"s\.db: the store file is damaged \(.+\); nothing is"):
        Store(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("verb", ["import", "measure"])
def test_a_damaged_store_refuses_writes_in_one_line(
    tmp_path: Path, discard: list[Path], capsys: pytest.CaptureFixture[str], verb: str
) -> None:
    path = garble(make_store(tmp_path / "s.db"))
    discard.append(path)
    marker = tmp_path / "child-ran"
    argv = {
        "import": ["import", "trace", "--power", str(trace(tmp_path))],
        "measure": [
            "measure",
            "--no-gpu",
            "-q",
            "--",
            sys.executable,
            "-c",
            f"open({str(marker)!r}, 'w')",
        ],
    }[verb]
    assert cli.main([*argv[:2], "--store", str(path), *argv[2:]]) == 2
    err = one_line(capsys, path)
    assert "the store file is damaged" in err and f"joulecast doctor --store {path}" in err
    assert run_count(path) == 3 and not marker.exists()


def test_a_read_that_meets_damage_is_one_line(
    tmp_path: Path, discard: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = garble(make_store(tmp_path / "s.db"))
    discard.append(path)
    assert cli.main(["export", "2", "--store", str(path), "-o", str(tmp_path)]) == 2
    assert "the store file is damaged" in one_line(capsys, path)
    assert run_count(path) == 3


def _not_sqlite(path: Path) -> None:
    path.write_text("t_s,gpu_index,power_w\n0,0,100\n")


def _truncated(path: Path) -> None:
    data = make_store(path).read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbled_header(path: Path) -> None:
    data = bytearray(make_store(path).read_bytes())
    data[16:100] = np.random.default_rng(0).bytes(84)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("spoil", [_not_sqlite, _truncated, _garbled_header])
@pytest.mark.parametrize("verb", [["runs"], ["show", "1"], ["import", "trace"]])
def test_a_file_that_is_no_sound_store_is_one_line(
    tmp_path: Path,
    discard: list[Path],
    capsys: pytest.CaptureFixture[str],
    spoil: Callable[[Path], None],
    verb: list[str],
) -> None:
    path = tmp_path / "s.db"
    spoil(path)
    discard.append(path)
    before = path.read_bytes()
    extra = ["--power", str(trace(tmp_path))] if verb[0] == "import" else []
    assert cli.main([*verb, "--store", str(path), *extra]) == 2
    err = one_line(capsys, path)
    assert "not a joulecast store" in err or "the store file is damaged" in err
    assert path.read_bytes() == before


def test_an_empty_file_is_a_new_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.db"
    path.touch()
    assert cli.main(["runs", "--store", str(path), "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
    assert cli.main(["import", "trace", "--store", str(path), "--power", str(trace(tmp_path))]) == 0
    assert run_count(path) == 1


# -- joulecast doctor --store ----------------------------------------------------------------


def doctor(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = cli.main(["doctor", "--store", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_doctor_finds_a_sound_store_sound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_store(tmp_path / "s.db")
    before = path.read_bytes()
    code, found = doctor(capsys, str(path))
    assert code == 0 and found["ok"] and found["problems"] == []
    assert (found["runs"], found["samples"], found["schema_version"]) == (3, 6000, SCHEMA_VERSION)
    monkeypatch.setenv("JOULECAST_STORE", str(path))  # --store without PATH: the default
    assert cli.main(["doctor", "--store"]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: ok (schema version {SCHEMA_VERSION}, 3")
    assert path.read_bytes() == before


def test_doctor_finds_samples_that_no_longer_match_their_aggregates(
    tmp_path: Path, discard: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_store(tmp_path / "s.db")
    discard.append(path)
    with closing(sqlite3.connect(path)) as conn, conn:  # a value garbled inside a record
        conn.execute("UPDATE samples SET power_w = 1e6 WHERE run_id = 2 AND t_s = 50.0")
    code, found = doctor(capsys, str(path))
    assert code == 2 and not found["ok"] and found["runs"] == 3
    assert all(p.startswith("run 2: gpu:0: ") for p in found["problems"]), found["problems"]
    assert any("trap_j" in p for p in found["problems"])
    assert any("sample row(s) carry a running energy" in p for p in found["problems"])
    assert run_count(path) == 3


def test_doctor_lists_damage(
    tmp_path: Path, discard: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = garble(make_store(tmp_path / "s.db"))
    discard.append(path)
    assert cli.main(["doctor", "--store", str(path)]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{path}: ") and " problem(s) " in lines[0]
    assert len(lines) > 2 and any("btreeInitPage" in line for line in lines)
    code, found = doctor(capsys, str(path))
    assert code == 2 and len(found["problems"]) == len(lines) - 1


@pytest.mark.parametrize("spoil", [_not_sqlite, _garbled_header, None])
def test_doctor_on_what_is_no_store_is_one_line(
    tmp_path: Path,
    discard: list[Path],
    capsys: pytest.CaptureFixture[str],
    spoil: Callable[[Path], None] | None,
) -> None:
    path = tmp_path / "s.db"
    if spoil is not None:
        spoil(path)
        discard.append(path)
    assert cli.main(["doctor", "--store", str(path)]) == 2
    err = one_line(capsys, path)
    assert "not a joulecast store" in err or "no such store file" in err
