"""Domain adaptation: source-task observations, feature shift (MMD), and DANN fine-tuning.

``DomainAdversarial`` trains a domain classifier on trunk features of source-task states
(stored with the source checkpoint) versus target states (from PPO's rollouts); a gradient
reversal layer makes the trunk *confuse* the classifier, pulling the two feature
distributions together (Ganin et al. 2016), with the weight ramped up over training.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from rltransfer import normalization
from rltransfer.compare import mmd_rbf
from rltransfer.lean_predict import predictor_for


def collect_observations(model: Any, env: VecEnv, n: int, seed: int) -> np.ndarray:
    """``n`` raw (unnormalised) observations of states the policy visits, stochastic actions."""
    env.seed(seed)
    obs = env.reset()
    vn = normalization.find(env)
    predictor = predictor_for(model)  # predict's draws without its per-call overhead
    rows: list[np.ndarray] = []
    count = 0
    while count < n:
        rows.append(np.asarray(vn.get_original_obs() if vn is not None else obs, dtype=np.float32))
        count += len(rows[-1])
        actions, _ = predictor.predict(obs, deterministic=False)
        obs, _, _, _ = env.step(actions)
    return np.concatenate(rows)[:n]


class _GradReverse(th.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: th.Tensor, weight: float) -> th.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: th.Tensor) -> tuple[th.Tensor, None]:
        return -ctx.weight * grad, None


def grad_reverse(x: th.Tensor, weight: float) -> th.Tensor:
    """Identity forward; gradient times ``-weight`` backward."""
    return _GradReverse.apply(x, weight)


def _trunk_features(model: Any, raw_obs: np.ndarray) -> th.Tensor:
    """Trunk features of raw observations, normalised as the model's training env would."""
    vn = normalization.find(model.get_env())
    obs = raw_obs
    if vn is not None:
        obs = vn.normalize_obs({"obs": raw_obs, "task_id": np.zeros(len(raw_obs))})["obs"]
    tensor = th.as_tensor(np.asarray(obs, dtype=np.float32), device=model.device)
    return model.policy.features_extractor.trunk(th.flatten(tensor, start_dim=1))


class FeatureShift(BaseCallback):
    """MMD^2 between trunk features of source-task states and of each target's states, before and after.

    The target states are the first rollout's (visited by the initial policy), so both
    measurements use the same samples and only the trunk differs.
    """

    def __init__(self, source_obs: np.ndarray, env_task_ids: np.ndarray, task_names: Sequence[str], n: int = 512):
        super().__init__()
        self.source_obs = source_obs[:n]
        self.env_task_ids, self.task_names, self.n = env_task_ids, list(task_names), n
        self.targets: dict[str, np.ndarray] = {}
        self.before: dict[str, float] = {}
        self.after: dict[str, float] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"targets": dict(self.targets), "before": dict(self.before)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.targets, self.before = dict(state["targets"]), dict(state["before"])

    def _on_step(self) -> bool:
        return True

    def _measure(self) -> dict[str, float]:
        with th.no_grad():
            src = _trunk_features(self.model, self.source_obs).cpu().numpy()
            return {t: mmd_rbf(src, _trunk_features(self.model, o).cpu().numpy()) for t, o in self.targets.items()}

    def _on_rollout_end(self) -> None:
        if self.targets:
            return
        model: Any = self.model
        vn = normalization.find(model.get_env())
        buffer = model.rollout_buffer.observations["obs"]  # (steps, envs, obs...)
        for k, name in enumerate(self.task_names):
            obs = buffer[:, self.env_task_ids == k].reshape(-1, *buffer.shape[2:])[: self.n]
            self.targets[name] = vn.unnormalize_obs({"obs": obs})["obs"] if vn is not None else obs
        self.before = self._measure()

    def _on_training_end(self) -> None:
        if self.targets:
            self.after = self._measure()

    def result(self) -> dict[str, dict[str, float]]:
        return {t: {"before": self.before[t], "after": self.after.get(t, math.nan)} for t in self.before}


class DomainAdversarial(BaseCallback):
    """After each rollout, ``updates`` steps of the domain classifier and (reversed) the trunk."""

    def __init__(self, source_obs: np.ndarray, coef: float, updates: int = 8, batch_size: int = 128) -> None:
        super().__init__()
        self.source_obs, self.coef, self.updates, self.batch_size = source_obs, coef, updates, batch_size
        self.classifier: nn.Module | None = None
        self.optimizer: th.optim.Optimizer | None = None
        self.rng = np.random.default_rng(0)
        self._resume: Mapping[str, Any] | None = None  # a saved state, loaded once the classifier is built

    def state_dict(self) -> dict[str, Any]:
        assert self.classifier is not None and self.optimizer is not None
        return {
            "classifier": self.classifier.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._resume = state

    def _on_training_start(self) -> None:
        model: Any = self.model
        trunk = model.policy.features_extractor.trunk
        width = [m for m in trunk if isinstance(m, nn.Linear)][-1].out_features
        # Its own RNG stream: building the classifier must not change the policy's action sampling,
        # so a DANN arm sees the same first rollout as the other arms of its seed.
        with th.random.fork_rng(devices=[]):
            th.manual_seed(int(model.seed or 0))
            self.classifier = nn.Sequential(nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, 1)).to(model.device)
        lr = float(self.model.lr_schedule(1.0))
        params = [*self.classifier.parameters(), *(p for p in trunk.parameters() if p.requires_grad)]
        self.optimizer = th.optim.Adam(params, lr=lr)
        self.rng = np.random.default_rng(self.model.seed)
        if self._resume is not None:
            self.classifier.load_state_dict(self._resume["classifier"])
            self.optimizer.load_state_dict(self._resume["optimizer"])
            self.rng.bit_generator.state = self._resume["rng"]
            self._resume = None

    def _on_step(self) -> bool:
        return True

    def weight(self) -> float:
        """DANN's schedule: 0 at the start, ``coef`` at the end."""
        p = 1.0 - self.model._current_progress_remaining
        return self.coef * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0)

    def _on_rollout_end(self) -> None:
        assert self.classifier is not None and self.optimizer is not None
        model: Any = self.model
        vn = normalization.find(model.get_env())
        buffer = model.rollout_buffer.observations["obs"]
        target = buffer.reshape(-1, *buffer.shape[2:])
        if vn is not None:
            target = vn.unnormalize_obs({"obs": target})["obs"]
        weight, losses, correct = self.weight(), [], []
        bce = nn.BCEWithLogitsLoss()
        for _ in range(self.updates):
            src = self.source_obs[self.rng.integers(len(self.source_obs), size=self.batch_size)]
            tgt = target[self.rng.integers(len(target), size=self.batch_size)]
            feats = _trunk_features(self.model, np.concatenate([src, tgt]))
            logits = self.classifier(grad_reverse(feats, weight)).squeeze(-1)
            labels = th.cat([th.ones(len(src)), th.zeros(len(tgt))]).to(logits.device)
            loss = bce(logits, labels)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
            correct.append(((logits > 0).float() == labels).float().mean().item())
        self.logger.record("train/dann_domain_loss", float(np.mean(losses)))
        self.logger.record("train/dann_domain_accuracy", float(np.mean(correct)))
        self.logger.record("train/dann_weight", weight)
