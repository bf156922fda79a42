"""MLCO2 and Green Algorithms baselines and carbon, checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from joulecast.errors import InputError
from joulecast.offline.baselines import (
    GA_DEFAULT_PUE,
    RAM_W_PER_GB_GA,
    carbon_g,
    green_algorithms_energy_j,
    mlco2_energy_j,
)


def test_constants():
    assert RAM_W_PER_GB_GA == 0.3725
    assert GA_DEFAULT_PUE == 1.67


def test_mlco2_by_hand():
    # 350 W for 2 h = 350 * 7200 = 2,520,000 J = 2.52 MJ (0.7 kWh).
    assert mlco2_energy_j(350, 7200) == pytest.approx(2.52e6)
    # 4 GPUs at 400 W for 30 min = 4 * 400 * 1800 = 2,880,000 J.
    assert mlco2_energy_j(400, 1800, n_gpus=4) == pytest.approx(2.88e6)
    assert mlco2_energy_j(60, 0) == 0.0


def test_green_algorithms_paper_form_by_hand():
    # The paper: (max limit * mean util + total RAM GB * 0.3725) * t, no PUE.
    # (350 * 0.8 + 32 * 0.3725) * 3600 = (280 + 11.92) * 3600 = 291.92 * 3600 = 1,050,912 J.
    assert green_algorithms_energy_j(350, 3600, gpu_util=0.8, ram_gb=32) == pytest.approx(
        1_050_912.0
    )


def test_green_algorithms_tool_form_by_hand():
    # 350 W, util 0.8, 16 GB RAM, PUE 1.67, 2 h:
    # power = 350 * 0.8 + 16 * 0.3725 = 280 + 5.96 = 285.96 W
    # x PUE 1.67 = 477.5532 W; x 7200 s = 3,438,383.04 J (about 0.955 kWh).
    energy = green_algorithms_energy_j(350, 7200, gpu_util=0.8, ram_gb=16, pue=GA_DEFAULT_PUE)
    assert energy == pytest.approx(3_438_383.04)
    # Two GPUs and PSF 3: (2 * 350 * 0.8 + 5.96) = 565.96 W; x 1.67 = 945.1532 W;
    # x 3 x 7200 s = 20,415,309.12 J.
    energy = green_algorithms_energy_j(
        350, 7200, gpu_util=0.8, ram_gb=16, n_gpus=2, pue=1.67, psf=3
    )
    assert energy == pytest.approx(565.96 * 1.67 * 3 * 7200)
    assert energy == pytest.approx(20_415_309.12)


def test_green_algorithms_defaults_equal_mlco2_at_full_util():
    assert green_algorithms_energy_j(220, 5400) == mlco2_energy_j(220, 5400)


def test_carbon_by_hand():
    # 2.52 MJ = 0.7 kWh; at 475 g/kWh -> 332.5 g.
    assert carbon_g(2.52e6, 475) == pytest.approx(332.5)
    assert carbon_g(3.6e6, 1) == pytest.approx(1.0)
    assert carbon_g(0, 300) == 0.0


def test_numpy_scalars_accepted():
    assert mlco2_energy_j(np.float64(350), np.int64(7200), n_gpus=np.int64(1)) == pytest.approx(
        2.52e6
    )


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: mlco2_energy_j(0, 10), "tdp_w"),
        (lambda: mlco2_energy_j(-1, 10), "tdp_w"),
        (lambda: mlco2_energy_j(math.nan, 10), "tdp_w"),
        (lambda: mlco2_energy_j(100, -1), "duration_s"),
        (lambda: mlco2_energy_j(100, math.inf), "duration_s"),
        (lambda: mlco2_energy_j(100, 10, n_gpus=0), "n_gpus"),
        (lambda: mlco2_energy_j(100, 10, n_gpus=1.5), "n_gpus"),
        (lambda: mlco2_energy_j(100, 10, n_gpus=True), "n_gpus"),
        (lambda: mlco2_energy_j("350", 10), "tdp_w"),
        (lambda: green_algorithms_energy_j(100, 10, gpu_util=80), "gpu_util"),
        (lambda: green_algorithms_energy_j(100, 10, gpu_util=-0.1), "gpu_util"),
        (lambda: green_algorithms_energy_j(100, 10, gpu_util=math.nan), "gpu_util"),
        (lambda: green_algorithms_energy_j(100, 10, ram_gb=-1), "ram_gb"),
        (lambda: green_algorithms_energy_j(100, 10, pue=0.9), "pue"),
        (lambda: green_algorithms_energy_j(100, 10, psf=0), "psf"),
        (lambda: green_algorithms_energy_j(100, 10, ram_w_per_gb=-0.3), "ram_w_per_gb"),
        (lambda: carbon_g(-1, 100), "energy_j"),
        (lambda: carbon_g(1, math.nan), "intensity_g_per_kwh"),
    ],
)
def test_bad_arguments_name_the_argument(call, argument):
    with pytest.raises(InputError, match=rf"^{argument} is "):
        call()


def test_percent_utilisation_hint():
    with pytest.raises(InputError, match="divide a percentage by 100"):
        green_algorithms_energy_j(100, 10, gpu_util=80)
