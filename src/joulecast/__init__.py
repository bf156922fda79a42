"""joulecast: measure, forecast and estimate the energy of deep-learning training.

Importing joulecast touches no hardware, starts no thread or process and installs no
logging handler; sensors are found when a measurement starts. Its public names are imported
on first use (PEP 562), so ``import joulecast`` loads neither numpy nor pandas.
"""

from __future__ import annotations

import logging
import typing

from joulecast._version import __version__

if typing.TYPE_CHECKING:
    from joulecast import forecast
    from joulecast.command import MeasuredCommand, measure_command
    from joulecast.distributed import Job, current_job
    from joulecast.energy import J_PER_KWH, RunSummary, j_to_kwh, summarize
    from joulecast.errors import (
        InputError,
        JoulecastError,
        JoulecastWarning,
        OutputError,
        SensorError,
        SensorUnavailable,
        StoreError,
    )
    from joulecast.forecast import EnergyBudget, Forecast, LiveForecaster, forecast_energy
    from joulecast.jobs import merge_jobs
    from joulecast.monitor import Monitor
    from joulecast.offline.catalogue import lookup as lookup_gpu
    from joulecast.offline.estimate import estimate_training as estimate
    from joulecast.offline.models import OfflineEstimator
    from joulecast.records import EnergyOrigin, Gap, Phase, PhaseKind, Reading, RunStatus
    from joulecast.run import PassiveRun, Run, measure
    from joulecast.sensors import Sensor, SensorReport, detect, detect_sensors
    from joulecast.store import Store, open_store
    from joulecast.traces import export_run, import_nvidia_smi, import_trace, read_trace

logging.getLogger(__name__).addHandler(logging.NullHandler())

# Public name: (module, attribute; None for the module itself), as imported above for type
# checkers. Resolved on first use, so that code which uses only the measuring API never
# pays for pandas, and offline estimation's scikit-learn is loaded only when asked for.
_LAZY: dict[str, tuple[str, str | None]] = {
    "EnergyBudget": ("joulecast.forecast", "EnergyBudget"),
    "EnergyOrigin": ("joulecast.records", "EnergyOrigin"),
    "Forecast": ("joulecast.forecast", "Forecast"),
    "Gap": ("joulecast.records", "Gap"),
    "InputError": ("joulecast.errors", "InputError"),
    "J_PER_KWH": ("joulecast.energy", "J_PER_KWH"),
    "Job": ("joulecast.distributed", "Job"),
    "JoulecastError": ("joulecast.errors", "JoulecastError"),
    "JoulecastWarning": ("joulecast.errors", "JoulecastWarning"),
    "LiveForecaster": ("joulecast.forecast", "LiveForecaster"),
    "MeasuredCommand": ("joulecast.command", "MeasuredCommand"),
    "Monitor": ("joulecast.monitor", "Monitor"),
    "OfflineEstimator": ("joulecast.offline.models", "OfflineEstimator"),
    "OutputError": ("joulecast.errors", "OutputError"),
    "PassiveRun": ("joulecast.run", "PassiveRun"),
    "Phase": ("joulecast.records", "Phase"),
    "PhaseKind": ("joulecast.records", "PhaseKind"),
    "Reading": ("joulecast.records", "Reading"),
    "Run": ("joulecast.run", "Run"),
    "RunStatus": ("joulecast.records", "RunStatus"),
    "RunSummary": ("joulecast.energy", "RunSummary"),
    "Sensor": ("joulecast.sensors", "Sensor"),
    "SensorError": ("joulecast.errors", "SensorError"),
    "SensorReport": ("joulecast.sensors", "SensorReport"),
    "SensorUnavailable": ("joulecast.errors", "SensorUnavailable"),
    "Store": ("joulecast.store", "Store"),
    "StoreError": ("joulecast.errors", "StoreError"),
    "current_job": ("joulecast.distributed", "current_job"),
    "detect": ("joulecast.sensors", "detect"),
    "detect_sensors": ("joulecast.sensors", "detect_sensors"),
    "estimate": ("joulecast.offline.estimate", "estimate_training"),
    "export_run": ("joulecast.traces", "export_run"),
    # The module itself: calling it is the old API, kept working with a DeprecationWarning.
    "forecast": ("joulecast.forecast", None),
    "forecast_energy": ("joulecast.forecast", "forecast_energy"),
    "import_nvidia_smi": ("joulecast.traces", "import_nvidia_smi"),
    "import_trace": ("joulecast.traces", "import_trace"),
    "j_to_kwh": ("joulecast.energy", "j_to_kwh"),
    "lookup_gpu": ("joulecast.offline.catalogue", "lookup"),
    "measure": ("joulecast.run", "measure"),
    "measure_command": ("joulecast.command", "measure_command"),
    "merge_jobs": ("joulecast.jobs", "merge_jobs"),
    "open_store": ("joulecast.store", "open_store"),
    "read_trace": ("joulecast.traces", "read_trace"),
    "summarize": ("joulecast.energy", "summarize"),
}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'joulecast' has no attribute {name!r}")
    import importlib

    module, attribute = _LAZY[name]
    value: object = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "EnergyBudget",
    "EnergyOrigin",
    "Forecast",
    "Gap",
    "InputError",
    "J_PER_KWH",
    "Job",
    "JoulecastError",
    "JoulecastWarning",
    "LiveForecaster",
    "MeasuredCommand",
    "Monitor",
    "OfflineEstimator",
    "OutputError",
    "PassiveRun",
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
    "current_job",
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
    "merge_jobs",
    "open_store",
    "read_trace",
    "summarize",
]
