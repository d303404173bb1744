"""R², RMSE and MAE on the ln(y + 1) scale, as both papers report them.

Inputs are already log-scale (:meth:`UrbanDataset.log_targets`). Regions whose *truth* is missing
(NaN) are dropped per indicator, since real indicator tables have holes. A missing *prediction* on a
region with a known truth is a caller error (e.g. a region without an image that was not masked
out), so it raises instead of silently shrinking the test set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("R2", "RMSE", "MAE")
HIGHER_IS_BETTER = {"R2": True, "RMSE": False, "MAE": False}


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Both as float 2-D (N, T) arrays of equal shape; rows with NaN truth are kept as NaN."""
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if t.shape != p.shape:
        raise ValueError(f"truth and prediction shapes differ: {t.shape} vs {p.shape}")
    if t.ndim == 1:
        t, p = t[:, None], p[:, None]
    if t.ndim != 2:
        raise ValueError(f"expected (N,) or (N, T) arrays, got shape {t.shape}")
    bad = np.isfinite(t) & ~np.isfinite(p)
    if bad.any():
        col, n = int(np.flatnonzero(bad.any(0))[0]), int(bad.sum())
        raise ValueError(f"{n} predictions are NaN/inf where the truth is known (first in column {col}); "
                         "mask those regions out before scoring")
    return t, p


def _per_column(y_true, y_pred, fn) -> np.ndarray | float:
    t, p = _pair(y_true, y_pred)
    out = np.array([fn(t[m, j], p[m, j]) for j in range(t.shape[1]) for m in [np.isfinite(t[:, j])]])
    return float(out[0]) if np.ndim(y_true) == 1 else out


def _r2(t: np.ndarray, p: np.ndarray) -> float:
    if len(t) < 2:
        return np.nan
    ss_tot = np.sum((t - t.mean()) ** 2)
    return np.nan if ss_tot == 0 else float(1.0 - np.sum((t - p) ** 2) / ss_tot)


def _rmse(t: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((t - p) ** 2))) if len(t) else np.nan


def _mae(t: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(t - p))) if len(t) else np.nan


def r2(y_true, y_pred) -> np.ndarray | float:
    """Coefficient of determination, ``1 - SS_res / SS_tot`` around the mean of the scored truth.

    Args:
        y_true: (N,) or (N, T) log-scale truth; NaN rows are dropped per column.
        y_pred: same shape.

    Returns:
        A float for 1-D input, else (T,) floats. NaN where fewer than 2 truths or constant truth.
    """
    return _per_column(y_true, y_pred, _r2)


def rmse(y_true, y_pred) -> np.ndarray | float:
    """Root mean squared error in ln(y + 1) units; shapes as :func:`r2`."""
    return _per_column(y_true, y_pred, _rmse)


def mae(y_true, y_pred) -> np.ndarray | float:
    """Mean absolute error in ln(y + 1) units; shapes as :func:`r2`."""
    return _per_column(y_true, y_pred, _mae)


def regression_metrics(y_true, y_pred, indicators: list[str] | None = None) -> pd.DataFrame:
    """All three metrics per indicator, as tidy rows.

    Args:
        y_true: (N, T) log-scale truth with NaN for missing values.
        y_pred: (N, T) predictions.
        indicators: T names (default ``y0, y1, ...``).

    Returns:
        DataFrame with columns ``indicator, metric, value, n`` (``n``: regions scored).
    """
    t, p = _pair(y_true, y_pred)
    names = indicators or [f"y{j}" for j in range(t.shape[1])]
    if len(names) != t.shape[1]:
        raise ValueError(f"{len(names)} indicator names for {t.shape[1]} columns")
    n = np.isfinite(t).sum(0)
    values = {"R2": r2(t, p), "RMSE": rmse(t, p), "MAE": mae(t, p)}
    rows = [{"indicator": names[j], "metric": m, "value": float(values[m][j]), "n": int(n[j])}
            for j in range(t.shape[1]) for m in METRICS]
    return pd.DataFrame(rows)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment of two (n, d) feature matrices of the same n rows (Kornblith et al.).

    1 when one is a rotation and isotropic scaling of the other: how far training moved a
    representation from its initialisation (rows with a non-finite value in either are left out).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka: {x.shape[0]} rows against {y.shape[0]}")
    ok = np.isfinite(x).all(1) & np.isfinite(y).all(1)
    x, y = x[ok] - x[ok].mean(0), y[ok] - y[ok].mean(0)
    cross = np.linalg.norm(y.T @ x) ** 2
    norm = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / norm) if norm > 0 else float("nan")
