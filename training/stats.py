"""Small statistics shared by the evaluation tables."""

from __future__ import annotations

import numpy as np


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of independent values (NaN for fewer than two)."""
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def pooled_difference(diffs: list[np.ndarray]) -> dict:
    """Per-prompt differences of one or more samples, pooled: `delta` (mean over all prompts), its standard
    error `se`, `prompts` and `per_sample` (each sample's mean difference)."""
    pooled = np.concatenate(diffs)
    return {"delta": float(pooled.mean()), "se": standard_error(pooled), "prompts": int(len(pooled)), "per_sample": [float(d.mean()) if len(d) else float("nan") for d in diffs]}
