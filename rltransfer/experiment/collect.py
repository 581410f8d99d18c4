"""Gather finished runs of an experiment into arrays ``(runs, tasks, evals)`` per arm."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rltransfer.checkpoint import MANIFEST_FILE
from rltransfer.errors import UserError
from rltransfer.experiment.runner import Job, plan_jobs
from rltransfer.experiment.spec import ExperimentSpec


@dataclass
class Collected:
    """Curves and per-run facts of every finished run, arm by arm (seeds in spec order)."""

    steps: np.ndarray
    curves: dict[str, np.ndarray]
    seeds: dict[str, list[int]]
    forgetting: dict[str, np.ndarray]  # (runs, 2): source return before, after
    source_steps: dict[str, float]
    feature_mmd: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # arm -> task -> (runs, 2)
    missing: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _load_run(job: Job) -> tuple[np.ndarray, np.ndarray, dict]:
    with np.load(job.run_dir / "curves.npz") as data:
        steps, returns = data["steps"], data["returns"]
    manifest = json.loads((job.run_dir / MANIFEST_FILE).read_text())
    return steps, returns, manifest


def collect(spec: ExperimentSpec, out: Path) -> Collected:
    """Read every finished run. Zero-shot runs (one evaluation) are broadcast over the step grid:
    an untrained policy evaluated deterministically on the same starts scores the same at every step.
    """
    per_arm: dict[str, dict[int, list[tuple[np.ndarray, np.ndarray, dict]]]] = {}
    missing, failed = [], []
    for job in plan_jobs(spec, out):
        if job.finished:
            per_arm.setdefault(job.arm.name, {}).setdefault(job.seed, []).append(_load_run(job))
        elif job.failed_marker.exists():
            failed.append(str(job.run_dir))
        else:
            missing.append(str(job.run_dir))
    grids = [s for runs in per_arm.values() for seed_runs in runs.values() for s, _, _ in seed_runs if len(s) > 1]
    if not grids:
        raise UserError(f"no finished training runs under '{out}'; run `rltransfer run SPEC --out {out} --resume`")
    steps = grids[0]
    if any(len(g) != len(steps) or not np.array_equal(g, steps) for g in grids):
        raise UserError(f"runs under '{out}' evaluated at different steps; they come from different settings")
    n_tasks = len(spec.targets)
    curves, seeds, forgetting, source_steps = {}, {}, {}, {}
    feature_mmd: dict[str, dict[str, np.ndarray]] = {}
    for arm in spec.arms:
        runs = per_arm.get(arm.name, {})
        complete = [s for s in spec.seeds if len(runs.get(s, [])) == (1 if spec.mode == "multitask" else n_tasks)]
        if not complete:
            continue
        arrays, forgot = [], []
        for seed in complete:
            returns = np.concatenate([r for _, r, _ in runs[seed]], axis=0)  # tasks stacked (per-target mode)
            if returns.shape[1] == 1:
                returns = np.repeat(returns, len(steps), axis=1)
            arrays.append(returns)
            f = [m["forgetting"] for _, _, m in runs[seed] if m.get("forgetting")]
            if f and len(f) == len(runs[seed]):
                forgot.append([np.mean([x["before"] for x in f]), np.mean([x["after"] for x in f])])
        shifts = [m["feature_mmd"] for seed in complete for _, _, m in runs[seed] if m.get("feature_mmd")]
        if shifts and spec.mode == "multitask" and len(shifts) == len(complete):
            feature_mmd[arm.name] = {
                t: np.asarray([[s[t]["before"], s[t]["after"]] for s in shifts]) for t in shifts[0]
            }
        curves[arm.name] = np.stack(arrays)
        seeds[arm.name] = complete
        if forgot:
            forgetting[arm.name] = np.asarray(forgot)
        manifest = runs[complete[0]][0][2]
        src = (manifest.get("source") or {}).get("manifest") or {}
        source_steps[arm.name] = float(src.get("timesteps", 0)) if arm.strategy.uses_source else 0.0
    return Collected(steps, curves, seeds, forgetting, source_steps, feature_mmd, missing, failed)
