from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from joulecast.store import Store
from tests.ledger_check import mismatches, sqlite_files


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "runs.db")
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test inherits a run to join, a store or a trace to replay from the environment."""
    monkeypatch.delenv("JOULECAST_RUN_ID", raising=False)
    monkeypatch.delenv("JOULECAST_REPLAY_GPUS", raising=False)
    monkeypatch.setenv("JOULECAST_STORE", str(tmp_path / "default.db"))


def sine_trace(duration_s: float = 60.0, dt_s: float = 0.05, devices: int = 2) -> pd.DataFrame:
    """Power 150 + 50 sin(2 pi t / 20) + 10 d on each device d, sampled every dt_s."""
    t = np.arange(0.0, duration_s + dt_s / 2, dt_s)
    frames = [
        pd.DataFrame(
            {
                "t_s": t,
                "device": f"gpu:{d}",
                "power_w": 150 + 50 * np.sin(2 * np.pi * t / 20) + 10 * d,
            }
        )
        for d in range(devices)
    ]
    return pd.concat(frames, ignore_index=True)


def sine_energy_j(a: float, b: float, devices: int = 2) -> float:
    """Analytic integral of :func:`sine_trace` over [a, b], summed over devices."""
    period = 20.0

    def one(d: int) -> float:
        w = 2 * np.pi / period
        return (150 + 10 * d) * (b - a) - 50 / w * (np.cos(w * b) - np.cos(w * a))

    return float(sum(one(d) for d in range(devices)))


_CHECKED: set[Path] = set()


def _check_stores(paths: list[Path]) -> None:
    _CHECKED.update(paths)
    problems = [p for path in paths for p in mismatches(path)]
    assert not problems, "aggregates differ from the kernel: " + "; ".join(problems[:5])


@pytest.fixture(autouse=True)
def _aggregates_exact(tmp_path: Path) -> Iterator[None]:
    """Every store a test leaves behind has energy aggregates equal to the raw integration."""
    yield
    _check_stores(sqlite_files(tmp_path))


@pytest.fixture(scope="session", autouse=True)
def _aggregates_exact_in_shared_folders(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """So do the stores that tests share (made in folders of ``tmp_path_factory``)."""
    yield
    found = sqlite_files(tmp_path_factory.getbasetemp())
    _check_stores([path for path in found if path not in _CHECKED])


PYTHON = sys.executable
ENV_NO_JOIN = {k: v for k, v in os.environ.items() if k != "JOULECAST_RUN_ID"}


TINY_STUDY = Path(__file__).resolve().parents[1] / "examples" / "studies" / "tiny.toml"


@pytest.fixture(scope="session")
def _tiny_study_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny example study run to the end once per session (eight Keras runs)."""
    pytest.importorskip("keras")
    pytest.importorskip("torch")
    store = tmp_path_factory.mktemp("tiny-study") / "tiny.db"
    subprocess.run(
        [sys.executable, "-m", "joulecast", "study", "run", str(TINY_STUDY), "--store", str(store)],
        check=True,
        capture_output=True,
        timeout=900,
        env={k: v for k, v in os.environ.items() if not k.startswith("JOULECAST_")},
    )
    return store


@pytest.fixture
def tiny_study_store(_tiny_study_once: Path, tmp_path: Path) -> Path:
    """A copy, in this test's folder, of the store of the tiny example study run to the end."""
    return Path(shutil.copy(_tiny_study_once, tmp_path / "tiny.db"))
