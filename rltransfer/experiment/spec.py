"""Experiment specs: YAML describing source, targets, arms, seeds, budget and evaluation.

Every key is checked; an unknown or malformed one is reported with its line number.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from rltransfer.devices import parse_device
from rltransfer.envs import DefinitionError, Family, Task, Variant, family_from_mapping
from rltransfer.envs.family import SAFE_NAME, SAFE_NAME_RULE
from rltransfer.errors import UserError
from rltransfer.experiment.arms import Arm, parse_arms
from rltransfer.experiment.spec_context import SpecContext
from rltransfer.hyperparams import resolve_hyperparams
from rltransfer.resolve import resolve_family, resolve_variant, user_families
from rltransfer.snapshot import DEFAULT_EVERY_S, parse_snapshot_every
from rltransfer.tasks import TaskSet, resolve_targets
from rltransfer.zoo_file import zoo_file_block

Mode = Literal["multitask", "per-target"]
TOP_KEYS = {
    "name",
    "family",
    "source",
    "targets",
    "arms",
    "seeds",
    "timesteps",
    "eval",
    "thresholds",
    "mode",
    "hyperparams",
    "forgetting",
    "description",
    "device",
    "snapshot_every",
}
# How a run executes, not what it measures: runs that differ only in these compare (and resume).
EXECUTION_KEYS = ("seeds", "description", "device", "snapshot_every")
SOURCE_KEYS = {"variant", "params", "timesteps", "seed", "seeds", "checkpoint", "hyperparams", "require_solved"}
EVAL_KEYS = {"freq", "episodes"}
TARGET_KEYS = {"name", "variant", "params", "family"}


@dataclass(frozen=True)
class SourceSpec:
    """The source policy: pretrained once per seed of ``seeds`` (or loaded from ``checkpoint``).

    ``paired`` (``source: {seeds: paired}``): one source per target seed, with that seed; ``seeds``
    then follows the experiment's seeds (``ExperimentSpec.with_seeds``). ``require_solved``: a
    pretrained source whose final evaluation misses its family's threshold stops the grid.
    """

    variant: Variant
    timesteps: int | None
    seeds: tuple[int, ...]
    checkpoint: Path | None
    hyperparams: dict[str, Any]
    paired: bool = False
    require_solved: bool = False

    @property
    def seed(self) -> int:
        """The first source seed (the only one unless ``source.seeds`` asks for several)."""
        return self.seeds[0]

    def seed_for(self, target_seed: int) -> int:
        """The source seed a target seed fine-tunes: ``seeds[target_seed % len(seeds)]``.

        With several sources each target seed replicates the whole pipeline, source included, so
        the confidence intervals over seeds hold the source's variance too; a seed's pairing
        depends on its value alone, so resuming with another seed list keeps it. Paired: the
        target seed itself.
        """
        return target_seed if self.paired else self.seeds[target_seed % len(self.seeds)]


@dataclass(frozen=True)
class ExperimentSpec:
    """A resolved experiment: every name checked, every default filled in."""

    name: str
    family: Family
    source: SourceSpec
    targets: tuple[Task, ...]
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...]
    timesteps: int
    eval_freq: int
    eval_episodes: int
    thresholds: tuple[float, ...]
    mode: Mode
    hyperparams: dict[str, Any]
    forgetting: bool
    raw: dict[str, Any] = field(compare=False, repr=False)
    path: Path | None = None
    device: str = "cpu"  # torch device of every run (``rltransfer.devices``); the CLI's --device overrides it
    # Seconds between a run's mid-run snapshots (``rltransfer.snapshot``; None: never); --snapshot-every overrides it.
    snapshot_every: float | None = DEFAULT_EVERY_S
    # What the source's weights depend on (architecture, activation, normalisation), set by the
    # runner for every arm: under ``hyperparams``, which a spec may still set explicitly.
    source_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def families(self) -> tuple[Family, ...]:
        """The spec's family and its targets' (another family's targets included)."""
        return (self.family, *(t.family for t in self.targets))

    @property
    def task_names(self) -> list[str]:
        # Names only: the targets were validated (spaces included) when the spec was parsed.
        return TaskSet(self.family, self.targets).names

    def target_hyperparams(self) -> dict[str, Any]:
        """PPO settings shared by every arm, scratch included (budget and evaluation too)."""
        return {
            **self.source_settings,
            **self.hyperparams,
            "n_timesteps": self.timesteps,
            "eval_freq": self.eval_freq,
            "eval_episodes": self.eval_episodes,
        }

    def with_seeds(self, seeds: tuple[int, ...]) -> ExperimentSpec:
        """The spec run with other target seeds (paired sources follow them)."""
        source = replace(self.source, seeds=seeds) if self.source.paired else self.source
        return replace(self, seeds=seeds, source=source)

    def fingerprint(self, arms: bool = True) -> str:
        """Hash of everything but the seeds and execution settings: runs of the same fingerprint are
        comparable. ``arms=False`` leaves the arms out too: what every arm's runs share, so a grid
        can gain arms (``arm_settings`` tells an arm changed under its name)."""
        skip = EXECUTION_KEYS if arms else (*EXECUTION_KEYS, "arms")
        body = {k: v for k, v in self.raw.items() if k not in skip}
        # A user family is defined outside the spec: a resumed grid must not mix two of its definitions.
        users = user_families(*self.families)
        if users:
            # Empty entries left out: a field added to definitions later keeps older grids resumable.
            body["family_definitions"] = {
                n: {k: v for k, v in f.to_dict().items() if k != "ref" and v not in ({}, [], None)}
                for n, f in users.items()
            }
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def with_arms(self, raw_arms: Any) -> ExperimentSpec:
        """The spec with other arms, given as a spec's ``arms`` holds them (a recorded spec's)."""
        arms = parse_arms(SpecContext("the recorded spec", {}), raw_arms)
        return replace(self, arms=arms, raw={**self.raw, "arms": raw_arms})

    def arm_settings(self) -> dict[str, dict[str, Any]]:
        """Each arm's name and strategy by its directory, as ``experiment.json`` records them (JSON types)."""
        arms = {a.dirname: {"name": a.name, "strategy": a.strategy.to_dict()} for a in self.arms}
        settings: dict[str, dict[str, Any]] = json.loads(json.dumps(arms))
        return settings


def _lines(node: yaml.Node, where: str, prefix: str = "") -> dict[str, int]:
    """Map ``a.b.c`` key paths to 1-based line numbers, for error messages. A key given twice in
    one mapping is refused: YAML keeps the last silently (a second ``arms:`` would drop the first)."""
    out: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}{key.value}"
            line = key.start_mark.line + 1
            if path in out:
                raise UserError(f"{where}:{line}: key '{path}' is given twice (also on line {out[path]}); keep one")
            out[path] = line
            out.update(_lines(value, where, path + "."))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[f"{prefix}{i}"] = item.start_mark.line + 1
            out.update(_lines(item, where, f"{prefix}{i}."))
    return out


def _threshold(ctx: SpecContext, value: Any, path: str) -> float:
    """A return to reach: a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ctx.fail(path, f"'{path}' must be a number (a return to reach), got {value!r}")
    return float(value)


def _family(ctx: SpecContext, value: Any, path: str) -> Family:
    """A family's name, ``module:ATTRIBUTE``, YAML file, or its definition written in the spec."""
    try:
        if isinstance(value, dict):
            return resolve_family(family_from_mapping(value, ref=f"{ctx.where}#{path}"))
        return resolve_family(str(value), ctx.base)
    except DefinitionError as e:  # point at the definition's own line
        raise ctx.fail(f"{path}.{e.path}" if f"{path}.{e.path}" in ctx.lines else path, e.message) from None
    except UserError as e:
        raise ctx.fail(path, str(e)) from None


PAIRED = "paired"  # source.seeds: one source per target seed, pretrained with that seed


def _seeds(ctx: SpecContext, value: Any, path: str) -> tuple[int, ...]:
    """A seed count (``range(n)``) or an explicit list of distinct non-negative seeds."""
    if not isinstance(value, list):
        return tuple(range(ctx.positive_int(value, path)))
    if not value:
        raise ctx.fail(path, f"{path} is an empty list; give a count (3) or seeds ([0, 1, 2])")
    if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in value):
        raise ctx.fail(path, f"{path} must be non-negative integers, got {value}")
    if len(set(value)) != len(value):
        raise ctx.fail(path, f"{path} must be distinct, got {value}")
    return tuple(value)


def _source_seeds(
    ctx: SpecContext, src: dict[str, Any], checkpoint: Path | None, targets: tuple[int, ...]
) -> tuple[int, ...]:
    """``source.seed`` (one source) or ``source.seeds``: a count or list (several sources, which the
    target seeds share out by ``SourceSpec.seed_for``), or ``paired`` (the target seeds ``targets``)."""
    if "seed" in src and "seeds" in src:
        raise ctx.fail("source.seeds", "give source.seed (one source) or source.seeds (several), not both")
    if "seeds" in src:
        if checkpoint is not None:
            raise ctx.fail(
                "source.seeds",
                "source.seeds pretrains one source per seed; remove it to transfer from source.checkpoint",
            )
        if isinstance(src["seeds"], str):
            if src["seeds"] != PAIRED:
                raise ctx.fail(
                    "source.seeds", f"source.seeds must be a count, a list or '{PAIRED}', got '{src['seeds']}'"
                )
            return targets
        return _seeds(ctx, src["seeds"], "source.seeds")
    seed = src.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ctx.fail("source.seed", f"source.seed must be a non-negative integer, got {seed!r}")
    return (seed,)


def _require_solved(ctx: SpecContext, src: dict[str, Any], checkpoint: Path | None) -> bool:
    value = src.get("require_solved", False)
    if not isinstance(value, bool):
        raise ctx.fail("source.require_solved", f"source.require_solved must be true or false, got {value!r}")
    if value and checkpoint is not None:
        raise ctx.fail(
            "source.require_solved",
            "source.require_solved checks the sources the grid pretrains; remove it to use source.checkpoint",
        )
    return value


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a YAML experiment spec."""
    p = Path(path)
    if p.is_dir():
        what = "a grid's output directory" if (p / "experiment.json").exists() else "a directory"
        raise UserError(
            f"spec '{p}' is {what}; pass a YAML file such as experiments/cartpole.yaml"
            + (f" (its report: `rltransfer report {p}`)" if what != "a directory" else "")
        )
    if not p.is_file():
        raise UserError(f"spec '{p}' not found; pass a YAML file such as experiments/cartpole.yaml")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"spec '{p}' is not a text file; pass a YAML file such as experiments/cartpole.yaml") from None
    except OSError as e:
        raise UserError(f"cannot read spec '{p}' ({e.strerror}); check its permissions") from None
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{p}{line}: malformed YAML ({getattr(e, 'problem', e)}); fix the syntax") from None
    spec = parse_spec(raw, where=str(p), lines=_lines(node, str(p)) if node is not None else {}, base=p.parent)
    return ExperimentSpec(**{**spec.__dict__, "path": p})


def parse_spec(
    raw: Any, where: str = "spec", lines: dict[str, int] | None = None, base: Path | None = None
) -> ExperimentSpec:
    """Validate a spec given as a dict (``load_spec`` adds line numbers, and its directory as ``base``,
    where a family file or module is looked for after the working directory)."""
    ctx = SpecContext(where, lines or {}, base)
    raw = ctx.check_keys(raw, TOP_KEYS, "")
    for key in ("family", "targets", "arms"):
        if key not in raw:
            raise ctx.fail("", f"missing required key '{key}'")
    family = _family(ctx, raw["family"], "family")
    name = str(raw.get("name", family.name))
    if not SAFE_NAME.fullmatch(name):  # runs/<name>
        raise ctx.fail("name", f"name '{name}' {SAFE_NAME_RULE}")

    src = ctx.check_keys(raw.get("source", {}) or {}, SOURCE_KEYS, "source")
    # Written out beside the budget, n_timesteps contradicts it; an RL Zoo block carries its own, overridden.
    ctx.given_once(
        "source.timesteps", src.get("timesteps"), src.get("hyperparams"), "n_timesteps", "source.hyperparams"
    )
    ev_raw = raw.get("eval") if isinstance(raw.get("eval"), dict) else {}
    for path, value, key in [("timesteps", raw.get("timesteps"), "n_timesteps"),
                             ("eval.freq", ev_raw.get("freq"), "eval_freq"),
                             ("eval.episodes", ev_raw.get("episodes"), "eval_episodes")]:  # fmt: skip
        ctx.given_once(path, value, raw.get("hyperparams"), key, "hyperparams")
    # An RL Zoo file's block stands in for its name, so the recorded spec holds the values trained with.
    if isinstance(src.get("hyperparams"), str):
        src = {**src, "hyperparams": _zoo_block(ctx, src["hyperparams"], family, "source.hyperparams")}
        raw = {**raw, "source": src}
    if isinstance(raw.get("hyperparams"), str):
        raw = {**raw, "hyperparams": _zoo_block(ctx, raw["hyperparams"], family, "hyperparams")}
    if "params" in src and "variant" in src:
        raise ctx.fail("source", "the source takes variant (a named one) or params (its values), not both; drop one")
    try:
        src_variant = (
            resolve_variant(family, src["params"], "source-custom")
            if "params" in src
            else resolve_variant(family, str(src.get("variant", "source")))
        )
    except UserError as e:
        raise ctx.fail("source", str(e)) from None
    checkpoint = _checkpoint(ctx, src["checkpoint"]) if src.get("checkpoint") else None
    src_hp = src.get("hyperparams", {}) or {}
    try:
        if not isinstance(src_hp, dict):
            raise UserError(
                f"'source.hyperparams' must be a mapping of keys to values or an RL Zoo file, got {src_hp!r}"
            )
        resolve_hyperparams(family, src_hp)  # checked now, not when the source starts pretraining
    except UserError as e:
        raise ctx.fail("source.hyperparams", str(e)) from None
    seeds = _seeds(ctx, raw.get("seeds", 3), "seeds")
    source = SourceSpec(
        src_variant,
        ctx.positive_int(src["timesteps"], "source.timesteps") if "timesteps" in src else None,
        _source_seeds(ctx, src, checkpoint, seeds),
        checkpoint,
        dict(src_hp),
        src.get("seeds") == PAIRED,
        _require_solved(ctx, src, checkpoint),
    )

    targets_raw = raw["targets"]
    if not isinstance(targets_raw, list) or not targets_raw:
        raise ctx.fail(
            "targets", "'targets' must be a non-empty list of variant names, {param: value} or {name, params}"
        )
    targets: list[Task] = []
    for i, t in enumerate(targets_raw):
        if isinstance(t, dict) and t and not set(t) & TARGET_KEYS:
            # Parameter values alone, as --targets takes them: {length: 0.9}.
            t = {"name": f"custom{i}", "params": t}
        if not isinstance(t, str | dict) or not t:
            raise ctx.fail(f"targets.{i}", f"target {t!r} is not a variant name, {{param: value}} or {{name, params}}")
        t = t if isinstance(t, str) else ctx.check_keys(t, TARGET_KEYS, f"targets.{i}")
        if isinstance(t, dict) and "params" not in t and "variant" not in t and "name" not in t:
            raise ctx.fail(f"targets.{i}", f"target {t} names no variant; add variant: NAME (or params)")
        if isinstance(t, dict) and "params" in t and "variant" in t:
            raise ctx.fail(
                f"targets.{i}", "a target takes variant (a named one) or params (its values), not both; drop one"
            )
        # Outside the try below: _family's error already names its line.
        fam = _family(ctx, t["family"], f"targets.{i}.family") if isinstance(t, dict) and "family" in t else family
        try:
            if isinstance(t, str):
                targets.extend(resolve_targets(family, [t]).tasks)
                continue
            if "params" in t:
                variant = resolve_variant(fam, t["params"], name=str(t.get("name", f"custom{i}")))
            else:
                variant = resolve_variant(fam, str(t.get("variant", t.get("name"))))
            targets.append(Task(fam, variant))
        except UserError as e:
            raise ctx.fail(f"targets.{i}", str(e)) from None
    try:
        task_set = resolve_targets(family, targets)
    except UserError as e:
        raise ctx.fail("targets", str(e)) from None
    names = task_set.names

    arms = parse_arms(ctx, raw["arms"])

    ev = ctx.check_keys(raw.get("eval", {}) or {}, EVAL_KEYS, "eval")
    overrides = raw.get("hyperparams", {}) or {}
    if not isinstance(overrides, dict):
        raise ctx.fail("hyperparams", f"must be a mapping of keys to values or an RL Zoo file, got {overrides!r}")
    overrides = dict(overrides)
    try:
        hp = resolve_hyperparams(family, overrides)
    except UserError as e:
        raise ctx.fail("hyperparams", str(e)) from None
    timesteps = ctx.positive_int(raw.get("timesteps", hp["n_timesteps"]), "timesteps")
    eval_freq = ctx.positive_int(ev.get("freq", hp["eval_freq"]), "eval.freq")
    eval_episodes = ctx.positive_int(ev.get("episodes", hp["eval_episodes"]), "eval.episodes")

    thr_raw = raw.get("thresholds", {}) or {}
    if isinstance(thr_raw, int | float) and not isinstance(thr_raw, bool):
        thresholds = tuple(_threshold(ctx, thr_raw, "thresholds") for _ in targets)
    else:
        thr_raw = ctx.check_keys(thr_raw, set(names), "thresholds")
        thresholds = tuple(
            _threshold(ctx, thr_raw[n], f"thresholds.{n}") if n in thr_raw else float(t.family.threshold)
            for n, t in zip(names, targets, strict=True)
        )

    mode = raw.get("mode", "multitask")
    if mode not in ("multitask", "per-target"):
        raise ctx.fail("mode", f"mode '{mode}' unknown; use 'multitask' or 'per-target'")
    device = str(raw.get("device", "cpu"))
    try:
        parse_device(device)  # syntax only: whether the machine has it is checked where runs execute
    except UserError as e:
        raise ctx.fail("device", str(e)) from None
    snapshot_every = _snapshot_every(ctx, raw.get("snapshot_every", DEFAULT_EVERY_S))
    return ExperimentSpec(
        name=name,
        family=family,
        source=source,
        targets=tuple(targets),
        arms=arms,
        seeds=seeds,
        timesteps=timesteps,
        eval_freq=eval_freq,
        eval_episodes=eval_episodes,
        thresholds=thresholds,
        mode=mode,
        hyperparams=overrides,
        forgetting=bool(raw.get("forgetting", True)),
        raw=raw,
        device=device,
        snapshot_every=snapshot_every,
    )


def _zoo_block(ctx: SpecContext, ref: str, family: Family, path: str) -> dict[str, Any]:
    """``hyperparams: FILE[:KEY]``: an RL Zoo file's block, the file found beside the spec too."""
    try:
        return zoo_file_block(ref, family, ctx.base)
    except UserError as e:
        raise ctx.fail(path, str(e)) from None


def _checkpoint(ctx: SpecContext, value: Any) -> Path:
    """``source.checkpoint``: a run directory or SB3 zip, a relative one looked for in the working
    directory, then beside the spec (as family and RL Zoo files are); whether it holds a policy is
    checked when the grid starts, so a finished grid's report needs no checkpoint on disk."""
    if not isinstance(value, str):
        raise ctx.fail(
            "source.checkpoint", f"source.checkpoint must be a path (a run directory or an SB3 .zip), got {value!r}"
        )
    path = Path(value)
    if not path.exists() and ctx.base is not None and not path.is_absolute() and (ctx.base / path).exists():
        return ctx.base / path
    return path


def _snapshot_every(ctx: SpecContext, value: Any) -> float | None:
    if value is None or value is False:
        return None
    try:
        return parse_snapshot_every(value)
    except UserError as e:
        raise ctx.fail("snapshot_every", str(e)) from None


SpecLike = ExperimentSpec | Mapping[str, Any] | str | Path


def as_spec(spec: SpecLike) -> ExperimentSpec:
    """A spec from its YAML file, a mapping as the YAML would hold it, or itself."""
    if isinstance(spec, ExperimentSpec):
        return spec
    if isinstance(spec, Mapping):
        return parse_spec(dict(spec))
    return load_spec(spec)
