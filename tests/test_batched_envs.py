"""Batched family envs reproduce DummyVecEnv over the single-env classes exactly."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from rltransfer.envs import get_family
from rltransfer.envs.batched import BatchedFamilyVecEnv, batched_class, make_batched_vec_env, scalar_square
from rltransfer.envs.multitask import make_eval_env, make_multitask_vec_env, make_task_vec_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from rltransfer.ppo import TransferPPO

# Steps per family: enough for terminations and time-limit truncations in both halves of the envs.
STEPS = {"cartpole": 1100, "acrobot": 1100, "mountaincar": 450, "pendulum": 420, "mountaincarcontinuous": 2100}


def scripted_actions(family: str, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Even sub-envs follow a controller (long episodes or goal reached), odd ones act at random."""
    n = obs.shape[0]
    if family == "pendulum":  # beyond the torque bound, so clipping is exercised too
        return rng.uniform(-3.0, 3.0, size=(n, 1)).astype(np.float32)
    if family == "mountaincarcontinuous":  # even: full power along the velocity (reaches the goal)
        push = np.where(obs[:, 1:2] >= 0, 1.0, -1.0)
        random = rng.uniform(-1.5, 1.5, size=(n, 1))  # beyond the bounds: the force clips
        return np.where(np.arange(n)[:, None] % 2 == 0, push, random).astype(np.float32)
    if family == "cartpole":
        control = obs[:, 2] + 0.5 * obs[:, 3] + 0.01 * obs[:, 0] + 0.1 * obs[:, 1] > 0
    elif family == "acrobot":  # pumps energy: swings up within ~100 steps
        control = np.where(obs[:, 5] > 0, 2, 0)
    else:  # mountaincar: push along the velocity, reaches the goal
        control = np.where(obs[:, 1] >= 0, 2, 0)
    random = rng.integers(0, 3 if family != "cartpole" else 2, size=n)
    return np.where(np.arange(n) % 2 == 0, control, random).astype(np.int64)


def assert_same_obs(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b)
        for key in a:
            assert_same_obs(a[key], b[key])
    else:
        assert type(a) is type(b) or (isinstance(a, np.ndarray) and isinstance(b, np.ndarray))
        np.testing.assert_array_equal(a, b, strict=True)


def assert_same_infos(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    for x, y in zip(a, b, strict=True):
        assert set(x) == set(y)
        assert x["TimeLimit.truncated"] is y["TimeLimit.truncated"]
        if "episode" in x:
            assert set(x["episode"]) == {"r", "l", "t"} == set(y["episode"])
            assert (x["episode"]["r"], x["episode"]["l"]) == (y["episode"]["r"], y["episode"]["l"])
        if "terminal_observation" in x:
            assert_same_obs(x["terminal_observation"], y["terminal_observation"])


def run_side_by_side(family: str, reference: VecEnv, batched: VecEnv, steps: int, key: str | None) -> dict[str, int]:
    """Step both envs with the same actions; every output must be identical. Returns episode-end counts."""

    def plain(obs: Any) -> Any:
        return dict(obs) if key else obs  # DummyVecEnv returns an OrderedDict

    rng = np.random.default_rng(0)
    obs = batched.reset()
    assert_same_obs(plain(reference.reset()), obs)
    counts = {"terminated": 0, "truncated": 0}
    for t in range(steps):
        if t == steps // 2:  # re-seeding mid-run takes effect at the next reset, as in DummyVecEnv
            reference.seed(123)
            batched.seed(123)
            obs = batched.reset()
            assert_same_obs(plain(reference.reset()), obs)
        actions = scripted_actions(family, obs[key] if key else obs, rng)  # type: ignore[index, call-overload]
        obs_ref, rew_ref, done_ref, info_ref = reference.step(actions)
        obs, rew, done, infos = batched.step(actions)
        assert_same_obs(plain(obs_ref), obs)
        np.testing.assert_array_equal(rew_ref, rew, strict=True)
        np.testing.assert_array_equal(done_ref, done, strict=True)
        assert_same_infos(info_ref, infos)
        for info in infos:
            if "episode" in info:
                counts["truncated" if info["TimeLimit.truncated"] else "terminated"] += 1
    return counts


@pytest.mark.parametrize("family", list(STEPS))
def test_multitask_batched_matches_dummy_vec_env(family: str) -> None:
    fam = get_family(family)
    variants = [v.name for v in fam.variants]
    reference = make_multitask_vec_env(fam, variants, n_envs_per_task=2, seed=7, batched=False)
    batched = make_multitask_vec_env(fam, variants, n_envs_per_task=2, seed=7)
    assert isinstance(batched, BatchedFamilyVecEnv) and isinstance(reference, DummyVecEnv)
    assert batched.observation_space == reference.observation_space
    assert batched.action_space == reference.action_space
    np.testing.assert_array_equal(batched.env_task_ids, reference.env_task_ids)  # type: ignore[attr-defined]
    counts = run_side_by_side(family, reference, batched, STEPS[family], "obs")
    assert counts["truncated"] > 0
    if family != "pendulum":  # Pendulum never terminates
        assert counts["terminated"] > 0


@pytest.mark.parametrize("family", ["cartpole", "acrobot"])
def test_single_task_batched_matches_make_vec_env(family: str) -> None:
    fam = get_family(family)
    variant = fam.targets[0]
    reference = make_vec_env(lambda: fam.make(variant), n_envs=4, seed=3)
    batched = make_task_vec_env(fam, variant, 4, seed=3)
    assert batched.observation_space == reference.observation_space
    run_side_by_side(family, reference, batched, 300, None)


def test_eval_env_is_batched_and_tagged() -> None:
    fam = get_family("pendulum")
    env = make_eval_env(fam, "g12", 3, task_id=1, n_tasks=4)
    reference = make_eval_env(fam, "g12", 3, task_id=1, n_tasks=4, batched=False)
    assert isinstance(env, BatchedFamilyVecEnv) and env.observation_space == reference.observation_space
    env.seed(5)
    reference.seed(5)
    assert_same_obs(dict(reference.reset()), env.reset())
    assert env.env_is_wrapped(Monitor) == [True] * 3 and env.env_is_wrapped(gym.Wrapper) == [True] * 3


def test_ppo_learns_identically_on_batched_and_dummy(tiny: dict[str, Any]) -> None:
    """End to end: same seed, same rollouts, same updates, same weights and episode statistics."""
    fam = get_family("cartpole")
    models = []
    for batched in (False, True):
        env = make_multitask_vec_env(fam, ["long", "heavy"], n_envs_per_task=4, seed=0, batched=batched)
        model = TransferPPO("MultiInputPolicy", env, seed=0, n_steps=32, batch_size=64, n_epochs=2, device="cpu")
        model.learn(512)
        models.append(model)
    for (name, a), (_, b) in zip(
        models[0].policy.state_dict().items(), models[1].policy.state_dict().items(), strict=True
    ):
        assert th.equal(a, b), name
    strip = [[(e["r"], e["l"]) for e in m.ep_info_buffer] for m in models]
    assert strip[0] == strip[1] and strip[0]


def test_per_env_parameters_and_attribute_api() -> None:
    fam = get_family("cartpole")
    env = make_multitask_vec_env(fam, ["long", "heavy", "longer"], n_envs_per_task=2)
    assert env.get_attr("length") == [0.75, 0.75, 0.5, 0.5, 1.0, 1.0]
    assert env.get_attr("total_mass", indices=[2]) == [pytest.approx(2.5)]
    with pytest.raises(AttributeError, match="fixed at construction"):
        env.set_attr("length", 2.0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(6, dtype=np.int64))
    env.reset()
    with pytest.raises(ValueError, match="outside"):
        env.step(np.full(6, 2, dtype=np.int64))
    with pytest.raises(ValueError, match="integers"):
        env.step(np.zeros(6, dtype=np.float32))


def test_make_batched_rejects_families_without_one() -> None:
    fam = get_family("cartpole")
    other = type(fam)(**{**fam.__dict__, "entry_point": "gymnasium.envs.classic_control.cartpole:CartPoleEnv"})
    assert batched_class(other) is None
    with pytest.raises(ValueError, match="no batched environment"):
        make_batched_vec_env(other, [fam.source])
    assert isinstance(make_multitask_vec_env(other, ["long"]), DummyVecEnv)  # falls back
    with pytest.raises(ValueError, match="observation-shift"):
        make_batched_vec_env(fam, [fam.variant("noisy")])
    assert isinstance(make_multitask_vec_env(fam, ["long", "noisy"]), DummyVecEnv)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scalar_square_matches_numpy_scalar_power(dtype: type) -> None:
    x = np.random.default_rng(0).uniform(-50, 50, 20_000).astype(dtype)
    expected = np.array([v**2 for v in x], dtype=dtype)
    np.testing.assert_array_equal(scalar_square(x), expected, strict=True)


def _landing_on_the_goal(env: Any, action: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A float32 state from which one step lands within an ulp or two of 0.45's float32 rounding."""
    target = np.float32(0.45) + np.float32(rng.integers(-2, 3)) * np.spacing(np.float32(0.45))
    velocity = np.float32(rng.uniform(0.0, 0.02))
    position = target
    for _ in range(6):  # the step's velocity barely depends on the position: a fixed point
        env.state = np.array([position, velocity], dtype=np.float32)
        new_velocity = env.step(action)[0][1]
        position = np.float32(target - new_velocity)
    return np.array([position, velocity], dtype=np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mountaincarcontinuous_step_matches_at_the_precision_edges(dtype: type) -> None:
    """One step from crafted states (both precisions of the single env's state, values a few ulps
    from every bound it compares against, steps that land on the goal's float32 rounding) equals
    ``Continuous_MountainCarEnv.step`` bit for bit."""
    from rltransfer.envs.batched import BatchedMountainCarContinuous

    rng = np.random.default_rng(1)
    n, f32 = 4000, np.float32

    def near(value: float, size: int) -> np.ndarray:
        ulps = rng.integers(-3, 4, size).astype(f32)
        return (f32(value) + ulps * np.spacing(f32(value))).astype(np.float64)

    position = np.concatenate(
        [near(0.45, n // 4), near(-1.2, n // 4), near(0.6, n // 4), rng.uniform(-1.2, 0.6, n // 4)]
    )
    velocity = rng.permutation(
        np.concatenate([rng.uniform(-1e-6, 1e-6, n // 2), near(0.07, n // 4), -near(0.07, n // 4)])
    )
    fresh = rng.random(n) < 0.5  # reset's float64 state; otherwise a step's float32 one
    position = np.where(fresh, position + rng.uniform(-1e-9, 1e-9, n), position.astype(f32))
    velocity = np.where(fresh, velocity, velocity.astype(f32))  # a step's state holds float32 values
    actions = rng.uniform(-1.3, 1.3, (n, 1)).astype(dtype)
    actions[: n // 8] = 0.0  # no engine: only the hill moves the car
    power = rng.choice([0.0009, 0.0015, 0.004], n)
    env = BatchedMountainCarContinuous([{"power": p} for p in power], max_episode_steps=999)
    landing = np.arange(n - n // 8, n)  # the last eighth: float32 states one step short of the goal
    fresh[landing] = False
    for i in landing:
        position[i], velocity[i] = _landing_on_the_goal(env.envs[i].unwrapped, actions[i], rng)
    env.state = np.stack((position, velocity), axis=1)
    env._elapsed = np.where(fresh, 0, 5)
    state, rewards, terminated = env._dynamics(env._check_actions(actions))
    for i in range(n):
        single = env.envs[i].unwrapped
        single.state = np.array([position[i], velocity[i]], dtype=np.float64 if fresh[i] else np.float32)
        obs, reward, term, _, _ = single.step(actions[i])
        np.testing.assert_array_equal(state[i].astype(np.float32), obs, strict=True, err_msg=f"row {i}")
        assert (rewards[i], terminated[i]) == (reward, term), i
    on_goal = state[landing, 0].astype(f32) == f32(0.45)
    assert on_goal.sum() >= 50 and terminated[landing][on_goal].any()  # the case float64 would miss
