"""The shared pieces: batch sizes, metric conversion, and how the integrations import."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from joulecast.integrations._common import Session, batch_size, float_metrics
from joulecast.records import PhaseKind

from .helpers import stored


def test_batch_size_finds_the_first_tensor():
    x = np.zeros((8, 3))
    assert batch_size(x) == 8
    assert batch_size((x, np.zeros(8))) == 8
    assert batch_size([np.zeros((5, 2)), x]) == 5
    assert batch_size({"input_ids": np.zeros((4, 16)), "labels": np.zeros(4)}) == 4
    assert batch_size(("text", [np.zeros((3, 1))])) == 3
    assert batch_size(np.float32(1.0)) is None  # a 0-d scalar has no batch dimension
    assert batch_size(["a", "b"]) is None
    assert batch_size(None) is None


def test_float_metrics_keeps_numbers_only():
    out = float_metrics(
        {"loss": np.float32(0.5), "acc": 1, "name": "x", "vec": np.zeros(3), "nan": math.nan}
    )
    assert out == {"loss": 0.5, "acc": 1.0, "nan": None}
    assert float_metrics(None) == {}


def test_session_opens_and_stops_its_own_run(tmp_path):
    session = Session("own", store=tmp_path / "s.db", interval_s=0.05)
    run = session.start()
    assert session.owns_run and run.active
    session.begin(PhaseKind.EPOCH, 0)
    session.end(PhaseKind.EPOCH, 0, samples=10, metrics={"loss": 1.0})
    session.finish()
    assert not run.active
    row, epochs, _ = stored(tmp_path / "s.db", run.run_id)
    assert row["status"] == "completed"
    assert epochs["samples"].tolist() == [10]


def test_session_leaves_a_given_run_running(tmp_path):
    import joulecast

    run = joulecast.measure(store=tmp_path / "s.db", interval_s=0.05).start()
    session = Session(run=run)
    assert session.start() is run
    session.finish()
    assert run.active and not session.owns_run
    run.stop()


def test_package_imports_nothing_heavy():
    code = (
        "import sys\n"
        "import joulecast.integrations\n"
        "heavy = {'torch', 'keras', 'lightning', 'pytorch_lightning', 'transformers', 'mlflow', 'wandb', 'tensorboard'}\n"
        "assert not heavy & set(sys.modules), heavy & set(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("module", "hidden", "extra"),
    [
        ("torch", ["torch"], "torch"),
        ("lightning", ["lightning", "lightning.pytorch", "pytorch_lightning"], "lightning"),
        ("huggingface", ["transformers"], "huggingface"),
        ("keras", ["keras"], "keras"),
        ("mlflow", ["mlflow"], "mlflow"),
        ("wandb", ["wandb"], "wandb"),
        ("tensorboard", ["tensorboard"], "tensorboard"),
    ],
)
def test_missing_framework_names_the_extra(module, hidden, extra):
    code = (
        "import sys\n"
        f"for name in {hidden!r}:\n"
        "    sys.modules[name] = None  # import fails as if not installed\n"
        "try:\n"
        f"    import joulecast.integrations.{module}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('imported')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"pip install 'joulecast[{extra}]'" in proc.stdout


class _FakeCuda:
    def __init__(self, initialized: bool) -> None:
        self.initialized = initialized
        self.synced: list[int] = []

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return self.initialized

    def device_count(self) -> int:
        return 2

    def synchronize(self, device: int) -> None:
        self.synced.append(device)


def test_sync_device_waits_for_every_gpu_once_cuda_is_used(monkeypatch):
    from types import SimpleNamespace

    from joulecast.run import sync_device

    cuda = _FakeCuda(initialized=True)
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    sync_device()
    assert cuda.synced == [0, 1]
    sync_device(False)
    assert cuda.synced == [0, 1]
    unused = _FakeCuda(initialized=False)  # CUDA never touched: nothing to wait for
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=unused))
    sync_device()
    assert unused.synced == []


def test_session_syncs_at_every_boundary(tmp_path, monkeypatch):
    from types import SimpleNamespace

    cuda = _FakeCuda(initialized=True)
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    session = Session(store=tmp_path / "s.db", interval_s=0.05)
    session.start()
    session.begin(PhaseKind.EPOCH, 0)
    session.end(PhaseKind.EPOCH, 0)
    session.finish()
    assert cuda.synced == [0, 1, 0, 1, 0, 1]  # the epoch's start and end, and the run's end


def test_plain_api_syncs_at_every_boundary_unless_told_not_to(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import joulecast

    cuda = _FakeCuda(initialized=True)
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    with joulecast.measure(store=tmp_path / "s.db", interval_s=0.05) as run:
        with run.epoch(0):
            pass
        assert len(cuda.synced) == 4  # two GPUs, at the epoch's start and end
        run.mark_epoch(1)
        assert len(cuda.synced) == 6
        run.begin("step", 0, sync=False)
        run.end("step", 0, sync=False)
        assert len(cuda.synced) == 6
    assert len(cuda.synced) == 8  # and at the run's end
    with joulecast.measure(store=tmp_path / "s.db", interval_s=0.05, sync=False) as run:
        run.mark_epoch(0)
        run.begin("epoch", 1)
        run.end("epoch", 1)
    assert len(cuda.synced) == 8


def test_a_second_training_on_a_shared_run_is_numbered_after_the_first(tmp_path, caplog):
    import joulecast

    path = tmp_path / "s.db"
    with joulecast.measure(store=path, interval_s=0.05) as run:
        for _training in range(2):
            session = Session(run=run)
            session.start()
            for epoch in range(2):
                index = session.begin(PhaseKind.EPOCH, epoch)
                session.end(PhaseKind.EPOCH, index)
        # Resuming at a free index keeps the framework's numbering.
        session = Session(run=run)
        session.start()
        assert session.begin(PhaseKind.EPOCH, 7) == 7
        session.end(PhaseKind.EPOCH, 7)
    assert "already has epoch 0" in caplog.text
    assert stored(path, run.run_id)[1]["index"].tolist() == [0, 1, 2, 3, 7]


def test_a_passive_rank_numbers_its_epochs_as_the_framework_does(tmp_path):
    """A job's other rank joins a run whose leader has already marked epoch 0: its own epoch 0
    stays 0 (it marks nothing, so it must not number after the leader's marks)."""
    import joulecast
    from joulecast.distributed import Job
    from joulecast.run import PassiveRun

    path = tmp_path / "s.db"
    with joulecast.measure(store=path, interval_s=0.05) as run:
        run.begin("epoch", 0)
        run.end("epoch", 0)
    assert stored(path, run.run_id)[1]["index"].tolist() == [0]  # the leader's mark is in
    passive = PassiveRun(Job(rank=1, local_rank=1, world_size=2), joined=(run.run_id, path))
    session = Session(run=passive, sync=False)
    session.start()
    assert session.begin(PhaseKind.EPOCH, 0) == 0
    session.end(PhaseKind.EPOCH, 0, together=False)
