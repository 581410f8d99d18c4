"""Does the advice rank targets by the gain transfer really gave? Pooled over finished experiments.

For each finished experiment directory, the advice is computed for its own source checkpoint and
its same-family targets, and compared with the realised gain: the best transfer arm's mean AUC
minus scratch's (``report/summary.json``). Both are put on one scale across families by dividing
by the target's ``threshold - random return`` (the same normalisation as the zero-shot score), so
one Spearman correlation covers every family. Cross-family targets are skipped: the source policy
cannot act on them, so there is no zero-shot return to advise from.

The Spearman correlation comes with a 95% interval for the seeds' noise in the realised gains:
each arm's per-run AUCs (``report/scores.csv``) are resampled with replacement, independently
per arm and target as the report's AUC differences are, and the correlation recomputed.

The recommended strategy is checked too: per target, the arm that carries it out (matched by
strategy, not by name; scratch counts as a gain of 0) must be the best option or have a CI that
reaches the best one's. Recommendations with no such arm in the grid count as untested.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata, spearmanr

from rltransfer.advise import Advice, advise
from rltransfer.compare.stats import MIN_RUNS
from rltransfer.compare.summary import Estimate
from rltransfer.errors import UserError
from rltransfer.experiment.report import load_experiment
from rltransfer.experiment.runner import source_dir
from rltransfer.io import read_json
from rltransfer.strategies import Strategy

#: One arm's mean-AUC gain over scratch on one target, with its 95% CI (as the report's summary.json holds it).
Gain = Estimate


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
    advised_arm: str | None  # the arm that carries out the recommendation (None: not in the grid)
    advised_gain: float | None  # its AUC gain (scratch: 0), unnormalised
    agrees: bool | None  # the advised option is the best one or within its CI (None: untested)
    advice: Advice


@dataclass(frozen=True)
class Validation:
    spearman: float
    points: tuple[ValidationPoint, ...]
    per_family: dict[str, float]  # Spearman within each family with >= 3 targets
    # 95% interval of ``spearman`` over the seeds' noise (None: an experiment has no scores.csv, or an arm one run)
    spearman_ci: tuple[float, float] | None = None
    per_family_ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # the same, per family

    @property
    def agreement(self) -> tuple[int, int]:
        """(targets where the advised strategy was the best option or tied with it, targets tested)."""
        tested = [p for p in self.points if p.agrees is not None]
        return sum(bool(p.agrees) for p in tested), len(tested)

    def to_json(self) -> dict[str, Any]:
        agree, tested = self.agreement
        return {
            "spearman": self.spearman,
            "spearman_ci": None if self.spearman_ci is None else list(self.spearman_ci),
            "per_family": self.per_family,
            "per_family_ci": {f: list(ci) for f, ci in self.per_family_ci.items()},
            "strategy_agreement": {"agree": agree, "tested": tested},
            "points": [{**asdict(p), "advice": asdict(p.advice)} for p in self.points],
        }


def arm_gains(experiment_dir: str | Path) -> dict[str, dict[str, Gain]]:
    """Per target, per transfer arm: mean-AUC gain over scratch with its CI (``report/summary.json``)."""
    path = Path(experiment_dir) / "report" / "summary.json"
    if not path.is_file():
        raise UserError(
            f"'{path}' not found; run `rltransfer report {experiment_dir}` on the finished experiment first"
        )
    summary = read_json(path, f"rebuild it with `rltransfer report {experiment_dir}`")
    gains: dict[str, dict[str, Gain]] = {}
    for c in summary["comparisons"]:
        d = c["auc_difference"]
        if c["arm"] == "scratch" or d is None or c["task"] == "all tasks":
            continue
        # One run has no interval: NaN bounds, and _agrees compares the values.
        gains.setdefault(c["task"], {})[c["arm"]] = Gain.from_dict(d)
    return gains


def best_arm(gains: dict[str, Gain]) -> tuple[float, str]:
    """The largest mean-AUC gain among one target's transfer arms, and that arm."""
    return max(((g.value, arm) for arm, g in gains.items()), key=lambda x: x[0])


def validate(advice: Sequence[Advice], experiment_dir: str | Path) -> tuple[float, list[tuple[str, float, float]]]:
    """Spearman correlation between ``predicted_gain`` and the realised gain of the best transfer arm
    (mean AUC minus scratch's) in one finished experiment's ``report/summary.json``."""
    gains = arm_gains(experiment_dir)
    pairs = [(a.target, a.predicted_gain, best_arm(gains[a.target])[0]) for a in advice if a.target in gains]
    if len(pairs) < 3:
        raise UserError(f"need >= 3 targets shared with {experiment_dir} to correlate, got {len(pairs)}")
    return _spearman([p[1] for p in pairs], [p[2] for p in pairs]), pairs


def advice_label(strategy: Strategy) -> str | None:
    """The recommendation (as ``recommend`` words it) that an arm's strategy carries out, if any."""
    plain = (
        strategy.l2sp == 0
        and strategy.dann == 0
        and not strategy.unfreeze_at
        and not strategy.rehearse
        and strategy.trunk_lr_scale == 1.0
    )
    if not strategy.train:
        return "zero-shot"
    if not strategy.transfer:
        return "scratch"
    if not plain:
        return None
    if strategy.transfer == frozenset({"trunk"}):
        return {0: "freeze", None: "finetune"}.get(strategy.trainable_layers)
    if strategy.trainable_layers is None and {"trunk", "pi_head", "vf_head"} <= strategy.transfer:
        return "finetune (transfer: heads)"
    return None


def _advised(
    recommendation: str, labels: dict[str, str | None], gains: dict[str, Gain]
) -> tuple[str | None, Gain | None]:
    """The arm carrying out ``recommendation`` and its gain; zero-shot falls back to its trained
    continuation (finetune with the heads), which starts from the very same policy."""
    if recommendation == "scratch":
        return "scratch", Gain(0.0, 0.0, 0.0)
    for wanted in (recommendation, "finetune (transfer: heads)" if recommendation == "zero-shot" else None):
        for arm, label in labels.items():
            if label == wanted and arm in gains:
                return arm, gains[arm]
    return None, None


def _agrees(advised: Gain, gains: dict[str, Gain]) -> bool:
    """The advised option is the best (scratch counts as a gain of 0) or its CI reaches the best's."""
    best = max([Gain(0.0, 0.0, 0.0), *gains.values()], key=lambda g: g.value)
    return advised.value >= best.value or advised.high >= best.low


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return float(spearmanr(x, y).statistic)


def run_aucs(experiment_dir: str | Path) -> dict[str, dict[str, np.ndarray]] | None:
    """Per target, per arm (scratch included): each run's AUC (``report/scores.csv``); None if absent."""
    path = Path(experiment_dir) / "report" / "scores.csv"
    if not path.is_file():
        return None
    runs: dict[str, dict[str, list[float]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            runs.setdefault(row["task"], {}).setdefault(row["arm"], []).append(float(row["auc"]))
    return {task: {arm: np.asarray(v) for arm, v in arms.items()} for task, arms in runs.items()}


def spearman_interval(
    predicted: Sequence[float],
    runs: Sequence[Mapping[str, np.ndarray]],
    spans: Sequence[float],
    reps: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% percentile interval of Spearman(predicted, realised) over resampled runs.

    ``runs[i]`` holds target ``i``'s per-run AUCs by arm (``scratch`` and the transfer arms);
    each replicate resamples every arm's runs with replacement, takes the best transfer arm's
    mean AUC minus scratch's over ``spans[i]`` as the realised gain, and ranks the targets again.
    """
    rng = np.random.default_rng(seed)
    realised = np.empty((reps, len(runs)))
    for i, (arms, span) in enumerate(zip(runs, spans, strict=True)):
        means = {arm: a[rng.integers(0, len(a), (reps, len(a)))].mean(axis=1) for arm, a in arms.items()}
        base = means.pop("scratch")
        realised[:, i] = (np.max(np.stack(list(means.values())), axis=0) - base) / span
    pred = rankdata(predicted)
    ranks = rankdata(realised, axis=1)
    pred_c = pred - pred.mean()
    ranks_c = ranks - ranks.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):  # a replicate with all gains tied has no rank order
        rho = ranks_c @ pred_c / (np.linalg.norm(ranks_c, axis=1) * np.linalg.norm(pred_c))
    low, high = np.nanpercentile(rho, [2.5, 97.5])
    return float(low), float(high)


def validate_experiments(
    experiment_dirs: Sequence[str | Path], episodes: int = 10, samples: int = 1000, seed: int = 0
) -> Validation:
    """Advice vs realised gains over every same-family target of the given finished experiments."""
    points: list[ValidationPoint] = []
    resample: list[tuple[Mapping[str, np.ndarray], float]] | None = []  # per point: runs by arm, span
    for d in experiment_dirs:
        out = Path(d)
        spec = load_experiment(out)
        gains = arm_gains(out)
        aucs = run_aucs(out)
        labels = {arm.name: advice_label(arm.strategy) for arm in spec.arms}
        # The report names tasks as ``task_names`` does (the variant alone when all are one family).
        tasks = [
            (name, t)
            for name, t in zip(spec.task_names, spec.targets, strict=True)
            if t.family.name == spec.family.name and name in gains
        ]
        if not tasks:
            continue
        source = spec.source.checkpoint or source_dir(spec, out, spec.source.seed)  # advice reads one source
        advice = advise(source, spec.family, [t.variant for _, t in tasks], episodes, samples, seed)
        for (name, _), a in zip(tasks, advice, strict=True):
            best_gain, best = best_arm(gains[name])
            advised_arm, advised = _advised(a.recommendation, labels, gains[name])
            span = a.threshold - a.random_return
            runs = None if aucs is None else {arm: aucs[name][arm] for arm in ("scratch", *gains[name])}
            if resample is None or runs is None or min(len(r) for r in runs.values()) < MIN_RUNS:
                resample = None  # no scores, or an arm of one run: no seed noise to resample
            else:
                resample.append((runs, span))
            points.append(
                ValidationPoint(
                    experiment=spec.name,
                    family=spec.family.name,
                    target=name,
                    predicted_gain=a.predicted_gain,
                    realised_gain=best_gain / span,
                    realised_auc_gain=best_gain,
                    best_arm=best,
                    recommendation=a.recommendation,
                    advised_arm=advised_arm,
                    advised_gain=None if advised is None else advised.value,
                    agrees=None if advised is None else _agrees(advised, gains[name]),
                    advice=a,
                )
            )
    if len(points) < 3:
        raise UserError(f"need >= 3 same-family targets with realised gains to correlate, got {len(points)}")

    def interval(rows: list[int]) -> tuple[float, float] | None:
        if resample is None:
            return None
        runs, spans = [resample[i][0] for i in rows], [resample[i][1] for i in rows]
        return spearman_interval([points[i].predicted_gain for i in rows], runs, spans, seed=seed)

    per_family, per_family_ci = {}, {}
    for fam in sorted({p.family for p in points}):
        rows = [i for i, p in enumerate(points) if p.family == fam]
        if len(rows) >= 3:
            per_family[fam] = _spearman(
                [points[i].predicted_gain for i in rows], [points[i].realised_gain for i in rows]
            )
            ci = interval(rows)
            if ci is not None:
                per_family_ci[fam] = ci
    rho = _spearman([p.predicted_gain for p in points], [p.realised_gain for p in points])
    pooled = interval(list(range(len(points))))
    return Validation(rho if np.isfinite(rho) else 0.0, tuple(points), per_family, pooled, per_family_ci)
