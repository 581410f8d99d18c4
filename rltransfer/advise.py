"""Transferability advice before any training: zero-shot return, feature shift, a strategy per target.

For each target: the source policy's zero-shot return, normalised between a random policy's
return (0) and the family's threshold (1); the shift of the source trunk's features between
states of the source task and of the target (RBF MMD^2 with the pooled median bandwidth, so it
lies in [0, 2) whatever the feature scale; both samples collected by running the source policy);
and a recommendation from these two numbers. The predicted gain used to rank targets is the
zero-shot score clipped to [0, 1] (the head start a transferred policy gets) minus the feature
shift (how far the transferred features are from where they were learnt). The rules are
heuristics, stated in ``recommend``; ``rltransfer.advice_validation`` measures
how well the advice ranks realised transfer gains (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from rltransfer.checkpoint import Checkpoint, load_checkpoint
from rltransfer.compare import mmd_rbf
from rltransfer.envs import Family, Variant
from rltransfer.errors import UserError
from rltransfer.evaluation import evaluate_tasks
from rltransfer.resolve import comma_items, resolve_family, resolve_variant, split_target
from rltransfer.source_policy import load_source_model, runs_as_source_of, source_eval_env, source_variant


@dataclass
class Advice:
    target: str
    distance: str
    zero_shot_return: float
    random_return: float
    threshold: float
    zero_shot_score: float
    feature_mmd: float
    predicted_gain: float
    recommendation: str
    reason: str
    # The source policy on the task it trained on, normalised as ``zero_shot_score``.
    source_return: float = float("nan")
    source_random_return: float = float("nan")
    source_score: float = float("nan")

    @property
    def source_learnt(self) -> bool:
        """Whether the source beats a random policy on its own task (unknown, NaN: taken as yes)."""
        return beats_random(self.source_score)


# Feature shift (MMD^2, in [0, 2)) up to which frozen source features are advised for a weak
# source policy: a quarter of the range. Beyond it the features are far from where they were learnt.
FREEZE_MAX_SHIFT = 0.5
# Zero-shot scores within this distance of a random policy's count as "no better than random".
RANDOM_TOLERANCE = 0.05


def beats_random(score: float) -> bool:
    """Whether a normalised score is more than ``RANDOM_TOLERANCE`` above a random policy's (NaN: unknown, yes)."""
    return not score <= RANDOM_TOLERANCE


def predicted_gain(score: float, mmd: float) -> float:
    """Ranking score of a target: head start of the transferred policy minus the feature shift."""
    return min(max(score, 0.0), 1.0) - max(mmd, 0.0)


def recommend(score: float, mmd: float, source_learnt: bool = True) -> tuple[str, str]:
    """Heuristic strategy from the normalised zero-shot score and the feature shift (MMD^2).

    ``source_learnt`` is False for a source no better than random on its own task: its features
    shift little because they are an untrained network's, not because they suit the target.
    """
    if score >= 0.9:
        return "zero-shot", "the source policy already scores at least 90% of the way from random to the threshold"
    if score >= 0.3:
        return "finetune (transfer: heads)", "the source policy is partly competent: start from all of it"
    if not source_learnt:
        return (
            "scratch",
            "the source policy is no better than random on its own task: it has learnt nothing to transfer",
        )
    if mmd <= FREEZE_MAX_SHIFT:
        return "freeze", "the source features shift little on this target: train new heads on them"
    if beats_random(score):
        return "finetune", "features shift and the policy is weak: adapt the trunk, fresh heads"
    return "scratch", "features shift strongly and the source policy is no better than random"


def _features(model: Any, env: Any, samples: int, seed: int) -> np.ndarray:
    """Trunk features of states visited by the (stochastic) source policy."""
    env.seed(seed)
    obs = env.reset()
    rows: list[np.ndarray] = []
    # Own torch RNG stream: a target's advice must not depend on which targets came before it.
    with th.random.fork_rng(devices=[]):
        th.manual_seed(seed)
        while sum(len(r) for r in rows) < samples:
            actions, _ = model.predict(obs, deterministic=False)
            obs, _, _, _ = env.step(actions)
            with th.no_grad():
                tensor, _ = model.policy.obs_to_tensor(obs)
                rows.append(model.policy.extract_features(tensor).cpu().numpy())
    return np.concatenate(rows)[:samples]


def _random_return(env: Any, episodes: int, seed: int) -> float:
    env.seed(seed)
    env.reset()
    returns: list[float] = []
    current = np.zeros(env.num_envs)
    rng = np.random.default_rng(seed)
    env.action_space.seed(int(rng.integers(2**31)))
    while len(returns) < episodes:
        _, rewards, dones, _ = env.step(np.array([env.action_space.sample() for _ in range(env.num_envs)]))
        current += rewards
        returns += list(current[dones])
        current[dones] = 0.0
    return float(np.mean(returns[:episodes]))


def _own_variant(family: Family, target: str) -> str:
    """A target's variant name: ``long``, ``cartpole/long`` or ``rltransfer/CartPole-long-v0`` of ``family``;
    another family's is refused (zero-shot returns and feature shifts need the source's own spaces)."""
    other, name = split_target(target, family)
    if other.name != family.name:
        raise UserError(
            f"advise takes variants of the source's family '{family.name}'; '{target}' is of family '{other.name}' "
            "(zero-shot returns and feature shifts need the source's own spaces)"
        )
    return name


def advise(
    source: str | Path | Checkpoint,
    family: str | Family,
    targets: Sequence[str | Variant] | str,
    episodes: int = 10,
    samples: int = 1000,
    seed: int = 0,
) -> list[Advice]:
    """Advice per target for transferring ``source``: an rltransfer source checkpoint of ``family``, or
    a plain SB3 PPO zip with its spaces, taken to have trained on the family's source variant (a
    zip does not record its task); its trunk features are its actor's hidden layers, as transferred."""
    if episodes < 1 or samples < 2 or seed < 0:
        raise UserError(
            f"advise needs episodes >= 1, samples >= 2 (the feature shift compares two samples) and seed >= 0, "
            f"got episodes={episodes}, samples={samples}, seed={seed}"
        )
    ckpt = source if isinstance(source, Checkpoint) else load_checkpoint(source)
    fam = resolve_family(family)
    if not runs_as_source_of(ckpt, fam):
        raise UserError(_not_a_source(ckpt, fam))
    if isinstance(targets, str):  # one target, or several comma-separated as on the command line
        targets = comma_items(targets)
    variants = [t if isinstance(t, Variant) else resolve_variant(fam, _own_variant(fam, t)) for t in targets]
    model = load_source_model(ckpt, fam, seed)
    own = source_variant(ckpt, fam)
    source_return, source_random, source_score = _zero_shot(model, ckpt, fam, own, episodes, seed)
    with closing(source_eval_env(ckpt, fam, own, 8)) as src_env:
        src_feats = _features(model, src_env, samples, seed)
        src_feats_b = _features(model, src_env, samples, seed + 1)
    floor = max(mmd_rbf(src_feats, src_feats_b), 0.0)
    rows = []
    for v in variants:
        zero_shot, rand, score = _zero_shot(model, ckpt, fam, v, episodes, seed)
        with closing(source_eval_env(ckpt, fam, v, 8)) as env:
            feats = _features(model, env, samples, seed)
        rows.append((v, zero_shot, rand, score, mmd_rbf(src_feats, feats)))
    own_task = {"source_return": source_return, "source_random_return": source_random, "source_score": source_score}
    advice = []
    for v, zero_shot, rand, score, mmd in rows:
        # A shift within the source's own sampling noise is no shift.
        shift = mmd if mmd > 2.0 * floor else 0.0
        rec, why = recommend(score, shift, source_learnt=beats_random(source_score))
        gain = predicted_gain(score, shift)
        advice.append(
            Advice(v.name, v.distance, zero_shot, rand, fam.threshold, score, mmd, gain, rec, why, **own_task)
        )
    return advice


def _not_a_source(ckpt: Checkpoint, family: Family) -> str:
    """Why ``ckpt`` cannot be advised on as a source of ``family``, and what to do instead."""
    manifest = ckpt.manifest
    kind = None if manifest is None else manifest.get("kind")
    if kind in ("transfer", "scratch", "distilled"):
        # Its heads belong to its own tasks and only its trunk transfers, so no zero-shot head start.
        run = ckpt.path.parent
        what = "a distilled student" if kind == "distilled" else f"a {kind} run"
        teachers = [str(t.get("path")) for t in (manifest or {}).get("teachers", [])]
        upstream = ((manifest or {}).get("source") or {}).get("path")
        if teachers:
            instead = f"its teachers ({', '.join(teachers)})"
        elif upstream:
            instead = f"the source it was trained from ({upstream})"
        else:
            instead = "a pretrained source (`rltransfer pretrain`)"
        return (
            f"advise takes a single-task source policy; '{run}' is {what}, whose heads belong to its own tasks, "
            f"so only its trunk transfers; advise on {instead}, or play it on the targets with "
            f"`rltransfer evaluate {run} --targets ...` (each through its nearest task's head)"
        )
    why = (
        "a plain SB3 zip must be an MlpPolicy with the family's observation and action spaces"
        if manifest is None
        else f"'{ckpt.path}' is a source of family '{manifest.get('family')}'"
    )
    return (
        f"advise needs a source checkpoint pretrained by rltransfer on the '{family.name}' family, or a plain "
        f"SB3 PPO zip of one of its tasks ({why})"
    )


def _zero_shot(
    model: Any, ckpt: Checkpoint, family: Family, variant: Variant, episodes: int, seed: int
) -> tuple[float, float, float]:
    """The source policy's mean return on ``variant``, a random policy's, and the first normalised
    between the second (0) and the family's threshold (1)."""
    with closing(source_eval_env(ckpt, family, variant, episodes)) as env:
        returned = evaluate_tasks(model, {variant.name: env}, episodes, seed)[variant.name][0]
        rand = _random_return(env, episodes, seed)
    score = (returned - rand) / (family.threshold - rand) if family.threshold != rand else 0.0
    return returned, rand, score


def to_json(advice: Sequence[Advice]) -> list[dict[str, Any]]:
    return [asdict(a) for a in advice]
