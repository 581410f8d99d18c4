"""Source-sample accounting: "target-only" versus "total" environment steps.

A transfer arm spent ``source_steps`` environment steps pretraining before its target
curve starts; scratch spent none. Under ``"target"`` accounting the x-axis is the target
steps alone (the transfer question "is the pretrained policy a better start?"); under
``"total"`` accounting it is ``steps + source_steps`` (the question "was pretraining
worth its samples?"). Time to threshold shifts by ``source_steps``; the normalised AUC of
:func:`rltransfer.compare.metrics.area_under_curve` is shift-invariant (it is the mean
return over the evaluated span), so total accounting leaves it unchanged.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Accounting = Literal["target", "total"]


def step_axis(steps: npt.ArrayLike, source_steps: float = 0, accounting: Accounting = "target") -> FloatArray:
    """The x-axis of an arm's curves under the chosen accounting.

    Args:
        steps: ``(evals,)`` target-environment steps at each evaluation.
        source_steps: environment steps spent pretraining the arm's source policy.
        accounting: ``"target"`` (``steps``) or ``"total"`` (``steps + source_steps``).

    Returns:
        ``(evals,)`` float steps.
    """
    return np.asarray(steps, dtype=np.float64) + _offset(source_steps, accounting)


def shift_time_to_threshold(
    times: npt.ArrayLike, source_steps: float = 0, accounting: Accounting = "target"
) -> FloatArray:
    """Converts target-only time-to-threshold values to the chosen accounting.

    Args:
        times: output of :func:`rltransfer.compare.metrics.time_to_threshold`
            (``inf`` for runs that never reached the threshold stays ``inf``).
        source_steps: environment steps spent pretraining the arm's source policy.
        accounting: ``"target"`` (unchanged) or ``"total"`` (``times + source_steps``).
    """
    return np.asarray(times, dtype=np.float64) + _offset(source_steps, accounting)


def _offset(source_steps: float, accounting: Accounting) -> float:
    if source_steps < 0:
        raise ValueError(f"source_steps must be non-negative, got {source_steps}")
    if accounting == "target":
        return 0.0
    if accounting == "total":
        return float(source_steps)
    raise ValueError(f"accounting must be 'target' or 'total', got {accounting!r}")
