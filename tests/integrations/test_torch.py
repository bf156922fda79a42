"""Hand-written PyTorch loops through joulecast.integrations.torch."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import joulecast  # noqa: E402
from joulecast.integrations.torch import epochs, steps  # noqa: E402

from .helpers import stored  # noqa: E402


def _loader(n: int = 100, batch: int = 32):
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def _train(model, opt, xb, yb):
    loss = torch.nn.functional.cross_entropy(model(xb), yb)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def test_two_epochs_with_steps_samples_and_metrics(tmp_path):
    path = tmp_path / "runs.db"
    model = torch.nn.Linear(8, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with joulecast.measure(name="loop", store=path, interval_s=0.05) as run:
        for epoch in epochs(run, 2):
            for xb, yb in epoch.steps(_loader()):
                loss = _train(model, opt, xb, yb)
            epoch.log(loss=loss, optimizer="sgd")  # a tensor with grad, and text
    row, ep, st = stored(path, run.run_id)
    assert row["status"] == "completed"
    assert ep["index"].tolist() == [0, 1]
    assert ep["samples"].tolist() == [100, 100]
    for metrics in ep["metrics"]:
        assert isinstance(metrics["loss"], float)
        assert metrics["optimizer"] == "sgd"
    # Steps are numbered across epochs, each with its batch size.
    assert st["index"].tolist() == list(range(8))
    assert st["samples"].tolist() == [32, 32, 32, 4] * 2
    assert (ep["end_s"] > ep["start_s"]).all()
    assert ep["end_s"].iloc[0] <= ep["start_s"].iloc[1]
    summary = run.summary()
    assert summary.samples_processed == 200
    assert summary.epochs["energy_j"].notna().all()


def test_samples_per_epoch_resume_and_unmarked_steps(tmp_path):
    path = tmp_path / "runs.db"
    with joulecast.measure(store=path, interval_s=0.05) as run:
        for epoch in epochs(run, 4, start=2, samples_per_epoch=1000):
            for _ in steps(run, _loader(), epoch, mark=False):
                pass
            assert epoch.counted_samples == 100
    _, ep, st = stored(path, run.run_id)
    assert ep["index"].tolist() == [2, 3]
    assert ep["samples"].tolist() == [1000, 1000]  # the given figure wins over the count
    assert st.empty


def test_break_ends_the_epoch_and_dict_batches_count(tmp_path):
    path = tmp_path / "runs.db"
    batches = [{"input_ids": torch.zeros(4, 16), "labels": torch.zeros(4)}] * 3
    with joulecast.measure(store=path, interval_s=0.05) as run:
        for epoch in epochs(run, 5):
            for _ in epoch.steps(batches):
                pass
            if epoch.index == 1:
                break
        assert not run.store.closed
    _, ep, st = stored(path, run.run_id)
    assert ep["index"].tolist() == [0, 1]
    assert ep["end_s"].notna().all()
    assert ep["samples"].tolist() == [12, 12]
    assert len(st) == 6


def test_epochs_rejects_a_start_past_the_end(tmp_path):
    with joulecast.measure(store=tmp_path / "runs.db", interval_s=0.05) as run:
        with pytest.raises(ValueError, match="n_epochs"):
            epochs(run, 1, start=2)
        assert run.epochs.empty


def test_two_loops_on_one_run_do_not_overwrite_epochs(tmp_path):
    path = tmp_path / "runs.db"
    with joulecast.measure(store=path, interval_s=0.05) as run:
        first = [e.index for e in epochs(run, 2, samples_per_epoch=10)]
        second = [e.index for e in epochs(run, 2, samples_per_epoch=10)]
    assert (first, second) == ([0, 1], [2, 3])
    assert stored(path, run.run_id)[1]["index"].tolist() == [0, 1, 2, 3]
