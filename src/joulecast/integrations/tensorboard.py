"""Log joulecast runs to TensorBoard event files: per-epoch energy, power and forecast, totals.

Two ways:

- live, a :class:`TensorBoardLogger` given to an integration (``tensorboard=True`` or
  ``tensorboard=TensorBoardLogger("runs/mlp")``) logs each epoch as it ends and the totals when
  training ends;
- after the fact, ``TensorBoardLogger("runs/mlp").log_run(store, run_id)`` logs a stored run.

The scalars are MLflow's keys (:mod:`joulecast.integrations.mlflow`): ``epoch_energy_j``,
``epoch_mean_power_w``, ``epoch_j_per_sample``, ``epoch_duration_s`` and, with a live
forecast, ``forecast_total_j``, ``forecast_low_j``, ``forecast_high_j`` and
``forecast_remaining_j``, with ``step`` = the epoch's index; the totals (``energy_j``,
``energy_j_measured``, ``energy_j_modelled``, ``duration_s``, ``mean_power_w``,
``j_per_sample``, ``energy_j_replayed`` for a dry run, ``co2e_g`` where the environment names
an intensity) at step 0. The tags (``joulecast.run_id``, ``joulecast.store``,
``joulecast.status``, ``joulecast.replayed``, and with ``co2e_g`` ``joulecast.intensity_source``,
``joulecast.intensity_g_per_kwh`` and ``joulecast.pue``) are text summaries. Values are
written as TensorBoard stores scalars: 32-bit floats.

Written with TensorBoard's own event-file writer: neither PyTorch nor TensorFlow is needed.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

try:
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
    from tensorboard.plugins.text import metadata as text_metadata
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "joulecast.integrations.tensorboard needs TensorBoard: pip install 'joulecast[tensorboard]'"
    ) from exc

from joulecast.integrations._tracking import Point, Tracker
from joulecast.records import RunStatus

__all__ = ["TensorBoardLogger"]


def _scalar(key: str, value: float) -> summary_pb2.Summary.Value:
    return summary_pb2.Summary.Value(tag=key, simple_value=value)


def _text(key: str, value: str) -> summary_pb2.Summary.Value:
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[value.encode()])
    meta = text_metadata.create_summary_metadata(display_name=key, description="")
    return summary_pb2.Summary.Value(tag=key, metadata=meta, tensor=tensor)


class TensorBoardLogger(Tracker):
    """Logs a run to TensorBoard event files while it trains; give it to an integration as
    ``tensorboard=``.

    Each epoch is logged when it ends (from the readings stored by then: at most one sampling
    interval short of its end) and flushed to disk; the totals and tags when training ends.
    Under ``joulecast measure`` the totals are those at the end of training: call
    :meth:`log_run` afterwards for the whole run.

    Args:
        log_dir: the folder of the event files (``tensorboard --logdir`` it or a folder
            above it); default ``runs/joulecast-NAME-TIME-HOST`` in the working folder. A
            folder that another writer uses (Lightning's ``trainer.logger.log_dir``) is fine:
            joulecast writes its own event file there.

    Attributes:
        target: the folder written to (last), once logging started.
    """

    label = "TensorBoard"

    def __init__(self, log_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.log_dir = log_dir
        self._writer: EventFileWriter | None = None

    def _open_target(self, name: str | None) -> tuple[str, bool]:
        if self.log_dir is not None:
            folder = Path(self.log_dir)
        else:
            # The run's name as one plain folder name: never a path of its own (../, /).
            slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name or "").strip("-")[:40] or "run"
            stamp = time.strftime("%Y%m%d-%H%M%S")
            folder = Path("runs") / f"joulecast-{slug}-{stamp}-{socket.gethostname()}"
        self._writer = EventFileWriter(str(folder))
        return str(folder), True

    def _log(self, points: Sequence[Point], tags: Mapping[str, str]) -> None:
        assert self._writer is not None
        wall_s = time.time()
        values = [(p.step or 0, _scalar(p.key, p.value)) for p in points]
        values += [(0, _text(key, value)) for key, value in tags.items()]
        for step, value in values:
            summary = summary_pb2.Summary(value=[value])
            self._writer.add_event(event_pb2.Event(wall_time=wall_s, step=step, summary=summary))
        # Flushed at once: TensorBoard shows an epoch while training goes on, and a process
        # that ends without closing the writer loses nothing.
        self._writer.flush()

    def _close(self, status: RunStatus) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
