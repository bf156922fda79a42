"""JSON on standard output, and files written whole or not at all."""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from joulecast.errors import InputError, OutputError
from joulecast.outputs import print_json, write_atomic

PAPER = (
    Path(__file__).parents[1] / "src" / "joulecast" / "offline" / "data" / "paper_runs_train.csv"
)


def test_print_json(capsys):
    print_json({"b": 1, "a": Path("x"), "c": [math.nan, np.float64(math.inf), 2.5]})
    out = capsys.readouterr().out
    assert json.loads(out) == {"b": 1, "a": "x", "c": [None, None, 2.5]}
    assert out.index('"b"') < out.index('"a"')  # keys keep their order
    assert "NaN" not in out and "Infinity" not in out


def test_write_atomic_replaces_the_file(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    write_atomic(target, lambda tmp: Path(tmp).write_text("new"))
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")

    def fail(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_a_durable_write_flushes_the_file_then_its_folder_and_only_when_asked(
    tmp_path, monkeypatch
):
    synced: list[str] = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")))
    write_atomic(tmp_path / "a.json", lambda tmp: Path(tmp).write_text("{}"))
    assert synced == []
    write_atomic(tmp_path / "b.json", lambda tmp: Path(tmp).write_text("{}"), durable=True)
    written, folder = synced
    assert written.startswith(f"{tmp_path}/.b.json.") and folder == str(tmp_path)
    assert (tmp_path / "b.json").read_text() == "{}"


def test_a_link_at_the_target_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    target = tmp_path / "report.html"
    target.symlink_to(victim)
    write_atomic(target, lambda tmp: Path(tmp).write_text("report"))
    assert not target.is_symlink() and target.read_text() == "report"
    assert victim.read_text() == "keep"


def test_new_file_has_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.json", lambda tmp: Path(tmp).write_text("{}"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_missing_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_atomic(tmp_path / "no" / "a.csv", lambda tmp: None)


@pytest.mark.parametrize("verb", ["report", "fit-offline"])
def test_a_folder_as_the_output_is_one_line_before_any_work(
    tmp_path, monkeypatch, capsys, verb
) -> None:
    pytest.importorskip("sklearn")
    from joulecast.analysis import report
    from joulecast.cli import main
    from joulecast.offline.models import OfflineEstimator

    def no_work(*args, **kwargs):
        raise AssertionError("the output is checked first")

    monkeypatch.setattr(report, "build", no_work)
    monkeypatch.setattr(OfflineEstimator, "fit", no_work)
    root = sorted(os.listdir("/"))
    store = ["--store", str(tmp_path / "s.db")]
    data = ["--data", str(tmp_path / "runs.csv")] if verb == "fit-offline" else []
    for output in (tmp_path, Path("/"), Path(".")):
        assert main([verb, *store, *data, "-o", str(output)]) == 2
        err = capsys.readouterr().err
        assert (
            err
            == f"joulecast: error: {output}: is a folder; expected the name of the file to write\n"
        )
    assert sorted(os.listdir("/")) == root and os.listdir(tmp_path) == []


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_every_output_file_has_the_umask_permissions(tmp_path, store, umask, mode) -> None:
    from joulecast.analysis.report import write_html, write_md, write_tables
    from joulecast.offline.models import default_estimator
    from joulecast.traces import export_run, import_trace
    from tests.test_files import _report

    power = tmp_path / "power.csv"
    power.write_text("t_s,gpu_index,power_w\n0,0,100\n1,0,110\n2,0,120\n")
    run_id = import_trace(store, power)
    report = _report(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    old = os.umask(umask)
    try:
        written = [
            *export_run(store, run_id, out),
            write_html(report, out / "r.html"),
            write_md(report, out / "r.md"),
            out / "r_figures" / "box.png",
            *write_tables(report, out / "tables"),
        ]
        default_estimator().save(out / "model.json")
        written.append(out / "model.json")
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in written} == {p.name: mode for p in written}


def _disk_full_after(monkeypatch, owner, name, keep=100):
    """``owner.name`` writes ``keep`` characters of what it was asked to, then meets a full
    disk: the write fails midway."""
    real = getattr(owner, name)

    def half(*args, **kwargs):
        path = next(a for a in args if isinstance(a, (str, Path)))
        Path(path).write_bytes(b"x" * keep)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(owner, name, half)
    return real


def _one_line(argv, capsys, path) -> str:
    from joulecast.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: cannot be written: No space left" in err
    return err


def test_a_write_that_fails_midway_leaves_nothing_behind(tmp_path, store, monkeypatch, capsys):
    from joulecast import traces
    from joulecast.analysis import report
    from tests.test_files import _report

    power = tmp_path / "power.csv"
    power.write_text("t_s,gpu_index,power_w\n0,0,100\n1,0,110\n2,0,120\n")
    run = str(traces.import_trace(store, power))
    out = tmp_path / "out"
    out.mkdir()
    old_export = out / f"run-{run}-power.csv"
    old_export.write_text("the old export\n")
    with monkeypatch.context() as patch:
        _disk_full_after(patch, traces, "_samples_csv")
        _one_line(["export", run, "--store", str(store.path), "-o", str(out)], capsys, old_export)
    assert os.listdir(out) == [old_export.name]  # the old file as it was, no temporary
    assert old_export.read_text() == "the old export\n"

    monkeypatch.setattr(report, "build", lambda *args, **kwargs: _report(tmp_path))
    with monkeypatch.context() as patch:
        _disk_full_after(patch, Path, "write_text")
        for format in ("html", "md"):
            target = out / f"r.{format}"
            argv = ["report", "--store", str(store.path), "-o", str(target), "--format", format]
            _one_line(argv, capsys, target)
    assert sorted(os.listdir(out)) == ["r_figures", old_export.name]


def test_a_model_file_that_fails_midway_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")
    from joulecast.offline.models import OfflineEstimator, default_estimator

    data = tmp_path / "runs.csv"
    pd.read_csv(PAPER).head(30).to_csv(data, index=False)
    monkeypatch.setattr(OfflineEstimator, "fit", lambda self, *a, **k: default_estimator())
    out = tmp_path / "out"
    out.mkdir()
    _disk_full_after(monkeypatch, Path, "write_text")
    _one_line(
        ["fit-offline", "--data", str(data), "-o", str(out / "m.json")], capsys, out / "m.json"
    )
    assert os.listdir(out) == []


def test_a_folder_without_write_permission_is_one_line(tmp_path, monkeypatch) -> None:
    real_open = os.open

    def locked(path, flags, *args):  # what a folder the user may not write in does
        if flags & os.O_EXCL:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", locked)
    with pytest.raises(OutputError, match=r"a\.csv: cannot be written: Permission denied$"):
        write_atomic(tmp_path / "a.csv", lambda tmp: Path(tmp).write_text("a"))
    assert os.listdir(tmp_path) == []
