"""Command line: a thin layer over the Python API (``rltransfer envs|pretrain|transfer|run|report|...``)."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rltransfer.cli_advice import cmd_advise, cmd_validate_advice
from rltransfer.cli_args import (
    FAMILY_HELP,
    SNAPSHOT_HELP,
    TARGETS_HELP,
    family_arg,
    hyperparams_args,
    kv,
    note_oversubscribed,
    parse_targets,
    snapshot_seconds,
    steps_arg,
    torch_threads,
    variant_arg,
)
from rltransfer.cli_envs import add_parser as add_envs_parser
from rltransfer.cli_evaluate import add_parser as add_evaluate_parser
from rltransfer.cli_messages import one_line, os_error_line
from rltransfer.devices import DEVICE_HELP
from rltransfer.envs import NonFiniteError
from rltransfer.errors import RltransferWarning, SourceFailed, UserError
from rltransfer.training import DivergenceError

if TYPE_CHECKING:
    from rltransfer.experiment.runner import GridResult

EXIT_USAGE = 2


def cmd_pretrain(args: argparse.Namespace) -> int:
    from rltransfer.pretraining import pretrain
    from rltransfer.resolve import resolve_variant

    torch_threads()
    variant = variant_arg(args.family, args.variant, args.param)
    name = "custom" if args.param else resolve_variant(args.family, variant).name  # an id names it too
    out = Path(args.out) if args.out else Path("runs") / "sources" / f"{args.family.name}-{name}-seed{args.seed}"
    result = pretrain(
        args.family,
        variant,
        seed=args.seed,
        timesteps=args.timesteps,
        hyperparams=hyperparams_args(args),
        out=out,
        overwrite=args.overwrite,
        progress=not args.quiet,
        device=args.device,
        resume=args.resume,
        snapshot_every=snapshot_seconds(args.snapshot_every),
    )
    ev = result.manifest["eval"]
    if not args.quiet:
        print(f"source policy: {out / 'model.zip'}")
        print(
            f"evaluation return {ev['mean_return']:.1f} ± {ev['std_return']:.1f} over {ev['episodes']} episodes "
            f"after {result.manifest['timesteps']} steps (threshold {ev['threshold']:g})"
        )
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    from rltransfer.finetuning import finetune
    from rltransfer.strategies import parse_strategy

    torch_threads()
    options = kv(args.option, "--option")
    if args.transfer:
        options["transfer"] = args.transfer
    strategy = parse_strategy(args.strategy, options)
    if strategy.uses_source and not args.source:
        raise UserError(f"strategy '{args.strategy}' needs --source PATH (a checkpoint dir or SB3 .zip)")
    targets = parse_targets(args.family, args.targets)
    default_out = Path("runs") / "transfer" / f"{args.family.name}-{strategy.name}-seed{args.seed}"
    out = Path(args.out) if args.out else default_out
    result = finetune(
        args.family,
        targets,
        args.source if strategy.uses_source else None,
        strategy,
        seed=args.seed,
        timesteps=args.timesteps,
        hyperparams=hyperparams_args(args),
        out=out,
        overwrite=args.overwrite,
        progress=not args.quiet,
        device=args.device,
        resume=args.resume,
        snapshot_every=snapshot_seconds(args.snapshot_every),
    )
    if not args.quiet:
        if result.report is not None:
            print(result.report.summary())
        finals = ", ".join(f"{k} {v:.1f}" for k, v in result.manifest["final_eval"].items())
        print(f"final evaluation: {finals}")
        print(f"multi-task policy: {out / 'model.zip'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from rltransfer.experiment.run import run_experiment, run_experiments

    torch_threads()
    note_oversubscribed(args.workers, args.backend)
    options = {
        "seeds": args.seeds,
        "workers": args.workers,
        "resume": args.resume,
        "backend": args.backend,
        "address": args.address,
        "gpus_per_run": args.gpus_per_run,
        "device": args.device,
        "snapshot_every": "spec" if args.snapshot_every is None else args.snapshot_every,
    }
    if args.dry_run:
        return _print_plan(args, options)
    options["progress"] = not args.quiet
    if len(args.spec) == 1:  # its errors are raised, as one line each (main)
        result, report = run_experiment(args.spec[0], out=args.out, **options)
        code = _print_run(result, report, None, prefix="")
        if report is not None and not args.quiet:
            from rltransfer.cli_summary import print_results

            print_results(result.out)
        if args.generalize and report is not None:
            _generalize(result.out, args.workers, prefix="", quiet=args.quiet)
        return code
    from rltransfer.cli_summary import print_results
    from rltransfer.experiment.overview import overview_dir, write_overview

    code = 0
    runs = run_experiments(*_specs_and_outs(args), **options)
    for run in runs:
        code = max(code, _print_run(run.result, run.report, run.error, prefix=f"{run.spec.name}: "))
        if run.report is not None and not args.quiet:
            print_results(run.out, run.spec, prefix=f"{run.spec.name}: ")
    reported = [(run.spec, run.out) for run in runs if run.report is not None]
    if args.generalize:  # before the overview, which repeats each generalisation table
        for spec, out in reported:
            _generalize(out, args.workers, prefix=f"{spec.name}: ", quiet=args.quiet)
    if reported:
        left_out = [
            f"{run.spec.name}: not included, it has no report ({str(run.error or 'no finished runs').splitlines()[0]})"
            for run in runs
            if run.report is None
        ]
        where = Path(args.out) if args.out else overview_dir([run.out for run in runs])
        print(f"overview: {write_overview(reported, where, left_out)}")
    return code


def _generalize(out: Path, workers: int | None, prefix: str, quiet: bool) -> None:
    """``run --generalize``: the grid's runs on its held-out variants, after its report."""
    from rltransfer.cli_summary import print_generalization
    from rltransfer.experiment.generalization import OUT_DIR, generalize
    from rltransfer.experiment.runner import default_workers

    try:
        result = generalize(out, workers=default_workers() if workers is None else workers)
    except UserError as e:  # the grid and its report are done: say how to play other targets
        raise UserError(
            f"{prefix}{e} (`rltransfer generalize {out} --targets ...`; the grid and report are done)"
        ) from None
    if not quiet:
        print_generalization(result, all_targets_only=True)
    print(f"{prefix}generalisation: {out / OUT_DIR / 'report.md'}  (also in the report)")


def _specs_and_outs(args: argparse.Namespace) -> tuple[list[Any], list[Path | None]]:
    """``run``'s specs and output directories: ``--out`` itself for one spec, ``--out/<name>`` for several."""
    if len(args.spec) == 1:
        return list(args.spec), [Path(args.out) if args.out else None]
    from rltransfer.experiment.spec import load_spec

    specs = [load_spec(path) for path in args.spec]
    return specs, [Path(args.out) / spec.name if args.out else None for spec in specs]


def _print_plan(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """``run --dry-run``: what the same command would train, keep and resume; nothing written."""
    from rltransfer.experiment.plan import plan_experiments

    plans, workers = plan_experiments(*_specs_and_outs(args), **options)
    for plan in plans:
        print("\n".join(plan.lines()))
    total = sum(sum(plan.steps()) for plan in plans)
    where = f"on a Ray cluster ({args.address})" if args.backend == "ray" and args.address else f"{workers} workers"
    busy = [f"{plan.out} is in use by {plan.runner}" for plan in plans if plan.runner is not None]
    then = f"{'; '.join(busy)}: run refuses it until that ends" if busy else "Drop --dry-run to start"
    print(f"dry run: nothing written; {total:,} env steps to train in all, {where}. {then}.")
    return 0


def _print_run(result: GridResult, report: Path | None, error: Exception | None, prefix: str) -> int:
    """One experiment's summary lines; its exit code (2: its grid stopped on bad input, 1: failed runs)."""
    if error is not None:
        said = os_error_line(error, resumes=True) if isinstance(error, OSError) else error
        print(f"rltransfer: error: {prefix}{said}", file=sys.stderr)
        return EXIT_USAGE if isinstance(error, UserError | NonFiniteError) else 1
    done = len(result.finished) + len(result.skipped)
    print(f"{prefix}runs: {done} finished ({len(result.skipped)} kept from before), {len(result.failed)} failed")
    for job, tb in result.failed:
        print(f"  FAILED {job.label}: {tb.strip().splitlines()[-1]}  (traceback: {job.failed_marker})")
    if report is not None:
        tensorboard = f"tensorboard --logdir {result.out}"
        print(f"{prefix}report: {report / 'report.md'}  (also report.html; TensorBoard: {tensorboard})")
    if result.failed:
        again = "the same command with --resume" if prefix else f"with --resume --out {result.out}"
        print(f"{prefix}grid incomplete: rerun {again} to retry the failed runs", file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rltransfer.cli_summary import print_results
    from rltransfer.experiment.overview import overview_dir, write_overview
    from rltransfer.experiment.report import build_report, load_experiment, report_dir

    dirs = [Path(d) for d in args.dir]
    if args.baseline != "scratch" and args.overview:
        raise UserError("--overview compares every experiment with scratch; drop --baseline or --overview")
    experiments = [(load_experiment(d), d) for d in dirs]  # every directory checked before a file is written
    for spec, d in experiments:
        report_dir(d, spec, args.baseline)  # an arm of every experiment, before anything is written
    for spec, d in experiments:
        print(f"report: {build_report(d, spec, args.baseline) / 'report.md'}")
        print_results(d, spec, prefix=f"{spec.name}: " if len(experiments) > 1 else "", baseline=args.baseline)
    if args.baseline != "scratch":
        return 0
    if len(dirs) > 1 or args.overview:
        where = Path(args.overview) if args.overview else overview_dir(dirs)
        print(f"overview: {write_overview(experiments, where)}")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from rltransfer.distill import distill

    torch_threads()
    out = Path(args.out) if args.out else Path("runs") / "distilled" / f"{args.family.name}-seed{args.seed}"
    result = distill(
        args.family,
        args.sources,  # comma-separated, split by distill
        rounds=args.rounds,
        steps_per_round=args.steps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        out=out,
        overwrite=args.overwrite,
        resume=args.resume,
        snapshot_every=snapshot_seconds(args.snapshot_every),
    )
    if not args.quiet:
        kl = [point["kl"] for point in result.manifest["curve"]]
        print(f"KL(teacher || student) by round: {', '.join(f'{v:.4f}' for v in kl)}")
        for task, ret in result.student_returns.items():
            print(f"{task}: teacher {result.teacher_returns[task]:.1f}, student {ret:.1f}")
        print(f"student: {out / 'model.zip'} (use it as a source: its trunk transfers)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rltransfer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    add_envs_parser(sub)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--family", required=True, help=FAMILY_HELP)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument(
            "--timesteps", type=steps_arg, help="env steps to train, e.g. 1e5 (default: the YAML's n_timesteps)"
        )
        p.add_argument(
            "--conf-file",
            metavar="FILE[:KEY]",
            help="hyperparameters from an RL Zoo YAML file (the block of the family's env id, e.g. CartPole-v1; "
            "KEY names one); --hp goes on top",
        )
        p.add_argument("--hp", action="append", metavar="KEY=VALUE", help="override a PPO hyperparameter (repeatable)")
        p.add_argument("--out", help="output directory")
        p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
        p.add_argument("--device", default="cpu", help=f"torch device: {DEVICE_HELP}")
        p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
        p.add_argument(
            "--resume", action="store_true", help="continue a killed run in --out from its last mid-run snapshot"
        )
        p.add_argument("--snapshot-every", metavar="SECONDS", help=SNAPSHOT_HELP)

    p = sub.add_parser("pretrain", help="train a PPO source policy with a named trunk")
    common(p)
    p.add_argument("--variant", help="variant to train on, by name or Gymnasium id (default: source)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE", help="custom variant by parameter values")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("transfer", help="fine-tune one multi-task policy on several targets")
    common(p)
    p.add_argument("--source", help="source checkpoint directory or any SB3 PPO .zip")
    p.add_argument("--targets", required=True, help=TARGETS_HELP)
    p.add_argument(
        "--strategy",
        default="finetune",
        help="scratch, zero-shot, freeze, finetune, partial:N, l2sp, gradual, dann",
    )
    p.add_argument("--transfer", help="what transfers: trunk, heads, all, no-action, or parts joined by '+'")
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="strategy option: trunk_lr_scale=0.1, coef=0.01, unfreeze_at=[0.25,0.5], rehearse=true, "
        "layer_map='{skip: [PATTERN], trunk_from: PREFIX}' (source tensors to leave out; where the trunk is)",
    )
    p.set_defaults(func=cmd_transfer)

    p = sub.add_parser("run", help="run a transfer-vs-scratch experiment grid and write its report")
    p.add_argument(
        "spec",
        nargs="+",
        help="experiment YAML, e.g. experiments/cartpole.yaml; several share one worker pool, each into "
        "--out/<name>, and get one overview (--out/overview.md)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        help="number of seeds, 0..N-1 (overrides the spec; with source: {seeds: paired} each gets its own source)",
    )
    p.add_argument("--workers", type=int, help="parallel worker processes (default: all cores)")
    p.add_argument("--out", help="output directory (default: runs/<experiment name>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep finished runs, redo failed ones, continue unfinished ones from their last mid-run snapshot",
    )
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help='local process pool (default) or a Ray cluster (pip install "rltransfer[ray]")',
    )
    p.add_argument(
        "--address",
        help="Ray cluster to use with --backend ray: auto or HOST:PORT (default: start a local Ray instance)",
    )
    p.add_argument(
        "--gpus-per-run", type=float, default=0.0, help="GPUs each Ray task reserves (default 0; --backend ray)"
    )
    p.add_argument("--device", help=f"torch device of every run (default: the spec's device, else cpu): {DEVICE_HELP}")
    p.add_argument(
        "--snapshot-every", metavar="SECONDS", help=SNAPSHOT_HELP.replace("(default", "(default: the spec's")
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the sources and runs it would train, keep or resume; write nothing",
    )
    p.add_argument(
        "--generalize",
        action="store_true",
        help="then play every run on the held-out variants against scratch (`rltransfer generalize`)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("advise", help="zero-shot return, feature shift and a strategy per target, before training")
    p.add_argument(
        "--source",
        required=True,
        help="source checkpoint directory (from `rltransfer pretrain`) or a plain SB3 PPO zip",
    )
    p.add_argument("--family", required=True, help=FAMILY_HELP)
    p.add_argument("--targets", required=True, help=TARGETS_HELP)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--samples", type=int, default=1000, help="states per task for the feature shift")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--validate", metavar="DIR", help="correlate with the realised gains of a finished experiment")
    p.set_defaults(func=cmd_advise)

    p = sub.add_parser(
        "validate-advice", help="rank correlation of the advice with realised gains of finished experiments"
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="finished `rltransfer run` output directories")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--samples", type=int, default=1000, help="states per task for the feature shift")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="also write every point as JSON")
    p.set_defaults(func=cmd_validate_advice)

    p = sub.add_parser("distill", help="distil several source policies into one multi-task student")
    p.add_argument("--family", required=True, help=FAMILY_HELP)
    p.add_argument(
        "--sources",
        required=True,
        help="comma-separated source checkpoint directories; a plain SB3 PPO zip as PATH@VARIANT (its task)",
    )
    p.add_argument("--rounds", type=int, default=8, help="DAgger rounds (the first follows the teachers)")
    p.add_argument("--steps", type=int, default=2048, help="env steps collected per round")
    p.add_argument("--epochs", type=int, default=4, help="passes over all states collected so far, per round")
    p.add_argument("--batch-size", type=int, default=256, help="states per gradient step")
    p.add_argument("--lr", type=float, default=1e-3, help="the student's Adam learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output directory (default: runs/distilled/<family>-seed<seed>)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished student in --out")
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out from its last snapshot")
    p.add_argument("--snapshot-every", metavar="SECONDS", help=SNAPSHOT_HELP.replace("every update", "every round"))
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_distill)

    add_evaluate_parser(sub)

    p = sub.add_parser("report", help="(re)build the report of experiment directories, and their overview")
    p.add_argument("dir", nargs="+", help="the --out directory of `rltransfer run` (several: also one overview)")
    p.add_argument(
        "--overview",
        metavar="DIR",
        help="where overview.md and overview.csv go (default: the directories' common parent)",
    )
    p.add_argument(
        "--baseline",
        metavar="ARM",
        default="scratch",
        help="compare every arm with this one instead of scratch (is finetune better than freeze?), "
        "into DIR/report-vs-ARM/",
    )
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", RltransferWarning)  # every command's, not once per process (tests, notebooks)
        warnings.showwarning = one_line(warnings.showwarning)
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    try:
        if getattr(args, "family", None):
            # Once, up front: a user family's module:ATTRIBUTE becomes its Family (and its name in paths).
            args.family = family_arg(args)
        return int(args.func(args))
    except (UserError, NonFiniteError) as e:
        print(f"rltransfer: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (DivergenceError, SourceFailed) as e:
        print(f"rltransfer: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`rltransfer envs | head`): nothing is wrong, and there is no one to tell.
        # Python's own advice: point stdout at devnull so that the flush at exit raises nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:
        # Disk full, permissions, vanished paths mid-run: finished runs are untouched (atomic writes).
        print(f"rltransfer: error: {os_error_line(e, hasattr(args, 'resume'))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "rltransfer: interrupted; finished runs are kept, rerun with --resume to continue "
            "(runs in progress continue from their last snapshot)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
