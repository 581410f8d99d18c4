"""Observation-shift variants: same dynamics, inputs shifted exactly as declared."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import rltransfer.envs  # noqa: F401 - registers the ids
from rltransfer.envs import FAMILIES, ObsShift, ObsShiftWrapper, get_family, make_multitask_vec_env


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
