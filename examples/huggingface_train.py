"""A Hugging Face ``Trainer`` run measured with ``JoulecastTrainerCallback``.

The model is a tiny BERT built from a config and the data random token ids: nothing is
downloaded. Run: ``python examples/huggingface_train.py``, or
``joulecast measure -- python examples/huggingface_train.py``.
"""

from __future__ import annotations

import tempfile

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from joulecast.integrations.huggingface import JoulecastTrainerCallback


class RandomTokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Sequences of random token ids; the label is whether the first token is in the upper half."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 128, (n, 16), generator=g)
        self.labels = (self.ids[:, 0] >= 64).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def main() -> None:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=2,
    )
    callback = JoulecastTrainerCallback("tiny-bert")
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            num_train_epochs=2,
            per_device_train_batch_size=16,
            eval_strategy="epoch",
            logging_steps=4,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=BertForSequenceClassification(config),
            args=args,
            train_dataset=RandomTokens(96, seed=0),
            eval_dataset=RandomTokens(32, seed=1),
            callbacks=[callback],
        )
        trainer.train()
    assert callback.run is not None
    print(
        callback.run.epochs[["index", "samples", "energy_j", "j_per_sample"]].to_string(index=False)
    )


if __name__ == "__main__":
    main()
