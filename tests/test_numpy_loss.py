"""The categorical PPO loss in numpy agrees with ``ppo_loss``'s (autograd's formulas) to float rounding."""

from __future__ import annotations

import pytest
import torch as th

from rltransfer import gaussian_loss, lean, numpy_loss, ppo_loss
from rltransfer.ppo import TransferPPO
from rltransfer.ppo_loss import Coefficients, Minibatch

COEFFICIENTS = [
    Coefficients(0.2, None, 0.0, 0.5, True),
    Coefficients(0.1, 0.2, 0.01, 0.5, True),  # entropy and clipped values
    Coefficients(0.3, None, 0.05, 1.0, False),
]


def _batch(n: int, actions: int, gen: th.Generator) -> tuple[th.Tensor, th.Tensor, Minibatch]:
    logits = th.randn(n, actions, generator=gen) * 2
    values = th.randn(n, 1, generator=gen)
    taken = th.randint(0, actions, (n,), generator=gen)
    old_log_prob = th.log_softmax(logits, -1).gather(1, taken[:, None])[:, 0] + th.randn(n, generator=gen) * 0.3
    old_log_prob[:3] = th.log_softmax(logits, -1).gather(1, taken[:3, None])[:, 0]  # ratio 1: ties in the minimum
    batch = Minibatch(
        taken,
        values[:, 0] + th.randn(n, generator=gen) * 0.3,
        old_log_prob,
        th.randn(n, generator=gen),
        th.randn(n, generator=gen),
    )
    return logits, values, batch


@pytest.mark.parametrize("coefs", COEFFICIENTS)
@pytest.mark.parametrize(("n", "actions"), [(64, 2), (37, 3), (1, 4)])
def test_numpy_categorical_loss_matches_the_torch_one(coefs: Coefficients, n: int, actions: int) -> None:
    gen = th.Generator().manual_seed(n * actions)
    logits, values, batch = _batch(n, actions, gen)
    ours = numpy_loss.categorical_ppo_loss(logits, values, batch, coefs)
    ref = ppo_loss.categorical_ppo_loss(logits, values, batch, coefs)
    fields = ("grad_logits", "grad_values", "normalized_logits", "ratio", "log_ratio", "surrogate")
    _compare(ours, ref, (*fields, "surrogate_clipped", "values_pred"))
    assert ours.grad_logits.abs().max() > 1e-4  # not vacuous
    stats, ref_stats = ppo_loss.logged_stats([ours], coefs), ppo_loss.logged_stats([ref], coefs)
    assert stats[0] == pytest.approx(ref_stats[0], rel=1e-5, abs=1e-7)


def test_the_numpy_loss_runs_only_for_programs_exact_to_rounding(monkeypatch: pytest.MonkeyPatch) -> None:
    from rltransfer.envs import get_family
    from rltransfer.envs.multitask import make_task_vec_env

    env = make_task_vec_env(get_family("cartpole"), "source", 2, seed=0)
    calls: list[int] = []
    original = numpy_loss.categorical_ppo_loss

    def counted(*args: object) -> ppo_loss.LossResult:
        calls.append(1)
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(numpy_loss, "categorical_ppo_loss", counted)
    for numpy_tanh, numpy_loss_on, used in [(True, True, True), (False, True, False), (True, False, False)]:
        calls.clear()
        model = TransferPPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0)
        model.numpy_tanh, model.numpy_loss = numpy_tanh, numpy_loss_on
        model.learn(64)
        assert bool(calls) is used, (numpy_tanh, numpy_loss_on)
    assert lean.rounding_only(None) is False


def _compare(ours: ppo_loss.LossResult, ref: ppo_loss.LossResult, fields: tuple[str, ...]) -> None:
    for name in fields:
        a, b = getattr(ours, name), getattr(ref, name)
        assert a.dtype == b.dtype == th.float32 and a.shape == b.shape, name
        # Rounding: a few float32 ulps of the field's largest magnitude (values near 0 included).
        th.testing.assert_close(a, b, rtol=1e-5, atol=8 * 1.2e-7 * float(b.abs().max()), msg=name)
        assert b.abs().max() > 0 or not name.startswith("grad"), name  # not vacuous


GAUSSIAN_FIELDS = ("grad_logits", "grad_values", "grad_log_std", "entropy", "ratio", "log_ratio", "surrogate")


def _gaussian_batch(n: int, dims: int, gen: th.Generator) -> tuple[th.Tensor, th.Tensor, Minibatch]:
    mean = th.randn(n, dims, generator=gen)
    values = th.randn(n, 1, generator=gen)
    actions = mean + th.randn(n, dims, generator=gen) * 0.7
    old_log_prob = -th.rand(n, generator=gen) * 3
    returns = th.randn(n, generator=gen)
    return mean, values, Minibatch(actions, values[:, 0] * 0.9, old_log_prob, th.randn(n, generator=gen), returns)


@pytest.mark.parametrize("coefs", COEFFICIENTS)
@pytest.mark.parametrize("dims", [1, 3])
def test_numpy_gaussian_loss_matches_the_torch_one(coefs: Coefficients, dims: int) -> None:
    gen = th.Generator().manual_seed(dims)
    mean, values, batch = _gaussian_batch(64, dims, gen)
    log_std = th.nn.Parameter(th.randn(dims, generator=gen) * 0.3)
    ours = numpy_loss.gaussian_ppo_loss(mean, values, batch, coefs, log_std)
    ref = gaussian_loss.gaussian_ppo_loss(mean, values, batch, coefs, log_std)
    _compare(ours, ref, GAUSSIAN_FIELDS)
    stats, ref_stats = ppo_loss.logged_stats([ours], coefs), ppo_loss.logged_stats([ref], coefs)
    assert stats[0] == pytest.approx(ref_stats[0], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("coefs", COEFFICIENTS)
@pytest.mark.parametrize("full_std", [True, False])
def test_numpy_sde_loss_matches_the_torch_one(coefs: Coefficients, full_std: bool) -> None:
    gen = th.Generator().manual_seed(int(full_std))
    dims, hidden = 2, 8
    mean, values, batch = _gaussian_batch(48, dims, gen)
    latent_sq = th.tanh(th.randn(48, hidden, generator=gen)) ** 2
    log_std = th.nn.Parameter(th.randn(hidden, dims if full_std else 1, generator=gen) * 0.3)

    def latent(std_sq: th.Tensor) -> th.Tensor:
        return th.mm(latent_sq, std_sq)

    def backward(grad: th.Tensor) -> th.Tensor:
        return latent_sq.t().mm(grad)

    args = (mean, values, batch, coefs, log_std, latent, backward, full_std, 1e-6)
    _compare(numpy_loss.sde_ppo_loss(*args), gaussian_loss.sde_ppo_loss(*args), GAUSSIAN_FIELDS)
