"""The domain of an offline estimator: the configurations it was trained on, and how far a new
configuration lies from them.

A *configuration* is one setting of the ten raw features
(:func:`~joulecast.offline.features.configuration_groups`); the paper's data repeats each a few
dozen times. :class:`TrainingDomain` keeps the distinct ones and answers, for a configuration
asked about, which features fall outside the training ranges.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from joulecast.offline.features import RAW_FEATURES, configuration_groups


class TrainingDomain:
    """The distinct training configurations of a model and each feature's range.

    Args:
        features: the training rows' raw features (:data:`RAW_FEATURES` columns).
    """

    def __init__(self, features: pd.DataFrame) -> None:
        frame = features[RAW_FEATURES]
        _, first = np.unique(configuration_groups(frame), return_index=True)
        #: One row per distinct configuration, in :data:`RAW_FEATURES` order.
        self.configurations: np.ndarray = frame.to_numpy(dtype=float)[first]
        #: Each feature's (lowest, highest) training value.
        self.ranges: dict[str, tuple[float, float]] = {
            c: (float(frame[c].min()), float(frame[c].max())) for c in RAW_FEATURES
        }

    def out_of_range(self, row: pd.Series) -> list[str]:
        """A warning for each feature of ``row`` outside its training range."""
        warnings = []
        for c in RAW_FEATURES:
            low, high = self.ranges[c]
            if not low <= row[c] <= high:
                warnings.append(
                    f"{c} {row[c]:.4g} is outside the training range {low:.4g}..{high:.4g}"
                )
        return warnings
