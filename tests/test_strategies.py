"""Fine-tuning strategies do what they say, checked on the weights after tiny training runs."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import configure

from rltransfer.checkpoint import load_checkpoint
from rltransfer.errors import UserError
from rltransfer.finetuning import FinetuneResult, finetune
from rltransfer.ppo import TransferPPO
from rltransfer.strategies import GradualUnfreeze, parse_strategy, trunk_layers

# The module, not the function of the same name that ``rltransfer/__init__.py`` re-exports.
finetune_module = importlib.import_module("rltransfer.finetuning")

BOTTOM = ("features_extractor.trunk.0.weight", "features_extractor.trunk.0.bias")
TOP = ("features_extractor.trunk.2.weight", "features_extractor.trunk.2.bias")
TRUNK = BOTTOM + TOP
HEADS = ("mlp_extractor.policy_heads.0.weight", "mlp_extractor.value_heads.0.weight", "action_net.weight")


def params(model: TransferPPO) -> dict[str, th.Tensor]:
    return {k: v.detach().clone() for k, v in model.policy.named_parameters()}


def run(
    source: Path | None, strategy: Any, tiny: dict[str, Any], seed: int = 0, timesteps: int = 256
) -> FinetuneResult:
    return finetune("cartpole", ["long"], source, strategy, seed=seed, timesteps=timesteps, hyperparams=tiny)


@pytest.fixture
def initial(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, th.Tensor]]:
    """Weights of each finetune's model right after transfer, before any training."""
    captured: list[dict[str, th.Tensor]] = []
    original = finetune_module.configure_strategy

    def spy(model: TransferPPO, strategy: Any, total: int, *rest: Any) -> Any:
        captured.append(params(model))
        return original(model, strategy, total, *rest)

    monkeypatch.setattr(finetune_module, "configure_strategy", spy)
    return captured


@pytest.fixture
def source_sd(source_dir: Path) -> dict[str, th.Tensor]:
    return load_checkpoint(source_dir).state_dict


def test_freeze_keeps_trunk_and_trains_heads(
    source_dir: Path, source_sd: dict[str, th.Tensor], tiny: dict[str, Any], initial: list[Any]
) -> None:
    result = run(source_dir, "freeze", tiny)
    after = params(result.model)
    for key in TRUNK:
        assert th.equal(after[key], source_sd[key]), f"{key} changed under freeze"
        assert not dict(result.model.policy.named_parameters())[key].requires_grad
    for key in HEADS:
        assert not th.equal(after[key], initial[0][key]), f"{key} did not train under freeze"
    assert result.report is not None
    assert sorted(result.report.frozen) == sorted(TRUNK)
    assert sorted(result.manifest["frozen"]) == sorted(TRUNK)
    assert result.manifest["kind"] == "transfer"


def test_finetune_trains_the_trunk(source_dir: Path, source_sd: dict[str, th.Tensor], tiny: dict[str, Any]) -> None:
    result = run(source_dir, "finetune", tiny)
    after = params(result.model)
    for key in TRUNK:
        assert not th.equal(after[key], source_sd[key]), f"{key} did not train under finetune"
    assert result.report is not None and result.report.frozen == []


def test_partial_1_trains_only_the_top_layer(
    source_dir: Path, source_sd: dict[str, th.Tensor], tiny: dict[str, Any]
) -> None:
    after = params(run(source_dir, "partial:1", tiny).model)
    for key in BOTTOM:
        assert th.equal(after[key], source_sd[key]), f"{key} changed under partial:1"
    for key in TOP:
        assert not th.equal(after[key], source_sd[key]), f"{key} did not train under partial:1"


def test_partial_2_trains_the_whole_trunk(
    source_dir: Path, source_sd: dict[str, th.Tensor], tiny: dict[str, Any]
) -> None:
    after = params(run(source_dir, "partial:2", tiny).model)
    assert all(not th.equal(after[key], source_sd[key]) for key in TRUNK)


def test_partial_more_layers_than_the_trunk_has(source_dir: Path, tiny: dict[str, Any]) -> None:
    with pytest.raises(UserError, match="only 2 layers"):
        run(source_dir, "partial:5", tiny)


def _record_lrs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, float]]:
    calls: list[dict[str, float]] = []
    original = TransferPPO._update_learning_rate

    def spy(self: TransferPPO, optimizers: Any) -> None:
        original(self, optimizers)
        calls.append({g.get("name", "all"): g["lr"] for g in self.policy.optimizer.param_groups})

    monkeypatch.setattr(TransferPPO, "_update_learning_rate", spy)
    return calls


def test_trunk_lr_scale_survives_the_schedule(
    source_dir: Path, tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _record_lrs(monkeypatch)
    strategy = parse_strategy("finetune", {"trunk_lr_scale": 0.1})
    # 256 steps in rollouts of 64: updates at progress 0.75, 0.5, 0.25, 0.
    result = run(source_dir, strategy, {**tiny, "learning_rate": "lin_0.001"})
    assert len(calls) == 4
    for lrs in calls:
        assert set(lrs) == {"trunk.0", "trunk.1", "heads"}
        assert lrs["trunk.0"] == pytest.approx(0.1 * lrs["heads"], abs=1e-12)
        assert lrs["trunk.1"] == pytest.approx(0.1 * lrs["heads"], abs=1e-12)
    assert [c["heads"] for c in calls] == pytest.approx([0.00075, 0.0005, 0.00025, 0.0])
    groups = {g["name"]: g for g in result.model.policy.optimizer.param_groups}
    assert groups["trunk.0"]["lr_scale"] == 0.1 and groups["heads"]["lr_scale"] == 1.0
    assert groups["heads"]["lr"] < 0.001
    assert groups["trunk.0"]["lr"] == pytest.approx(0.1 * groups["heads"]["lr"], abs=1e-12)


def test_per_layer_trunk_lr_scales(source_dir: Path, tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _record_lrs(monkeypatch)
    run(source_dir, parse_strategy("finetune", {"trunk_lr_scale": [0.5, 0.25]}), {**tiny, "learning_rate": 0.001})
    assert calls
    for c in calls:
        assert c["heads"] == pytest.approx(0.001)
        assert c["trunk.0"] == pytest.approx(0.0005)
        assert c["trunk.1"] == pytest.approx(0.00025)
    with pytest.raises(UserError, match="3 values for 2 trunk layers"):
        run(source_dir, parse_strategy("finetune", {"trunk_lr_scale": [1, 1, 1]}), tiny)


def test_linear_schedule_never_goes_negative(
    source_dir: Path, tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _record_lrs(monkeypatch)
    # Three tasks x 2 envs x 32 steps = 192 per rollout; 256 steps end at 384.
    finetune(
        "cartpole",
        ["long", "heavy", "longer"],
        source_dir,
        "finetune",
        seed=0,
        timesteps=256,
        hyperparams={**tiny, "learning_rate": "lin_0.001"},
    )
    assert calls
    assert all(lr >= 0 for c in calls for lr in c.values()), calls


def test_gradual_unfreezes_top_down_during_training(
    source_dir: Path, source_sd: dict[str, th.Tensor], tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[bool, bool, th.Tensor]] = []
    original = TransferPPO.train

    def spy(self: TransferPPO) -> None:
        bottom, top = trunk_layers(self.policy)
        seen.append((bottom.weight.requires_grad, top.weight.requires_grad, bottom.weight.detach().clone()))
        original(self)

    monkeypatch.setattr(TransferPPO, "train", spy)
    strategy = parse_strategy("gradual", {"unfreeze_at": [0.0, 0.99]})
    result = run(source_dir, strategy, tiny)
    # Rollouts end at fractions 0.25, 0.5, 0.75, 1.0: top from the first update, bottom only once 0.99 is passed.
    assert [(b, t) for b, t, _ in seen] == [(False, True)] * 3 + [(True, True)]
    for _, _, bottom in seen:
        assert th.equal(bottom, source_sd[BOTTOM[0]]), "bottom layer trained before it was unfrozen"
    after = params(result.model)
    for key in TOP:
        assert not th.equal(after[key], source_sd[key])


def test_gradual_never_reaching_a_fraction_keeps_that_layer(
    source_dir: Path, source_sd: dict[str, th.Tensor], tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = finetune_module.configure_strategy
    # Pretend the run is 100x longer, so training stops at fraction 0.01: only the top layer thaws.
    monkeypatch.setattr(
        finetune_module,
        "configure_strategy",
        lambda model, strategy, total, *rest: original(model, strategy, total * 100, *rest),
    )
    result = run(source_dir, parse_strategy("gradual", {"unfreeze_at": [0.0, 0.5]}), tiny)
    after = params(result.model)
    assert all(th.equal(after[k], source_sd[k]) for k in BOTTOM)
    assert all(not th.equal(after[k], source_sd[k]) for k in TOP)


class _FakeModel:
    num_timesteps = 0
    logger = configure(None, [])


def test_gradual_unfreeze_callback() -> None:
    layers = [th.nn.Linear(2, 2), th.nn.Linear(2, 2), th.nn.Linear(2, 2)]
    for layer in layers:
        layer.requires_grad_(False)
    callback = GradualUnfreeze(layers, [0.25, 0.5], total=100)
    callback.init_callback(_FakeModel())  # type: ignore[arg-type]

    def at(steps: int) -> list[bool]:
        callback.num_timesteps = steps
        callback.on_rollout_end()
        return [layer.weight.requires_grad for layer in layers]

    assert at(10) == [False, False, False]
    assert at(25) == [False, False, True]
    assert at(40) == [False, False, True]
    assert at(100) == [False, True, True]  # only as many layers as fractions thaw
    assert callback.unfrozen == 2


SKIP_BOTTOM = {"layer_map": {"skip": ["features_extractor.trunk.0.*"]}}


def test_a_trunk_layer_left_out_trains_under_freeze(
    source_dir: Path, source_sd: dict[str, th.Tensor], tiny: dict[str, Any], initial: list[Any]
) -> None:
    """A layer the layer map skipped holds random weights: freezing them would fix random features."""
    result = run(source_dir, parse_strategy("freeze", SKIP_BOTTOM), tiny)
    after, before = params(result.model), initial[0]
    for key in BOTTOM:
        assert not th.equal(before[key], source_sd[key]), f"{key} was copied although skipped"
        assert not th.equal(after[key], before[key]), f"{key} took no source weights yet stayed frozen"
    assert all(th.equal(after[key], source_sd[key]) for key in TOP)
    assert result.report is not None and sorted(result.report.frozen) == sorted(TOP)
    assert any("trunk layer 0 (0 = the input layer) took no source weights" in n for n in result.report.notes)


@pytest.mark.parametrize(
    ("name", "options", "trainable"),
    [
        ("freeze", {}, [True, False]),
        ("partial:1", {}, [True, True]),
        ("gradual", {"unfreeze_at": [0.5]}, [True, False]),
        ("l2sp", {"coef": 1.0, "trunk_lr_scale": 0.1}, [True, True]),
        ("finetune", {"trunk_lr_scale": [0.2, 0.1]}, [True, True]),
        ("freeze", {"trunk_lr_scale": [0.2, 0.1]}, [True, False]),  # the skipped layer's rate applies
    ],
)
def test_strategies_leave_untransferred_layers_to_train(
    source_dir: Path, tiny: dict[str, Any], name: str, options: dict[str, Any], trainable: list[bool]
) -> None:
    from rltransfer.finetuning import build_model
    from rltransfer.hyperparams import resolve_hyperparams
    from rltransfer.strategies import L2SPPenalty, configure_strategy, untransferred_layers
    from rltransfer.tasks import resolve_targets
    from rltransfer.transfer import apply_transfer

    strategy = parse_strategy(name, {**SKIP_BOTTOM, **options})
    hp = resolve_hyperparams("cartpole", {**tiny, "n_timesteps": 256})
    model = build_model(resolve_targets("cartpole", ["long"]), None, hp, seed=0)
    report = apply_transfer(model.policy, load_checkpoint(source_dir), strategy.transfer, strategy.layer_map)
    fresh = untransferred_layers(model.policy, report.fresh)  # type: ignore[arg-type]
    assert fresh == [0]
    callbacks = configure_strategy(model, strategy, 256, fresh)
    layers = trunk_layers(model.policy)  # type: ignore[arg-type]
    assert [layer.weight.requires_grad for layer in layers] == trainable
    scales = {g["name"]: g["lr_scale"] for g in model.policy.optimizer.param_groups}
    given = options.get("trunk_lr_scale", 1.0)
    # A single scale slows pretrained features only; a per-layer list is taken as written.
    assert [scales["trunk.0"], scales["trunk.1"]] == (given if isinstance(given, list) else [1.0, given])
    for callback in callbacks:
        if isinstance(callback, GradualUnfreeze):
            assert callback.layers == [layers[1]]
        if isinstance(callback, L2SPPenalty):
            assert [id(p) for p in callback.params] == [id(p) for p in layers[1].parameters()]
    model.get_env().close()  # type: ignore[union-attr]


def test_skipping_the_whole_trunk_copies_none_of_it(source_dir: Path, tiny: dict[str, Any]) -> None:
    skip_all = {"layer_map": {"skip": ["features_extractor.trunk.*"]}}
    # SB3 also stores the shared extractor as pi_features_extractor.*: that alias must not stand in.
    report = run(source_dir, parse_strategy("finetune", skip_all), tiny).report
    assert report is not None and report.copied == []
    assert any("took no source weights" in note for note in report.notes)
    with pytest.raises(UserError, match="no trunk layer took source weights"):
        run(source_dir, parse_strategy("l2sp", skip_all), tiny)


def _sq_distance(result: FinetuneResult, source_sd: dict[str, th.Tensor]) -> float:
    after = params(result.model)
    return float(sum(((after[k] - source_sd[k]) ** 2).sum() for k in TRUNK))


def test_l2sp_keeps_the_trunk_near_pretrained(
    source_dir: Path, source_sd: dict[str, th.Tensor], tiny: dict[str, Any]
) -> None:
    hp = {**tiny, "n_epochs": 4, "batch_size": 32}  # 32 gradient steps
    free = _sq_distance(run(source_dir, "finetune", hp), source_sd)
    pulled = _sq_distance(run(source_dir, parse_strategy("l2sp", {"coef": 1e4}), hp), source_sd)
    assert free > 0 and pulled > 0
    assert pulled < 0.1 * free, (pulled, free)


def test_l2sp_hooks_are_removed_after_training(source_dir: Path, tiny: dict[str, Any]) -> None:
    model = run(source_dir, parse_strategy("l2sp", {"coef": 1e4}), tiny).model
    weight = model.policy.features_extractor.trunk[0].weight  # type: ignore[index]
    # The gradient of a loss that ignores the weight's distance to the anchor is exactly that loss's.
    with th.no_grad():
        weight.add_(1.0)
    model.policy.zero_grad()
    weight.sum().backward()
    assert th.equal(weight.grad, th.ones_like(weight))


def test_scratch_copies_nothing_and_shares_the_transfer_arms_init(
    source_dir: Path, source_sd: dict[str, th.Tensor], tiny: dict[str, Any], initial: list[dict[str, th.Tensor]]
) -> None:
    scratch = run(None, "scratch", tiny)
    transfer = run(source_dir, "freeze", tiny)
    assert scratch.report is None and scratch.manifest["kind"] == "scratch" and scratch.manifest["source"] is None
    scratch_init, transfer_init = initial
    assert set(scratch_init) == set(transfer_init)
    for key in TRUNK:
        assert not th.equal(scratch_init[key], source_sd[key]), f"scratch's {key} came from the source"
        assert th.equal(transfer_init[key], source_sd[key])
    assert transfer.report is not None
    assert set(transfer.report.fresh) == set(transfer_init) - set(TRUNK)
    for key in transfer.report.fresh:
        assert th.equal(scratch_init[key], transfer_init[key]), f"{key}: arms differ beyond the transfer"
    assert all(p.requires_grad for p in scratch.model.policy.parameters())


def test_scratch_needs_no_source_and_refuses_transfer_options() -> None:
    with pytest.raises(UserError, match="copies nothing"):
        parse_strategy("scratch", {"transfer": "trunk"})


def test_targets_given_as_one_string(tiny: dict[str, Any]) -> None:
    """A string is one target (or several, comma-separated as on the command line), not its letters."""
    from rltransfer.tasks import resolve_targets

    assert resolve_targets("cartpole", "long").names == ["long"]
    assert resolve_targets("cartpole", "long, longer").names == ["long", "longer"]
    with pytest.raises(UserError, match="targets must be a list"):
        resolve_targets("cartpole", None)  # type: ignore[arg-type]
    result = finetune("cartpole", "long", None, "scratch", timesteps=64, hyperparams=tiny)
    assert result.curve.task_names == ["long"]


def test_transfer_strategy_without_source(tiny: dict[str, Any]) -> None:
    with pytest.raises(UserError, match="--source"):
        run(None, "freeze", tiny)


def test_zero_shot_evaluates_without_training(
    source_dir: Path, tiny: dict[str, Any], initial: list[dict[str, th.Tensor]]
) -> None:
    result = run(source_dir, "zero-shot", tiny)
    assert result.model.num_timesteps == 0
    assert result.manifest["timesteps"] == 0
    assert result.curve.steps == [0]
    assert len(result.curve.returns) == 1 and len(result.curve.returns[0]) == 1
    after = params(result.model)
    assert all(th.equal(after[k], initial[0][k]) for k in after)
    assert result.report is not None and result.report.fresh == []


def test_same_seed_same_run(source_dir: Path, tiny: dict[str, Any]) -> None:
    a = run(source_dir, "finetune", tiny, seed=3)
    b = run(source_dir, "finetune", tiny, seed=3)
    assert a.curve.steps == b.curve.steps
    assert a.curve.returns == b.curve.returns
    assert a.curve.stds == b.curve.stds
    pa, pb = params(a.model), params(b.model)
    assert all(th.equal(pa[k], pb[k]) for k in pa)
    c = run(source_dir, "finetune", tiny, seed=4)
    pc = params(c.model)
    assert not all(th.equal(pa[k], pc[k]) for k in pa), "a different seed changed nothing"
    arrays = a.curve.as_arrays()
    assert arrays["returns"].shape == (1, len(a.curve.steps))
    assert np.all(np.isfinite(arrays["returns"]))


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("nope", None, "unknown strategy 'nope'"),
        ("freeze", {"bogus": 1}, r"unknown option\(s\) \['bogus'\]"),
        ("gradual", {"unfreeze_at": ["abc"]}, "unfreeze_at holds training fractions"),
        ("freeze", {"layer_map": 3}, r"layer_map must look like \{skip:"),
        ("freeze", {"layer_map": {"skipp": ["x"]}}, "layer_map must look like"),
        ("freeze", {"layer_map": {"skip": 3}}, "skip takes tensor-name patterns"),
        ("freeze", {"layer_map": {"trunk_from": 5}}, "trunk_from takes a tensor-name prefix"),
        ("freeze", {"transfer": 3}, "transfer 3 unknown"),
        ("finetune", {"trunk_lr_scale": []}, r"trunk_lr_scale \[\] is empty"),
        ("finetune", {"coef": 0.1}, "belongs to l2sp"),
        ("finetune", {"unfreeze_at": [0.5]}, "belongs to gradual"),
        ("partial:x", None, "partial:N"),
        ("partial:0", None, "partial:N"),
        ("partial:", None, "partial:N"),
        ("partial:-1", None, "partial:N"),
        ("freeze:2", None, "takes no ':' argument"),
        ("freeze", {"transfer": "none"}, "needs transferred parts"),
        ("freeze", {"transfer": "heads+nope"}, "unknown transfer part"),
        ("finetune", {"trunk_lr_scale": 0}, "trunk_lr_scale must be > 0"),
        ("finetune", {"trunk_lr_scale": "abc"}, "must be a number"),
        ("finetune", {"trunk_lr_scale": [1.0, -1.0]}, "must be > 0"),
        ("l2sp", {"coef": -1}, "coef must be > 0"),
        ("freez", None, r"unknown strategy 'freez' \(did you mean 'freeze'\?\); choose one of"),
        ("scratch", {"layer_map": {"skip": ["x"]}}, "strategy 'scratch' copies nothing; remove its 'layer_map' option"),
        ("l2sp", {"coeff": 0.1}, r"\['coeff'\] for strategy 'l2sp' \(did you mean 'coef'\?\); known"),
        ("l2sp", {"coeff": 0.1, "zzz": 1}, r"for strategy 'l2sp'; known"),
        ("zero-shot", {"trunk_lr_scale": 0.1}, "'zero-shot' trains nothing, so 'trunk_lr_scale' would do nothing"),
        ("freeze", {"trunk_lr_scale": 0.1}, "'freeze' keeps the pretrained trunk fixed"),
        ("freeze", {"trunk_lr_scale": [0.1, 1.0]}, "applies only to layers a layer_map skips"),
        ("freeze", {"trunk_lr_scale": 0.1, **SKIP_BOTTOM}, "keeps the pretrained trunk fixed"),
        ("gradual", {"unfreeze_at": [0.5, 0.25]}, "increasing"),
        ("gradual", {"unfreeze_at": [1.0]}, r"\[0, 1\)"),
        ("gradual", {"unfreeze_at": []}, "list of training fractions"),
        ("gradual", {"unfreeze_at": 0.5}, "list of training fractions"),
    ],
)
def test_parse_strategy_errors(name: str, options: dict[str, Any] | None, match: str) -> None:
    with pytest.raises(UserError, match=match):
        parse_strategy(name, options)


def test_parse_strategy_values() -> None:
    assert parse_strategy("freeze").trainable_layers == 0
    assert parse_strategy("finetune").trainable_layers is None
    assert parse_strategy("partial:2").trainable_layers == 2
    assert parse_strategy("scratch").transfer == frozenset() and not parse_strategy("scratch").uses_source
    zero = parse_strategy("zero-shot")
    assert not zero.train and "action" in zero.transfer
    assert parse_strategy("l2sp").l2sp == 0.01
    gradual = parse_strategy("gradual", {"unfreeze_at": [0.1, 0.2]})
    assert gradual.unfreeze_at == (0.1, 0.2) and gradual.trainable_layers == 0
    assert parse_strategy("finetune", {"trunk_lr_scale": [0.5, 1]}).trunk_lr_scale == (0.5, 1.0)
    assert parse_strategy("freeze", {"transfer": "no-action"}).transfer == {"trunk", "pi_head", "vf_head"}
    d = parse_strategy("partial:1", {"layer_map": {"skip": "rnd.*"}}).to_dict()
    assert d["layer_map"]["skip"] == ["rnd.*"] and d["trainable_layers"] == 1


def test_a_strategy_of_another_type_is_one_line(tiny: dict[str, Any]) -> None:
    with pytest.raises(
        UserError, match=r"strategy must be a name such as 'freeze' or a parse_strategy\(...\) result, got 5"
    ):
        finetune("cartpole", ["long"], None, 5, timesteps=64, hyperparams=tiny)  # type: ignore[arg-type]
