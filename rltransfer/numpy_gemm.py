"""Matrix products through numpy where they stay on one thread, for the small CPU products of rollouts and updates.

At a few dozen rows torch spends more on dispatching a product than on its arithmetic; numpy's
call costs a fraction of that (``docs/benchmarks.md``: rollout steps, the multi-task update).
"""

from __future__ import annotations

import numpy as np
import torch as th

# OpenBLAS (numpy's BLAS) runs a gemm on one thread up to m * n * k = 4 * 65536 and on every
# core above (its interface/gemm.c); larger products go through torch, whose thread count
# rltransfer's grid workers set to 1, so that N runs never fight over N cores.
SINGLE_THREAD_GEMM = 4 * 65536


def matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w`` (stacked or not): numpy's where each product stays on one thread, torch's above."""
    if x.shape[-2] * w.shape[-2] * w.shape[-1] <= SINGLE_THREAD_GEMM:
        return np.matmul(x, w)
    return th.matmul(th.from_numpy(x), th.from_numpy(w)).numpy()
