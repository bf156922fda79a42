"""joulecast: measure, forecast and estimate the energy of deep-learning training.

Importing joulecast touches no hardware, starts no thread or process and installs no
logging handler; sensors are found when a measurement starts.
"""

from __future__ import annotations

import logging

from joulecast import forecast
from joulecast._version import __version__
from joulecast.command import MeasuredCommand, measure_command
from joulecast.energy import J_PER_KWH, RunSummary, j_to_kwh, summarize
from joulecast.errors import (
    InputError,
    JoulecastError,
    SensorError,
    SensorUnavailable,
    StoreError,
)
from joulecast.forecast import EnergyBudget, Forecast, LiveForecaster, forecast_energy
from joulecast.monitor import Monitor
from joulecast.records import Gap, Phase, PhaseKind, Reading, RunStatus
from joulecast.run import Run, measure
from joulecast.sensors import Sensor, SensorReport, detect, detect_sensors
from joulecast.store import Store, open_store
from joulecast.traces import export_run, import_nvidia_smi, import_trace, read_trace

logging.getLogger(__name__).addHandler(logging.NullHandler())

# Offline estimation needs scikit-learn; it is imported on first use, not with joulecast.
_LAZY = {
    "OfflineEstimator": ("joulecast.offline.models", "OfflineEstimator"),
    "estimate": ("joulecast.offline.estimate", "estimate_training"),
    "lookup_gpu": ("joulecast.offline.catalogue", "lookup"),
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'joulecast' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "EnergyBudget",
    "Forecast",
    "Gap",
    "InputError",
    "J_PER_KWH",
    "JoulecastError",
    "LiveForecaster",
    "MeasuredCommand",
    "Monitor",
    "OfflineEstimator",
    "Phase",
    "PhaseKind",
    "Reading",
    "Run",
    "RunStatus",
    "RunSummary",
    "Sensor",
    "SensorError",
    "SensorReport",
    "SensorUnavailable",
    "Store",
    "StoreError",
    "__version__",
    "detect",
    "detect_sensors",
    "estimate",
    "export_run",
    "forecast",
    "forecast_energy",
    "import_nvidia_smi",
    "import_trace",
    "j_to_kwh",
    "lookup_gpu",
    "measure",
    "measure_command",
    "open_store",
    "read_trace",
    "summarize",
]
