"""Mid-run snapshots: a killed training run resumes where its last snapshot left it, with the same numbers.

A snapshot is taken at the top of ``collect_rollouts`` (``TransferPPO.rollout_hook``), between
two PPO iterations, when ``every_s`` seconds have passed since the last one. It holds all that
the rest of the run depends on: weights and Adam moments, which parameters train, the step
and update counters, the environments' episodes in progress (``rltransfer.env_state``), the
torch / numpy / ``random`` generators, the callbacks' state (evaluation curve so far, rollout
statistics, gradual unfreezing, the domain classifier), the logger's pending values and the
CSV log written so far. It lives in the run's staging directory (``snapshot.pt``, written
atomically), so a finished run never contains one; a resumed run continues it there.

Resumed on the CPU, a run gives bit-identical curves, weights and logs to one never stopped,
where its environments' episodes can be saved (the classic-control families, batched or
not, Gymnasium's MuJoCo envs, and any env that pickles as itself). Box2D envs (LunarLander)
cannot be: a run of theirs resumes with new episodes, and its manifest says so (``resumed``).

The file is a pickle (``torch.save``): it is resumed from the user's own run directories only.
"""

from __future__ import annotations

import io
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch as th
from stable_baselines3.common.logger import Logger

from rltransfer import env_state, interrupts
from rltransfer.errors import UserError
from rltransfer.io import SNAPSHOT_FILE, atomic_write_bytes
from rltransfer.ppo import TransferPPO

FORMAT = 1
DEFAULT_EVERY_S = 300.0  # a killed run loses at most about this much training
# Called with the staging directory after every snapshot: the Ray backend relays it to the driver.
_listeners: list[Callable[[Path], None]] = []


@contextmanager
def snapshot_listener(listener: Callable[[Path], None]) -> Iterator[None]:
    """Call ``listener(staging_dir)`` after every snapshot any run of this process writes, in the body."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


@runtime_checkable
class Resumable(Protocol):
    """A callback whose state a resumed run needs (``state_dict`` / ``load_state_dict``, as torch's)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_snapshot_every(value: Any) -> float | None:
    """Seconds between snapshots from a spec or the command line: a number >= 0, optionally with a
    unit (``90s``, ``5m``, ``1h``), or off (``None``)."""
    if value is None or (isinstance(value, str) and value.lower() in ("off", "never", "none", "false")):
        return None
    text = value.strip().lower() if isinstance(value, str) else value
    scale = 1
    if isinstance(text, str) and text[-1:] in _UNITS:
        text, scale = text[:-1], _UNITS[text[-1]]
    try:
        seconds = float(text) * scale
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not seconds >= 0:
        raise UserError(
            f"snapshot_every must be seconds >= 0 (or 5m, 1h; 0: after every PPO iteration) or off, got {value!r}"
        )
    return seconds


def run_key(**settings: Any) -> str:
    """What a snapshot's run and the run resuming it must share, as canonical JSON."""
    return json.dumps(settings, sort_keys=True, default=str)


def rng_state(device: th.device) -> dict[str, Any]:
    """Every global generator a run draws from (``random``, numpy's legacy one, torch's, CUDA's)."""
    return {
        "random": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": th.get_rng_state(),
        "cuda": th.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def set_rng_state(rng: Mapping[str, Any], device: th.device) -> None:
    """Put back what ``rng_state`` saved."""
    random.setstate(rng["random"])
    np.random.set_state(rng["numpy"])
    th.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and device.type == "cuda":
        th.cuda.set_rng_state(rng["cuda"], device)


def flush_logs(logger: Logger) -> None:
    """Write an SB3 logger's buffered CSV rows and TensorBoard events to disk."""
    for fmt in logger.output_formats:
        getattr(getattr(fmt, "file", None), "flush", lambda: None)()
        getattr(getattr(fmt, "writer", None), "flush", lambda: None)()


def logged_csv(log_dir: Path | None) -> str | None:
    """The CSV log written so far (part of a snapshot), after ``flush_logs``."""
    csv = log_dir / "progress.csv" if log_dir is not None else None
    return csv.read_text() if csv is not None and csv.exists() else None


def restore_csv(log_dir: Path | None, text: str | None) -> None:
    """Put the CSV log back as a snapshot saved it (before the logger opens it to append)."""
    if log_dir is not None and text is not None:
        atomic_write_bytes(log_dir / "progress.csv", text.encode())


def write_snapshot(directory: Path, state: Mapping[str, Any]) -> None:
    """``state`` as ``directory``'s snapshot, atomically; the listeners are told."""
    buf = io.BytesIO()
    th.save(dict(state), buf)
    atomic_write_bytes(directory / SNAPSHOT_FILE, buf.getvalue())
    for listener in _listeners:
        listener(directory)


def read_snapshot(directory: Path) -> dict[str, Any] | None:
    """The snapshot in ``directory`` (a staging directory), or ``None``."""
    path = directory / SNAPSHOT_FILE
    if not path.exists():
        return None
    try:
        state = th.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise UserError(f"'{path}' is unreadable ({type(e).__name__}); delete it to start the run over") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"'{path}' was written by another rltransfer version; delete it to start the run over")
    return state


def check_key(state: Mapping[str, Any], key: str, where: Path) -> None:
    """Refuse to resume a snapshot of other settings (family, targets, strategy, seed, hyperparameters...)."""
    if state["key"] == key:
        return
    saved, now = json.loads(state["key"]), json.loads(key)
    differ = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    raise UserError(
        f"'{where}' holds an interrupted run with other settings ({', '.join(differ)} differ); "
        "pass the same settings to resume it, or --overwrite to start over"
    )


class Snapshots:
    """Snapshots of one training run into ``directory``, and its resumption from ``resume_from``.

    Args:
        every_s: seconds between snapshots (0: after every PPO iteration; ``None``: never).
        parts: the callbacks whose state the run needs (``Resumable``), in a fixed order.
        log_dir: the run's SB3 log directory (its ``progress.csv`` is part of a snapshot).
    """

    def __init__(
        self,
        model: TransferPPO,
        directory: Path,
        key: str,
        parts: Sequence[Any],
        every_s: float | None,
        log_dir: Path | None,
        seed: int,
        resume_from: Mapping[str, Any] | None = None,
    ) -> None:
        self.model, self.directory, self.key, self.every_s, self.log_dir = model, directory, key, every_s, log_dir
        self.parts = [p for p in parts if isinstance(p, Resumable)]
        self.seed = seed
        self.state = resume_from
        self.history: list[dict[str, Any]] = list(resume_from["history"]) if resume_from else []
        self._started = time.monotonic()
        self._elapsed_before = float(resume_from["elapsed_s"]) if resume_from else 0.0
        self._last = self._started
        self._saved_at = -1
        self._calls = 0

    @property
    def resumed_at(self) -> int | None:
        """The step this run resumed from (``None``: it started from scratch)."""
        return None if self.state is None else int(self.state["num_timesteps"])

    @property
    def elapsed_before(self) -> float:
        """Wall time of the earlier attempts, up to the snapshot resumed from."""
        return self._elapsed_before

    def elapsed_s(self) -> float:
        """Training wall time over every attempt of the run."""
        return self._elapsed_before + time.monotonic() - self._started

    # -- resuming ------------------------------------------------------------------------------

    def restore_logs(self) -> None:
        """Put the CSV log back as it was at the snapshot (call before the logger opens it)."""
        if self.state is not None:
            restore_csv(self.log_dir, self.state["csv"])

    def prepare(self) -> None:
        """Before ``learn``: the step counter and the callbacks' state.

        The rest (weights, environments, generators) is put back at the first ``collect_rollouts``,
        after ``learn``'s set-up and the callbacks' ``on_training_start`` have run.
        """
        assert self.state is not None
        model, state = self.model, self.state
        model.num_timesteps = int(state["num_timesteps"])
        model._last_obs = state["last_obs"]  # not None: learn keeps the env as it is
        model.iteration_offset = int(state["iterations"])
        if len(state["callbacks"]) != len(self.parts):
            raise UserError(f"'{self.directory}' holds a snapshot of another strategy; pass --overwrite to start over")
        for part, saved in zip(self.parts, state["callbacks"], strict=True):
            part.load_state_dict(saved)

    def _restore(self) -> None:
        model, state = self.model, self.state
        assert state is not None
        policy = model.policy
        policy.load_state_dict(state["policy"])
        trainable = set(state["trainable"])
        for name, p in policy.named_parameters():
            p.requires_grad_(name in trainable)
        policy.optimizer.load_state_dict(state["optimizer"])
        model._n_updates = int(state["n_updates"])
        model._episode_num = int(state["episode_num"])
        model._current_progress_remaining = float(state["progress_remaining"])
        model._last_episode_starts = state["last_episode_starts"]
        model._last_original_obs = state["last_original_obs"]
        model.ep_info_buffer.clear()  # type: ignore[union-attr]
        model.ep_info_buffer.extend(state["ep_info_buffer"])  # type: ignore[union-attr]
        model.ep_success_buffer.clear()  # type: ignore[union-attr]
        model.ep_success_buffer.extend(state["ep_success_buffer"])  # type: ignore[union-attr]
        saved_env = env_state.EnvState.from_dict(state["env"])
        fresh = env_state.restore(model.get_env(), saved_env, self.seed + model.num_timesteps)  # type: ignore[arg-type]
        if fresh is not None:  # the episodes in progress were not saved: new ones start now
            model._last_obs = fresh
            model._last_episode_starts = np.ones(model.get_env().num_envs, dtype=bool)  # type: ignore[union-attr]
        logger = model.logger
        logger.name_to_value.clear()
        logger.name_to_value.update(state["logger"]["values"])
        logger.name_to_count.clear()
        logger.name_to_count.update(state["logger"]["counts"])
        logger.name_to_excluded.clear()
        logger.name_to_excluded.update(state["logger"]["excluded"])
        set_rng_state(state["rng"], model.device)
        self.history.append(
            {"at_step": model.num_timesteps, "exact": saved_env.base is not None, "why_not": saved_env.why_not}
        )
        self._saved_at, self._last = model.num_timesteps, time.monotonic()

    # -- saving --------------------------------------------------------------------------------

    def on_rollout(self) -> None:
        """``TransferPPO.rollout_hook``: resume on the first call, then snapshot when it is time, or
        when the run was interrupted (Ctrl-C) since the last call: then it stops, having lost nothing."""
        self._calls += 1
        if self.state is not None and self._calls == 1:
            self._restore()
        elif (
            self.every_s is not None
            and self.model.num_timesteps not in (0, self._saved_at)
            and (interrupts.pending() or time.monotonic() - self._last >= self.every_s)
        ):
            self.save()
        interrupts.raise_pending()

    def save(self) -> None:
        """Write the snapshot now (at the top of ``collect_rollouts``)."""
        model = self.model
        policy = model.policy
        flush_logs(model.logger)  # the logs up to now on disk too (a copy may travel)
        saved_env = env_state.capture(model.get_env())  # type: ignore[arg-type]
        state = {
            "format": FORMAT,
            "key": self.key,
            "num_timesteps": model.num_timesteps,
            "iterations": model.iteration_offset + self._calls - 1,
            "n_updates": model._n_updates,
            "episode_num": model._episode_num,
            "progress_remaining": model._current_progress_remaining,
            "policy": policy.state_dict(),
            "trainable": [n for n, p in policy.named_parameters() if p.requires_grad],
            "optimizer": policy.optimizer.state_dict(),
            "last_obs": model._last_obs,
            "last_episode_starts": model._last_episode_starts,
            "last_original_obs": model._last_original_obs,
            "ep_info_buffer": list(model.ep_info_buffer or []),
            "ep_success_buffer": list(model.ep_success_buffer or []),
            "env": saved_env.to_dict(),
            "rng": rng_state(model.device),
            "logger": {
                "values": dict(model.logger.name_to_value),
                "counts": dict(model.logger.name_to_count),
                "excluded": dict(model.logger.name_to_excluded),
            },
            "csv": logged_csv(self.log_dir),
            "callbacks": [p.state_dict() for p in self.parts],
            "history": self.history,
            "elapsed_s": self.elapsed_s(),
        }
        write_snapshot(self.directory, state)
        self._saved_at, self._last = model.num_timesteps, time.monotonic()

    def discard(self) -> None:
        """Remove the snapshot once the run is complete (a finished run directory holds none)."""
        (self.directory / SNAPSHOT_FILE).unlink(missing_ok=True)


def open_snapshots(
    model: TransferPPO,
    staging: Path | None,
    key: str,
    parts: Sequence[Any],
    every_s: float | None,
    seed: int,
) -> Snapshots | None:
    """Snapshots of a run being built in ``staging`` (``None`` without one), resuming the snapshot
    found there (a taken-over interrupted attempt's), whose settings must be the run's."""
    if staging is None:
        return None
    saved = read_snapshot(staging)
    if saved is not None:
        check_key(saved, key, staging)
    snapshots = Snapshots(model, staging, key, parts, every_s, staging / "logs", seed, saved)
    snapshots.restore_logs()
    return snapshots
