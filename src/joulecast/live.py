"""The live forecast of a run: after each finished epoch, re-forecast, store, print, decide.

One path for every caller: :meth:`joulecast.Run.live_forecast` (the API and the
integrations) and ``joulecast measure --epochs`` (:mod:`joulecast.command`).
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Any

import pandas as pd

from joulecast.energy import stored_phase_table
from joulecast.forecast import (
    AUTO,
    EnergyBudget,
    Forecast,
    LiveForecaster,
    StableEpoch,
    choose_stable_epoch,
    fluss_position,
    progress_line,
)
from joulecast.records import Phase
from joulecast.store import Store

log = logging.getLogger(__name__)

# FLUSS reads the whole run so far: after this many epochs the live forecast stops asking it
# and keeps its last answer, so that its cost per epoch stays bounded however long the run.
LIVE_FLUSS_EPOCHS = 20


def epoch_table(store: Store, run_id: int, indices: Sequence[int]) -> pd.DataFrame:
    """The per-epoch table (as :func:`joulecast.energy.phase_table`) of epochs ``indices``,
    from the store's energy aggregates: it costs the same however long the run."""
    phases = store.phases(run_id, "epoch")
    phases = phases[phases["index"].isin(list(indices))].dropna(subset=["end_s"])
    return stored_phase_table(store, run_id, phases)


@dataclass(eq=False)
class LiveForecast:
    """Re-forecasts one run's total energy as its epochs end.

    :meth:`after_epoch` takes each finished epoch once, in order: it reads the epoch's
    energy from ``store()``, forecasts with ``forecaster``, stores the forecast with the epoch
    (``metrics["forecast"]``), checks the ``budget``, prints a progress line on stderr
    (``progress``) and calls ``on_update``. With the forecaster's stabilizing epoch
    ``"auto"``, FLUSS looks at the run so far after each of the first ``LIVE_FLUSS_EPOCHS``
    epochs (as ``joulecast forecast --after K`` does); its last answer with epochs after it
    is kept for the epochs after those.
    """

    store: Callable[[], Store]
    run_id: int
    forecaster: LiveForecaster
    _: KW_ONLY
    budget: EnergyBudget | None = None
    on_update: Callable[[Forecast], None] | None = None
    progress: bool = True
    stop_reason: str | None = field(default=None, init=False)
    _rows: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)
    _seen: set[int] = field(default_factory=set, init=False, repr=False)
    _fluss: int | None = field(default=None, init=False, repr=False)

    @property
    def last(self) -> Forecast | None:
        """The latest forecast, once an epoch has ended."""
        return self.forecaster.last

    @property
    def lines(self) -> int:
        """Epochs forecast from so far."""
        return len(self._seen)

    def seen(self, index: int) -> bool:
        """True once epoch ``index`` has been forecast from."""
        return index in self._seen

    def after_epoch(
        self, phase: Phase, *, overwrite: bool = True, energy_j: float | None = None
    ) -> Forecast | None:
        """Forecast after the finished epoch ``phase``, from the readings in the store.

        ``overwrite`` False keeps a forecast already stored with the epoch (the training's
        own, when this process only watches it). ``energy_j`` replaces the epoch's energy in
        the store (a distributed job's, summed over its nodes); the stabilizing epoch is still
        found in this run's power. Returns None (and logs why) when no forecast
        can be made (an unmeasured epoch, see :func:`joulecast.energy.unmeasured_phases`, is
        never forecast from); a failing forecast never raises into the training.
        """
        if phase.end_s is None or phase.index in self._seen:
            return None
        self._seen.add(phase.index)
        store = self.store()
        try:
            row = epoch_table(store, self.run_id, [phase.index])
            if row.empty:
                log.info("epoch %d is not in the store: no forecast after it", phase.index)
                return None
            energy = float(row["energy_j"].iloc[0] if energy_j is None else energy_j)
            if bool(row["unmeasured"].iloc[0]) or math.isnan(energy):
                # Its energy is unknown (the sampler is gone): forecast from it as 0 J, never.
                log.info("epoch %d is unmeasured: no forecast after it", phase.index)
                return None
            self._rows.append(
                {
                    "index": phase.index,
                    "start_s": float(row["start_s"].iloc[0]),
                    "end_s": float(row["end_s"].iloc[0]),
                    "duration_s": float(row["duration_s"].iloc[0]),
                    "energy_j": energy,
                    "metrics": dict(phase.metrics),
                }
            )
            table = pd.DataFrame(self._rows)
            result = self.forecaster.update(table, stable=self._stable(store, table))
        except Exception as exc:  # the forecast must never end the training it measures
            log.warning("no forecast after epoch %d: %s", phase.index, exc)
            return None
        added: dict[str, Any] = {"forecast": result.to_dict()}
        if self.budget is not None and self.stop_reason is None:
            decision = self.budget.check(table, result)
            if decision.stop:
                self.stop_reason = decision.reason
                added["early_stop"] = decision.reason
                store.update_run(self.run_id, tags={"early_stop": decision.reason})
                log.warning(
                    "energy-aware early stop after epoch %d: %s", phase.index, decision.reason
                )
        # Only the keys added, in one transaction: metrics another process wrote meanwhile
        # stay; the training's own forecast wins over one made for it (overwrite False).
        stored = store.add_phase_metrics(
            self.run_id, phase.kind.value, phase.index, added, overwrite=overwrite
        )
        if not stored:  # not written yet (a store that failed): write the phase whole
            store.write_phases(self.run_id, [replace(phase, metrics={**phase.metrics, **added})])
        log.info(
            "epoch %d: forecast %.1f kJ [%.1f, %.1f], %.1f kJ to go (%s)",
            phase.index,
            result.total_j / 1e3,
            result.low_j / 1e3,
            result.high_j / 1e3,
            result.remaining_j / 1e3,
            result.method,
        )
        if self.progress:
            print(f"joulecast: {progress_line(result)}", file=sys.stderr, flush=True)
        if self.on_update is not None:
            self.on_update(result)
        return result

    def _stable(self, store: Store, table: pd.DataFrame) -> StableEpoch | None:
        """The stabilizing epoch of the epochs in ``table``, with ``"auto"``; else None."""
        if self.forecaster.stable_epoch != AUTO or len(table) < 2:
            return None
        done = table.sort_values("index").reset_index(drop=True)
        if len(done) <= LIVE_FLUSS_EPOCHS:
            position, why = fluss_position(store, self.run_id, done)
            # The answer FLUSS gives when it sees this many epochs is the one kept past them.
            if position is not None and position < len(done) - 1:
                self._fluss = position
        else:
            position = self._fluss
            why = (
                ""
                if position is not None
                else (f"no FLUSS regime change in the first {LIVE_FLUSS_EPOCHS} epochs")
            )
        return choose_stable_epoch(
            done["energy_j"].to_numpy(float),
            window=self.forecaster.window,
            fluss_position=position,
            fluss_note=why,
            indices=done["index"].tolist(),
        )
