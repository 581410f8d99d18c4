"""Maximum mean discrepancy between two samples of features (RBF kernel, median heuristic)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def mmd_rbf(x: npt.ArrayLike, y: npt.ArrayLike, bandwidth: float | None = None) -> float:
    """Unbiased squared MMD between samples ``x (n, d)`` and ``y (m, d)`` with a Gaussian kernel.

    Args:
        x: first sample, one row per point.
        y: second sample.
        bandwidth: kernel width; ``None`` uses the median pairwise distance of the pooled sample.

    Returns:
        ``MMD^2``: about 0 when both come from one distribution (it can dip slightly below 0),
        larger as they differ.
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"mmd_rbf needs two (n, d) samples with n >= 2 and equal d, got {a.shape} and {b.shape}")
    pooled = np.concatenate([a, b])
    sq = _sq_dists(pooled, pooled)
    if bandwidth is None:
        positive = sq[np.triu_indices(len(pooled), k=1)]
        positive = positive[positive > 0]
        bandwidth = float(np.sqrt(np.median(positive))) if positive.size else 1.0
    k = np.exp(-sq / (2.0 * bandwidth**2))
    n = len(a)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    m = len(b)
    xx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(sq, 0.0)
