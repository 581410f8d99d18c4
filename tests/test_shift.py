"""Observation-shift variants: same dynamics, inputs shifted exactly as declared."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import rltransfer.envs  # noqa: F401 - registers the ids
from rltransfer.envs import FAMILIES, ObsShift, ObsShiftWrapper, get_family, make_multitask_vec_env

from rltransfer import pretrain
from rltransfer.checkpoint import load_checkpoint
from rltransfer.finetuning import rehearsal_task
from rltransfer.source_policy import source_eval_env, source_variant
from rltransfer.tasks import resolve_targets


def rollout(env: gym.Env, n: int = 20, seed: int = 0) -> np.ndarray:
    obs, _ = env.reset(seed=seed)
    out = [obs]
    env.action_space.seed(0)
    for _ in range(n):
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        out.append(obs)
        if term or trunc:
            break
    return np.asarray(out, dtype=np.float64)


@pytest.mark.parametrize("family", [f for f in FAMILIES.values() if f.available], ids=lambda f: f.name)
def test_every_family_offers_the_four_shifts(family: object) -> None:
    names = {v.name for v in family.shift_variants()}  # type: ignore[attr-defined]
    assert names == {"noisy", "scaled", "permuted", "delayed"}
    for name in names:
        assert family.env_id(name) in gym.registry  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["scaled", "permuted", "delayed"])
def test_deterministic_shifts_are_exact(name: str) -> None:
    cartpole = get_family("cartpole")
    base = rollout(cartpole.make("source"))
    shifted = rollout(gym.make(f"rltransfer/CartPole-{name}-v0"))
    assert shifted.shape == base.shape  # same dynamics: same episode length
    if name == "scaled":
        np.testing.assert_allclose(shifted, base * 2.0 + 0.5, rtol=1e-6)
    elif name == "permuted":
        wrapper = cartpole.make("permuted")
        perm = wrapper._perm if isinstance(wrapper, ObsShiftWrapper) else None
        assert perm is not None and sorted(perm) == [0, 1, 2, 3] and list(perm) != [0, 1, 2, 3]
        np.testing.assert_array_equal(shifted, base[:, perm])
    else:
        np.testing.assert_array_equal(shifted[1:], base[:-1])
        np.testing.assert_array_equal(shifted[0], base[0])


def test_noise_is_seeded_and_zero_mean() -> None:
    env = gym.make("rltransfer/CartPole-noisy-v0")
    a, b = rollout(env, seed=3), rollout(env, seed=3)
    np.testing.assert_array_equal(a, b)  # same seed, same noise
    base = rollout(get_family("cartpole").make("source"), seed=3)
    diff = (a - base).ravel()
    assert 0.05 < diff.std() < 0.15 and abs(diff.mean()) < 0.05


def test_invalid_shifts_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown observation shift"):
        ObsShift("blur")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="whole number"):
        ObsShift("delay", 0.5)
    with pytest.raises(ValueError, match="amount > 0"):
        ObsShift("noise", 0.0)


def test_multitask_env_applies_shifts_per_task() -> None:
    family = get_family("cartpole")
    plain = make_multitask_vec_env(family, ["source"], n_envs_per_task=2, seed=0).reset()
    shifted = make_multitask_vec_env(family, ["scaled"], n_envs_per_task=2, seed=0).reset()
    np.testing.assert_allclose(shifted["obs"], plain["obs"] * 2.0 + 0.5, rtol=1e-6)


def test_a_source_pretrained_on_a_shift_keeps_it_as_its_own_task(tmp_path: Path) -> None:
    """Forgetting, rehearsal, advice and distillation play the source's own task: for a source
    pretrained on ``permuted`` that is the permuted env (its manifest records name and values only)."""
    hp = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "n_envs": 1, "eval_freq": 64, "eval_episodes": 2}
    pretrain("cartpole", "permuted", seed=0, timesteps=64, hyperparams=hp, out=tmp_path / "src")
    family, ckpt = get_family("cartpole"), load_checkpoint(tmp_path / "src")
    own = source_variant(ckpt, family)
    assert own.shift == family.variant("permuted").shift and own.shift is not None
    assert ckpt.manifest is not None and ckpt.manifest["variant"]["shift"]["kind"] == "permute"
    del ckpt.manifest["variant"]["shift"]  # as written before shifts were recorded: found by name and values
    assert source_variant(ckpt, family).shift == own.shift

    def first_obs(variant: object) -> np.ndarray:
        env = source_eval_env(ckpt, family, variant, 2)  # type: ignore[arg-type]
        env.seed(5)
        return env.reset()

    assert np.array_equal(first_obs(own), first_obs(family.variant("permuted")))
    assert not np.array_equal(first_obs(own), first_obs(family.variant("source")))
    rehearsed = rehearsal_task(ckpt, resolve_targets(family, ["long"]))
    assert rehearsed.variant.name == "rehearsal" and rehearsed.variant.shift == own.shift
