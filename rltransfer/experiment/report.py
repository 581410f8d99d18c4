"""Build an experiment's report from its run directories (also the end of ``rltransfer run``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rltransfer.compare import ALL_TASKS, TaskComparison, area_under_curve, compare_arms, stratified_bootstrap_ci
from rltransfer.envs import Task
from rltransfer.errors import UserError
from rltransfer.experiment.arms import VS_PREFIX
from rltransfer.experiment.collect import Collected, collect, evaluation_line
from rltransfer.experiment.runner import EXPERIMENT_FILE
from rltransfer.experiment.spec import ExperimentSpec, parse_spec
from rltransfer.io import read_json
from rltransfer.report import ExtraTable, write_report
from rltransfer.report.tables import flag_of, fmt_estimate, fmt_number, fmt_steps

BOOTSTRAP_REPS = 2000
BASELINE = "scratch"  # what every report compares with, unless asked for another arm
# Where `rltransfer generalize` writes (rltransfer.experiment.generalization); the report shows its table.
GENERALIZATION_DIR = "generalization"


def load_experiment(out: Path) -> ExperimentSpec:
    record = out / EXPERIMENT_FILE
    if not out.exists():
        raise UserError(f"'{out}' does not exist; pass the --out directory of `rltransfer run`")
    if not record.exists():
        above = list(out.parents)[:3] or list(out.resolve().parents)[:3]  # as given where it has parents
        grid = next((d for d in above if (d / EXPERIMENT_FILE).exists()), None)
        where = f"pass its grid, '{grid}'" if grid is not None else "pass the --out directory of `rltransfer run`"
        raise UserError(f"'{out}' holds no {EXPERIMENT_FILE}; {where}")
    data = read_json(record, "restore it, or rerun the experiment into a new --out")
    spec_path = data.get("spec_path")
    spec = parse_spec(data["spec"], where=str(record), base=Path(spec_path).parent if spec_path else None)
    return spec.with_seeds(tuple(data.get("seeds", spec.seeds)))


def _before_after(values: np.ndarray) -> list[str]:
    """Cells for ``(runs, 2)`` before/after values: both means and the mean change (after - before) [CI]."""
    change = (values[:, 1] - values[:, 0])[:, None]
    low, high = stratified_bootstrap_ci(change, lambda x: float(np.mean(x)), reps=BOOTSTRAP_REPS)
    means = [fmt_number(float(values[:, i].mean())) for i in (0, 1)]
    return [*means, f"{fmt_number(float(change.mean()))} [{fmt_number(low)}, {fmt_number(high)}]"]


def _forgetting_table(data: Collected) -> ExtraTable | None:
    rows = [[arm, str(len(values)), *_before_after(values)] for arm, values in data.forgetting.items()]
    if not rows:
        return None
    note = (
        "The source policy's own heads on the fine-tuned trunk, evaluated on the source task; "
        "a negative change means the shared features moved away from the source task (forgetting)."
    )
    if any(use.seed is None for use in data.sources.values()):
        note += " A plain SB3 zip records no task: its source task is taken as the family's source variant."
    return ExtraTable(
        "Source-task forgetting",
        ["arm", "runs", "source return before", "after fine-tuning", "change [95% CI]"],
        rows,
        note,
    )


def _feature_shift_table(data: Collected) -> ExtraTable | None:
    rows = [
        [arm, task, *_before_after(values)] for arm, tasks in data.feature_mmd.items() for task, values in tasks.items()
    ]
    if not rows:
        return None
    return ExtraTable(
        "Feature shift between source and target states (MMD²)",
        ["arm", "task", "before fine-tuning", "after", "change [95% CI]"],
        rows,
        "RBF MMD² between trunk features of source-task states (stored with the source) and of the "
        "target states of the first rollout; negative change = the trunk aligned the two domains.",
    )


def _sources_table(spec: ExperimentSpec, out: Path, data: Collected) -> ExtraTable | None:
    """Each source checkpoint the transfer arms fine-tuned, and whether the intervals include its variance."""
    if not data.sources:
        return None
    uses = list(data.sources.values())
    solved = {True: "yes", False: "NO", None: "not recorded"}
    rows = [
        [
            "—" if use.seed is None else str(use.seed),
            _relative(use.path, out),  # its SHA-256 is in each run's manifest (the zip holds wall-clock times)
            "not recorded" if use.mean_return is None else fmt_number(use.mean_return),
            solved[use.solved] + ("" if use.threshold is None else f" ({fmt_number(use.threshold)})"),
            ", ".join(str(s) for s in sorted(use.target_seeds)),
        ]
        for use in uses
    ]
    if spec.source.paired:
        note = (
            "One source per target seed, pretrained with that seed (`source: {seeds: paired}`): the "
            "confidence intervals include the variance of pretraining."
        )
    elif len(uses) > 1:
        note = (
            f"{len(uses)} sources, one per source seed: target seed k fine-tunes source seeds[k % "
            f"{len(spec.source.seeds)}], so the confidence intervals include the variance of pretraining."
        )
    elif spec.source.checkpoint is not None:
        note = (
            "Every transfer arm fine-tunes this one checkpoint: the confidence intervals are over target "
            "seeds with the source held fixed, and say nothing of how another pretraining run would transfer."
        )
        if uses[0].seed is None:
            note += " A plain SB3 zip records no evaluation of its own: see its training logs."
        elif uses[0].mean_return is None:  # a fine-tuned run or a distilled student: several tasks of its own
            note += (
                " This checkpoint trained on several tasks (a fine-tuned run or a distilled student): "
                f"`rltransfer evaluate {Path(uses[0].path).parent}` gives its return on each."
            )
    else:
        note = (
            "Every transfer arm fine-tunes this one source: the confidence intervals are over target "
            "seeds with the source held fixed; give `source: {seeds: paired}` (or a count) to include its variance."
        )
    failed = [use for use in uses if use.solved is False]
    if failed:
        note += (
            f" {len(failed)} of {len(uses)} sources did not reach the threshold: the runs that fine-tune "
            "them measure transfer from a failed pretraining (raise source.timesteps to rule that out)."
        )
    headers = ["source seed", "checkpoint", "return on the source task", "solved (threshold)", "target seeds"]
    return ExtraTable("Source policies", headers, rows, note)


def _by_source_table(spec: ExperimentSpec, data: Collected) -> ExtraTable | None:
    """With several sources: each transfer arm's AUC gain over scratch, split by the source its runs fine-tuned."""
    if len(data.sources) < 2 or "scratch" not in data.curves:
        return None
    uses = list(data.sources.values())
    source_of = {seed: i for i, use in enumerate(uses) for seed in use.target_seeds}
    scratch = float(area_under_curve(data.curves["scratch"], data.steps).mean())
    rows = []
    for arm in spec.arms:
        if not arm.strategy.uses_source or arm.name not in data.curves:
            continue
        auc = area_under_curve(data.curves[arm.name], data.steps).mean(axis=1)  # per run, over tasks
        by_source: list[list[float]] = [[] for _ in uses]
        for value, seed in zip(auc, data.seeds[arm.name], strict=True):
            by_source[source_of[seed]].append(float(value))
        rows.append([arm.name, *(fmt_number(float(np.mean(v)) - scratch) if v else "" for v in by_source)])
    labels = {True: "solved", False: "NOT solved", None: "?"}
    headers = ["arm", *(f"source {'?' if u.seed is None else u.seed} ({labels[u.solved]})" for u in uses)]
    return ExtraTable(
        "Transfer by source (AUC gain over scratch, all tasks)",
        headers,
        rows,
        "Mean AUC over the tasks of the runs that fine-tuned each source, minus scratch's mean over all "
        "its runs (return units; no interval: one or few runs per source). A column apart from the "
        "others points at its source rather than at the family.",
    )


def _relative(path: str, out: Path) -> str:
    """``path`` from the experiment's directory where it lies inside it (the report then reads the
    same wherever the grid ran or was moved), else as recorded."""
    try:
        return str(Path(path).relative_to(out))
    except ValueError:
        return path


def _target_note(task: Task) -> str:
    """A target's distance, and for one defined by its values those values (``custom: length=0.9``)."""
    if task.variant.distance != "custom":
        return task.variant.distance
    return "custom: " + ", ".join(f"{k}={v:g}" for k, v in task.variant.params.items())


def _generalization_table(out: Path, data: Collected) -> ExtraTable | None:
    """The table `rltransfer generalize` last wrote, and whether it played the runs finished now."""
    path = out / GENERALIZATION_DIR / "summary.json"
    if not path.exists():
        return None
    summary = read_json(path, f"rerun `rltransfer generalize {out}`")
    if "table" not in summary:  # written before the report showed it
        return None
    finished = sorted(f"{arm}/seed{s}" for arm, seeds in data.seeds.items() for s in seeds)
    played = summary.get("played_runs") or []
    heads = ", ".join(f"{name} by {target['head']}" for name, target in summary["targets"].items())
    note = (
        f"Every finished run's final policy on targets no run trained on ({summary['episodes']} deterministic "
        f"episodes each; heads: {heads}), "
        f"against scratch; a plot and every run's returns are in {out / GENERALIZATION_DIR}."
    )
    if sorted(played) != finished:
        note = (
            f"STALE: played {len(played)} runs, the grid has {len(finished)} finished now; rerun "
            f"`rltransfer generalize {out}`. " + note
        )
    header, rows = summary["table"]["header"], summary["table"]["rows"]
    return ExtraTable("Generalisation to held-out variants (`rltransfer generalize`)", header, rows, note)


def _sweep_tables(spec: ExperimentSpec, comps: list[TaskComparison]) -> list[ExtraTable]:
    """One table per swept arm (``sweep:`` in the spec): its values in order against the gains over
    the baseline, so that how the gain moves with the value reads down one column."""
    baseline = comps[0].baseline if comps else BASELINE
    by = {(c.arm, c.task): c for c in comps}
    tables = []
    for base in dict.fromkeys(a.sweep_of for a in spec.arms if a.sweep_of is not None):
        arms = [a for a in spec.arms if a.sweep_of == base]
        keys = [k for k, _ in arms[0].swept]
        rows = []
        for arm in arms:
            overall = by.get((arm.name, ALL_TASKS))
            flag = flag_of(overall) if overall is not None else ""
            rows.append(
                [
                    *(label for _, label in arm.swept),
                    str(overall.n_runs) if overall else "0",
                    fmt_estimate(overall.auc_difference) if overall else "—",
                    fmt_estimate(overall.asymptotic_gain) if overall else "—",
                    *(fmt_estimate(c.auc_difference) if (c := by.get((arm.name, t))) else "—" for t in spec.task_names),
                    flag,
                ]
            )
        headers = [*keys, "runs", "AUC gain, all tasks", "asymptotic gain, all tasks"]
        headers += [f"AUC gain: {t}" for t in spec.task_names] + ["flag (all tasks)"]
        note = f"Each arm swept from '{base}' against {baseline}, as in the tables above (95% CIs)."
        tables.append(ExtraTable(f"Sweep: {base} over {', '.join(keys)}", headers, rows, note))
    return tables


def _total_steps_table(spec: ExperimentSpec, data: Collected) -> ExtraTable | None:
    if not any(data.source_steps.values()):
        return None
    comps = compare_arms(
        data.curves,
        data.steps,
        spec.task_names,
        spec.thresholds,
        reps=BOOTSTRAP_REPS,
        source_steps=data.source_steps,
        accounting="total",
    )
    rows = [
        [
            c.arm,
            c.task,
            f"{int(c.source_steps or 0):,}",
            fmt_steps(c.time_to_threshold_median),
            f"{c.reached_fraction:.0%}",
        ]
        for c in comps
        if c.task != ALL_TASKS
    ]
    return ExtraTable(
        "Time to threshold counting source samples (total steps)",
        ["arm", "task", "source steps", "median total steps to threshold", "reached"],
        rows,
        "Total steps = target steps + the source policy's pretraining steps (charged to every transfer arm).",
    )


def _dropped_arms(spec: ExperimentSpec, out: Path) -> str:
    """The arms the grid ran that its spec has since dropped, with their finished runs kept on disk
    (``experiment.json`` records every arm): ``l2sp (3 finished runs in l2sp/)``, or ``""``."""
    record = out / EXPERIMENT_FILE
    recorded = (read_json(record, "restore it").get("arms") or {}) if record.exists() else {}
    current = {arm.dirname for arm in spec.arms}
    dropped = []
    for dirname, arm in sorted(recorded.items()):
        if dirname in current:
            continue
        runs = len([*(out / dirname).glob("seed*/manifest.json"), *(out / dirname).glob("seed*/*/manifest.json")])
        if runs:
            dropped.append(f"{arm['name']} ({runs} finished run{'s' * (runs != 1)} in {dirname}/)")
    return ", ".join(dropped)


def _other_seeds(spec: ExperimentSpec, out: Path) -> str:
    """Finished runs of the spec's arms under seeds it no longer asks for (``--seeds`` lowered on a
    resume): ``seed 2 (5 runs); ...`` and how to report them, or ``""``."""
    found: dict[int, int] = {}
    for arm in spec.arms:
        for manifest in [
            *(out / arm.dirname).glob("seed*/manifest.json"),
            *(out / arm.dirname).glob("seed*/*/manifest.json"),
        ]:
            name = manifest.relative_to(out / arm.dirname).parts[0].removeprefix("seed")
            if name.isdigit() and int(name) not in spec.seeds:
                found[int(name)] = found.get(int(name), 0) + 1
    if not found:
        return ""
    listed = "; ".join(f"seed {k} ({n} run{'s' * (n != 1)})" for k, n in sorted(found.items()))
    return f"{listed}; `rltransfer run SPEC --resume` with seeds that include them reports them (kept, not retrained)"


def _budget(timesteps: int, trained: set[int]) -> int | str:
    """``30000``, or ``30000 (runs trained 30,720: ...)`` where whole rollouts went past it."""
    if not trained or trained == {timesteps}:
        return timesteps
    lo, hi = min(trained), max(trained)
    took = f"{lo:,}" if lo == hi else f"{lo:,} to {hi:,}"
    return f"{timesteps} (runs trained {took}: PPO collects whole rollouts)"


def report_dir(out: Path, spec: ExperimentSpec, baseline: str = BASELINE) -> Path:
    """Where the report against ``baseline`` goes: ``<out>/report``, or ``<out>/report-vs-<arm>``
    for another arm of the spec."""
    if baseline == BASELINE:
        return out / "report"
    arm = next((a for a in spec.arms if a.name == baseline), None)
    if arm is None:
        raise UserError(
            f"'{baseline}' is not an arm of experiment '{spec.name}'; compare with one of: "
            f"{', '.join(a.name for a in spec.arms)}"
        )
    return out / f"{VS_PREFIX}{arm.dirname}"


def build_report(out: str | Path, spec: ExperimentSpec | None = None, baseline: str = BASELINE) -> Path:
    """Write ``<out>/report/`` (markdown, HTML, plots, CSV, NPZ, JSON); returns the report directory.

    ``baseline``: another arm every arm is compared with instead of scratch (is fine-tuning better
    than freezing?), written to ``<out>/report-vs-<arm>/`` beside the report against scratch;
    the tables that concern scratch or the sources (sources, forgetting, total steps...) stay there.
    """
    out = Path(out)
    spec = spec or load_experiment(out)
    where = report_dir(out, spec, baseline)
    data = collect(spec, out)
    if baseline != BASELINE:
        return _report_vs(out, spec, data, baseline)
    comps = _comparisons(out, spec, data, BASELINE)
    tables = (
        _sources_table(spec, out, data),
        _by_source_table(spec, data),
        _forgetting_table(data),
        _feature_shift_table(data),
        _total_steps_table(spec, data),
        _generalization_table(out, data),
    )
    extras = [*_sweep_tables(spec, comps), *(t for t in tables if t is not None)]
    write_report(
        where,
        f"Transfer vs scratch: {spec.name}",
        comps,
        data.curves,
        data.steps,
        spec.task_names,
        spec.thresholds,
        _meta(out, spec, data),
        extra_tables=extras,
    )
    for arm in spec.arms:  # reports asked for against other arms: kept up to date with this one
        if arm.name != BASELINE and arm.name in data.curves and (out / f"{VS_PREFIX}{arm.dirname}").is_dir():
            _report_vs(out, spec, data, arm.name)
    return where


def _report_vs(out: Path, spec: ExperimentSpec, data: Collected, baseline: str) -> Path:
    """``<out>/report-vs-<arm>``: every arm against ``baseline``, the comparison tables alone."""
    comps = _comparisons(out, spec, data, baseline)
    meta = _meta(out, spec, data)
    meta["baseline"] = (
        f"{baseline}: every interval, P(improvement) and flag compares an arm with it; the comparison with "
        f"scratch, the sources, forgetting and total steps are in {out / 'report'}"
    )
    where = report_dir(out, spec, baseline)
    write_report(where, f"Arms vs {baseline}: {spec.name}", comps, data.curves, data.steps,
                 spec.task_names, spec.thresholds, meta, extra_tables=_sweep_tables(spec, comps))  # fmt: skip
    return where


def _comparisons(out: Path, spec: ExperimentSpec, data: Collected, baseline: str) -> list[TaskComparison]:
    """Every arm against ``baseline``, per task and over all of them."""
    if baseline not in data.curves:
        what = "the comparison needs the baseline" if baseline == BASELINE else "nothing to compare with"
        raise UserError(f"no finished {baseline} runs under '{out}'; {what}")
    return compare_arms(
        data.curves,
        data.steps,
        spec.task_names,
        spec.thresholds,
        baseline=baseline,
        reps=BOOTSTRAP_REPS,
        source_steps=data.source_steps,
        accounting="target",
    )


def _meta(out: Path, spec: ExperimentSpec, data: Collected) -> dict[str, Any]:
    """The report's header: what ran, how, and what is left out or differs."""
    meta = {
        "experiment": spec.name,
        "family": spec.family.name,
        **({"family loaded from": spec.family.ref} if spec.family.ref else {}),
        "mode": spec.mode,
        "targets": ", ".join(f"{n} ({_target_note(t)})" for n, t in zip(spec.task_names, spec.targets, strict=True)),
        "arms": ", ".join(f"{a} ({len(s)} seed{'s' if len(s) != 1 else ''})" for a, s in data.seeds.items()),
        "target budget (env steps)": _budget(spec.timesteps, data.trained_steps),
        "evaluation": evaluation_line(spec),
        "source pretraining steps": int(max(data.source_steps.values(), default=0)),
        "spec": str(spec.path or out / EXPERIMENT_FILE),
        # One device is the rule; a grid resumed elsewhere says so (numbers then differ by rounding).
        "trained on": ", ".join(f"{d} ({n} run{'s' * (n != 1)})" for d, n in sorted(data.devices.items())),
    }
    if data.differing:
        meta["NOT COMPARABLE: settings differ between runs"] = "; ".join(
            f"{key} " + ", ".join(f"{value} ({'/'.join(arms)})" for value, arms in values.items())
            for key, values in data.differing.items()
        )
    if data.inexact_resumes:
        meta["resumed with new episodes (not bit-identical to an uninterrupted run)"] = "; ".join(
            f"{run} {why}" for run, why in data.inexact_resumes.items()
        )
    dropped = _dropped_arms(spec, out)
    if dropped:
        meta["not reported: arms no longer in the spec"] = dropped
    other_seeds = _other_seeds(spec, out)
    if other_seeds:
        meta["not reported: finished runs of other seeds"] = other_seeds
    if data.failed:
        meta["FAILED runs (excluded)"] = ", ".join(data.failed)
    if data.missing:
        meta["unfinished runs (excluded)"] = ", ".join(data.missing)
    return meta
