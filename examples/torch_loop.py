"""A hand-written PyTorch loop measured with joulecast's epoch and step helpers.

Run: ``python examples/torch_loop.py`` (runs land in ``$JOULECAST_STORE`` or ./joulecast.db),
or under the CLI: ``joulecast measure -- python examples/torch_loop.py``.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

import joulecast
from joulecast.integrations.torch import epochs


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(512, 16)
    y = (x[:, 0] > 0).long()  # a learnable rule, generated on the spot
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    with joulecast.measure(name="torch-loop") as run:
        for epoch in epochs(run, 2):
            correct = 0
            for xb, yb in epoch.steps(loader):  # one step per batch; counts the samples
                out = model(xb)
                loss = torch.nn.functional.cross_entropy(out, yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                correct += int((out.argmax(1) == yb).sum())
            epoch.log(loss=loss, accuracy=correct / len(x))

    print(run.epochs[["index", "samples", "energy_j", "j_per_sample"]].to_string(index=False))


if __name__ == "__main__":
    main()
