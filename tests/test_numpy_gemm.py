"""numpy_gemm: numpy's products only where OpenBLAS stays on one thread."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from rltransfer import numpy_gemm


def test_large_products_go_through_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above OpenBLAS's one-thread size numpy would use every core; torch's product gives the same."""
    calls = []
    torch_matmul = th.matmul
    monkeypatch.setattr(th, "matmul", lambda a, b: calls.append(a.shape) or torch_matmul(a, b))
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 64)).astype(np.float32).T  # a parameter's transposed view
    for rows, through_torch in [(8, False), (64, False), (65, True), (512, True)]:
        x = rng.standard_normal((rows, 64)).astype(np.float32)
        calls.clear()
        got = numpy_gemm.matmul(x, w)
        assert got.dtype == np.float32 and bool(calls) is through_torch
        np.testing.assert_allclose(got, x @ w, rtol=1e-4, atol=1e-4)
    stacked = rng.standard_normal((3, 512, 64)).astype(np.float32)
    np.testing.assert_allclose(numpy_gemm.matmul(stacked, w), stacked @ w, rtol=1e-4, atol=1e-4)
