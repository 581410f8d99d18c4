"""A spec's arms: each a display name and a fine-tuning strategy; ``sweep`` makes one arm per value."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rltransfer.errors import UserError
from rltransfer.experiment.spec_context import SpecContext
from rltransfer.strategies import OPTIONS, Strategy, parse_strategy

ARM_KEYS = {"name", "strategy"} | OPTIONS
# What a grid's directory holds beside its arms' directories (runner, report, generalization,
# tensorboard modules; tests/test_arms.py checks the list against them): an arm there would mix
# its runs into them. Compared case-insensitively, as macOS and Windows file systems do.
RESERVED_DIRS = ("report", "source", "generalization", "_layout", "experiment.json")
VS_PREFIX = "report-vs-"  # <out>/report-vs-<arm>: the report against another arm than scratch


@dataclass(frozen=True)
class Arm:
    """One arm of the comparison: a display name and its fine-tuning strategy; an arm of a sweep
    also names the arm it was swept from and its values (``(("coef", "0.01"),)``, as labelled)."""

    name: str
    strategy: Strategy
    sweep_of: str | None = None
    swept: tuple[tuple[str, str], ...] = ()

    @property
    def dirname(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name)


def parse_arms(ctx: SpecContext, arms_raw: Any) -> tuple[Arm, ...]:
    """A spec's ``arms``: names (``freeze``) or mappings of name, strategy, options and ``sweep``;
    distinct names and directories, scratch among them."""
    if not isinstance(arms_raw, list) or not arms_raw:
        raise ctx.fail("arms", "'arms' must be a non-empty list, e.g. [scratch, freeze, finetune]")
    arms: list[Arm] = []
    for i, a in enumerate(arms_raw):
        path = f"arms.{i}"
        if isinstance(a, str):
            a = {"name": a}
        a = ctx.check_keys(a, ARM_KEYS | {"sweep"}, path)
        strategy = str(a.get("strategy", a.get("name", "")))
        name = str(a.get("name", strategy))
        options = {k: v for k, v in a.items() if k not in ("name", "strategy", "sweep")}
        for suffix, swept in _sweep(ctx, a.get("sweep"), options, f"{path}.sweep"):
            try:
                arms.append(
                    Arm(
                        name + suffix,
                        parse_strategy(strategy, {**options, **swept}),
                        name if "sweep" in a else None,
                        tuple((k, _label(v)) for k, v in swept.items()),
                    )
                )
            except UserError as e:
                raise ctx.fail(path, f"{name + suffix}: {e}" if suffix else str(e)) from None
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ctx.fail("arms", f"arm names must be distinct, got {names}; give repeated strategies a 'name'")
    if "scratch" not in names:
        raise ctx.fail("arms", "arms must include 'scratch', the baseline every transfer arm is compared with")
    for arm in arms:
        if not arm.dirname or arm.dirname.startswith("."):  # '', '.', '..': the grid's own or its parent
            raise ctx.fail(
                "arms", f"arm name {arm.name!r} makes no directory of its own; start it with a letter or digit"
            )
        if arm.dirname.casefold() in RESERVED_DIRS:
            raise ctx.fail(
                "arms", f"arm name {arm.name!r} is the grid's own '{arm.dirname.casefold()}' directory; rename the arm"
            )
        if arm.dirname.casefold().startswith(VS_PREFIX):
            raise ctx.fail("arms", f"arm name {arm.name!r} starts as the reports against other arms do; rename the arm")
    if len({a.dirname.casefold() for a in arms}) != len(arms):
        raise ctx.fail("arms", f"arm names {names} collide as directory names (case aside); rename one")
    return tuple(arms)


def _sweep(ctx: SpecContext, sweep: Any, options: Mapping[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    """An arm's ``sweep: {coef: [0.001, 0.01], ...}``: one arm per combination of the values (the
    product, keys in sorted order), named by a suffix such as ``-coef=0.001``; no sweep: the arm itself."""
    if sweep is None:
        return [("", {})]
    if not isinstance(sweep, dict) or not sweep:
        raise ctx.fail(path, f"sweep must map options to lists of values, e.g. {{coef: [0.001, 0.01]}}; got {sweep!r}")
    for key, values in sweep.items():
        if key not in OPTIONS:
            raise ctx.fail(path, f"'{key}' is not a strategy option; sweep one of: {', '.join(sorted(OPTIONS))}")
        if key in options:
            raise ctx.fail(path, f"'{key}' is both set and swept; drop one")
        if not isinstance(values, list) or not values:
            raise ctx.fail(path, f"sweep.{key} must be a non-empty list of values, got {values!r}")
    combos: list[tuple[str, dict[str, Any]]] = [("", {})]
    # Keys in sorted order, not the spec's: experiment.json stores mappings with sorted keys, and a
    # grid read back from it must name (and find) its arms as the spec did.
    for key, values in sorted(sweep.items()):
        combos = [(suffix + f"-{key}={_label(v)}", {**chosen, key: v}) for suffix, chosen in combos for v in values]
    return combos


def _label(value: Any) -> str:
    """A swept value in an arm's name: ``0.01``, ``0.1,1`` for a list, ``true``."""
    if isinstance(value, list | tuple):
        return ",".join(_label(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)
