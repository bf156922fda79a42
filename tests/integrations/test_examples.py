"""Each example script trains 2 epochs under ``joulecast measure`` and lands in its run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NEEDS = {
    "torch_loop.py": ["torch"],
    "lightning_train.py": ["torch", "lightning"],
    "huggingface_train.py": ["torch", "transformers", "accelerate"],
    "keras_fit.py": ["keras", "torch"],
    "mlflow_log.py": ["mlflow", "torch", "pyarrow"],
}


def test_the_examples_exist():
    assert set(NEEDS) <= {p.name for p in EXAMPLES.glob("*.py")}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(NEEDS))
def test_example_under_joulecast_measure(script, tmp_path):
    missing = [m for m in NEEDS[script] if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    store = tmp_path / "runs.db"
    env = {k: v for k, v in os.environ.items() if k != "JOULECAST_RUN_ID"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path}/mlflow.db"
    env["KERAS_BACKEND"] = "torch"
    cmd = [sys.executable, "-m", "joulecast", "measure", "--store", str(store), "--name", script]
    proc = subprocess.run(
        [*cmd, "--", sys.executable, str(EXAMPLES / script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = subprocess.run(
        [sys.executable, "-m", "joulecast", "show", "last", "--store", str(store), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    run = json.loads(shown.stdout)
    assert run["status"] == "completed" and run["name"] == script
    assert [e["index"] for e in run["epochs"]] == [0, 1]
    assert all(e["samples"] for e in run["epochs"])
    assert all(e["metrics"] for e in run["epochs"])
    assert not (tmp_path / "joulecast.db").exists()  # the example joined the CLI's run
