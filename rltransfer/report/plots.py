"""Learning-curve figures: one PNG per task, every arm with a bootstrap band over runs."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rltransfer.compare.stats import mean_curve_ci
from rltransfer.report.files import atomic_path

#: Fixed style of the baseline arm, so it stands out from the coloured transfer arms.
BASELINE_STYLE: dict[str, Any] = {"color": "black", "linewidth": 2.2, "zorder": 5}
BASELINE_BAND: dict[str, Any] = {"color": "0.55", "alpha": 0.3, "zorder": 4}
# Colour cycle for transfer arms: tab10 without its grey, which is the baseline's.
_ARM_COLOURS = ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9")


def slug(name: str) -> str:
    """A file-name-safe version of ``name`` (letters, digits, ``.``, ``_``, ``-``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.")
    return cleaned or "task"


def plot_learning_curves(
    curves: Mapping[str, npt.ArrayLike],
    steps: npt.ArrayLike,
    task_names: Sequence[str],
    thresholds: Sequence[float] | npt.ArrayLike,
    out_dir: str | Path,
    *,
    baseline: str = "scratch",
    reps: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    dpi: int = 110,
) -> list[Path]:
    """Writes ``learning_curve_<task>.png`` for every task into ``out_dir``.

    Each arm is drawn as its mean return over runs with a pointwise bootstrap band
    (``confidence`` coverage, runs resampled with replacement); the baseline arm is
    always black with a grey band, the task threshold a dashed line. Files are written
    atomically.

    Args:
        curves: arm name to ``(runs, tasks, evals)`` evaluation returns.
        steps: ``(evals,)`` target-environment steps (the x-axis).
        task_names: one name per task (figure titles and file names).
        thresholds: one threshold per task.
        out_dir: directory for the PNGs; created if missing.
        baseline: arm drawn in the fixed baseline style.
        reps: bootstrap replicates per band.
        confidence: coverage of the band.
        seed: bootstrap seed.
        dpi: resolution of the PNGs.

    Returns:
        The PNG paths, in task order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(steps, dtype=np.float64)
    arrays = {arm: np.asarray(value, dtype=np.float64) for arm, value in curves.items()}
    limits = np.asarray(thresholds, dtype=np.float64)
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    order = [arm for arm in arrays if arm == baseline] + [arm for arm in arrays if arm != baseline]
    colours = dict(zip([arm for arm in order if arm != baseline], _cycle(len(order)), strict=False))
    paths: list[Path] = []
    for t, task in enumerate(task_names):
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        try:
            for arm in order:
                centre, low, high = mean_curve_ci(arrays[arm][:, t, :], reps, confidence, seed)
                label = f"{arm} (n={arrays[arm].shape[0]})"
                if arm == baseline:
                    ax.fill_between(x, low, high, **BASELINE_BAND)
                    ax.plot(x, centre, label=label, **BASELINE_STYLE)
                else:
                    ax.fill_between(x, low, high, color=colours[arm], alpha=0.2, linewidth=0)
                    ax.plot(x, centre, color=colours[arm], linewidth=1.6, label=label)
            ax.axhline(limits[t], color="0.3", linestyle="--", linewidth=1.0, label=f"threshold {limits[t]:g}")
            ax.set_title(task)
            ax.set_xlabel("target env steps")
            ax.set_ylabel("evaluation return")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small", loc="best")
            fig.tight_layout()
            path = directory / f"learning_curve_{slug(task)}.png"
            if path in paths:  # two task names with the same slug
                path = directory / f"learning_curve_{slug(task)}_{t}.png"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=dpi)
        finally:
            plt.close(fig)
        paths.append(path)
    return paths


def _cycle(count: int) -> list[str]:
    return [_ARM_COLOURS[i % len(_ARM_COLOURS)] for i in range(count)]
