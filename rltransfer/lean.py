"""Lean PPO rollouts and updates: SB3's arithmetic with less overhead per step.

SB3 2.x's ``PPO.train`` and ``collect_rollouts``, re-written so that the rollout buffer is
turned into tensors once per update instead of once per minibatch (same
``np.random.permutation`` draws, so the same minibatches; one that is the whole rollout is
gathered once per update where the program is exact to rounding only). Categorical and Gaussian MLP
policies (SB3's ``MlpPolicy``, rltransfer's trunk and multi-task policies; diagonal Gaussians
and SB3's default gSDE) run each minibatch without autograd: the network forward and backward
by hand (``rltransfer.mlp_backprop``, ``rltransfer.multitask_backprop``), the loss's gradient
from autograd's own formulas (``rltransfer.ppo_loss``, ``rltransfer.gaussian_loss``; as numpy
operations, ``rltransfer.numpy_loss``, where the program agrees with SB3's to rounding only), the
values PPO only logs computed once per update, and Adam's fused kernel called directly
(``rltransfer.adam_step``). Other categorical policies keep autograd but skip distribution
objects and argument validation; everything else (squashed or ``expln`` gSDE, masked Gaussian
actions) runs SB3's own ``evaluate_actions``. Rollout steps: ``rltransfer.lean_rollout``
(categorical, diagonal-Gaussian and plain gSDE policies). The gradient norm
is clipped as ``clip_grad_norm_`` clips it (``rltransfer.grad_clip``), on one flat copy of the
gradients where Adam steps through ``FusedAdamStepper.clip_and_step``.
With torch's tanh (``numpy_tanh=False``), single-task rollouts, losses, gradients, weights and
logged values are bit-identical to SB3's; with numpy's, and for the multi-task policy, they
agree to float rounding (``tests/test_ppo_lean.py``). ``TransferPPO``
(``rltransfer.ppo``) uses them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.distributions import (
    CategoricalDistribution,
    DiagGaussianDistribution,
    StateDependentNoiseDistribution,
)
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.utils import explained_variance
from torch.nn import functional as F

from rltransfer import numpy_loss as numpy_loss_module
from rltransfer.adam_step import FusedAdamStepper
from rltransfer.gaussian_loss import gaussian_ppo_loss, sde_ppo_loss
from rltransfer.mlp_backprop import NUMPY_TANH, ActorCriticMLP, Program, accumulate, actor_critic_mlp
from rltransfer.multitask_backprop import MultiTaskMLP, TaskLayout, multitask_mlp, sorted_layouts
from rltransfer.ppo_loss import Coefficients, LossResult, Minibatch, categorical_ppo_loss, logged_stats, total_loss


class FlatRollout:
    """A full rollout buffer as flat tensors, converted once; minibatches are index selections.

    Flattening is done in the buffer itself, as ``RolloutBuffer.get`` does (``explained_variance``
    later reads the flattened arrays), and values equal what ``get`` would yield. The four
    per-sample scalars sit in the rows of one ``(4, N)`` tensor and discrete actions are
    ``long`` already, so a minibatch takes three index operations (instead of six, and two
    conversions of its actions). With ``group_by`` (an observation key holding task ids
    ``0..n_groups-1``; by default the largest present + 1) each minibatch's rows are sorted
    by it and come with their ``TaskLayout``.
    """

    def __init__(
        self,
        buffer: RolloutBuffer,
        discrete: bool,
        group_by: str | None = None,
        n_groups: int | None = None,
        any_order: bool = False,
    ) -> None:
        names = ["actions", "values", "log_probs", "advantages", "returns"]
        if not buffer.generator_ready:
            if isinstance(buffer, DictRolloutBuffer):
                for key, obs in buffer.observations.items():
                    buffer.observations[key] = buffer.swap_and_flatten(obs)
            else:
                names = ["observations", *names]
            for name in names:
                buffer.__dict__[name] = buffer.swap_and_flatten(buffer.__dict__[name])
            buffer.generator_ready = True
        self.size = buffer.buffer_size * buffer.n_envs
        self.observations: th.Tensor | dict[str, th.Tensor]
        if isinstance(buffer, DictRolloutBuffer):
            self.observations = {k: buffer.to_torch(v) for k, v in buffer.observations.items()}
        else:
            self.observations = buffer.to_torch(buffer.observations)
        actions = buffer.to_torch(buffer.actions)
        self.actions = actions.long().flatten() if discrete else actions
        scalars = (buffer.values, buffer.log_probs, buffer.advantages, buffer.returns)
        self.scalars = buffer.to_torch(np.stack([a.flatten() for a in scalars]))
        # Each sample's key (its task id) where minibatches are to be sorted by it.
        self.keys = buffer.observations[group_by].reshape(-1).astype(np.int64) if group_by is not None else None
        self.n_groups = 1 if self.keys is None else n_groups if n_groups is not None else int(self.keys.max()) + 1
        self.any_order = any_order
        # Task-major envs: rows in task order, so sorting a minibatch's row numbers sorts it by task.
        self._rows_in_task_order = self.keys is not None and bool((self.keys[1:] >= self.keys[:-1]).all())
        self._whole: tuple[Any, Minibatch, TaskLayout | None] | None = None

    def minibatches(self, indices: np.ndarray, batch_size: int) -> Iterator[tuple[Any, Minibatch, TaskLayout | None]]:
        """An epoch's minibatches: ``batch_size`` entries of ``indices`` at a time (the last may be shorter).

        Sorting a minibatch by task (stably) changes only the order its sums run in. All
        minibatches of one size are sorted, and their layouts computed, in one pass. With
        ``any_order``, a minibatch that is the whole rollout is ``whole()`` every epoch, and
        rows already in task order are sorted by row number (by task too, not stably).
        """
        if self.any_order and len(indices) == self.size and batch_size >= self.size:
            yield self.whole()
            return
        if self.keys is None:
            yield from self._gathered(indices, batch_size)
            return
        full = len(indices) // batch_size * batch_size
        blocks = [indices[:full].reshape(-1, batch_size)] if full else []
        if full < len(indices):
            blocks.append(indices[full:].reshape(1, -1))
        for block in blocks:
            yield from self._sorted(block)

    def _sorted(self, block: np.ndarray) -> Iterator[tuple[Any, Minibatch, TaskLayout | None]]:
        """The minibatches of the rows of ``block`` ``(M, B)``, each sorted by task, with their layouts."""
        assert self.keys is not None
        if self.any_order and self._rows_in_task_order:  # one sort, no gathers: ~10 us per 256 rows
            rows = np.sort(block, axis=1)
            keys = self.keys[rows]
        else:
            keys = self.keys[block]
            order = np.argsort(keys, axis=1, kind="stable")
            minibatch = np.arange(len(block))[:, None]  # indexing: half of take_along_axis's time here
            rows, keys = block[minibatch, order], keys[minibatch, order]
        yield from self._gathered(rows.reshape(-1), rows.shape[1], sorted_layouts(keys, self.n_groups))

    def _gathered(
        self, rows: np.ndarray, batch_size: int, layouts: Sequence[TaskLayout] | None = None
    ) -> Iterator[tuple[Any, Minibatch, TaskLayout | None]]:
        """Minibatches of ``batch_size`` consecutive entries of ``rows``, as slices of one selection.

        One gather per epoch instead of one per minibatch: the same rows in the same order (the
        same values), in a handful of index operations instead of a handful per minibatch.
        """
        obs, batch = self._select(rows)
        fields = (batch.actions, batch.old_values, batch.old_log_prob, batch.advantages, batch.returns)
        for i, start in enumerate(range(0, len(rows), batch_size)):
            part = slice(start, start + batch_size)
            obs_part = {k: v[part] for k, v in obs.items()} if isinstance(obs, dict) else obs[part]
            yield obs_part, Minibatch(*(f[part] for f in fields)), None if layouts is None else layouts[i]

    def whole(self) -> tuple[Any, Minibatch, TaskLayout | None]:
        """All rows as one minibatch, sorted by task (stably), gathered once and reused.

        For a program whose sums may run in any order (``any_order``): an epoch whose one
        minibatch is the whole rollout (the RL Zoo's CartPole setting) holds the same samples
        in any order, so the permutation's order need not be gathered again every epoch. The
        rollout of task-major envs is in task order already: its tensors serve as they are.
        """
        if self._whole is None:
            if self.keys is None:
                self._whole = (*self._all_rows(), None)
            elif self._rows_in_task_order:
                self._whole = (*self._all_rows(), sorted_layouts(self.keys[None], self.n_groups)[0])
            else:
                self._whole = next(self._sorted(np.arange(self.size)[None]))
        return self._whole

    def _all_rows(self) -> tuple[Any, Minibatch]:
        old_values, old_log_prob, advantages, returns = self.scalars
        return self.observations, Minibatch(self.actions, old_values, old_log_prob, advantages, returns)

    def sample(self, indices: np.ndarray) -> tuple[Any, Minibatch]:
        """One minibatch of the given rows (sorted by task with ``group_by``)."""
        obs, batch, _ = next(self.minibatches(indices, len(indices)))
        return obs, batch

    def _select(self, indices: np.ndarray) -> tuple[Any, Minibatch]:
        # index_select: the same rows as ``tensor[idx]``, without advanced indexing's overhead.
        idx = th.as_tensor(indices, device=self.actions.device)
        obs: Any
        if isinstance(self.observations, dict):
            obs = {k: th.index_select(v, 0, idx) for k, v in self.observations.items()}
        else:
            obs = th.index_select(self.observations, 0, idx)
        old_values, old_log_prob, advantages, returns = th.index_select(self.scalars, 1, idx)
        actions = th.index_select(self.actions, 0, idx)
        return obs, Minibatch(actions, old_values, old_log_prob, advantages, returns)


LogitsFn = Callable[[th.Tensor], th.Tensor]


def categorical_logits(policy: Any) -> LogitsFn | None:
    """How a categorical policy maps its actor latent to logits; ``None`` where SB3's own code must run.

    SB3's ``_get_action_dist_from_latent`` feeds ``action_net(latent_pi)`` to a ``Categorical``.
    A policy that overrides it (to mask actions, say) keeps the lean path by defining
    ``action_logits(latent_pi)``, returning the logits its override passes to the distribution.
    """
    cls = type(policy)
    if not (isinstance(policy, ActorCriticPolicy) and isinstance(policy.action_dist, CategoricalDistribution)):
        return None
    if any(getattr(cls, name) is not getattr(ActorCriticPolicy, name) for name in SB3_METHODS):
        return None
    custom = getattr(policy, "action_logits", None)
    if callable(custom):
        return custom
    if cls._get_action_dist_from_latent is ActorCriticPolicy._get_action_dist_from_latent:
        return policy.action_net
    return None


SB3_METHODS = ("forward", "evaluate_actions", "predict_values", "get_distribution")


def plain_mlp(policy: Any, logits_fn: LogitsFn | None, numpy_tanh: bool = False) -> ActorCriticMLP | None:
    """The policy as an ``ActorCriticMLP`` where its logits are the action net's own (no masking)."""
    if logits_fn is None or logits_fn is not getattr(policy, "action_net", None):
        return None
    return actor_critic_mlp(policy, numpy_tanh)


def hand_written(policy: Any, logits_fn: LogitsFn | None, numpy_tanh: bool = False) -> Program | None:
    """The program a categorical policy's PPO minibatch runs without autograd, if there is one.

    Single-task MLPs give bit-identical gradients; the multi-task policy's agree to float rounding.
    ``numpy_tanh`` (``actor_critic_mlp``) trades bit-identity for a faster tanh.
    """
    if logits_fn is None or any(p.dtype != th.float32 for p in policy.parameters()):
        return None  # the loss's gradient reproduces float32 rounding (SB3's default dtype)
    return plain_mlp(policy, logits_fn, numpy_tanh) or multitask_mlp(policy, numpy_tanh)


def plain_sde(policy: Any) -> bool:
    """Whether the policy's gSDE distribution is the one ``sde_ppo_loss`` covers (SB3's PPO default)."""
    dist = policy.action_dist
    return (
        type(dist) is StateDependentNoiseDistribution
        and dist.bijector is None
        and not dist.use_expln
        and not dist.learn_features
    )


def gaussian_hand_written(policy: Any, numpy_tanh: bool = False) -> Program | None:
    """The program a Gaussian MLP policy's minibatch runs without autograd, if there is one.

    SB3's ``DiagGaussianDistribution`` (no squashing) over the action net's means and the
    ``log_std`` parameter, or its gSDE distribution (``plain_sde``); the
    network is what ``hand_written`` covers for categorical policies. Single-task gradients are
    bit-identical; the multi-task policy's to float rounding.
    """
    if not isinstance(policy, ActorCriticPolicy):
        return None
    if type(policy.action_dist) is not DiagGaussianDistribution and not plain_sde(policy):
        return None
    if any(getattr(type(policy), name) is not getattr(ActorCriticPolicy, name) for name in SB3_METHODS):
        return None
    if any(p.dtype != th.float32 for p in policy.parameters()):
        return None
    return actor_critic_mlp(policy, numpy_tanh) or multitask_mlp(policy, numpy_tanh)


def program_for(policy: Any, numpy_tanh: bool = False) -> Program | None:
    """The hand-written program of a categorical (``hand_written``) or Gaussian
    (``gaussian_hand_written``) MLP policy; ``None`` where the policy keeps autograd."""
    return hand_written(policy, categorical_logits(policy), numpy_tanh) or gaussian_hand_written(policy, numpy_tanh)


# The loss's gradient from the program's outputs ``(out, values, cache)`` for a minibatch.
LossFn = Callable[[th.Tensor, th.Tensor, Any, Minibatch, Coefficients], LossResult]


def loss_for(policy: Any, program: Program, numpy_loss: bool = False) -> LossFn:
    """The hand-written loss for the distribution of a policy that ``hand_written``/``gaussian_hand_written`` cover.

    ``numpy_loss``: where there is one, the loss in numpy (``rltransfer.numpy_loss``; CPU
    programs exact to rounding only).
    """
    if isinstance(policy.action_dist, CategoricalDistribution):
        categorical = numpy_loss_module.categorical_ppo_loss if numpy_loss else categorical_ppo_loss
        return lambda out, values, cache, batch, c: categorical(out, values, batch, c)
    if plain_sde(policy):
        dist = policy.action_dist
        sde_loss = numpy_loss_module.sde_ppo_loss if numpy_loss else sde_ppo_loss

        def sde(out: th.Tensor, values: th.Tensor, cache: Any, batch: Minibatch, c: Coefficients) -> LossResult:
            # SB3 passes latent_pi, the action net's input, as the latent the noise scales with.
            latent = functools.partial(program.latent_sq_mm, cache)
            backward = functools.partial(program.latent_sq_t_mm, cache)
            return sde_loss(out, values, batch, c, policy.log_std, latent, backward, dist.full_std, dist.epsilon)

        return sde
    gaussian = numpy_loss_module.gaussian_ppo_loss if numpy_loss else gaussian_ppo_loss
    return lambda out, values, cache, batch, c: gaussian(out, values, batch, c, policy.log_std)


def actor_critic_latents(policy: ActorCriticPolicy, obs: Any) -> tuple[th.Tensor, th.Tensor]:
    """Actor and critic latents, as ``ActorCriticPolicy.forward`` computes them."""
    features = policy.extract_features(obs)
    if policy.share_features_extractor:
        return policy.mlp_extractor(features)
    pi_features, vf_features = features
    return policy.mlp_extractor.forward_actor(pi_features), policy.mlp_extractor.forward_critic(vf_features)


def evaluate_categorical(
    policy: ActorCriticPolicy, logits_fn: LogitsFn, obs: Any, actions: th.Tensor, entropy_grad: bool
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """``policy.evaluate_actions`` for a categorical policy: the same operations in the same order.

    ``Categorical(logits)`` normalises by ``logsumexp``; ``log_prob`` gathers; ``entropy`` is
    ``-(clamp(logits, finfo.min) * softmax(logits)).sum(-1)``. Without ``entropy_grad`` the
    entropy is computed outside the autograd graph.
    """
    latent_pi, latent_vf = actor_critic_latents(policy, obs)
    logits = logits_fn(latent_pi)
    logits = logits - logits.logsumexp(dim=-1, keepdim=True)
    log_prob = logits.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    values = policy.value_net(latent_vf)
    with th.set_grad_enabled(entropy_grad and th.is_grad_enabled()):
        clamped = th.clamp(logits, min=th.finfo(logits.dtype).min)
        entropy = -(clamped * F.softmax(logits, dim=-1)).sum(-1)
    return values, log_prob, entropy


def rounding_only(program: Program | None) -> bool:
    """Whether the program agrees with SB3 to float rounding only (not bit for bit).

    Such a program may take a minibatch's rows in any order (``FlatRollout.whole``): the
    multi-task program, and a single-task one with numpy's tanh.
    """
    if isinstance(program, MultiTaskMLP):
        return True
    if isinstance(program, ActorCriticMLP):
        layers = (*program.shared.layers, *program.pi.layers, *program.vf.layers)
        return any(getattr(layer, "act", None) == NUMPY_TANH for layer in layers)
    return False


def _hand_written_step(
    program: Program,
    loss: LossFn,
    log_std: th.nn.Parameter | None,
    obs: Any,
    batch: Minibatch,
    coefs: Coefficients,
    layout: TaskLayout | None,
) -> tuple[LossResult, Callable[[], None]]:
    """The loss's gradient and what its logged values need; a function that fills the gradients."""
    with th.no_grad():
        out, values, cache = program.forward(obs, layout)
        result = loss(out, values, cache, batch, coefs)

    def backward() -> None:
        with th.no_grad():
            program.backward(cache, result.grad_logits, result.grad_values)
            if log_std is not None and log_std.requires_grad and result.grad_log_std is not None:
                accumulate(log_std, result.grad_log_std)

    return result, backward


def _autograd_step(
    policy: Any, logits_fn: LogitsFn | None, obs: Any, batch: Minibatch, coefs: Coefficients
) -> tuple[list[float], Callable[[], None]]:
    """The logged values (as ``logged_stats`` orders them) and ``loss.backward``."""
    if logits_fn is not None:
        values, log_prob, entropy = evaluate_categorical(policy, logits_fn, obs, batch.actions, coefs.ent_coef != 0.0)
    else:
        values, log_prob, entropy = policy.evaluate_actions(obs, batch.actions)
    values = values.flatten()
    advantages = batch.advantages
    if coefs.normalize_advantage and len(advantages) > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    ratio = th.exp(log_prob - batch.old_log_prob)
    policy_loss_1 = advantages * ratio
    policy_loss_2 = advantages * th.clamp(ratio, 1 - coefs.clip_range, 1 + coefs.clip_range)
    policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()
    clip_fraction = th.mean((th.abs(ratio - 1) > coefs.clip_range).float())
    if coefs.clip_range_vf is None:
        values_pred = values
    else:
        clip_vf = coefs.clip_range_vf
        values_pred = batch.old_values + th.clamp(values - batch.old_values, -clip_vf, clip_vf)
    value_loss = F.mse_loss(batch.returns, values_pred)
    entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
    loss = policy_loss + coefs.ent_coef * entropy_loss + coefs.vf_coef * value_loss
    with th.no_grad():
        log_ratio = log_prob - batch.old_log_prob
        approx_kl = th.mean((th.exp(log_ratio) - 1) - log_ratio)
    stats = [t.item() for t in (policy_loss, clip_fraction, value_loss, entropy_loss, approx_kl)]
    return stats, loss.backward


def lean_train(model: PPO, numpy_tanh: bool = False, flat_step: bool = True, numpy_loss: bool = True) -> None:
    """SB3 2.x ``PPO.train`` with the same arithmetic and less overhead per minibatch.

    Categorical and Gaussian MLP policies (``hand_written``, ``gaussian_hand_written``)
    run each minibatch without autograd and compute what is only logged once at the end;
    others run the same loss through autograd. ``numpy_tanh``: see ``actor_critic_mlp``;
    ``flat_step``: see ``FusedAdamStepper``; ``numpy_loss``: the loss in numpy where the
    program is exact to rounding only and on the CPU (``rltransfer.numpy_loss``).
    """
    policy = model.policy
    policy.set_training_mode(True)
    model._update_learning_rate(policy.optimizer)
    progress = model._current_progress_remaining
    clip_range = model.clip_range(progress)  # type: ignore[operator]
    clip_range_vf = model.clip_range_vf(progress) if model.clip_range_vf is not None else None  # type: ignore[operator]
    coefs = Coefficients(clip_range, clip_range_vf, model.ent_coef, model.vf_coef, model.normalize_advantage)
    logits_fn = categorical_logits(policy)  # the autograd path's, where no program covers the policy
    program = program_for(policy, numpy_tanh)
    log_std = getattr(policy, "log_std", None) if program is not None else None
    any_order = rounding_only(program)  # sums may run in another order (the gradient norm too)
    params = list(policy.parameters())
    on_cpu = all(p.device.type == "cpu" for p in params)
    loss = loss_for(policy, program, numpy_loss and any_order and on_cpu) if program is not None else None
    adam = FusedAdamStepper(policy.optimizer, flat_step)
    # The multi-task program runs a minibatch sorted by task with fewer copies (same samples).
    multitask = program if isinstance(program, MultiTaskMLP) and program.n_tasks > 1 else None
    group_by, n_groups = (MultiTaskMLP.TASK_KEY, multitask.n_tasks) if multitask else (None, None)
    discrete = isinstance(model.action_space, spaces.Discrete)
    data = FlatRollout(model.rollout_buffer, discrete, group_by, n_groups, any_order=any_order)
    epochs: list[int] = []  # each minibatch's epoch
    rows: list[list[float]] = []  # autograd: logged values as they come
    deferred: list[LossResult] = []  # hand-written: logged values computed at the end
    continue_training = True
    for epoch in range(model.n_epochs):
        indices = np.random.permutation(data.size)  # RolloutBuffer.get draws one per epoch
        for obs, batch, layout in data.minibatches(indices, model.batch_size):
            epochs.append(epoch)
            if program is not None and loss is not None:
                result, backward = _hand_written_step(program, loss, log_std, obs, batch, coefs, layout)
                deferred.append(result)
                approx_kl_div = result.approx_kl() if model.target_kl is not None else 0.0
            else:
                stats, backward = _autograd_step(policy, logits_fn, obs, batch, coefs)
                rows.append(stats)
                approx_kl_div = stats[4]
            if model.target_kl is not None and approx_kl_div > 1.5 * model.target_kl:
                continue_training = False
                if model.verbose >= 1:
                    print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                break
            adam.zero_grad()
            backward()
            adam.clip_and_step(params, model.max_grad_norm, any_order)
        model._n_updates += 1
        if not continue_training:
            break
    if deferred:
        rows = logged_stats(deferred, coefs)
    # SB3 averages the approximate KL over the last epoch only, as float32 arrays.
    approx_kl_divs = [np.float32(row[4]) for row, e in zip(rows, epochs, strict=True) if e == epochs[-1]]
    pg_losses, clip_fractions, value_losses, entropy_losses = ([row[i] for row in rows] for i in range(4))
    buffer = model.rollout_buffer
    explained_var = explained_variance(buffer.values.flatten(), buffer.returns.flatten())
    log = model.logger.record
    log("train/entropy_loss", np.mean(entropy_losses))
    log("train/policy_gradient_loss", np.mean(pg_losses))
    log("train/value_loss", np.mean(value_losses))
    log("train/approx_kl", np.mean(approx_kl_divs))
    log("train/clip_fraction", np.mean(clip_fractions))
    log("train/loss", total_loss(rows[-1], coefs))
    log("train/explained_variance", explained_var)
    if hasattr(policy, "log_std"):
        log("train/std", th.exp(policy.log_std).mean().item())
    log("train/n_updates", model._n_updates, exclude="tensorboard")
    log("train/clip_range", clip_range)
    if clip_range_vf is not None:
        log("train/clip_range_vf", clip_range_vf)
