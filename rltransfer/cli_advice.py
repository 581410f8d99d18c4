"""The advice commands: ``rltransfer advise`` (before training) and ``validate-advice`` (against runs)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rltransfer.cli_args import parse_targets, torch_threads


def cmd_advise(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from rltransfer.advice_validation import validate
    from rltransfer.advise import advise, to_json
    from rltransfer.checkpoint import load_checkpoint

    torch_threads()
    targets = parse_targets(args.family, args.targets)
    source = load_checkpoint(args.source)
    advice = advise(source, args.family, targets, episodes=args.episodes, samples=args.samples, seed=args.seed)
    if args.json:
        print(json.dumps(to_json(advice), indent=2))
    else:
        title = escape(f"transfer advice: {args.source} -> {args.family.name}")  # paths are text, not markup
        if source.manifest is None:
            title += escape(f" (a plain SB3 zip: taken to have trained on {args.family.name}'s source variant)")
        table = Table(title=title, title_justify="left")
        for col in ("target", "distance", "zero-shot (random)", "score", "feature MMD²", "predicted", "advice", "why"):
            table.add_column(col)
        for a in advice:
            table.add_row(
                escape(a.target),
                a.distance,
                f"{a.zero_shot_return:.1f} ({a.random_return:.1f})",
                f"{a.zero_shot_score:.2f}",
                f"{a.feature_mmd:.4f}",
                f"{a.predicted_gain:.2f}",
                a.recommendation,
                a.reason,
            )
        if advice:
            a = advice[0]
            table.caption = escape(
                f"the source on its own task: {a.source_return:.1f} (random {a.source_random_return:.1f}), "
                f"score {a.source_score:.2f}"
                + ("" if a.source_learnt else ": no better than random, nothing learnt to transfer")
            )
        Console(width=max(Console().width, 140)).print(table)
    if args.validate:
        rho, pairs = validate(advice, args.validate)
        print(f"Spearman(predicted gain, realised AUC gain of the best arm) = {rho:.2f} over {len(pairs)} targets")
    return 0


def cmd_validate_advice(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from rltransfer.advice_validation import validate_experiments
    from rltransfer.io import atomic_write_json

    torch_threads()
    result = validate_experiments(args.dirs, episodes=args.episodes, samples=args.samples, seed=args.seed)
    table = Table(title="advice vs realised transfer gain", title_justify="left")
    for col in (
        "experiment",
        "target",
        "zero-shot score",
        "feature MMD²",
        "predicted",
        "realised (best arm)",
        "advice",
    ):
        table.add_column(col)
    for p in result.points:
        table.add_row(
            escape(p.experiment),
            escape(p.target),
            f"{p.advice.zero_shot_score:.2f}",
            f"{p.advice.feature_mmd:.4f}",
            f"{p.predicted_gain:.2f}",
            f"{p.realised_gain:+.3f} ({p.best_arm})",
            p.recommendation,
        )
    Console(width=max(Console().width, 140)).print(table)
    families = ", ".join(
        f"{f} {r:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if (ci := result.per_family_ci.get(f)) else "")
        for f, r in result.per_family.items()
    )
    ci = result.spearman_ci
    interval = "" if ci is None else f" (95% CI over seeds [{ci[0]:.2f}, {ci[1]:.2f}])"
    n = len(result.points)
    print(f"Spearman(predicted, realised) = {result.spearman:.2f}{interval} over {n} targets ({families})")
    if args.json:
        atomic_write_json(Path(args.json), result.to_json())
    return 0
