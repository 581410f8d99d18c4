"""Shared helpers of the benchmark scripts: the machine's name, side-by-side (alternating) timing, a filled buffer."""

from __future__ import annotations

import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from stable_baselines3.common.callbacks import CallbackList

K = TypeVar("K", bound=Hashable)


def machine() -> str:
    """CPU model and core count, e.g. ``AMD EPYC, 2 cores``."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def module_at(rev: str, path: str, where: Path) -> ModuleType:
    """The module at ``path`` (``rltransfer/distill.py``) as of git revision ``rev``, imported under
    its own name (``distill_at_<rev>``) beside today's; its imports resolve to today's package."""
    repo = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, check=True, capture_output=True, text=True)
    name = f"{Path(path).stem}_at_{rev}"
    file = where / f"{name}.py"
    file.write_text(source.stdout)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def alternate(arms: dict[K, Callable[[], float]], repeats: int) -> dict[K, list[float]]:
    """Every arm once per round, in alternating order (A B, B A, ...); each arm's results by round."""
    results: dict[K, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            results[name].append(arms[name]())
    return results


def paired_ratio(results: dict[K, list[float]], arm: K, base: K) -> float:
    """Median over rounds of ``arm / base`` measured in the same round."""
    return statistics.median(a / b for a, b in zip(results[arm], results[base], strict=True))


def minibatches_per_update(model: Any) -> int:
    """Minibatches of one ``train()``: ``n_epochs`` passes over the rollout, the last minibatch of each maybe short."""
    return int(model.n_epochs * -(-model.n_steps * model.n_envs // model.batch_size))


def fill_buffer(model: Any) -> Any:
    """``model`` after two updates, with a freshly collected rollout in its buffer (ready for ``train()``)."""
    model.learn(2 * model.n_steps * model.n_envs)
    total, callback = model._setup_learn(100_000, CallbackList([]), reset_num_timesteps=False)
    callback.on_training_start(locals(), globals())
    model._update_current_progress_remaining(model.num_timesteps, total)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    return model


def learn_iterations(model: Any, total_timesteps: int, callbacks: Sequence[Any] = ()) -> Callable[[], float]:
    """One iteration of ``model.learn(total_timesteps)`` per call (rollout, log dump, update): env steps/s.

    Arms measured iteration by iteration (tens of milliseconds each) see the same machine state,
    where whole runs seconds apart may not (a shared or throttled machine drifts).
    """
    total, callback = model._setup_learn(total_timesteps, CallbackList(list(callbacks)))
    callback.on_training_start(locals(), globals())
    iteration = 0

    def run() -> float:
        nonlocal iteration
        started = time.perf_counter()
        before = model.num_timesteps
        if not model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps):
            raise RuntimeError("a callback stopped the rollout")
        iteration += 1
        model._update_current_progress_remaining(model.num_timesteps, total)
        model.dump_logs(iteration)
        model.train()
        return (model.num_timesteps - before) / (time.perf_counter() - started)

    return run
