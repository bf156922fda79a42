"""Hugging Face Trainer through joulecast.integrations.huggingface (a tiny BERT, random ids)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it

import joulecast  # noqa: E402
from joulecast.integrations.huggingface import JoulecastTrainerCallback  # noqa: E402

from .helpers import stored  # noqa: E402


class RandomTokens(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 64, (n, 8), generator=g)
        self.labels = (self.ids[:, 0] >= 32).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def _trainer(tmp_path, cb, **kwargs):
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    torch.manual_seed(0)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=2,
        per_device_train_batch_size=16,
        logging_steps=1,
        eval_strategy="epoch",
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        **kwargs,
    )
    return transformers.Trainer(
        model=transformers.BertForSequenceClassification(config),
        args=args,
        train_dataset=RandomTokens(40),
        eval_dataset=RandomTokens(16, seed=1),
        callbacks=[cb],
    )


def test_train_two_epochs(tmp_path):
    path = tmp_path / "runs.db"
    cb = JoulecastTrainerCallback("bert", store=path, interval_s=0.05)
    _trainer(tmp_path, cb).train()
    assert cb.run is not None and not cb.run.active
    row, ep, _ = stored(path, cb.run.run_id)
    assert row["status"] == "completed" and row["name"] == "bert"
    assert ep["index"].tolist() == [0, 1]
    # 3 steps of 16 per epoch, capped at the 40 samples of the training set.
    assert ep["samples"].tolist() == [40, 40]
    for metrics in ep["metrics"]:
        # Training logs, and the evaluation that follows each epoch, land on that epoch.
        assert {"loss", "learning_rate", "eval_loss"} <= metrics.keys()
        assert "train_runtime" not in metrics
    assert ep["end_s"].iloc[0] <= ep["start_s"].iloc[1]
    assert cb.run.summary().epochs["energy_j"].notna().all()


def test_given_run_and_gradient_accumulation(tmp_path):
    path = tmp_path / "runs.db"
    with joulecast.measure(store=path, interval_s=0.05) as run:
        cb = JoulecastTrainerCallback(run=run)
        _trainer(tmp_path, cb, gradient_accumulation_steps=2, per_device_eval_batch_size=16).train()
        assert run.active
    row, ep, _ = stored(path, run.run_id)
    assert row["status"] == "completed"
    # 2 optimizer steps x 16 x 2 accumulated = 64, capped at 40.
    assert ep["samples"].tolist() == [40, 40]
