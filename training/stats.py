"""Small statistics shared by the evaluation tables."""

from __future__ import annotations

import numpy as np


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of independent values (NaN for fewer than two)."""
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
