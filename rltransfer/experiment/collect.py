"""Gather finished runs of an experiment into arrays ``(runs, tasks, evals)`` per arm."""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rltransfer.checkpoint import MANIFEST_FILE
from rltransfer.devices import device_label
from rltransfer.errors import UserError
from rltransfer.experiment.runner import Job, nothing_finished, plan_jobs
from rltransfer.experiment.spec import ExperimentSpec
from rltransfer.io import read_json


@dataclass
class SourceUse:
    """One source checkpoint the finished runs fine-tuned: its lineage and the target seeds that used it."""

    path: str
    seed: int | None  # None: a checkpoint without a manifest (a plain SB3 zip)
    mean_return: float | None  # on its own task, at the end of pretraining
    threshold: float | None  # its family's success threshold on that task
    target_seeds: set[int] = field(default_factory=set)

    @property
    def solved(self) -> bool | None:
        """Whether pretraining reached the threshold (``None``: unknown)."""
        if self.mean_return is None or self.threshold is None:
            return None
        return self.mean_return >= self.threshold


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
    devices: Counter[str] = field(default_factory=Counter)  # where the finished runs trained, with counts
    # Runs resumed from a snapshot whose episodes in progress could not be saved: run -> why (not
    # bit-identical to an uninterrupted run; exact resumptions are not listed, they change nothing).
    inexact_resumes: dict[str, str] = field(default_factory=dict)
    sources: dict[str, SourceUse] = field(default_factory=dict)  # by the zip's SHA-256, in source-seed order
    # Settings whose value differs between finished runs: key -> value (as JSON) -> arms. Empty
    # when the arms are comparable (runs of an older rltransfer gave scratch its own architecture).
    differing: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # Env steps the training runs took: PPO collects whole rollouts, so a budget that is not a
    # multiple of one (n_envs x n_steps per task) is exceeded by up to a rollout.
    trained_steps: set[int] = field(default_factory=set)


def nominal_grid(timesteps: int, eval_freq: int) -> np.ndarray:
    """``0, f, 2f, ...`` up to the budget, and the budget itself: where every arm is compared."""
    return np.unique(np.concatenate([np.arange(0, timesteps, eval_freq), [timesteps]])).astype(np.int64)


def evaluation_line(spec: ExperimentSpec) -> str:
    """``every 3,000 steps, 11 per run; 10 deterministic episodes per task`` (a curve of two points said as such)."""
    points = len(nominal_grid(spec.timesteps, spec.eval_freq))
    ends = " (start and end only: eval.freq is not below the budget)" if points == 2 else ""
    return (
        f"every {spec.eval_freq:,} steps, {points} per run{ends}; {spec.eval_episodes} deterministic episodes per task"
    )


def on_grid(steps: np.ndarray, returns: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """A run's ``(tasks, evals)`` returns read at each nominal step.

    An evaluation lands on the first env step at or after each multiple of the interval (the
    vectorised env advances several steps at a time), so the value at nominal step ``s`` is the
    first evaluation at or after ``s`` — which also aligns arms whose env counts differ
    (rehearsal adds the source task's envs). A zero-shot run's single evaluation holds at every
    step: an untrained policy evaluated deterministically on the same starts scores the same.
    """
    if len(steps) == 1:
        return np.repeat(returns, len(grid), axis=1)
    idx = np.minimum(np.searchsorted(steps, grid, side="left"), len(steps) - 1)
    return returns[:, idx]


def _load_run(job: Job) -> tuple[np.ndarray, np.ndarray, dict]:
    redo = f"remove {job.run_dir} and rerun with --resume to redo it"
    try:
        with np.load(job.run_dir / "curves.npz") as data:
            steps, returns = data["steps"], data["returns"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"'{job.run_dir / 'curves.npz'}' is missing or damaged ({type(e).__name__}); {redo}") from None
    manifest = read_json(job.run_dir / MANIFEST_FILE, redo)
    lacking = [key for key in ("kind", "hyperparams") if key not in manifest]
    if lacking:  # what every run's manifest records: without it the run cannot be compared
        raise UserError(f"'{job.run_dir / MANIFEST_FILE}' is damaged (it records no {' or '.join(lacking)}); {redo}")
    return steps, returns, manifest


def collect(spec: ExperimentSpec, out: Path) -> Collected:
    """Read every finished run. Zero-shot runs (one evaluation) are broadcast over the step grid:
    an untrained policy evaluated deterministically on the same starts scores the same at every step.
    """
    per_arm: dict[str, dict[int, list[tuple[np.ndarray, np.ndarray, dict]]]] = {}
    missing, failed = [], []
    devices: Counter[str] = Counter()
    sources: dict[str, SourceUse] = {}
    settings: list[tuple[str, dict]] = []  # (arm, hyperparameters) of every finished run
    inexact: dict[str, str] = {}
    run_steps: set[int] = set()
    for job in plan_jobs(spec, out):
        if job.finished:
            run = _load_run(job)
            if job.arm.strategy.train and run[2].get("timesteps") is not None:
                run_steps.add(int(run[2]["timesteps"]))
            per_arm.setdefault(job.arm.name, {}).setdefault(job.seed, []).append(run)
            settings.append((job.arm.name, {**(run[2].get("hyperparams") or {}), **_family_settings(run[2])}))
            devices[device_label(run[2].get("device"))] += 1
            for r in run[2].get("resumed") or []:
                if not r["exact"]:
                    inexact[str(job.run_dir.relative_to(out))] = f"at step {r['at_step']}: {r['why_not']}"
            _note_source(sources, run[2], job.seed)
        elif job.failed_marker.exists():
            failed.append(str(job.run_dir))
        else:
            missing.append(str(job.run_dir))
    if not any(len(s) > 1 for runs in per_arm.values() for seed_runs in runs.values() for s, _, _ in seed_runs):
        raise nothing_finished(out, "finished training runs")
    steps = nominal_grid(spec.timesteps, spec.eval_freq)
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
            # Tasks stacked (per-target mode), each run read on the nominal grid.
            returns = np.concatenate([on_grid(s, r, steps) for s, r, _ in runs[seed]], axis=0)
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
        record = manifest.get("source") or {}
        # Runs from before the record's own "timesteps" carry them in the source manifest only.
        trained = record.get("timesteps", (record.get("manifest") or {}).get("timesteps"))
        source_steps[arm.name] = float(trained or 0) if arm.strategy.uses_source else 0.0
    ordered = dict(sorted(sources.items(), key=lambda item: (item[1].seed is None, item[1].seed or 0, item[1].path)))
    differing = _differing(settings)
    return Collected(
        steps,
        curves,
        seeds,
        forgetting,
        source_steps,
        feature_mmd,
        missing,
        failed,
        devices,
        inexact,
        ordered,
        differing,
        run_steps,
    )


def _family_settings(manifest: dict) -> dict[str, str]:
    """A user family's definition and module code as settings (short digests), so that runs made
    with two versions of them are reported as not comparable."""
    found = {}
    for name, definition in (manifest.get("family_definitions") or {}).items():
        # Where the family was found (``ref`` relative to the working directory, ``found_in``) is no
        # setting: runs resumed from another directory compare, as the grid's fingerprint has it.
        where = ("code_sha256", "ref", "found_in")
        body = json.dumps({k: v for k, v in definition.items() if k not in where}, sort_keys=True)
        found[f"family {name}: definition"] = hashlib.sha256(body.encode()).hexdigest()[:12]
        for module, digest in (definition.get("code_sha256") or {}).items():
            found[f"family {name}: code of {module}"] = digest[:12]
    return found


def _differing(settings: list[tuple[str, dict]]) -> dict[str, dict[str, list[str]]]:
    """The settings whose value differs between runs: key -> value (JSON; "(unset)" where a run's
    manifest lacks the key, as those of an older rltransfer may) -> the arms that ran it."""
    found: dict[str, dict[str, list[str]]] = {}
    for key in sorted({key for _, hp in settings for key in hp}):
        for arm, hp in settings:
            value = json.dumps(hp[key], sort_keys=True) if key in hp else "(unset)"
            arms = found.setdefault(key, {}).setdefault(value, [])
            if arm not in arms:
                arms.append(arm)
    return {key: values for key, values in found.items() if len(values) > 1}


def _note_source(sources: dict[str, SourceUse], manifest: dict, seed: int) -> None:
    """Record the source a finished run fine-tuned (its manifest's lineage), if any."""
    lineage = manifest.get("source")
    if not lineage:
        return
    meta = lineage.get("manifest") or {}
    ev = meta.get("eval") or {}
    mean_return, threshold = ev.get("mean_return"), ev.get("threshold")
    use = sources.setdefault(
        lineage["zip_sha256"],
        SourceUse(
            lineage["path"],
            meta.get("seed"),
            None if mean_return is None else float(mean_return),
            None if threshold is None else float(threshold),
        ),
    )
    use.target_seeds.add(seed)
