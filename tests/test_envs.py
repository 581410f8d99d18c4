"""Environment families: registration, Gymnasium compliance, parameters that really change dynamics."""

from __future__ import annotations

import math
import re
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import rltransfer.envs
from gymnasium.utils.env_checker import check_env
from rltransfer.envs import FAMILIES, Family, get_family, make_multitask_vec_env

ENV_IDS = sorted(i for i in gym.registry if i.startswith("rltransfer/"))
FAMILY_PARAMS = [(f.name, p.name) for f in FAMILIES.values() for p in f.params]


def _other_value(family: Family, name: str) -> float:
    """A valid non-default value: midway between the default and the farther bound."""
    p = family.param(name)
    bound = p.high if p.high - p.default >= p.default - p.low else p.low
    return (p.default + bound) / 2


def _rollout(env: gym.Env, n_steps: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Observations and rewards for a fixed seed and a fixed (seeded random) action sequence."""
    rng = np.random.default_rng(123)
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        actions: list[Any] = [int(a) for a in rng.integers(space.n, size=n_steps)]
    else:
        assert isinstance(space, gym.spaces.Box)
        actions = [rng.uniform(space.low, space.high).astype(space.dtype) for _ in range(n_steps)]
    obs, _ = env.reset(seed=seed)
    observations, rewards = [np.asarray(obs, dtype=np.float64)], []
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(np.asarray(obs, dtype=np.float64))
        rewards.append(float(reward))
        if terminated or truncated:
            break
    env.close()
    return np.stack(observations), np.asarray(rewards)


def test_ids_are_collected() -> None:
    assert len(ENV_IDS) >= sum(len(f.variants) for f in FAMILIES.values())
    assert rltransfer.envs.FAMILIES is FAMILIES


# Gymnasium's own advice on Pendulum's action bounds and CartPole's infinite observation bounds.
@pytest.mark.filterwarnings("ignore:.*(For Box action spaces|A Box observation space):UserWarning")
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_on_every_registered_id(env_id: str) -> None:
    env = gym.make(env_id)
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_registered_id_has_family_time_limit(env_id: str) -> None:
    title = env_id.split("/")[1].split("-")[0]
    family = next(f for f in FAMILIES.values() if f.title == title)
    env = gym.make(env_id)
    assert env.spec is not None
    assert env.spec.max_episode_steps == family.max_episode_steps
    env.close()


@pytest.mark.parametrize(("family_name", "param"), FAMILY_PARAMS)
def test_every_parameter_changes_a_rollout(family_name: str, param: str) -> None:
    family = FAMILIES[family_name]
    value = _other_value(family, param)
    assert value != family.param(param).default
    obs_default, rew_default = _rollout(family.make("source"))
    obs_changed, rew_changed = _rollout(family.make(family.custom("probe", {param: value})))
    if family.extra is None:  # LunarLander's reset already steps its physics
        assert obs_default[0].tolist() == obs_changed[0].tolist(), "same seed must give the same start state"
    same_obs = obs_default.shape == obs_changed.shape and np.array_equal(obs_default, obs_changed)
    same_rew = rew_default.shape == rew_changed.shape and np.array_equal(rew_default, rew_changed)
    assert not (same_obs and same_rew), f"{family_name}.{param}={value} left a 30-step rollout unchanged"


@pytest.mark.parametrize(("family_name", "param"), FAMILY_PARAMS)
def test_default_parameters_reproduce_the_rollout(family_name: str, param: str) -> None:
    family = FAMILIES[family_name]
    default = family.param(param).default
    obs_a, rew_a = _rollout(family.make("source"))
    obs_b, rew_b = _rollout(family.make(family.custom("probe", {param: default})))
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)


@pytest.mark.parametrize(("family_name", "param"), FAMILY_PARAMS)
@pytest.mark.parametrize("side", ["low", "high"])
def test_out_of_bounds_values_raise(family_name: str, param: str, side: str) -> None:
    family = FAMILIES[family_name]
    p = family.param(param)
    span = p.high - p.low
    bad = p.low - 0.1 * span if side == "low" else p.high + 0.1 * span
    expected = re.escape(f"[{p.low}, {p.high}]")
    with pytest.raises(ValueError, match=expected) as info:
        family.resolve({param: bad})
    assert param in str(info.value)
    with pytest.raises(ValueError, match=expected):
        family.custom("bad", {param: bad})
    with pytest.raises(ValueError, match=expected):
        gym.make(family.env_id("source"), **{param: bad})


@pytest.mark.parametrize("family_name", list(FAMILIES))
@pytest.mark.parametrize("bad", [math.nan, math.inf, "abc", None])
def test_non_numeric_or_non_finite_values_raise(family_name: str, bad: Any) -> None:
    family = FAMILIES[family_name]
    p = family.params[0]
    with pytest.raises(ValueError, match=p.name) as info:
        family.resolve({p.name: bad})
    assert f"[{p.low}, {p.high}]" in str(info.value)


@pytest.mark.parametrize("family_name", list(FAMILIES))
def test_bounds_themselves_are_valid(family_name: str) -> None:
    family = FAMILIES[family_name]
    for p in family.params:
        assert p.low <= p.default <= p.high
        assert family.resolve({p.name: p.low})[p.name] == p.low
        assert family.resolve({p.name: p.high})[p.name] == p.high


@pytest.mark.parametrize("family_name", list(FAMILIES))
def test_unknown_parameter_raises(family_name: str) -> None:
    family = FAMILIES[family_name]
    with pytest.raises(ValueError, match="no parameter 'nope'") as info:
        family.resolve({"nope": 1.0})
    for p in family.params:  # the message lists the valid names
        assert p.name in str(info.value)
    with pytest.raises(ValueError, match="nope"):
        family.custom("x", {"nope": 1.0})
    with pytest.raises(ValueError, match="nope"):
        family.param("nope")


def test_unknown_variant_and_family_raise() -> None:
    family = get_family("cartpole")
    with pytest.raises(ValueError, match=r"no variant 'nope'.*long"):
        family.variant("nope")
    with pytest.raises(ValueError, match=r"unknown family 'nope'.*cartpole"):
        get_family("nope")
    assert get_family("CartPole") is family


def test_custom_variant_by_parameter_values() -> None:
    family = get_family("cartpole")
    variant = family.custom("mine", {"length": 0.8, "masscart": 1.5})
    assert variant.distance == "custom"
    assert dict(variant.params) == {"length": 0.8, "masscart": 1.5}
    env = family.make(variant)
    cart = env.unwrapped
    assert (cart.length, cart.masscart, cart.masspole) == (0.8, 1.5, 0.1)
    # Derived quantities CartPole caches in __init__ follow the parameters.
    assert cart.total_mass == pytest.approx(1.6)
    assert cart.polemass_length == pytest.approx(0.08)
    env.close()
    with pytest.raises(ValueError, match="already exists"):
        family.custom("long", {"length": 0.8})


def test_registered_long_variant_has_its_length() -> None:
    env = gym.make("rltransfer/CartPole-long-v0")
    assert env.unwrapped.length == 0.75
    assert env.unwrapped.polemass_length == pytest.approx(0.1 * 0.75)
    env.close()


def test_gym_make_kwargs_override() -> None:
    env = gym.make("rltransfer/CartPole-long-v0", masspole=0.3)
    cart = env.unwrapped
    assert (cart.length, cart.masspole) == (0.75, 0.3)
    assert cart.total_mass == pytest.approx(1.3)
    assert cart.polemass_length == pytest.approx(0.225)
    env.close()
    env = gym.make("rltransfer/CartPole-long-v0", length=1.2)
    assert env.unwrapped.length == 1.2
    env.close()
    env = gym.make("rltransfer/Pendulum-source-v0", g=12.0, m=1.5, l=0.5)
    pend = env.unwrapped
    assert (pend.g, pend.m, pend.l) == (12.0, 1.5, 0.5)
    env.close()


@pytest.mark.parametrize("family_name", list(FAMILIES))
def test_held_out_variants_are_registered_and_inside_their_band(family_name: str) -> None:
    family = FAMILIES[family_name]
    held_out = family.held_out_variants()
    assert held_out, f"{family_name} has no held-out variants"
    target_names = {v.name for v in family.variants}
    for v in held_out:
        assert v.distance == "held-out"
        assert v.name not in target_names
        assert family.env_id(v) in gym.registry
        assert family.variant(v.name) == v
        for key, value in v.params.items():
            lo, hi = family.held_out[key]
            assert lo <= value <= hi
        env = gym.make(family.env_id(v))
        env.reset(seed=0)
        env.close()


@pytest.mark.parametrize("family_name", list(FAMILIES))
def test_family_has_one_source_and_graded_targets(family_name: str) -> None:
    family = FAMILIES[family_name]
    assert [v.distance for v in family.variants].count("source") == 1
    assert family.source.params == {}
    assert len(family.targets) >= 3
    distances = {v.distance for v in family.targets}
    assert {"near", "far"} <= distances
    names = [v.name for v in family.variants]
    assert len(names) == len(set(names))
    for v in family.variants:
        assert family.env_id(v) in gym.registry
        family.resolve(v.params)  # every variant is inside the declared bounds
    # No target sits inside the held-out band.
    for v in family.targets:
        inside = [k for k, (lo, hi) in family.held_out.items() if k in v.params and lo <= v.params[k] <= hi]
        assert not inside, f"target {v.name} lies in the held-out band of {inside}"


def test_multitask_vec_env_tags_tasks_in_task_major_order() -> None:
    family = get_family("cartpole")
    vec_env = make_multitask_vec_env(family, ["long", "heavy", "longer"], n_envs_per_task=2, seed=0)
    try:
        space = vec_env.observation_space
        assert isinstance(space, gym.spaces.Dict)
        assert set(space.spaces) == {"obs", "task_id"}
        assert space["task_id"] == gym.spaces.Discrete(3)
        assert space["obs"].shape == (4,)
        assert vec_env.num_envs == 6
        assert vec_env.task_names == ["long", "heavy", "longer"]
        np.testing.assert_array_equal(vec_env.env_task_ids, [0, 0, 1, 1, 2, 2])
        obs = vec_env.reset()
        assert obs["obs"].shape == (6, 4)
        np.testing.assert_array_equal(obs["task_id"].reshape(-1), [0, 0, 1, 1, 2, 2])
        lengths = [e.unwrapped.length for e in vec_env.envs]
        masspoles = [e.unwrapped.masspole for e in vec_env.envs]
        assert lengths == [0.75, 0.75, 0.5, 0.5, 1.0, 1.0]
        assert masspoles == [0.1, 0.1, 0.5, 0.5, 0.1, 0.1]
        for _ in range(40):  # through episode ends and auto-resets
            obs, _, _, _ = vec_env.step(np.zeros(6, dtype=np.int64))
            np.testing.assert_array_equal(obs["task_id"].reshape(-1), [0, 0, 1, 1, 2, 2])
    finally:
        vec_env.close()


def test_multitask_vec_env_rejects_bad_task_lists() -> None:
    family = get_family("cartpole")
    with pytest.raises(ValueError, match="at least one"):
        make_multitask_vec_env(family, [])
    with pytest.raises(ValueError, match="distinct"):
        make_multitask_vec_env(family, ["long", "long"])
    with pytest.raises(ValueError, match="n_envs_per_task"):
        make_multitask_vec_env(family, ["long"], n_envs_per_task=0)


def test_multitask_vec_env_seed_is_reproducible() -> None:
    family = get_family("pendulum")
    a = make_multitask_vec_env(family, ["g12", "m1.5"], n_envs_per_task=2, seed=3)
    b = make_multitask_vec_env(family, ["g12", "m1.5"], n_envs_per_task=2, seed=3)
    np.testing.assert_array_equal(a.reset()["obs"], b.reset()["obs"])
    np.testing.assert_array_equal(a.env_task_ids, [0, 0, 1, 1])
    a.close()
    b.close()


@pytest.fixture(autouse=True)
def _skip_missing_extras(request: pytest.FixtureRequest) -> None:
    """Families of extras (box2d, mujoco) are registered always but need their simulator to run."""
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    name = params.get("family_name")
    if name is None and "env_id" in params:
        title = params["env_id"].split("/")[1].split("-")[0]
        name = next(f.name for f in FAMILIES.values() if f.title == title)
    if name is not None and not FAMILIES[name].available:
        pytest.skip(f"needs the {FAMILIES[name].extra} extra")
