"""Run tables (``--data CSV``) that are not what they should be: one line naming the file, line,
column and value, exit 2 and nothing written, for ``estimate``, ``fit-offline`` and
``evaluate-estimators`` alike. Every file is made here from a few of the paper's runs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("sklearn")

from joulecast.cli import main
from joulecast.offline import features
from joulecast.offline.features import read_runs

PAPER = (
    Path(__file__).parents[2] / "src" / "joulecast" / "offline" / "data" / "paper_runs_train.csv"
)


def _runs() -> pd.DataFrame:
    runs = pd.read_csv(PAPER).head(30)
    return runs.assign(
        epochs=20,
        duration_s=20 * runs["epoch_energy_j"] / runs["avg_power_w"],
        energy_j=20 * runs["epoch_energy_j"],
        gpu_util_pct=80.0,
    )


def cell(column: str, value: object, row: int = 4) -> Callable[[Path], None]:
    """A run table whose ``row`` (0-based; line ``row + 2``) holds ``value`` in ``column``."""

    def write(path: Path) -> None:
        frame = _runs().astype({column: object})
        frame.loc[row, column] = value
        frame.to_csv(path, index=False)

    return write


def text(body: str | bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes(body.encode() if isinstance(body, str) else body)

    return write


def header_then(rows: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_text(",".join(_runs().columns) + "\n" + rows)

    return write


# (case, how the file is made, what the one line must say after the file's name)
CELLS = [
    ("inf", cell("gflops", "inf"), "line 6, column gflops: inf: expected a finite number above 0"),
    ("-inf", cell("gflops", "-inf"), "line 6, column gflops: -inf"),
    ("nan", cell("gpu_tdp_w", "nan"), "line 6, column gpu_tdp_w: nan"),
    ("empty", cell("ram_gb", ""), "line 6, column ram_gb: nan"),
    ("negative", cell("batch_size", -64), "line 6, column batch_size: -64"),
    ("zero", cell("input_width", 0, row=0), "line 2, column input_width: 0"),
    (
        "huge",
        cell("train_samples", 1e300),
        "line 6, column train_samples: 1e+300: expected a finite number above 0 to 1e+13",
    ),
    ("1e5000", cell("val_samples", "1e5000"), "line 6, column val_samples: inf"),
    ("5000 digits", cell("gflops", "9" * 5000), "line 6, column gflops: inf"),
    ("text", cell("batch_size", "lots"), "line 6, column batch_size: 'lots'"),
    ("hex", cell("batch_size", "0x40"), "line 6, column batch_size: '0x40'"),
    ("superscript", cell("input_height", "²"), "line 6, column input_height: '²'"),
    ("bool", cell("gpu_cuda_cores", True), "line 6, column gpu_cuda_cores"),
    ("target inf", cell("avg_power_w", "inf"), "line 6, column avg_power_w: inf"),
    (
        "target negative",
        cell("epoch_energy_j", -1.0, row=29),
        "line 31, column epoch_energy_j: -1.0",
    ),
    ("epochs negative", cell("epochs", -3), "line 6, column epochs: -3"),
    ("epochs text", cell("epochs", "ten"), "line 6, column epochs: 'ten'"),
    ("duration inf", cell("duration_s", "inf"), "line 6, column duration_s: inf"),
    ("duration a century", cell("duration_s", 3.2e9), "line 6, column duration_s: 3200000000.0"),
    (
        "usage over 100",
        cell("gpu_util_pct", 150),
        "line 6, column gpu_util_pct: 150.0: expected a finite number above 0 to 100",
    ),
    ("energy nan text", cell("energy_j", "NaN text"), "line 6, column energy_j: 'NaN text'"),
]
FILES = [
    ("empty file", text(""), "not a readable CSV file"),
    ("binary", text(bytes(range(256)) * 8), "not a readable CSV file"),
    ("latin-1", text(b"gpu,gflops\ncaf\xe9,1\n"), "not a readable CSV file"),
    ("NUL bytes", text(b"\x00\x00\x00,\x00\n\x00,\x00\n"), "missing column(s)"),
    ("no feature columns", text("a,b,c\n1,2,3\n"), "missing column(s) gpu_cuda_cores"),
    (
        "rows too long",
        header_then(("1," * 25 + "1\n") * 2),
        "line 2: more fields than the 21 columns",
    ),
    (
        "a row too long",
        header_then("1," * 20 + "1\n" + "1," * 25 + "1\n"),
        "Expected 21 fields in line 3, saw 26",
    ),
    ("markup header", text("[bold]x[/bold],\x1b[31my\n1,2\n"), "missing column(s)"),
]


def _fails(argv: list[str], path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"joulecast: error: {path}: ")
    return lines[0].removeprefix(f"joulecast: error: {path}: ")


VERBS = {
    "estimate": lambda data, out: ["estimate", "--data", str(data), "--json"],
    "fit-offline": lambda data, out: ["fit-offline", "--data", str(data), "-o", str(out)],
    "evaluate-estimators": lambda data, out: ["evaluate-estimators", "--data", str(data)],
}


@pytest.mark.parametrize("verb", list(VERBS))
@pytest.mark.parametrize(("case", "make", "said"), CELLS + FILES, ids=[c[0] for c in CELLS + FILES])
def test_a_bad_run_table_is_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    verb: str,
    case: str,
    make: Callable[[Path], None],
    said: str,
) -> None:
    data = tmp_path / "runs.csv"
    make(data)
    out = tmp_path / "model.json"
    assert said in _fails(VERBS[verb](data, out), data, capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]


@pytest.mark.parametrize("verb", list(VERBS))
def test_a_folder_a_missing_file_and_a_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, verb: str
) -> None:
    out = tmp_path / "model.json"
    assert "is a folder" in _fails(VERBS[verb](tmp_path, out), tmp_path, capsys)
    missing = tmp_path / "missing.csv"
    assert "no such file" in _fails(VERBS[verb](missing, out), missing, capsys)
    monkeypatch.setattr(features, "MAX_TABLE_BYTES", 1000)
    big = tmp_path / "big.csv"
    _runs().to_csv(big, index=False)
    assert "more than 1,000 bytes" in _fails(VERBS[verb](big, out), big, capsys)
    if os.path.exists("/dev/zero"):
        zero = Path("/dev/zero")
        assert "more than 1,000 bytes" in _fails(VERBS[verb](zero, out), zero, capsys)
    assert not out.exists()


def test_empty_optional_cells_are_missing_values(tmp_path: Path) -> None:
    data = tmp_path / "runs.csv"
    cell("epochs", "")(data)
    runs = read_runs(data)
    assert runs["epochs"].isna().sum() == 1 and runs["epochs"].dropna().eq(20.0).all()
