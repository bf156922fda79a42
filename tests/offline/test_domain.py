"""Where a configuration lies from the training data: ranges, factors never seen together, the
distance to the nearest training configuration, an ensemble's spread, and the interval."""

from __future__ import annotations

import importlib.resources
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sklearn")

from joulecast.offline.domain import FAR, Band, TrainingDomain
from joulecast.offline.features import RAW_FEATURES, read_runs
from joulecast.offline.models import OfflineEstimator

DATA = Path(__file__).parents[2] / "src" / "joulecast" / "offline" / "data" / "paper_runs_train.csv"
RTX3070 = {"gpu_cuda_cores": 5888, "gpu_memory_gb": 8, "gpu_tdp_w": 220, "ram_gb": 32}
RTX3090 = {"gpu_cuda_cores": 10496, "gpu_memory_gb": 24, "gpu_tdp_w": 350, "ram_gb": 16}
CHESSLIVE = {"train_samples": 23807, "val_samples": 10203}
VGG16 = {"gflops": 10.02877, "batch_size": 32, "input_height": 128, "input_width": 128}


def config(**values: float) -> pd.Series:
    return pd.Series({c: float(values[c]) for c in RAW_FEATURES})


@pytest.fixture(scope="module")
def domain() -> TrainingDomain:
    return TrainingDomain(read_runs(DATA))


@pytest.fixture(scope="module")
def banded() -> OfflineEstimator:
    """The shipped model's specs on the shipped runs, with freshly calibrated intervals."""
    resource = importlib.resources.files("joulecast.offline") / "data" / "default_model.json"
    data = json.loads(resource.read_text(encoding="utf-8"))
    data.pop("applicability", None)
    return OfflineEstimator.from_dict(data).fit_intervals()


def test_the_distinct_configurations_are_indexed(domain: TrainingDomain) -> None:
    assert domain.configurations.shape == (32, len(RAW_FEATURES))
    assert domain.ranges["gflops"] == (0.064028, 10.02877)


def test_a_gpu_and_an_architecture_never_trained_together_are_named(
    domain: TrainingDomain,
) -> None:
    row = config(**RTX3070, **VGG16, **CHESSLIVE)  # VGG16 ran on the RTX 3090 only
    assert domain.outside(row) == []
    assert domain.unseen(row) == [("gpu", "gflops")]
    (warning,) = domain.assess(row, {}, {}, None).warnings
    assert warning == (
        "the GPU (5888 CUDA cores, 8 GB, 220 W) and gflops 10.03 each occur in the training"
        " data, but never together"
    )
    # The same model on the GPU it was trained on is no new combination.
    assert domain.unseen(config(**RTX3090, **VGG16, **CHESSLIVE)) == []


def test_values_within_two_percent_are_the_same(domain: TrainingDomain) -> None:
    # Inception V3 at 128 px on Caltech101 on the RTX 3090: trained with 3,060/6,084 images and
    # 1.5026 GFLOPs; the RTX 3070 runs carry 3,059/6,085 and the Stanford Dogs ones 1.5070.
    inception = {"gflops": 1.507042, "batch_size": 32, "input_height": 128, "input_width": 128}
    assert domain.unseen(config(**RTX3090, **inception, train_samples=3059, val_samples=6085)) == []
    other = config(**RTX3070, **VGG16, train_samples=3059 * 1.03, val_samples=6085)
    assert ("gpu", "dataset") not in domain.unseen(other)  # a size never seen: not a pair


def test_a_value_never_seen_is_not_a_pair(domain: TrainingDomain) -> None:
    assert domain.unseen(config(**RTX3070, **{**VGG16, "gflops": 3.3}, **CHESSLIVE)) == []


def test_distance_is_zero_on_each_training_configuration(domain: TrainingDomain) -> None:
    assert np.allclose(domain.distance(domain.configurations), 0.0)
    # Its unit is the spacing of the training configurations: 9 in 10 have another within 1.
    gaps = [
        domain.distance(c, among=np.delete(domain.configurations, i, axis=0))[0]
        for i, c in enumerate(domain.configurations)
    ]
    assert np.mean(np.array(gaps) <= FAR) == pytest.approx(0.9, abs=0.04)


def test_distance_grows_as_a_configuration_moves_away(domain: TrainingDomain) -> None:
    start = config(**RTX3090, **VGG16, **CHESSLIVE)
    steps = [start.to_numpy() * np.where(start.index == "batch_size", f, 1.0) for f in (1, 2, 4)]
    distances = domain.distance(np.array(steps))
    assert distances[0] == 0.0 and 0 < distances[1] < distances[2]


def test_far_configurations_are_warned(domain: TrainingDomain) -> None:
    h100 = config(
        gpu_cuda_cores=16896, gpu_memory_gb=80, gpu_tdp_w=700, ram_gb=32, **VGG16, **CHESSLIVE
    )
    result = domain.assess(h100, {}, {}, None)
    assert result.distance > FAR and result.out_of_range == (
        "gpu_cuda_cores",
        "gpu_memory_gb",
        "gpu_tdp_w",
    )
    assert result.warnings[0].startswith("gpu_cuda_cores 1.69e+04 is outside the training range")
    assert result.warnings[-1].startswith(f"distance {result.distance:.2f} to the nearest")


BAND = Band((0.3, 0.6, 1.0), (0.1, 0.2, 0.5), 0.9, spread_limit=1.5)


def test_a_band_never_narrows_and_keeps_widening_beyond_its_points() -> None:
    distances = np.linspace(0.0, 5.0, 101)
    widths = [BAND.halfwidth(d) for d in distances]
    assert widths[0] == 0.1 and BAND.halfwidth(0.6) == pytest.approx(0.2)
    assert all(b >= a for a, b in itertools.pairwise(widths))
    assert BAND.halfwidth(2.0) == pytest.approx(1.0) and BAND.halfwidth(4.0) > BAND.halfwidth(3.0)
    assert Band.from_dict(BAND.to_dict(), 0.9) == BAND
    # The widest a model file may hold, far beyond its one point: capped, never an overflow.
    widest = Band((1e-6,), (50.0,))
    assert widest.halfwidth(1e6) == 50.0 and math.isfinite(math.exp(widest.halfwidth(1e6)))


def test_an_ensemble_spans_its_members_and_warns_when_they_disagree(
    domain: TrainingDomain,
) -> None:
    row = pd.Series(domain.configurations[5], index=RAW_FEATURES)
    result = domain.assess(
        row, {"epoch_energy_j": 2.0}, {"epoch_energy_j": [1.0, 2.0, 3.0]}, {"epoch_energy_j": BAND}
    )
    assert result.spread == {"epoch_energy_j": 3.0}
    assert result.intervals["epoch_energy_j"] == (1.0, 3.0)  # the band alone: 2 x/÷ e^0.1
    (warning,) = result.warnings
    assert warning == (
        "epoch_energy_j: the ensemble's members disagree by x3.00, more than on 90% of the"
        " configurations held out in fitting (x1.50)"
    )
    calm = domain.assess(
        row, {"epoch_energy_j": 2.0}, {"epoch_energy_j": [1.9, 2.1]}, {"epoch_energy_j": BAND}
    )
    assert calm.warnings == ()
    assert calm.intervals["epoch_energy_j"] == pytest.approx((2 / math.exp(0.1), 2 * math.exp(0.1)))


def test_calibrated_bands(banded: OfflineEstimator) -> None:
    bands = banded.bands_
    assert bands is not None and set(bands) == {"avg_power_w", "epoch_energy_j"}
    for band in bands.values():
        assert 1 <= len(band.distance) <= 3 and band.coverage == 0.9
        assert list(band.distance) == sorted(band.distance) and band.distance[0] > 0
        assert list(band.log_halfwidth) == sorted(band.log_halfwidth)
        assert 0 < band.log_halfwidth[0] < math.log(3)
    assert bands["avg_power_w"].spread_limit is None  # one SVR, no members
    assert bands["epoch_energy_j"].spread_limit is not None  # a mean of three
    assert bands["epoch_energy_j"].spread_limit > 1


def _moved(factor: float) -> dict[str, Any]:
    """The VGG16 configuration of the study with ``factor`` times its batch and samples."""
    return {
        **RTX3090,
        **VGG16,
        "batch_size": 32 * factor,
        "train_samples": 23807 * factor,
        "val_samples": 10203 * factor,
    }


def test_the_interval_contains_the_prediction_and_widens_with_distance(
    banded: OfflineEstimator,
) -> None:
    rows = pd.DataFrame([_moved(f) for f in (1.0, 1.5, 3.0, 8.0)])
    predicted = banded.predict(rows)
    results = banded.applicability(rows)
    distances = [r.distance for r in results]
    assert distances[0] == 0.0 and distances == sorted(distances) and distances[-1] > 2
    for target in ("avg_power_w", "epoch_energy_j"):
        widths = []
        for pos, result in enumerate(results):
            assert result.predictions[target] == pytest.approx(predicted[target].iloc[pos])
            low, high = result.intervals[target]
            assert low < predicted[target].iloc[pos] < high
            widths.append(math.log(high / low))
        assert widths == sorted(widths) and widths[-1] > 2 * widths[0], target


def test_the_training_configuration_itself_has_the_narrowest_interval(
    banded: OfflineEstimator, domain: TrainingDomain
) -> None:
    rows = pd.DataFrame(domain.configurations, columns=RAW_FEATURES)
    results = banded.applicability(rows)
    assert all(r.distance == 0 and r.calibrated for r in results)
    power = banded.bands_["avg_power_w"]  # type: ignore[index]
    for r, value in zip(results, banded.predict(rows)["avg_power_w"], strict=True):
        low, high = r.intervals["avg_power_w"]
        factor = math.exp(power.log_halfwidth[0])
        assert value / low == pytest.approx(factor) and high / value == pytest.approx(factor)
