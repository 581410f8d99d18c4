"""Command-line text into the API's values: ``--hp``/``--param`` pairs, ``--conf-file``, ``--targets``,
``--snapshot-every``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from rltransfer.errors import UserError
from rltransfer.hyperparam_bounds import whole_number

TARGETS_HELP = (
    "comma-separated variants (long, acrobot/source, rltransfer/CartPole-long-v0) or custom ones: {length: 0.9}"
)
FAMILY_HELP = "a shipped family (see `rltransfer envs`), or your own as module:ATTRIBUTE or a YAML file"
SNAPSHOT_HELP = (
    "seconds (or 5m, 1h) between mid-run snapshots a killed run resumes from (default 300; 0: every update; off)"
)


def torch_threads() -> None:
    """One torch thread per run (``RLTRANSFER_TORCH_THREADS`` to change): PPO's small matrices gain
    nothing from more, and parallel runs side by side scale better (DESIGN.md, measured facts)."""
    import torch

    torch.set_num_threads(int(os.environ.get("RLTRANSFER_TORCH_THREADS", "1")))


def note_oversubscribed(workers: int | None, backend: str = "local") -> None:
    """A one-line note on stderr when ``--workers`` asks for more local processes than there are
    cores: they then share cores, each run slower (the numbers stay the same), each holding its own torch."""
    if workers is None or backend != "local":
        return
    from rltransfer.experiment.runner import default_workers

    cores = default_workers()
    if workers > cores:
        print(
            f"rltransfer: note: --workers {workers} is more than the {cores} cores here: runs share them "
            "(each slower, with the same numbers)",
            file=sys.stderr,
        )


def kv(items: Sequence[str] | None, flag: str = "--hp") -> dict[str, Any]:
    """``KEY=VALUE`` items (``--hp``, ``--param``, ``--option``) as a mapping, values read as YAML."""
    from rltransfer.hyperparams import parse_override

    return dict(parse_override(item, flag) for item in items or [])


def hyperparams_args(args: Any) -> dict[str, Any]:
    """``--conf-file`` (an RL Zoo YAML file's block for ``--family``), then ``--hp`` on top."""
    from rltransfer.zoo_file import zoo_file_block

    given = kv(args.hp)
    budget = given.get("n_timesteps")
    if budget is not None and getattr(args, "timesteps", None) is not None and whole_number(budget) != args.timesteps:
        raise UserError(f"--timesteps {args.timesteps} and --hp n_timesteps={budget} both set the budget; keep one")
    return {**(zoo_file_block(args.conf_file, args.family) if args.conf_file else {}), **given}


def steps_arg(text: str) -> int:
    """``--timesteps``: a whole number of env steps, ``100000`` or ``1e5``."""
    steps = whole_number(text)
    if steps is None:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of steps (e.g. 100000 or 1e5)")
    return steps


def snapshot_seconds(value: str | None) -> float | None:
    """``--snapshot-every`` of pretrain and transfer: seconds, or ``None`` for off (default 300)."""
    from rltransfer.snapshot import DEFAULT_EVERY_S, parse_snapshot_every

    return DEFAULT_EVERY_S if value is None else parse_snapshot_every(value)


def family_arg(args: Any) -> Any:
    """``--family`` as a ``Family``. Where the command takes ``--variant`` (pretrain), a Gymnasium id
    (``rltransfer/CartPole-long-v0``) or ``cartpole/long`` names the family and the variant."""
    from rltransfer.resolve import named_variant, resolve_family

    found = named_variant(args.family) if hasattr(args, "variant") else None
    if found is None:
        return resolve_family(args.family)
    family, variant = found
    if args.param or args.variant not in (None, variant, args.family):
        raise UserError(
            f"--family {args.family} is variant '{variant}' of family '{family.name}'; drop --variant and --param, "
            f"or pass --family {family.name}"
        )
    args.variant = variant
    return resolve_family(family)


def variant_arg(family: Any, variant: str | None, params: Sequence[str] | None) -> Any:
    """``--param length=0.8`` defines a custom variant; otherwise ``--variant`` names one (``source``)."""
    if params:
        return kv(params, "--param")
    return variant or "source"


def parse_targets(family: Any, text: str) -> list[Any]:
    """``--targets``: variant names (``long``, ``acrobot/source``) and custom targets by parameter
    values, comma-separated as YAML flow items: ``long,{length: 0.9},{name: mine, params: {...}}``."""
    from rltransfer.resolve import resolve_variant

    try:
        items = yaml.safe_load(f"[{text}]")
    except yaml.YAMLError:
        raise UserError(
            f"cannot read --targets '{text}'; give variant names separated by commas and custom targets "
            "as {param: value} or {name: mine, params: {param: value}}"
        ) from None
    targets: list[Any] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            targets.append(str(item))
        elif set(item) <= {"name", "params"} and "params" in item:  # a spec's {name, params} form
            targets.append(resolve_variant(family, item["params"] or {}, str(item.get("name", f"custom{i}"))))
        else:
            targets.append(resolve_variant(family, item, f"custom{i}"))
    return targets
