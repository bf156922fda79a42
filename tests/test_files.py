"""Files joulecast writes in a folder another user can write to: links are never followed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from joulecast.errors import InputError
from joulecast.outputs import write_atomic
from joulecast.study.runner import execute, study_lock


def _planted(tmp_path: Path, name: str) -> tuple[Path, Path]:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    link = tmp_path / name
    link.symlink_to(victim)
    return link, victim


def test_a_link_planted_as_the_study_lock_is_not_followed(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    _planted(tmp_path, "s.db.study-demo.lock")
    with pytest.raises(InputError, match="symbolic link"), study_lock(store, "demo"):
        pass
    assert (tmp_path / "victim.txt").read_text() == "precious\n"


def test_a_link_planted_as_a_run_log_is_not_followed(tmp_path: Path) -> None:
    link, victim = _planted(tmp_path, "run.log")
    with pytest.raises(InputError, match="symbolic link"):
        execute([sys.executable, "-c", "print('x')"], link, 60)
    assert victim.read_text() == "precious\n"


def test_a_file_is_written_whole_through_a_new_name_and_never_into_a_folder(
    tmp_path: Path,
) -> None:
    link, victim = _planted(tmp_path, "report.html")
    write_atomic(link, lambda tmp: Path(tmp).write_text("new"))
    assert victim.read_text() == "precious\n"  # the link is replaced, its target untouched
    assert link.read_text() == "new" and not link.is_symlink()
    with pytest.raises(InputError, match="is a folder"):
        write_atomic(tmp_path, lambda tmp: Path(tmp).write_text("x"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "victim.txt"]
    # Read by others as the umask allows (not 0600).
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "shared.csv", lambda tmp: Path(tmp).write_text("a"))
    finally:
        os.umask(old)
    assert (tmp_path / "shared.csv").stat().st_mode & 0o777 == 0o644
