"""Smoke test of benchmarks/import_time.py: one round prints every line (figures not checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "import_time.py"


def test_import_time_benchmark_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    labels = [line.split("  ")[0] for line in done.stdout.splitlines()]
    assert "import joulecast" in labels
    assert "from joulecast import measure" in labels
    assert "floor: python -c pass" in labels
    assert any(line.startswith("target: import joulecast under 0.2 s") for line in labels)
