"""Where a lean update minibatch and a lean rollout step spend their time, part by part (issue 6).

Profilers mislead at this scale (cProfile inflates small calls; a tight loop over one operation
runs with warm caches the training loop does not have), so each part is timed with perf
counters *inside* the real loop:

* ``update``: one lean ``train()`` at a time from the same filled buffer (``lean_options``'s
  configurations), the hand-written step's forward pass, loss and backward pass, the
  gradient clipping and Adam step, and the minibatch selection timed separately; the rest
  is the loop itself. Microseconds per minibatch, summed over ``--repeats`` updates.
* ``rollout``: ``TransferPPO``'s lean rollout step written out part by part on
  ``batched_envs``'s 4-task, 64-env CartPole (or ``--family``): observation to tensor, the
  policy step (``lean_sampler``), the env step, SB3's info buffer and rollout-buffer ``add``.
  Medians over the steps of ``--repeats`` rollouts of 32 steps. A whole ``collect_rollouts``
  step costs more than their sum: callbacks, the loop, the returns computed once per rollout.

    python benchmarks/step_parts.py update [--configs acrobot] [--repeats 10] [--before]
    python benchmarks/step_parts.py rollout [--family cartpole] [--repeats 20]
"""

from __future__ import annotations

import argparse
import collections
import copy
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch as th
from batched_envs import build
from lean_options import CONFIGS
from rltransfer.policies import MultiTaskActorCriticPolicy
from sidebyside import fill_buffer, machine, minibatches_per_update
from stable_baselines3.common.utils import obs_as_tensor

from rltransfer import lean
from rltransfer.adam_step import FusedAdamStepper
from rltransfer.lean_rollout import lean_sampler
from rltransfer.ppo import TransferPPO


def _timed(totals: dict[str, float], key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - started

    return run


def update_parts(name: str, repeats: int, before: bool = False) -> dict[str, float]:
    """Microseconds per minibatch of each part of a lean ``train()`` (and the whole).

    ``before``: ``flat_step`` and ``numpy_loss`` off (the update before the thirteenth session).
    """
    model = fill_buffer(CONFIGS[name]())
    model.flat_step = model.numpy_loss = not before
    totals: dict[str, float] = collections.defaultdict(float)
    step = lean._hand_written_step

    def hand_written_step(program: Any, loss: Any, log_std: Any, obs: Any, batch: Any, coefs: Any, layout: Any) -> Any:
        """``lean._hand_written_step`` with its three parts timed."""
        with th.no_grad():
            out, values, cache = _timed(totals, "forward", program.forward)(obs, layout)
            result = _timed(totals, "loss", loss)(out, values, cache, batch, coefs)

        def backward() -> None:
            with th.no_grad():
                program.backward(cache, result.grad_logits, result.grad_values)
                if log_std is not None and log_std.requires_grad and result.grad_log_std is not None:
                    lean.accumulate(log_std, result.grad_log_std)

        return result, _timed(totals, "backward", backward)

    def minibatches(self: Any, *args: Any) -> Iterator[Any]:
        batches = original_minibatches(self, *args)
        while True:
            started = time.perf_counter()
            item = next(batches, None)
            totals["selection"] += time.perf_counter() - started
            if item is None:
                return
            yield item

    original_minibatches = lean.FlatRollout.minibatches
    original_clip = FusedAdamStepper.clip_and_step
    lean._hand_written_step = hand_written_step  # type: ignore[assignment]
    lean.FlatRollout.minibatches = minibatches  # type: ignore[method-assign]
    FusedAdamStepper.clip_and_step = _timed(totals, "clip + Adam", original_clip)  # type: ignore[method-assign]
    try:
        buffer = copy.deepcopy(model.rollout_buffer)
        for _ in range(repeats):
            model.rollout_buffer = copy.deepcopy(buffer)
            _timed(totals, "whole train()", model.train)()
    finally:
        lean._hand_written_step = step
        lean.FlatRollout.minibatches = original_minibatches  # type: ignore[method-assign]
        FusedAdamStepper.clip_and_step = original_clip  # type: ignore[method-assign]
    n = repeats * minibatches_per_update(model)
    parts = {key: value / n * 1e6 for key, value in totals.items()}
    parts["the loop itself"] = parts["whole train()"] - sum(v for k, v in parts.items() if k != "whole train()")
    return parts


def rollout_parts(family: str, repeats: int) -> dict[str, float]:
    """Median microseconds of each part of a lean rollout step (64 envs, 4 tasks)."""
    env = build(family, batched=True)
    model = TransferPPO(MultiTaskActorCriticPolicy, env, n_steps=32, batch_size=256, seed=0, device="cpu")
    model.learn(32 * env.num_envs)  # set-up and a first update
    sampler = lean_sampler(model.policy, model.numpy_tanh, model.numpy_rollouts)
    assert sampler is not None
    buffer, obs, starts = model.rollout_buffer, model._last_obs, model._last_episode_starts
    times: dict[str, list[float]] = collections.defaultdict(list)
    clock = time.perf_counter
    for _ in range(repeats):
        buffer.reset()
        for _ in range(model.n_steps):
            t0 = clock()
            obs_tensor = obs_as_tensor(obs, model.device)  # type: ignore[arg-type]
            t1 = clock()
            with th.no_grad():
                actions, values, log_probs = sampler(obs_tensor)
            t2 = clock()
            new_obs, rewards, dones, infos = env.step(actions.numpy())
            t3 = clock()
            model._update_info_buffer(infos, dones)
            t4 = clock()
            buffer.add(obs, actions.numpy().reshape(-1, 1), rewards, starts, values, log_probs)  # type: ignore[arg-type]
            t5 = clock()
            obs, starts = new_obs, dones
            for key, (a, b) in {
                "observation to tensor": (t0, t1),
                "policy step (numpy network, draw)": (t1, t2),
                "env step (batched)": (t2, t3),
                "info buffer": (t3, t4),
                "rollout buffer add": (t4, t5),
            }.items():
                times[key].append((b - a) * 1e6)
    return {key: statistics.median(values) for key, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["update", "rollout"])
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["acrobot"], help="update's")
    parser.add_argument("--family", default="cartpole", help="rollout's (a batched family)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--before", action="store_true", help="update: flat_step and numpy_loss off")
    args = parser.parse_args()
    th.set_num_threads(1)
    print(f"machine: {machine()}")
    runs = (
        {name: update_parts(name, args.repeats, args.before) for name in args.configs}
        if args.what == "update"
        else {args.family: rollout_parts(args.family, args.repeats)}
    )
    unit = "us per minibatch" if args.what == "update" else "us per 64-env step (median)"
    for name, parts in runs.items():
        print(f"\n{args.what} parts, {name} ({unit}):")
        print("| part | us |\n| --- | --- |")
        for key, value in parts.items():
            print(f"| {key} | {value:,.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
