"""Stores in a bad state (a full disk, damaged, read-only): every command says so in one line,
exits 2, and the store's runs stay as they were."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from joulecast import cli
from joulecast.errors import StoreError
from joulecast.store import Store


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
