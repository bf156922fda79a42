"""Post-training energy baselines: ML CO2 Impact (MLCO2) and Green Algorithms (GA).

Both estimate the energy of a finished run from a power figure and its duration; neither measures
anything. Formulas and constants (sources in ``docs/offline-catalogue-baselines.md``):

- **MLCO2** (Lacoste et al. 2019, calculator ``mlco2/impact`` ``js/grayscale.js``):
  ``E = TDP x t``, one GPU, no PUE, no utilisation, no memory. The paper's baseline is the
  same formula on nvidia-smi ``power.max_limit`` instead of TDP.
- **Green Algorithms** (Lannelongue et al. 2021, ``green-algorithms-tool``):
  ``E = t x (n x TDP x u + RAM_GB x 0.3725 W/GB) x PUE x PSF``. The published tool defaults
  to PUE 1.67 (1.56 in its newest data, 1 for a personal computer) and PSF 1. The paper used
  ``power.max_limit`` for TDP, the mean GPU utilisation for ``u``, the machine's total RAM, and
  no PUE, PSF or CPU term: call :func:`green_algorithms_energy_j` with its defaults
  (``pue=1``, ``psf=1``) to reproduce it.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from joulecast.energy import J_PER_KWH
from joulecast.errors import InputError
from joulecast.inputs import parse_duration as parse_duration  # still importable from here

RAM_W_PER_GB_GA = 0.3725  # Green Algorithms memory power, W per GB (referenceValues.csv)
GA_DEFAULT_PUE = 1.67  # GA tool's "unknown" data centre PUE (Uptime 2019), data v1.0-v2.2


def _check(name: str, value: object, *, low: float = 0.0, strict: bool = False) -> float:
    """``value`` as a float, or InputError naming ``name`` and the bound."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InputError(f"{name} is {value!r}: expected a number")
    number = float(value)
    if not math.isfinite(number):
        raise InputError(f"{name} is {number}: expected a finite number")
    if number < low or (strict and number == low):
        bound = f"> {low:g}" if strict else f">= {low:g}"
        raise InputError(f"{name} is {number:g}: expected {bound}")
    return number


def _check_gpus(n_gpus: object) -> int:
    if isinstance(n_gpus, bool) or not isinstance(n_gpus, Integral) or n_gpus < 1:
        raise InputError(f"n_gpus is {n_gpus!r}: expected a whole number >= 1")
    return int(n_gpus)


def mlco2_energy_j(tdp_w: float, duration_s: float, n_gpus: int = 1) -> float:
    """MLCO2 energy: ``E [J] = n_gpus x tdp_w x duration_s``.

    The ML CO2 Impact calculator computes ``TDP [W] x hours / 1000`` kWh for one GPU, with no
    PUE, utilisation or memory term; the paper applied the same formula to nvidia-smi's
    ``power.max_limit``. ``n_gpus`` multiplies (the calculator has one GPU).

    Args:
        tdp_w: Power per GPU in watts (TDP, or the max power limit as in the paper); > 0.
        duration_s: Run duration in seconds; >= 0.
        n_gpus: Number of GPUs; >= 1.

    Raises:
        InputError: An argument is not a finite number in its range.
    """
    tdp = _check("tdp_w", tdp_w, strict=True)
    duration = _check("duration_s", duration_s)
    return _check_gpus(n_gpus) * tdp * duration


def green_algorithms_energy_j(
    tdp_w: float,
    duration_s: float,
    *,
    gpu_util: float = 1.0,
    ram_gb: float = 0.0,
    n_gpus: int = 1,
    pue: float = 1.0,
    psf: float = 1.0,
    ram_w_per_gb: float = RAM_W_PER_GB_GA,
) -> float:
    """Green Algorithms energy: ``E [J] = t x (n x TDP x u + RAM_GB x 0.3725) x PUE x PSF``.

    Lannelongue et al. 2021 (``green-algorithms-tool``, ``form_blueprint.py``) with the GPU as
    the core: ``u`` is the usage factor, ``RAM_GB`` the memory *available* (not used),
    0.3725 W/GB from its ``referenceValues.csv``. PUE multiplies core and memory power; PSF
    (pragmatic scaling factor) counts repeated runs. The defaults (``pue=1``, ``psf=1``)
    reproduce the paper's baseline: ``(max power limit x mean GPU utilisation + total RAM GB x
    0.3725) x duration``, no PUE and no CPU term. The published tool's default PUE is
    :data:`GA_DEFAULT_PUE` (1.67).

    Args:
        tdp_w: Power per GPU in watts; > 0.
        duration_s: Run duration in seconds; >= 0.
        gpu_util: Mean GPU utilisation as a fraction in [0, 1] (not a percentage).
        ram_gb: Memory available in GB; >= 0.
        n_gpus: Number of GPUs; >= 1.
        pue: Power usage effectiveness; >= 1.
        psf: Pragmatic scaling factor; > 0.
        ram_w_per_gb: Memory power in W per GB; >= 0.

    Raises:
        InputError: An argument is not a finite number in its range.
    """
    tdp = _check("tdp_w", tdp_w, strict=True)
    duration = _check("duration_s", duration_s)
    util = _check("gpu_util", gpu_util)
    if util > 1.0:
        raise InputError(
            f"gpu_util is {util:g}: expected a fraction in [0, 1] (divide a percentage by 100)"
        )
    ram = _check("ram_gb", ram_gb)
    n = _check_gpus(n_gpus)
    pue_ = _check("pue", pue, low=1.0)
    psf_ = _check("psf", psf, strict=True)
    ram_w = _check("ram_w_per_gb", ram_w_per_gb)
    return duration * (n * tdp * util + ram * ram_w) * pue_ * psf_


def carbon_g(energy_j: float, intensity_g_per_kwh: float) -> float:
    """Emissions in gCO2e: ``energy_j / 3.6e6 x intensity_g_per_kwh``.

    Args:
        energy_j: Energy in joules; >= 0.
        intensity_g_per_kwh: Carbon intensity of the electricity in gCO2e per kWh; >= 0.

    Raises:
        InputError: An argument is not a finite number >= 0.
    """
    energy = _check("energy_j", energy_j)
    intensity = _check("intensity_g_per_kwh", intensity_g_per_kwh)
    return energy / J_PER_KWH * intensity
