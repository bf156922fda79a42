"""Log a measured training to MLflow: per-epoch energy live, totals and the trace at the end.

Uses MLflow's own tracking setting: ``MLFLOW_TRACKING_URI`` (a server, ``sqlite:///...``), else
MLflow's default (``sqlite:///mlflow.db`` in the working folder). Run:
``python examples/mlflow_log.py``, or ``joulecast measure -- python examples/mlflow_log.py``.
"""

from __future__ import annotations

import torch

import joulecast
from joulecast.integrations.mlflow import MlflowLogger
from joulecast.integrations.torch import epochs


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(512, 16)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    logger = MlflowLogger()  # the active MLflow run, else a new one

    with joulecast.measure(name="mlflow-mlp") as run:
        for epoch in epochs(run, 2, samples_per_epoch=len(x), mlflow=logger):
            for i in range(0, len(x), 64):
                loss = torch.nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64])
                opt.zero_grad()
                loss.backward()
                opt.step()
            epoch.log(loss=loss)
    # After the fact, a whole stored run: joulecast.integrations.mlflow.log_run(store, run_id).
    print(f"joulecast run {run.run_id}: {run.energy_j:.2f} J, MLflow run {logger.mlflow_run_id}")


if __name__ == "__main__":
    main()
