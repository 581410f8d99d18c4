"""The commands that play finished policies: ``rltransfer evaluate`` (one run, on its tasks or
other targets) and ``rltransfer generalize`` (every run of an experiment on held-out targets)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from rltransfer.agent import load_agent
    from rltransfer.cli_args import parse_targets, torch_threads
    from rltransfer.tasks import observations

    torch_threads()
    agent = load_agent(args.run, family=args.family)
    targets = None if args.targets is None else parse_targets(agent.family, args.targets)
    seed = agent.eval_seed if args.seed is None else args.seed
    episodes = agent.eval_episodes if args.episodes is None else args.episodes
    results = agent.evaluate(targets, episodes, args.head, deterministic=not args.stochastic, seed=seed)
    played = [agent.resolve_target(t, args.head) for t in targets or agent.task_names]
    if args.json:  # per target: what the table shows, and how it was played
        rows = {
            name: {
                "mean": mean,
                "std": std,
                "threshold": task.family.threshold,
                "reached": mean >= task.family.threshold,
                "head": agent.task_names[k],
                "episodes": episodes,
                "seeds": [seed, seed + episodes - 1],
                "deterministic": not args.stochastic,
            }
            for (name, (mean, std)), (_, task, k) in zip(results.items(), played, strict=True)
        }
        print(json.dumps(rows, indent=2))
        return 0
    policy = "stochastic" if args.stochastic else "deterministic"
    console = Console(width=max(Console().width, 120))
    seeds = f"seeds {seed}..{seed + episodes - 1}"
    console.print(escape(f"{agent.kind} run {agent.path}: {episodes} {policy} episodes per target, {seeds}"))
    table = Table()
    for col in ("target", "mean return", "std", "threshold", "reached"):
        table.add_column(col)
    for (name, (mean, std)), (_, task, _) in zip(results.items(), played, strict=True):
        threshold = task.family.threshold
        table.add_row(escape(name), f"{mean:.1f}", f"{std:.1f}", f"{threshold:g}", "yes" if mean >= threshold else "no")
    console.print(table)
    own = agent.tasks.tasks if agent.tasks is not None else ()
    for name, (_, task, k) in zip(results, played, strict=True):
        # Allowed (a head's robustness to a shift is a question), but unlike generalize it is not the default.
        if k < len(own) and own[k].variant.shift != task.variant.shift:
            seen, given = observations(own[k]), observations(task)
            console.print(escape(f"note: {name}: the head learnt from {seen}, the target gives {given}"))
    return 0


def cmd_generalize(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from rltransfer.cli_args import note_oversubscribed, parse_targets, torch_threads
    from rltransfer.cli_summary import print_generalization
    from rltransfer.experiment.generalization import OUT_DIR, generalize
    from rltransfer.experiment.report import load_experiment
    from rltransfer.experiment.runner import default_workers

    torch_threads()
    note_oversubscribed(args.workers)
    targets = None
    if args.targets is not None:
        targets = parse_targets(load_experiment(Path(args.dir)).family, args.targets)
    result = generalize(
        args.dir,
        targets,
        args.head,
        args.episodes,
        workers=default_workers() if args.workers is None else args.workers,
    )
    console = Console(width=max(Console().width, 140))
    heads = ", ".join(f"{name} by {t['head']}" for name, t in result.targets.items())
    console.print(escape(f"{result.episodes} deterministic episodes per run and target; played {heads}"))
    print_generalization(result)
    if result.left_out:
        console.print(escape(f"not played (unfinished or failed runs): {', '.join(result.left_out)}"))
    console.print(
        escape(f"written: {Path(args.dir) / OUT_DIR}/{{report.md,generalization.png,scores.csv,summary.json}}")
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    from rltransfer.cli_args import TARGETS_HELP

    p = sub.add_parser("evaluate", help="play a finished run's policy on its tasks or other targets")
    p.add_argument(
        "run", help="a run directory: a source checkpoint, runs/<experiment>/<arm>/seed<k>, a distilled student"
    )
    p.add_argument(
        "--targets",
        help=f"default: every task of the run; {TARGETS_HELP} (another: the nearest task's head)",
    )
    p.add_argument("--head", help="the run's task whose head (and task id) plays the targets")
    p.add_argument("--episodes", type=int, help="episodes per target (default: the run's eval_episodes)")
    p.add_argument("--seed", type=int, help="episode i starts from seed+i (default: the run's own evaluation seed)")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the most likely")
    p.add_argument("--family", help="your own family, where the run's manifest cannot name it again")
    p.add_argument("--json", action="store_true", help="print the returns as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("generalize", help="play every run of an experiment on held-out targets, against scratch")
    p.add_argument("dir", help="the --out directory of `rltransfer run`")
    p.add_argument("--targets", help=f"default: the held-out variants of every family trained on; {TARGETS_HELP}")
    p.add_argument("--head", help="the trained target whose head plays every target (default: the nearest one)")
    p.add_argument("--episodes", type=int, help="episodes per run and target (default: the experiment's)")
    p.add_argument("--workers", type=int, help="worker processes (default: all cores)")
    p.set_defaults(func=cmd_generalize)
