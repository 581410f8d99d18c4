"""Feature-shift statistic and transferability advice."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th

from rltransfer.advice_validation import validate
from rltransfer.advise import advise, predicted_gain, recommend
from rltransfer.cli import main
from rltransfer.compare import mmd_rbf
from rltransfer.errors import UserError


def test_mmd_is_near_zero_for_one_distribution_and_grows_with_shift() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 3)), rng.normal(size=(200, 3))
    near, far = rng.normal(0.5, 1, size=(200, 3)), rng.normal(2.0, 1, size=(200, 3))
    same = mmd_rbf(a, b, bandwidth=1.0)
    assert abs(same) < 0.02
    assert same < mmd_rbf(a, near, bandwidth=1.0) < mmd_rbf(a, far, bandwidth=1.0)
    with pytest.raises(ValueError, match="equal d"):
        mmd_rbf(a, rng.normal(size=(10, 2)))


def test_mmd_matches_a_direct_computation() -> None:
    x = np.array([[0.0], [1.0]])
    y = np.array([[2.0], [4.0]])

    def k(u: float, v: float) -> float:  # Gaussian kernel, bandwidth 1
        return float(np.exp(-((u - v) ** 2) / 2.0))

    xx = k(0.0, 1.0)  # mean over i != j pairs of x
    yy = k(2.0, 4.0)
    xy = np.mean([k(a, b) for a in (0.0, 1.0) for b in (2.0, 4.0)])
    expected = xx + yy - 2 * xy
    assert mmd_rbf(x, y, bandwidth=1.0) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("score", "mmd", "expected"),
    [
        (1.0, 1.5, "zero-shot"),
        (0.5, 1.5, "finetune (transfer: heads)"),
        (0.1, 0.3, "freeze"),
        (-0.2, 0.3, "freeze"),
        (0.1, 0.9, "finetune"),
        (0.02, 0.9, "scratch"),
        (-0.2, 0.9, "scratch"),
    ],
)
def test_recommendation_rules(score: float, mmd: float, expected: str) -> None:
    assert recommend(score, mmd)[0] == expected


@pytest.mark.parametrize(
    ("score", "expected"), [(1.0, "zero-shot"), (0.5, "finetune (transfer: heads)"), (0.1, "scratch")]
)
def test_a_source_that_learnt_nothing_is_not_advised_for_its_features(score: float, expected: str) -> None:
    # An untrained trunk's features barely shift between tasks: that is no reason to freeze them.
    rec, why = recommend(score, 0.01, source_learnt=False)
    assert rec == expected
    if rec == "scratch":
        assert "no better than random on its own task" in why


def test_predicted_gain_is_the_clipped_head_start_minus_the_shift() -> None:
    assert predicted_gain(1.2, 0.1) == pytest.approx(0.9)
    assert predicted_gain(-0.5, 0.7) == pytest.approx(-0.7)
    assert predicted_gain(0.5, -0.01) == pytest.approx(0.5)  # unbiased MMD^2 can dip below 0
    # A closer target with the same head start ranks higher.
    assert predicted_gain(0.5, 0.1) > predicted_gain(0.5, 0.4)


def test_advise_on_a_tiny_source(source_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    advice = advise(source_dir, "cartpole", ["long", "longer", "gravity30"], episodes=2, samples=64)
    assert [a.target for a in advice] == ["long", "longer", "gravity30"]
    for a in advice:
        assert np.isfinite(a.zero_shot_return) and np.isfinite(a.feature_mmd) and a.recommendation
    assert (
        main(
            [
                "advise",
                "--source",
                str(source_dir),
                "--family",
                "cartpole",
                "--targets",
                "long,longer,{length: 0.9}",
                "--episodes",
                "2",
                "--samples",
                "64",
                "--json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [r["target"] for r in rows] == ["long", "longer", "custom2"]  # a target by its values too
    # The source on its own task, scored as the targets are.
    own = {(r["source_return"], r["source_random_return"], r["source_score"]) for r in rows}
    assert len(own) == 1
    ((returned, rand, score),) = own
    assert score == pytest.approx((returned - rand) / (475.0 - rand))


def test_advice_weighs_the_sources_own_score(source_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rltransfer.advise as module

    seen: list[bool] = []

    def spy(score: float, mmd: float, source_learnt: bool = True) -> tuple[str, str]:
        seen.append(source_learnt)
        return recommend(score, mmd, source_learnt)

    monkeypatch.setattr(module, "recommend", spy)
    (a,) = advise(source_dir, "cartpole", ["long"], episodes=2, samples=16)
    assert seen == [a.source_learnt] == [a.source_score > module.RANDOM_TOLERANCE]
    monkeypatch.setattr(module, "RANDOM_TOLERANCE", a.source_score + 0.01)  # as if no better than random
    (weak,) = advise(source_dir, "cartpole", ["long"], episodes=2, samples=16)
    assert seen[-1] is False
    assert weak.recommendation == ("scratch" if weak.zero_shot_score < 0.3 else a.recommendation)


@pytest.mark.parametrize(("episodes", "samples"), [(0, 1000), (10, 1), (-3, 0)])
def test_advise_checks_its_counts(source_dir: Path, episodes: int, samples: int) -> None:
    with pytest.raises(UserError, match="advise needs episodes >= 1, samples >= 2"):
        advise(source_dir, "cartpole", ["long"], episodes=episodes, samples=samples)


def test_advise_takes_targets_as_one_string(source_dir: Path) -> None:
    advice = advise(source_dir, "cartpole", "long, longer", episodes=1, samples=20)
    assert [a.target for a in advice] == ["long", "longer"]


def test_advise_refuses_other_sources(source_dir: Path) -> None:
    with pytest.raises(UserError, match=r"'acrobot' family.*is a source of family 'cartpole'"):
        advise(source_dir, "acrobot", ["long1"])


def test_advise_names_targets_as_run_does_but_of_the_sources_family(source_dir: Path) -> None:
    advice = advise(source_dir, "cartpole", ["cartpole/long", "rltransfer/CartPole-heavy-v0"], episodes=1, samples=16)
    assert [a.target for a in advice] == ["long", "heavy"]
    for other in ("acrobot/long1", "rltransfer/Acrobot-long1-v0"):
        with pytest.raises(
            UserError, match=f"advise takes variants of the source's family 'cartpole'; '{other}' is of"
        ):
            advise(source_dir, "cartpole", ["long", other])


def test_validate_correlates_with_realised_gains(tmp_path: Path) -> None:
    from rltransfer.advise import Advice

    comparisons = [
        {"arm": arm, "task": task, "auc_difference": None if arm == "scratch" else {"value": gain}}
        for task, gain in (("a", 10.0), ("b", 5.0), ("c", -3.0))
        for arm in ("scratch", "freeze")
    ]
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "summary.json").write_text(json.dumps({"comparisons": comparisons}))
    advice = [Advice(t, "near", 0, 0, 1, 0, 0, g, "x", "y") for t, g in (("a", 3.0), ("b", 2.0), ("c", 1.0))]
    rho, pairs = validate(advice, tmp_path)
    assert rho == pytest.approx(1.0) and len(pairs) == 3


def test_validate_reads_a_one_seed_report(tmp_path: Path) -> None:
    """One seed per arm: the report's intervals are ``null`` (no interval); the gains are still read."""
    from rltransfer.advice_validation import Gain, _agrees, arm_gains
    from rltransfer.advise import Advice
    from rltransfer.compare.summary import Estimate

    def one_run(gain: float) -> dict[str, Any]:
        return dict(Estimate(gain, math.nan, math.nan).to_dict())  # as summary.json holds a single run's

    comparisons = [
        {"arm": arm, "task": task, "auc_difference": None if arm == "scratch" else one_run(gain)}
        for task, gain in (("a", 10.0), ("b", 5.0), ("c", -3.0))
        for arm in ("scratch", "freeze")
    ]
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "summary.json").write_text(json.dumps({"comparisons": comparisons}))
    gains = arm_gains(tmp_path)
    assert gains["a"]["freeze"].value == 10.0 and math.isnan(gains["a"]["freeze"].low)
    advice = [Advice(t, "near", 0, 0, 1, 0, 0, g, "x", "y") for t, g in (("a", 3.0), ("b", 2.0), ("c", 1.0))]
    assert validate(advice, tmp_path)[0] == pytest.approx(1.0)
    # Without intervals, the advised arm agrees only where it is the best by its value.
    assert _agrees(gains["c"]["freeze"], {}) is False and _agrees(Gain(0.0, 0.0, 0.0), gains["c"]) is True


def _finished_experiment(tmp_path: Path, source_dir: Path, gains: dict[str, float]) -> Path:
    """An experiment directory as `rltransfer run` leaves it, with made-up realised AUC gains."""
    import shutil

    out = tmp_path / "exp"
    shutil.copytree(source_dir, out / "source")
    spec = {
        "name": "tiny-advice",
        "family": "cartpole",
        "source": {"checkpoint": str(source_dir)},
        "targets": [*gains, "acrobot/source"],
        "arms": ["scratch", "freeze", "finetune"],
        "timesteps": 128,
    }
    (out / "experiment.json").write_text(json.dumps({"name": "tiny-advice", "spec": spec, "seeds": [0]}))
    # With a cross-family target in the set, the report names every task ``family/variant``.
    named = {f"cartpole/{t}": g for t, g in gains.items()}
    comparisons = [{"arm": "scratch", "task": t, "auc_difference": None} for t in [*named, "all tasks"]]
    for task, gain in [*named.items(), ("acrobot/source", 99.0), ("all tasks", 99.0)]:
        comparisons.append({"arm": "freeze", "task": task, "auc_difference": {"value": gain - 1.0}})
        comparisons.append({"arm": "finetune", "task": task, "auc_difference": {"value": gain}})
    (out / "report").mkdir()
    (out / "report" / "summary.json").write_text(json.dumps({"comparisons": comparisons}))
    return out


def test_validate_experiments_pools_normalised_gains(tmp_path: Path, source_dir: Path) -> None:
    from rltransfer.advice_validation import validate_experiments

    targets = ["long", "longer", "gravity30", "weak"]
    advice = advise(source_dir, "cartpole", targets, episodes=2, samples=64)
    # Realised gains in the advice's own order: a perfect ranking, so Spearman must be 1.
    ranked = sorted(advice, key=lambda a: a.predicted_gain)
    out = _finished_experiment(tmp_path, source_dir, {a.target: 10.0 * i for i, a in enumerate(ranked)})
    result = validate_experiments([out], episodes=2, samples=64)
    assert sorted(p.target for p in result.points) == sorted(f"cartpole/{t}" for t in targets)  # acrobot skipped
    assert result.spearman == pytest.approx(1.0) and result.per_family == {"cartpole": pytest.approx(1.0)}
    for p in result.points:
        assert p.best_arm == "finetune"  # the larger of the two arms' gains
        assert p.realised_gain == pytest.approx(p.realised_auc_gain / (475.0 - p.advice.random_return))
    # Reversed gains: perfectly wrong.
    out2 = _finished_experiment(tmp_path / "b", source_dir, {a.target: -10.0 * i for i, a in enumerate(ranked)})
    assert validate_experiments([out2], episodes=2, samples=64).spearman == pytest.approx(-1.0)


def _write_scores(out: Path, runs: dict[tuple[str, str], list[float]]) -> None:
    """``report/scores.csv`` with the given per-run AUCs by (arm, task); other columns unused."""
    lines = ["arm,task,run,auc"] + [
        f"{arm},{task},{i},{auc}" for (arm, task), aucs in runs.items() for i, auc in enumerate(aucs)
    ]
    (out / "report" / "scores.csv").write_text("\n".join(lines) + "\n")


def test_spearman_interval_reflects_the_seeds_noise(
    tmp_path: Path, source_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rltransfer.advice_validation import spearman_interval, validate_experiments

    targets = ["long", "longer", "gravity30", "weak"]
    ranked = sorted(advise(source_dir, "cartpole", targets, episodes=2, samples=64), key=lambda a: a.predicted_gain)
    gains = {a.target: 10.0 * i for i, a in enumerate(ranked)}
    out = _finished_experiment(tmp_path, source_dir, gains)
    assert validate_experiments([out], episodes=2, samples=64).spearman_ci is None  # no per-run scores
    # Every seed gives the same AUCs: no noise, so the interval is the point itself.
    exact = {(arm, f"cartpole/{t}"): [100.0 + g + d] * 3 for t, g in gains.items() for arm, d in
             (("scratch", -g), ("freeze", -1.0), ("finetune", 0.0))}  # fmt: skip
    _write_scores(out, exact)
    result = validate_experiments([out], episodes=2, samples=64)
    assert result.spearman_ci == pytest.approx((1.0, 1.0))
    assert result.per_family_ci == {"cartpole": pytest.approx((1.0, 1.0))}
    assert result.to_json()["spearman_ci"] == pytest.approx([1.0, 1.0])
    assert main(["validate-advice", str(out), "--episodes", "2", "--samples", "64"]) == 0
    printed = capsys.readouterr().out
    assert "= 1.00 (95% CI over seeds [1.00, 1.00]) over 4 targets (cartpole 1.00 [1.00, 1.00])" in printed
    # One run per arm: no seed noise to resample, so no interval (as the report has none for one run).
    _write_scores(out, {key: v[:1] for key, v in exact.items()})
    assert validate_experiments([out], episodes=2, samples=64).spearman_ci is None
    # Seeds spread wider than the targets' differences: the ranking is uncertain.
    noisy = {key: [v[0] - 40.0, v[0], v[0] + 40.0] for key, v in exact.items()}
    _write_scores(out, noisy)
    low, high = validate_experiments([out], episodes=2, samples=64).spearman_ci or (0.0, 0.0)
    assert -1.0 <= low < 0.5 and high == pytest.approx(1.0)
    # The best arm is chosen within each replicate, against scratch's resampled mean.
    runs = [{"scratch": np.array([0.0, 0.0]), "a": np.array([1.0, 1.0]), "b": np.array([3.0, 3.0])},
            {"scratch": np.array([0.0, 0.0]), "a": np.array([2.0, 2.0]), "b": np.array([0.0, 0.0])},
            {"scratch": np.array([5.0, 5.0]), "a": np.array([5.0, 5.0]), "b": np.array([5.0, 5.0])}]  # fmt: skip
    assert spearman_interval([3.0, 2.0, 1.0], runs, [1.0, 1.0, 1.0]) == pytest.approx((1.0, 1.0))
    assert spearman_interval([1.0, 2.0, 3.0], runs, [1.0, 1.0, 1.0]) == pytest.approx((-1.0, -1.0))


def test_validate_advice_cli_errors_and_json(
    tmp_path: Path, source_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate-advice", str(tmp_path / "missing")]) == 2
    assert "missing' does not exist; pass the --out directory" in capsys.readouterr().err
    out = _finished_experiment(tmp_path, source_dir, {"long": 1.0, "longer": 3.0, "weak": 2.0})
    args = ["validate-advice", str(out), "--episodes", "2", "--samples", "64", "--json", str(tmp_path / "v.json")]
    assert main(args) == 0
    assert "Spearman(predicted, realised)" in capsys.readouterr().out
    data = json.loads((tmp_path / "v.json").read_text())
    assert len(data["points"]) == 3 and -1.0 <= data["spearman"] <= 1.0


def test_advice_for_a_target_does_not_depend_on_the_other_targets_order(source_dir: Path) -> None:
    ab = {a.target: a for a in advise(source_dir, "cartpole", ["long", "longer"], episodes=2, samples=64)}
    ba = {a.target: a for a in advise(source_dir, "cartpole", ["longer", "long"], episodes=2, samples=64)}
    assert ab == ba


@pytest.mark.parametrize(
    ("name", "options", "label"),
    [
        ("scratch", {}, "scratch"),
        ("zero-shot", {}, "zero-shot"),
        ("freeze", {}, "freeze"),
        ("finetune", {}, "finetune"),
        ("finetune", {"transfer": "heads"}, "finetune (transfer: heads)"),
        ("finetune", {"transfer": "all"}, "finetune (transfer: heads)"),
        ("freeze", {"transfer": "heads"}, None),  # frozen trunk under source heads: advice never says so
        ("l2sp", {}, None),
        ("finetune", {"trunk_lr_scale": 0.1}, None),
        ("partial:1", {}, None),
    ],
)
def test_arms_are_matched_to_advice_by_strategy(name: str, options: dict[str, Any], label: str | None) -> None:
    from rltransfer.advice_validation import advice_label
    from rltransfer.strategies import parse_strategy

    assert advice_label(parse_strategy(name, options)) == label


def test_strategy_agreement_uses_scratch_as_zero_and_ci_overlap() -> None:
    from rltransfer.advice_validation import Gain, _advised, _agrees

    gains = {"freeze": Gain(100.0, 60.0, 140.0), "ft-heads": Gain(150.0, 120.0, 180.0)}
    labels: dict[str, str | None] = {"scratch": "scratch", "freeze": "freeze", "ft-heads": "finetune (transfer: heads)"}
    assert _advised("freeze", labels, gains) == ("freeze", gains["freeze"])
    assert _advised("zero-shot", labels, gains) == ("ft-heads", gains["ft-heads"])  # its trained continuation
    assert _advised("finetune", labels, gains) == (None, None)  # no such arm: untested
    assert _agrees(gains["ft-heads"], gains)
    assert _agrees(gains["freeze"], gains)  # 140 reaches 120: tied within the CIs
    assert not _agrees(Gain(0.0, 0.0, 0.0), gains)  # scratch advised, transfer clearly better
    losing = {"freeze": Gain(-50.0, -80.0, -20.0)}
    assert _agrees(Gain(0.0, 0.0, 0.0), losing) and not _agrees(losing["freeze"], losing)


@pytest.mark.parametrize(
    ("env_id", "family", "kwargs"),
    [("CartPole-v1", "cartpole", {}), ("Pendulum-v1", "pendulum", {}), ("Pendulum-v1", "pendulum", {"use_sde": True})],
)
def test_a_plain_zip_runs_as_its_own_actor(tmp_path: Path, env_id: str, family: str, kwargs: dict[str, Any]) -> None:
    """Its hidden layers become the trunk, its action layer (and log_std, gSDE's too) the head:
    the same action distribution, whatever the family's own use_sde (Pendulum's is on)."""
    from rltransfer.envs import get_family
    from stable_baselines3 import PPO

    from rltransfer.checkpoint import load_checkpoint
    from rltransfer.source_policy import load_source_model

    plain = PPO("MlpPolicy", env_id, n_steps=64, batch_size=64, seed=0, device="cpu", **kwargs)
    plain.learn(128)
    plain.save(tmp_path / "plain.zip")
    model = load_source_model(load_checkpoint(tmp_path / "plain.zip"), get_family(family))
    obs = th.as_tensor(np.random.default_rng(0).normal(size=(16, plain.observation_space.shape[0])), dtype=th.float32)
    with th.no_grad():
        theirs = plain.policy.get_distribution(obs).distribution
        ours = model.policy.get_distribution(obs).distribution
    if env_id == "CartPole-v1":
        th.testing.assert_close(ours.probs, theirs.probs)
    else:
        th.testing.assert_close(ours.mean, theirs.mean)
        th.testing.assert_close(ours.stddev, theirs.stddev)


def test_advise_on_a_plain_sb3_zip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stable_baselines3 import PPO

    PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, seed=0, device="cpu").save(tmp_path / "plain.zip")
    assert main(["advise", "--source", str(tmp_path / "plain.zip"), "--family", "cartpole", "--targets", "long"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps the title
    assert "taken to have trained on cartpole's source variant" in out and "long" in out
    # Another family's spaces do not fit.
    with pytest.raises(UserError, match="a plain SB3 PPO zip of one of its tasks"):
        advise(tmp_path / "plain.zip", "acrobot", ["long1"])
