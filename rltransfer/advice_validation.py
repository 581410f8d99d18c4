"""Does the advice rank targets by the gain transfer really gave? Pooled over finished experiments.

For each finished experiment directory, the advice is computed for its own source checkpoint and
its same-family targets, and compared with the realised gain: the best transfer arm's mean AUC
minus scratch's (``report/summary.json``). Both are put on one scale across families by dividing
by the target's ``threshold - random return`` (the same normalisation as the zero-shot score), so
one Spearman correlation covers every family. Cross-family targets are skipped: the source policy
cannot act on them, so there is no zero-shot return to advise from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from rltransfer.advise import Advice, advise
from rltransfer.errors import UserError
from rltransfer.experiment.report import load_experiment


@dataclass(frozen=True)
class ValidationPoint:
    experiment: str
    family: str
    target: str
    predicted_gain: float
    realised_gain: float  # best transfer arm's AUC gain / (threshold - random return)
    realised_auc_gain: float  # the same, unnormalised
    best_arm: str
    recommendation: str
    advice: Advice


@dataclass(frozen=True)
class Validation:
    spearman: float
    points: tuple[ValidationPoint, ...]
    per_family: dict[str, float]  # Spearman within each family with >= 3 targets

    def to_json(self) -> dict[str, Any]:
        return {
            "spearman": self.spearman,
            "per_family": self.per_family,
            "points": [{**asdict(p), "advice": asdict(p.advice)} for p in self.points],
        }


def realised_gains(experiment_dir: str | Path) -> dict[str, tuple[float, str]]:
    """Per target: the largest mean-AUC gain over scratch among transfer arms, and that arm."""
    path = Path(experiment_dir) / "report" / "summary.json"
    if not path.is_file():
        raise UserError(
            f"'{path}' not found; run `rltransfer report {experiment_dir}` on the finished experiment first"
        )
    summary = json.loads(path.read_text())
    best: dict[str, tuple[float, str]] = {}
    for c in summary["comparisons"]:
        if c["arm"] == "scratch" or c["auc_difference"] is None or c["task"] == "all tasks":
            continue
        gain = float(c["auc_difference"]["value"])
        if c["task"] not in best or gain > best[c["task"]][0]:
            best[c["task"]] = (gain, c["arm"])
    return best


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return float(spearmanr(x, y).statistic)


def validate_experiments(
    experiment_dirs: Sequence[str | Path], episodes: int = 10, samples: int = 1000, seed: int = 0
) -> Validation:
    """Advice vs realised gains over every same-family target of the given finished experiments."""
    points: list[ValidationPoint] = []
    for d in experiment_dirs:
        out = Path(d)
        spec = load_experiment(out)
        gains = realised_gains(out)
        # The report names tasks as ``task_names`` does (the variant alone when all are one family).
        tasks = [
            (name, t)
            for name, t in zip(spec.task_names, spec.targets, strict=True)
            if t.family.name == spec.family.name and name in gains
        ]
        if not tasks:
            continue
        advice = advise(out / "source", spec.family, [t.variant for _, t in tasks], episodes, samples, seed)
        for (name, _), a in zip(tasks, advice, strict=True):
            gain, arm = gains[name]
            span = a.threshold - a.random_return
            points.append(
                ValidationPoint(
                    spec.name, spec.family.name, name, a.predicted_gain, gain / span, gain, arm, a.recommendation, a
                )
            )
    if len(points) < 3:
        raise UserError(f"need >= 3 same-family targets with realised gains to correlate, got {len(points)}")
    per_family = {}
    for fam in sorted({p.family for p in points}):
        sub = [p for p in points if p.family == fam]
        if len(sub) >= 3:
            per_family[fam] = _spearman([p.predicted_gain for p in sub], [p.realised_gain for p in sub])
    rho = _spearman([p.predicted_gain for p in points], [p.realised_gain for p in points])
    return Validation(rho if np.isfinite(rho) else 0.0, tuple(points), per_family)
