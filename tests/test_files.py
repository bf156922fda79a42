"""Files joulecast writes in a folder another user can write to: links are never followed."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from joulecast.analysis.report import Report, Section, write_html, write_md, write_tables
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


def _report(tmp_path: Path) -> Report:
    """A one-section report with a table and a (fake) figure: what the writers need."""
    figure = tmp_path / "made" / "box.png"
    figure.parent.mkdir(exist_ok=True)
    figure.write_bytes(b"\x89PNG not really")
    table = pd.DataFrame({"architecture": ["a", "b"], "j_per_image": [1.0, 2.0]})
    section = Section("Architectures", ["text"], [("J/image", table)], [("J/image", figure)])
    return Report("joulecast report: s.db", [section], figure.parent)


def test_no_report_file_is_written_through_a_planted_link(tmp_path: Path) -> None:
    report = _report(tmp_path)
    shared = tmp_path / "shared"
    names = ["r.html", "r.md", "r_figures/box.png", "tables/architectures--j-image.csv"]
    planted = []
    for name in names:
        (shared / name).parent.mkdir(parents=True, exist_ok=True)
        planted.append(_planted(shared / Path(name).parent, Path(name).name))
    write_html(report, shared / "r.html")
    write_md(report, shared / "r.md")
    write_tables(report, shared / "tables")
    for link, victim in planted:
        assert victim.read_text() == "precious\n"
        assert link.is_file() and not link.is_symlink() and link.stat().st_size > 0


def test_a_link_planted_as_the_report_figure_folder_is_refused(tmp_path: Path) -> None:
    report = _report(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "r_figures").symlink_to(elsewhere)
    with pytest.raises(InputError, match="r_figures: a symbolic link"):
        write_md(report, tmp_path / "r.md")
    assert list(elsewhere.iterdir()) == [] and not (tmp_path / "r.md").exists()
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(InputError, match="taken: not a folder"):
        write_tables(report, tmp_path / "taken")
    with pytest.raises(InputError, match="t_figures: not a folder"):
        (tmp_path / "t_figures").write_text("a file")
        write_md(report, tmp_path / "t.md")


def test_a_figure_is_written_whole_in_the_format_its_name_says(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from joulecast.stability import plot_share

    shares = {"all": pd.DataFrame({"epoch": [1, 2, 3], "share": [0.2, 0.6, 1.0]})}
    link, victim = _planted(tmp_path, "share.png")
    plot_share(shares, str(link))
    assert victim.read_text() == "precious\n"
    assert not link.is_symlink() and link.read_bytes().startswith(b"\x89PNG")
    plot_share(shares, str(tmp_path / "share.svg"))
    assert b"<svg" in (tmp_path / "share.svg").read_bytes()[:500]
    plot_share(shares, str(tmp_path / "share"))
    assert (tmp_path / "share").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(InputError, match=r"share\.xyz: a \.xyz figure; expected one of .*\.png"):
        plot_share(shares, str(tmp_path / "share.xyz"))
    names = ["share", "share.png", "share.svg", "victim.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_a_link_planted_at_the_temporary_name_is_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from joulecast import outputs

    # The other user guessed the random part twice: a link to a file, then a dangling one.
    tokens = iter(["guessed1", "guessed2", "fresh000"])
    monkeypatch.setattr(outputs.secrets, "token_hex", lambda n: next(tokens))
    link, victim = _planted(tmp_path, ".report.html.guessed1")
    dangling = tmp_path / ".report.html.guessed2"
    dangling.symlink_to(tmp_path / "created-through-the-link")
    write_atomic(tmp_path / "report.html", lambda tmp: Path(tmp).write_text("report"))
    assert victim.read_text() == "precious\n" and link.readlink() == victim
    assert not (tmp_path / "created-through-the-link").exists()
    assert (tmp_path / "report.html").read_text() == "report"
