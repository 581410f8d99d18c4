"""A finished run as an agent to act with: its policy and the environments it acts in.

A run directory (a pretrained source, a fine-tuned or scratch run of a grid or of
``rltransfer transfer``, a distilled student) holds the trained weights, but not how to feed
them: the task id a multi-task policy reads and the observation statistics it trained with.
``load_agent`` rebuilds the policy from the manifest and the zip's weights (nothing unpickled,
as for sources) and ``Agent.env`` gives any target's env as the policy sees it, ready for SB3's
``evaluate_policy``, ``model.predict`` or a rollout of one's own. The default evaluation
repeats the run's own final one (same episodes, same returns).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from stable_baselines3.common.vec_env import VecEnv

from rltransfer import normalization
from rltransfer.checkpoint import MODEL_FILE, Checkpoint, load_checkpoint, missing_model_hint
from rltransfer.envs import FAMILIES, Family, Task, Variant
from rltransfer.errors import UserError
from rltransfer.evaluation import evaluate_tasks
from rltransfer.finetuning import build_model
from rltransfer.ppo import TransferPPO
from rltransfer.pretraining import EVAL_SEED_OFFSET
from rltransfer.resolve import comma_items, recorded_variant, resolve_family, resolve_variant, split_target
from rltransfer.source_policy import load_source_model, source_eval_env, source_variant
from rltransfer.tasks import Target, TaskSet, nearest_task, task_key

KINDS = ("source", "transfer", "scratch", "distilled")


@dataclass
class Agent:
    """A finished run's policy. ``tasks`` is ``None`` for a single-task source policy; otherwise
    the run's tasks, one policy head (and task id) each."""

    path: Path
    kind: str
    model: TransferPPO
    family: Family
    tasks: TaskSet | None
    hyperparams: dict[str, Any]
    obs_stats: dict[str, Any] | None
    seed: int
    checkpoint: Checkpoint = field(repr=False)

    @property
    def task_names(self) -> list[str]:
        """The heads a target can be played with (a source policy's one task: ``source``)."""
        return ["source"] if self.tasks is None else self.tasks.names

    @property
    def eval_episodes(self) -> int:
        """Episodes per task of the run's own evaluations (the default of ``evaluate``)."""
        return int(self.hyperparams.get("eval_episodes", 10))

    @property
    def eval_seed(self) -> int:
        """The seed of the run's own evaluations: the default, so that those returns are repeated."""
        return self.seed + EVAL_SEED_OFFSET

    def env(self, target: Target | None = None, n_envs: int = 1, head: str | None = None) -> VecEnv:
        """``n_envs`` copies of ``target`` (default: the head's own task) as the policy sees them:
        tagged with ``head``'s task id and normalised with the run's final statistics, frozen.
        ``head`` defaults to the task of the target's name; another target is played by the nearest
        task's head (of its family, trained on the same observations), as ``generalize`` plays it."""
        if n_envs < 1:
            raise UserError(f"n_envs must be at least 1, got {n_envs}")
        _, task, k = self.resolve_target(target, head)
        return self._env(task, k, n_envs)

    def _env(self, task: Task, k: int, n_envs: int) -> VecEnv:
        if self.tasks is None:
            return source_eval_env(self.checkpoint, self.family, task.variant, n_envs)
        tasks = list(self.tasks.tasks)
        tasks[k] = task  # the same space as head k's own task (checked in resolve_target)
        env = TaskSet(self.family, tuple(tasks)).eval_env(k, n_envs)
        env = normalization.wrap(env, self.hyperparams, dict_obs=True, training=False)
        if self.obs_stats is not None:
            normalization.load_stats(env, self.obs_stats, padded=self.tasks.spaces is not None)
        return env

    def evaluate(
        self,
        targets: Sequence[Target] | str | None = None,
        episodes: int | None = None,
        head: str | None = None,
        deterministic: bool = True,
        seed: int | None = None,
    ) -> dict[str, tuple[float, float]]:
        """Mean and std of the episode return per target (default: every task of the run), one
        episode per sub-env seeded ``seed + i``. The defaults (the run's episodes and seed)
        repeat the run's final evaluation."""
        episodes = self.eval_episodes if episodes is None else episodes
        if episodes < 1:
            raise UserError(f"episodes must be at least 1, got {episodes}")
        seed = self.eval_seed if seed is None else seed
        if seed < 0:  # Gymnasium's reset takes seeds >= 0
            raise UserError(f"seed must be >= 0, got {seed}")
        if targets is None:
            targets = self.task_names
        elif isinstance(targets, str):
            targets = comma_items(targets)
        envs = {}
        for target in targets:
            name, task, k = self.resolve_target(target, head)
            if name in envs:
                raise UserError(f"target '{name}' given twice; give each target once")
            envs[name] = self._env(task, k, episodes)
        return evaluate_tasks(self.model, envs, episodes, seed, deterministic)

    def resolve_target(self, target: Target | None, head: str | None) -> tuple[str, Task, int]:
        """The target's name as results give it, its task, and the index of the head that plays it
        (``None``: the head of the task the target names, or else of the nearest task)."""
        names = self.task_names
        if head is not None and head not in names:
            raise UserError(f"head '{head}' is not a task of this run; choose one of: {', '.join(names)}")
        own = (
            self.tasks.tasks
            if self.tasks is not None
            else (Task(self.family, source_variant(self.checkpoint, self.family)),)
        )
        if target is None:
            k = names.index(head) if head is not None else 0
            return names[k], own[k], k
        if isinstance(target, str) and target in names:
            task = own[names.index(target)]
        elif isinstance(target, Task):
            task = target
        elif isinstance(target, str):
            fam, vname = split_target(target, self.family)
            task = Task(fam, resolve_variant(fam, vname))
        elif isinstance(target, Variant | Mapping):
            task = Task(self.family, resolve_variant(self.family, target, name="custom"))
        else:
            raise UserError(f"a target is a variant name or parameter values, got {target!r}")
        mine = next((j for j, t in enumerate(own) if _same(t, task)), None)
        if mine is not None:  # one of the run's tasks, however named (long, cartpole/long, a Gymnasium id)
            k = mine if head is None else names.index(head)
            return (names[mine] if k == mine else f"{names[mine]} (head {names[k]})"), own[mine], k
        if head is None:  # a run of one task plays anything with it; else, as `generalize` chooses, the nearest
            way_out = ", or name the head to play it (head=NAME, --head)"
            k = nearest_task(own, names, self._label(task), task, "task of this run", way_out) if len(names) > 1 else 0
            head = names[k]
        k = names.index(head)
        if task.family.name != own[k].family.name:
            raise UserError(
                f"head '{head}' plays {own[k].family.name} tasks, not {task.family.name}; choose a head of that family"
            )
        label = self._label(task)
        return (label if len(names) == 1 else f"{label} (head {head})"), task, k

    def _label(self, task: Task) -> str:
        """``long``, ``acrobot/long1`` (another family's) or ``custom (length=0.9)``."""
        name = task.variant.name if task.family.name == self.family.name else task.name
        if task.variant not in task.family.all_variants():  # values, not a registered variant
            name += f" ({', '.join(f'{k}={v:g}' for k, v in sorted(task.variant.params.items()))})"
        return name


def _same(a: Task, b: Task) -> bool:
    """The same task under the same name (a target of other values or name is played by another head)."""
    return a.variant.name == b.variant.name and task_key(a) == task_key(b)


def load_agent(path: str | Path, family: str | Family | None = None) -> Agent:
    """The policy a finished run trained, ready to act: a source checkpoint directory or a run
    directory (``runs/<experiment>/<arm>/seed<k>``, ``rltransfer transfer --out``, ``distill``).

    ``family`` is needed only for a family of your own that the run's manifest cannot name
    again (its ``module:ATTRIBUTE`` or file moved).
    """
    _check_run_dir(Path(path))
    ckpt = load_checkpoint(path)
    manifest = ckpt.manifest
    if manifest is None:
        raise UserError(
            f"'{ckpt.path}' is a plain SB3 zip, not an rltransfer run; load it with PPO.load (its return on a "
            f"family's variants: `rltransfer advise --source {ckpt.path} --family F --targets ...`), "
            "or pass a run directory"
        )
    kind = manifest.get("kind")
    if kind is None:
        raise UserError(
            f"'{ckpt.path.parent / 'manifest.json'}' is damaged (it records no kind); "
            "restore it, or train the run again"
        )
    if kind not in KINDS:
        raise UserError(f"'{ckpt.path.parent}' holds a run of kind {kind!r}, not one of: {', '.join(KINDS)}")
    fam = _family(manifest, manifest["family"], family)
    hp = dict(manifest["hyperparams"])
    seed = int(manifest["seed"])
    stats = manifest.get("obs_normalization")
    if stats is None and (normalization.normalize_options(hp) or {}).get("norm_obs"):
        raise UserError(
            f"'{ckpt.path.parent}' trained on normalised observations, but its manifest does not hold their "
            "statistics (runs finished before rltransfer recorded them); train the run again to act with it"
        )
    if kind == "source":
        model = load_source_model(ckpt, fam, seed)
        return Agent(ckpt.path.parent, kind, model, fam, None, hp, stats, seed, ckpt)
    tasks = _tasks(manifest, fam, family)
    model = build_model(tasks, None, hp, seed)
    model.policy.load_state_dict(ckpt.state_dict)
    model.policy.set_training_mode(False)
    return Agent(ckpt.path.parent, kind, model, fam, tasks, hp, stats, seed, ckpt)


def _check_run_dir(path: Path) -> None:
    """A missing path, or an experiment's directory given for one of its runs: one line naming what to pass."""
    if not path.exists():
        raise UserError(
            f"'{path}' does not exist; pass a run directory (a source checkpoint, runs/<experiment>/<arm>/seed<k>)"
        )
    if path.is_dir() and not (path / MODEL_FILE).exists():
        run = "pass a run directory (a source checkpoint, runs/<experiment>/<arm>/seed<k>)"
        raise UserError(f"'{path}' holds no {MODEL_FILE}; {missing_model_hint(path, run)}")


def _tasks(manifest: Mapping[str, Any], fam: Family, override: str | Family | None) -> TaskSet:
    """The run's tasks in head order, as its manifest records them."""
    if manifest["kind"] == "distilled":  # task k is teacher k's own task, named by the student
        names = list(manifest["tasks"])
        tasks = [
            Task(fam, replace(recorded_variant(fam, **_recorded(t["variant"])), name=n, distance="source"))
            for n, t in zip(names, manifest["teachers"], strict=True)
        ]
    else:
        names = [entry["name"] for entry in manifest["targets"]]
        tasks = []
        for entry in manifest["targets"]:
            f = _family(manifest, entry["family"], override if entry["family"] == fam.name else None)
            tasks.append(Task(f, recorded_variant(f, **_recorded(entry))))
    result = TaskSet(fam, tuple(tasks))
    if result.names != names:  # a task named as the run named it, for the heads
        raise UserError(f"the run's tasks {names} could not be rebuilt (got {result.names})")
    return result


def _recorded(entry: Mapping[str, Any]) -> dict[str, Any]:
    """``recorded_variant``'s arguments from a manifest's variant or target entry."""
    return {
        "name": entry.get("variant") or entry["name"],
        "params": entry["params"],
        "distance": entry.get("distance", "custom"),
        "shift": entry.get("shift"),
    }


def _family(manifest: Mapping[str, Any], name: str, override: str | Family | None) -> Family:
    """A family the run used: shipped by name, else the user's as the manifest defines and names it."""
    if override is not None:
        return resolve_family(override)
    if name in FAMILIES and name not in (manifest.get("family_definitions") or {}):
        return FAMILIES[name]
    definition = (manifest.get("family_definitions") or {}).get(name) or {}
    ref = definition.get("ref")
    if not ref:
        raise UserError(
            f"the run's family '{name}' is not shipped and its manifest names no module or file; pass family="
        )
    try:
        return resolve_family(ref)
    except UserError as e:
        found_in = definition.get("found_in")  # where the run found it: from another working directory
        if found_in and Path(found_in).is_dir():
            try:
                return resolve_family(ref, base=Path(found_in))
            except UserError:
                pass
        raise UserError(f"the run's family '{name}' ({ref}) cannot be loaded: {e}; pass family= (--family)") from None
