"""Generalisation: an experiment's final policies on targets none of its runs trained on.

Every family reserves a held-out parameter band that no target may use (``heldout0..2``).
``generalize`` plays every finished run of every arm on those variants (or on targets given),
each through the head of its nearest trained task with the same observations, and compares the
arms with scratch as the report does: the mean return per target with bootstrap intervals over
seeds, the difference to scratch, P(improvement) and the transfer flags. Each run plays its own evaluation episodes
(seed ``k + 10000`` for seed ``k``), so arms meet the same starts seed by seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from rltransfer.agent import Agent, load_agent
from rltransfer.compare import (
    mean_difference,
    probability_of_improvement,
    probability_of_improvement_ci,
    stratified_bootstrap_ci,
    stratified_independent_bootstrap_ci,
)
from rltransfer.compare.summary import json_float
from rltransfer.envs import Family, ObsShift, Task
from rltransfer.errors import UserError
from rltransfer.experiment.main_guard import check_main_guard
from rltransfer.experiment.pool import busy_call, worker_pool
from rltransfer.experiment.report import GENERALIZATION_DIR, build_report, load_experiment
from rltransfer.experiment.runner import Job, nothing_finished, plan_jobs
from rltransfer.experiment.spec import ExperimentSpec
from rltransfer.io import read_json, versions
from rltransfer.report.files import write_csv, write_json, write_text
from rltransfer.report.forest import Interval, plot_forest
from rltransfer.report.tables import fmt_number
from rltransfer.resolve import recorded_variant
from rltransfer.tasks import Target, nearest_task, observations, resolve_targets, task_distance, task_key

BASELINE = "scratch"
ALL_TARGETS = "all targets"
OUT_DIR = GENERALIZATION_DIR
PLOT = "generalization.png"


@dataclass(frozen=True)
class Played:
    """One run's policy on one target: the mean and std of its episode returns."""

    arm: str
    seed: int
    target: str
    head: str
    mean: float
    std: float
    run: str


@dataclass(frozen=True)
class ArmOnTarget:
    """One arm on one target (or on all of them), over its seeds; ``None`` where there is no baseline."""

    arm: str
    target: str
    runs: int
    mean: tuple[float, float, float]  # value, low, high
    solved: float  # fraction of runs whose mean return reached the threshold
    difference: tuple[float, float, float] | None
    prob_improvement: tuple[float, float, float] | None

    @property
    def flag(self) -> str:
        if self.difference is None:
            return ""
        return "NEGATIVE TRANSFER" if self.difference[2] < 0 else "positive" if self.difference[1] > 0 else ""


@dataclass
class Generalization:
    out: Path
    targets: dict[str, dict[str, Any]]  # name -> family, params, head
    played: list[Played]
    rows: list[ArmOnTarget]
    episodes: int
    left_out: list[str]  # arm/seed<k> of the grid not played: unfinished or failed runs


def generalize(
    out: str | Path,
    targets: Sequence[Target] | str | None = None,
    head: str | None = None,
    episodes: int | None = None,
    reps: int = 2000,
    workers: int = 1,
) -> Generalization:
    """Play every finished run of the experiment in ``out`` on ``targets`` (default: the held-out
    variants of every family it trained on, through each observation shift its targets trained
    under) and write ``<out>/generalization/`` (``report.md`` with a forest plot of the differences
    to scratch, ``scores.csv``, ``summary.json``); the experiment's report, when built, is rebuilt
    to show the table. ``head``: the trained task whose head plays every target (default: for each
    target, the nearest trained task in range-normalised parameters among those trained on the same
    observations). ``workers`` > 1 plays the seeds in that many worker processes, with the same
    results."""
    out = Path(out)
    spec = load_experiment(out)
    episodes = spec.eval_episodes if episodes is None else episodes
    if episodes < 1:
        raise UserError(f"episodes must be at least 1, got {episodes}")
    if workers < 1:
        raise UserError(f"workers must be a positive integer, got {workers}")
    chosen = _targets(spec, targets, head)
    heads = {name: _head(spec, name, task, head) for name, task in chosen.items()}
    plan = _Plan(out, spec.family, spec.mode, tuple(spec.task_names), chosen, heads, episodes)
    complete, left_out = _complete_runs(spec, out)
    groups = [(arm, seed, [j.run_dir for j in jobs]) for (arm, seed), jobs in complete.items()]
    if workers > 1 and len(groups) > 1:
        check_main_guard()  # workers import the main script again
        with worker_pool(min(workers, len(groups))) as pool:
            play = partial(busy_call, _play_in_worker)
            done = list(pool.map(play, [plan] * len(groups), *zip(*groups, strict=True)))
    else:
        done = [_play(plan, *group) for group in groups]
    played = [p for group in done for p in group]
    rows = _compare(spec, chosen, played, reps)
    source = _source_task(spec, out, played)
    result = Generalization(
        out,
        {
            name: {
                "family": t.family.name,
                "params": t.family.resolve(t.variant.params),
                **({"shift": t.variant.shift.to_dict()} if t.variant.shift is not None else {}),
                "head": spec.task_names[heads[name]],
                # How far the target lies from what the runs trained on: the head's task, and the
                # source task (where every transferred policy started; scratch never trained there).
                "distance_to_head": task_distance(t.family, spec.targets[heads[name]], t),
                "distance_to_source": None
                if source is None or source.family.name != t.family.name
                else task_distance(t.family, source, t),
            }
            for name, t in chosen.items()
        },
        played,
        rows,
        episodes,
        left_out,
    )
    _write(result, spec)
    if (out / "report" / "summary.json").exists():  # the report shows this table: refresh it
        build_report(out, spec)
    return result


@dataclass(frozen=True)
class _Plan:
    """What every worker needs to play its runs (sent to worker processes)."""

    out: Path
    family: Family
    mode: str
    task_names: tuple[str, ...]
    targets: dict[str, Task]
    heads: dict[str, int]
    episodes: int


def _play(plan: _Plan, arm: str, seed: int, run_dirs: list[Path]) -> list[Played]:
    """One seed of one arm on every target: a multi-task run plays them all through the heads
    chosen; in per-target mode each target is played by the run of its head's task."""
    agents: dict[Path, Agent] = {}
    played = []
    for name, task in plan.targets.items():
        k = plan.heads[name]
        run = run_dirs[0] if plan.mode == "multitask" else run_dirs[k]
        if run not in agents:
            agents[run] = load_agent(run, family=plan.family)
        head = plan.task_names[k] if plan.mode == "multitask" else None
        ((_, (mean, std)),) = agents[run].evaluate([task], plan.episodes, head=head).items()
        played.append(Played(arm, seed, name, plan.task_names[k], mean, std, str(run.relative_to(plan.out))))
    return played


def _play_in_worker(plan: _Plan, arm: str, seed: int, run_dirs: list[Path]) -> list[Played]:
    th.set_num_threads(1)  # as grid workers: small networks gain nothing from more, side by side they contend
    return _play(plan, arm, seed, run_dirs)


def _targets(spec: ExperimentSpec, targets: Sequence[Target] | str | None, head: str | None) -> dict[str, Task]:
    """The targets to play, by the names results give them; by default the held-out variants of
    every family the experiment trained on (``acrobot/heldout0`` where there are several)."""
    tasks = resolve_targets(spec.family, _held_out(spec, head) if targets is None else targets)
    trained = {task_key(t) for t in spec.targets}
    for name, t in zip(tasks.names, tasks.tasks, strict=True):
        if task_key(t) in trained:
            raise UserError(f"'{name}' is a target the runs trained on; generalisation plays other targets")
    return dict(zip(tasks.names, tasks.tasks, strict=True))


def _held_out(spec: ExperimentSpec, head: str | None) -> list[Task]:
    """Each trained family's held-out variants, seen through every observation shift its targets
    trained under (``heldout0-scaled`` for a ``scaled`` target; unshifted where a target is), or
    through ``head``'s alone: a head plays only the observations it learnt from."""
    trained = list(spec.targets)
    if head in spec.task_names:
        trained = [spec.targets[spec.task_names.index(head)]]
    families = {t.family.name: t.family for t in trained}.values()
    if not any(f.held_out_variants() for f in families):
        raise UserError(
            f"{' and '.join(f'family {f.name!r}' for f in families)} declare{'s' * (len(families) == 1)} no "
            "held-out band; pass --targets (e.g. a variant or {param: value}) to play instead"
        )
    held_out = []
    for family in families:
        shifts: dict[ObsShift | None, str] = {}  # each shift, named after the first target trained under it
        for t in trained:
            if t.family.name == family.name:
                shifts.setdefault(t.variant.shift, t.variant.name)
        for v in family.held_out_variants():
            for shift, name in shifts.items():
                shifted = replace(v, name=f"{v.name}-{name}", doc=f"{v.doc}; observations as {name}'s", shift=shift)
                held_out.append(Task(family, v if shift is None else shifted))
    return held_out


def _head(spec: ExperimentSpec, name: str, task: Task, head: str | None) -> int:
    """Index of the trained task that plays ``task``: ``head``, or the nearest one of its family
    trained on the same observations (shift)."""
    names = spec.task_names
    if head is not None:
        if head not in names:
            raise UserError(f"head '{head}' is not a target of the experiment; choose one of: {', '.join(names)}")
        k = names.index(head)
        if spec.targets[k].family.name != task.family.name:
            raise UserError(f"head '{head}' plays {spec.targets[k].family.name} tasks, not {task.family.name}")
        if spec.targets[k].variant.shift != task.variant.shift:
            raise UserError(
                f"head '{head}' learnt from {observations(spec.targets[k])} and '{name}' gives "
                f"{observations(task)}; name a head trained on the same observations"
            )
        return k
    return nearest_task(spec.targets, names, name, task, "target of the experiment")


def _source_task(spec: ExperimentSpec, out: Path, played: list[Played]) -> Task | None:
    """The task the experiment's source trained on: the variant it pretrains, or the one a source
    checkpoint's manifest records (as a transfer run copied it); ``None`` where no single source
    task is known (no transfer run played, a plain zip, a fine-tuned run or a student as source)."""
    if spec.source.checkpoint is None:
        return Task(spec.family, spec.source.variant)
    for run in dict.fromkeys(p.run for p in played):  # each run once, not once per target it played
        manifest = read_json(out / run / "manifest.json", "restore it, or delete the run and resume its grid")
        source = manifest.get("source") or {}
        recorded = (source.get("manifest") or {}).get("variant")
        if recorded and source["manifest"].get("family") == spec.family.name:
            return Task(spec.family, recorded_variant(spec.family, recorded["name"], recorded["params"]))
    return None


def _complete_runs(spec: ExperimentSpec, out: Path) -> tuple[dict[tuple[str, int], list[Job]], list[str]]:
    """Finished runs by (arm, seed), in spec order (in per-target mode only seeds with every
    target's run), and the ``arm/seed<k>`` left out."""
    grouped: dict[tuple[str, int], list[Job]] = {}
    for job in plan_jobs(spec, out):
        grouped.setdefault((job.arm.name, job.seed), []).append(job)
    complete = {key: jobs for key, jobs in grouped.items() if all(j.finished for j in jobs)}
    if not complete:
        raise nothing_finished(out, "finished runs")
    return complete, [f"{arm}/seed{seed}" for arm, seed in grouped if (arm, seed) not in complete]


def _compare(spec: ExperimentSpec, targets: dict[str, Task], played: list[Played], reps: int) -> list[ArmOnTarget]:
    """Per arm: a ``(seeds, targets)`` matrix of mean returns, each column compared with scratch."""
    names = list(targets)
    matrices: dict[str, np.ndarray] = {}
    for name in (a.name for a in spec.arms):
        cell = {(p.seed, p.target): p.mean for p in played if p.arm == name}
        seeds = sorted({seed for seed, _ in cell})
        if seeds:
            matrices[name] = np.asarray([[cell[s, t] for t in names] for s in seeds])
    thresholds = np.asarray([targets[t].family.threshold for t in names])
    base = matrices.get(BASELINE)
    rows = []
    for arm, scores in matrices.items():
        columns = [(t, slice(i, i + 1)) for i, t in enumerate(names)] + [(ALL_TARGETS, slice(None))]
        for target, col in columns:
            x = scores[:, col]
            low, high = stratified_bootstrap_ci(x, lambda m: float(np.mean(m)), reps=reps)
            diff = pi = None
            if base is not None and arm != BASELINE:
                y = base[:, col]
                d_low, d_high = stratified_independent_bootstrap_ci(x, y, mean_difference, reps=reps)
                diff = (mean_difference(x, y), d_low, d_high)
                pi = (probability_of_improvement(x, y), *probability_of_improvement_ci(x, y, reps=reps))
            solved = float(np.mean(x >= thresholds[col]))
            rows.append(ArmOnTarget(arm, target, len(scores), (float(np.mean(x)), low, high), solved, diff, pi))
    return rows


def _cell(estimate: tuple[float, float, float] | None) -> str:
    if estimate is None:
        return "—"
    value, low, high = estimate
    return f"{fmt_number(value)} [{fmt_number(low)}, {fmt_number(high)}]"


def table(result: Generalization) -> tuple[list[str], list[list[str]]]:
    """The comparison as header and rows of text (report and command line)."""
    header = ["target", "arm", "runs", "mean return [95% CI]", "vs scratch [95% CI]", "P(improvement) [95% CI]",
              "solved", "flags"]  # fmt: skip
    order = [*result.targets, ALL_TARGETS]
    rows = [
        [
            r.target,
            r.arm,
            str(r.runs),
            _cell(r.mean),
            _cell(r.difference),
            _cell(r.prob_improvement),
            f"{r.solved:.0%}",
            r.flag,
        ]
        for r in sorted(result.rows, key=lambda r: order.index(r.target))
    ]
    return header, rows


def _json_row(row: ArmOnTarget) -> dict[str, Any]:
    """``row`` as strict JSON holds it: a bound without an interval (one run) is ``null``."""
    fields = {k: [json_float(x) for x in v] if isinstance(v, tuple) else v for k, v in asdict(row).items()}
    return fields | {"flag": row.flag}


def _fmt_distance(distance: float | None) -> str:
    return "—" if distance is None else f"{distance:.3f}"


def _write(result: Generalization, spec: ExperimentSpec) -> None:
    where = result.out / OUT_DIR
    where.mkdir(parents=True, exist_ok=True)
    header, rows = table(result)
    lines = [
        f"# Generalisation to held-out targets: {spec.name}",
        "",
        f"Every finished run's final policy, {result.episodes} deterministic episodes per target (run seed k "
        "plays seeds k+10000...), each target played by the head of the trained task named below. No run "
        "trained on these targets. Intervals are stratified bootstrap percentile intervals over seeds; "
        "NEGATIVE TRANSFER marks an arm whose difference to scratch lies entirely below 0.",
        "",
        *([f"Not played (unfinished or failed runs): {', '.join(result.left_out)}.", ""] if result.left_out else []),
        "| target | family | parameters | head | distance to the head's task | to the source task |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {name} | {t['family']} | {', '.join(f'{k}={v:g}' for k, v in t['params'].items())} | {t['head']} "
            f"| {_fmt_distance(t['distance_to_head'])} | {_fmt_distance(t['distance_to_source'])} |"
            for name, t in result.targets.items()
        ),
        "",
        "Distances are Euclidean over the family's parameters, each scaled by its valid range. A target "
        "nearer the source task than the head's task tests how much of the source's competence an arm "
        "keeps, more than extrapolation beyond the targets.",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]
    panels = {  # the forest plot's flags: "positive", "NEGATIVE" or ""
        target: [
            Interval(r.arm, *r.difference, flag=r.flag.removesuffix(" TRANSFER"))
            for r in result.rows
            if r.target == target and r.difference is not None
        ]
        for target in [*result.targets, ALL_TARGETS]
    }
    if any(panels.values()):
        plot_forest(panels, where / PLOT, xlabel="return over scratch on the held-out target [95% CI]")
        lines += [f"![Return over scratch per held-out target and arm]({PLOT})", ""]
    write_text(where / "report.md", "\n".join(lines))
    write_csv(
        where / "scores.csv",
        ["arm", "seed", "target", "head", "mean_return", "std_return", "run"],
        [[p.arm, p.seed, p.target, p.head, p.mean, p.std, p.run] for p in result.played],
    )
    write_json(
        where / "summary.json",
        {
            "experiment": spec.name,
            "episodes": result.episodes,
            "left_out": result.left_out,
            "played_runs": sorted({f"{p.arm}/seed{p.seed}" for p in result.played}),
            "table": {"header": header, "rows": rows},  # as the experiment's report shows it
            "targets": result.targets,
            "rows": [_json_row(r) for r in result.rows],
            "versions": versions(),
        },
    )
