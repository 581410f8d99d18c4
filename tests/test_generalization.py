"""Generalisation: every finished run of an experiment played on held-out targets, against scratch."""

from __future__ import annotations

import csv
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from rltransfer.envs import Task, get_family
from specs import grid_spec

from rltransfer import load_agent
from rltransfer.cli import main
from rltransfer.errors import UserError
from rltransfer.experiment.generalization import ALL_TARGETS, _held_out, generalize
from rltransfer.experiment.report import build_report, load_experiment
from rltransfer.experiment.run import run_experiment
from rltransfer.report.tables import fmt_number
from rltransfer.tasks import task_distance


def _grid(out: Path, **changes: object) -> Path:
    spec = grid_spec("gen", **{"targets": ["long", "gravity30"], **changes})
    result, _ = run_experiment(spec, out=out, workers=2, progress=False)
    assert not result.failed
    return out


@pytest.fixture(scope="module")
def multitask(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _grid(tmp_path_factory.mktemp("gen") / "multitask")


def _scores(out: Path) -> list[dict[str, str]]:
    with open(out / "generalization" / "scores.csv") as f:
        return list(csv.DictReader(f))


def test_every_run_plays_the_held_out_variants_with_its_nearest_head(multitask: Path) -> None:
    result = generalize(multitask)
    held_out = [v.name for v in get_family("cartpole").held_out_variants()]
    assert list(result.targets) == held_out
    # The held-out band (pole 0.55-0.7, gravity 10.5-14) lies nearest the long pole, not 3x gravity.
    assert {t["head"] for t in result.targets.values()} == {"long"}
    assert {(p.arm, p.seed) for p in result.played} == {(a, s) for a in ("scratch", "freeze") for s in (0, 1)}
    cartpole = get_family("cartpole")
    for name, t in result.targets.items():  # range-normalised distances to the head's task and the source's
        target = Task(cartpole, next(v for v in cartpole.held_out_variants() if v.name == name))
        long, source = (Task(cartpole, cartpole.variant(v)) for v in ("long", "source"))
        assert t["distance_to_head"] == pytest.approx(task_distance(cartpole, long, target))
        assert t["distance_to_source"] == pytest.approx(task_distance(cartpole, source, target))
    assert len(result.played) == 4 * len(held_out)
    # Each number is the run's own policy on that target, as load_agent plays it.
    one = next(p for p in result.played if p.arm == "freeze" and p.seed == 1 and p.target == "heldout2")
    agent = load_agent(multitask / one.run)
    expected = agent.evaluate(["heldout2"], head="long")["heldout2 (head long)"]
    assert (one.mean, one.std) == expected
    # The files hold the same, and a second call writes the same bytes (deterministic episodes).
    first = (multitask / "generalization" / "scores.csv").read_bytes()
    assert len(_scores(multitask)) == len(result.played)
    generalize(multitask, workers=2)  # seeds played in worker processes: the same numbers
    assert (multitask / "generalization" / "scores.csv").read_bytes() == first
    summary = json.loads((multitask / "generalization" / "summary.json").read_text())
    assert [r["target"] for r in summary["rows"]].count(ALL_TARGETS) == 2
    assert "heldout0" in (multitask / "generalization" / "report.md").read_text()
    report = (multitask / "report" / "report.md").read_text()  # the experiment's report shows the table
    assert "## Generalisation to held-out variants" in report and "| all targets | freeze | 2 |" in report
    assert (multitask / "generalization" / "generalization.png").read_bytes().startswith(b"\x89PNG")


def test_the_comparison_with_scratch_is_the_difference_of_the_runs_means(multitask: Path) -> None:
    result = generalize(multitask, ["heldout0", {"length": 1.2}])
    by_arm: dict[str, dict[str, list[float]]] = {}
    for p in result.played:
        by_arm.setdefault(p.arm, {}).setdefault(p.target, []).append(p.mean)
    assert result.targets["custom1"]["head"] == "long"  # a 1.2 m pole: nearest the long pole of the two
    for row in result.rows:
        if row.target == ALL_TARGETS:
            continue
        mean = float(np.mean(by_arm[row.arm][row.target]))
        assert row.mean[0] == pytest.approx(mean)
        assert row.mean[1] <= mean <= row.mean[2]
        if row.arm == "scratch":
            assert row.difference is None and row.flag == ""
        else:
            assert row.difference is not None
            assert row.difference[0] == pytest.approx(mean - np.mean(by_arm["scratch"][row.target]))
            assert (row.flag == "NEGATIVE TRANSFER") == (row.difference[2] < 0)
            assert (row.flag == "positive") == (row.difference[1] > 0)


def test_a_named_head_and_bad_requests(multitask: Path) -> None:
    result = generalize(multitask, "heldout1", head="gravity30", episodes=3)
    assert result.targets["heldout1"]["head"] == "gravity30" and result.episodes == 3
    with pytest.raises(UserError, match="'long' is a target the runs trained on"):
        generalize(multitask, ["long"])
    with pytest.raises(UserError, match="'custom0' is a target the runs trained on"):
        generalize(multitask, [{"length": 0.75}])  # long's values, by another name
    with pytest.raises(
        UserError, match="head 'nope' is not a target of the experiment; choose one of: long, gravity30"
    ):
        generalize(multitask, head="nope")
    with pytest.raises(UserError, match="episodes must be at least 1"):
        generalize(multitask, episodes=0)
    with pytest.raises(UserError, match="workers must be a positive integer, got 0"):
        generalize(multitask, workers=0)
    with pytest.raises(UserError, match=r"holds no experiment\.json"):
        generalize(multitask / "scratch")


def test_per_target_runs_play_the_targets_nearest_their_own(tmp_path: Path) -> None:
    out = _grid(tmp_path / "per-target", mode="per-target", seeds=1, arms=["scratch"])
    result = generalize(out, ["heldout0", {"gravity": 35.0}])
    runs = {p.target: p.run for p in result.played}
    assert runs == {"heldout0": "scratch/seed0/long", "custom1": "scratch/seed0/gravity30"}


def test_command_line(multitask: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generalize", str(multitask), "--episodes", "2", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "heldout0 by long" in out and "vs scratch" in out and "generalization" in out
    assert (
        main(["generalize", str(multitask), "--targets", "longer,{length: 0.9}", "--head", "long", "--workers", "1"])
        == 0
    )
    assert "custom1" in capsys.readouterr().out
    assert main(["generalize", str(multitask), "--targets", "long"]) == 2
    assert "trained on" in capsys.readouterr().err


def test_a_cross_family_grid_plays_every_familys_held_out_band(tmp_path: Path) -> None:
    out = _grid(tmp_path / "cross", targets=["long", "acrobot/source"], seeds=1, arms=["scratch"])
    result = generalize(out, episodes=2)
    heads = {name: t["head"] for name, t in result.targets.items()}
    assert heads == {
        **{f"cartpole/heldout{i}": "cartpole/long" for i in range(3)},
        **{f"acrobot/heldout{i}": "acrobot/source" for i in range(3)},
    }
    assert {p.target for p in result.played} == set(heads)


def test_a_shift_target_plays_the_held_out_band_through_its_own_observations(tmp_path: Path) -> None:
    # A head trained on scaled observations must see scaled observations: the held-out band is
    # played once unshifted (by long's head) and once scaled (by scaled's head).
    out = _grid(tmp_path / "shift", targets=["scaled", "long"], seeds=1, arms=["scratch"])
    result = generalize(out, episodes=2)
    held_out = [v.name for v in get_family("cartpole").held_out_variants()]
    heads = {name: t["head"] for name, t in result.targets.items()}
    assert heads == {**{f"{v}-scaled": "scaled" for v in held_out}, **{v: "long" for v in held_out}}
    scaled = result.targets["heldout1-scaled"]
    assert scaled["shift"]["kind"] == "scale" and "shift" not in result.targets["heldout1"]
    assert scaled["params"] == result.targets["heldout1"]["params"]
    # Each number is the run's policy on the scaled held-out env, as load_agent plays it.
    one = next(p for p in result.played if p.target == "heldout1-scaled")
    shifted = next(t for t in _held_out(load_experiment(out), None) if t.variant.name == "heldout1-scaled")
    expected = load_agent(out / one.run).evaluate([shifted], episodes=2, head="scaled")
    assert (one.mean, one.std) == next(iter(expected.values()))
    # A named head plays the band through its own observations only; other observations are refused.
    assert list(generalize(out, head="scaled", episodes=2).targets) == [f"{v}-scaled" for v in held_out]
    with pytest.raises(UserError, match="head 'scaled' learnt from scale-shifted observations and 'heldout0' gives "):
        generalize(out, "heldout0", head="scaled")
    only_scaled = _grid(tmp_path / "scaled-only", targets=["scaled"], seeds=1, arms=["scratch"])
    with pytest.raises(UserError, match="no cartpole target of the experiment learnt from unshifted observations"):
        generalize(only_scaled, "heldout0")


def test_a_parameter_a_family_fixes_adds_no_distance() -> None:
    from rltransfer.envs import Param

    cartpole = get_family("cartpole")
    fixed = replace(
        cartpole,
        name="cartpole-fixed-force",
        variants=tuple(v for v in cartpole.variants if "force_mag" not in v.params),
        params=tuple(
            Param(p.name, p.default, p.default, p.default) if p.name == "force_mag" else p for p in cartpole.params
        ),
    )
    long, heldout = Task(fixed, fixed.variant("long")), Task(fixed, fixed.held_out_variants()[0])
    assert task_distance(fixed, long, heldout) == pytest.approx(task_distance(cartpole, long, heldout))  # not a 0/0


def test_the_source_task_of_a_checkpoint_spec_is_its_manifests(multitask: Path, tmp_path: Path) -> None:
    source = multitask / "source"  # one source for both seeds
    out = _grid(tmp_path / "ckpt", source={"checkpoint": str(source)}, seeds=1)
    pretrained = generalize(multitask, "heldout0", episodes=1).targets["heldout0"]["distance_to_source"]
    assert generalize(out, "heldout0", episodes=1).targets["heldout0"]["distance_to_source"] == pretrained
    # No transfer run to read the source from (scratch alone): the distance is left out, not guessed.
    only_scratch = _grid(tmp_path / "scratch", source={"checkpoint": str(source)}, seeds=1, arms=["scratch"])
    assert generalize(only_scratch, "heldout0", episodes=1).targets["heldout0"]["distance_to_source"] is None
    assert "| long | 0.098 | — |" in (only_scratch / "generalization" / "report.md").read_text()


def test_unfinished_runs_are_named_not_played(multitask: Path, tmp_path: Path) -> None:
    grid = tmp_path / "grid"
    shutil.copytree(multitask, grid)
    generalize(grid, "heldout0", episodes=2)
    shutil.rmtree(grid / "freeze" / "seed1")  # as a run still training, or one that failed
    build_report(grid)  # the report's table was played on a run it no longer has
    assert "STALE: played 4 runs, the grid has 3 finished now" in (grid / "report" / "report.md").read_text()
    result = generalize(grid, "heldout0", episodes=2)
    assert "STALE" not in (grid / "report" / "report.md").read_text()
    assert result.left_out == ["freeze/seed1"]
    assert {(p.arm, p.seed) for p in result.played} == {("scratch", 0), ("scratch", 1), ("freeze", 0)}
    assert (
        "Not played (unfinished or failed runs): freeze/seed1." in (grid / "generalization" / "report.md").read_text()
    )
    assert json.loads((grid / "generalization" / "summary.json").read_text())["left_out"] == ["freeze/seed1"]


def test_a_family_without_a_held_out_band_needs_targets() -> None:
    from rltransfer.experiment.generalization import _targets
    from rltransfer.experiment.spec import load_spec

    spec = load_spec(Path(__file__).parent.parent / "experiments" / "mountaincar-goal.yaml")  # a family as data
    assert not spec.family.held_out
    with pytest.raises(UserError, match=r"declares no held-out band; pass --targets"):
        _targets(spec, None, None)
    assert list(_targets(spec, [{"goal_velocity": 0.01}], None)) == ["custom0"]
    # A spec target of values is named custom0 too: other values are still a target of their own.
    spec = load_spec(Path(__file__).parent.parent / "experiments" / "cartpole.yaml")
    spec = replace(spec, targets=(Task(spec.family, spec.family.custom("custom0", {"length": 0.9})),))
    assert list(_targets(spec, [{"length": 1.2}], None)) == ["custom0"]


def test_the_overview_repeats_each_experiments_generalisation(multitask: Path, tmp_path: Path) -> None:
    from rltransfer.experiment.overview import write_overview
    from rltransfer.experiment.report import load_experiment

    generalize(multitask, episodes=2)
    text = write_overview([(load_experiment(multitask), multitask)], tmp_path).read_text()
    summary = json.loads((multitask / "generalization" / "summary.json").read_text())
    (freeze,) = [r for r in summary["table"]["rows"] if r[:2] == [ALL_TARGETS, "freeze"]]
    assert "Generalisation: final policies on the held-out variants" in text
    assert f"| gen | freeze | 2 | {freeze[3]} | {freeze[4]} |" in text


def test_run_generalize_plays_the_grid_after_its_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "gen.yaml"
    spec.write_text(json.dumps(grid_spec("gen", seeds=1)))  # JSON is YAML
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--workers", "1", "--quiet", "--generalize"]) == 0
    printed = capsys.readouterr().out
    assert f"generalisation: {out / 'generalization' / 'report.md'}" in printed
    assert json.loads((out / "generalization" / "summary.json").read_text())["played_runs"] == [
        "freeze/seed0",
        "scratch/seed0",
    ]
    assert "## Generalisation to held-out variants" in (out / "report" / "report.md").read_text()
    assert "transfer vs scratch" not in printed and "all targets" not in printed  # --quiet: paths alone


def test_run_and_report_print_the_comparison_on_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `rltransfer run` (so `make demo`) printed where the report was and nothing of what
    it found; now each target's arms against scratch, and after --generalize the held-out mean."""
    spec = tmp_path / "gen.yaml"
    spec.write_text(json.dumps(grid_spec("gen", seeds=2, targets=["long", "gravity30"])))
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out), "--workers", "1", "--generalize"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert "transfer vs scratch, 0.128k -> 0.128k, 2 seeds (95% CIs over seeds" in printed
    for c in summary["comparisons"]:
        if c["arm"] == "freeze" and c["task"] in ("long", "gravity30"):
            d = c["auc_difference"]
            auc = f"{fmt_number(d['value'])} [{fmt_number(d['low'])}, {fmt_number(d['high'])}]"
            assert re.search(rf"│ {c['task']} +│ freeze +│ {re.escape(auc)} +│", printed), (auc, printed)
    assert "held-out targets (heldout0, heldout1, heldout2), vs scratch" in printed
    assert re.search(r"│ all targets +│ freeze +│ 2 +│", printed) and "│ heldout0 " not in printed
    assert main(["report", str(out)]) == 0
    again = capsys.readouterr().out
    assert "transfer vs scratch" in again and re.search(r"│ gravity30 +│ freeze +│", again)


def test_run_generalize_without_a_held_out_band_names_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A family written as data without a band: the grid and report finish, then one line says
    how to play targets of one's own."""
    family = yaml.safe_load((Path(__file__).parent.parent / "experiments" / "mountaincar-goal.yaml").read_text())[
        "family"
    ]
    spec = grid_spec("goal", family=family, targets=["v02"], seeds=1, arms=["scratch"])
    path = tmp_path / "goal.yaml"
    path.write_text(json.dumps(spec))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--workers", "1", "--quiet", "--generalize"]) == 2
    err = capsys.readouterr().err
    assert (
        "family 'mountaincar-goal' declares no held-out band" in err
        and f"`rltransfer generalize {out} --targets ...`" in err
    )
    assert (out / "report" / "report.md").exists()


def test_no_run_trains_on_the_held_out_band(
    tmp_path: Path, source_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a target, source or teacher in the band `generalize` plays as unseen trained without
    a word (`--targets heldout0`), so its generalisation figures measured training tasks."""
    from stable_baselines3 import PPO

    cartpole = get_family("cartpole")
    assert all(cartpole.in_held_out(v.params) for v in cartpole.held_out_variants())
    assert cartpole.in_held_out({"length": 0.55, "gravity": 14.0})  # the band's edges are in it
    assert not cartpole.in_held_out({"length": 0.6})  # gravity at its default, outside its interval
    assert not any(cartpole.in_held_out(v.params) for v in cartpole.variants)

    monkeypatch.chdir(tmp_path)
    band = "lies in cartpole's held-out band (length in [0.55, 0.7], gravity in [10.5, 14]), kept unseen for"

    def refused(*args: str, says: str = band) -> None:
        assert main(list(args)) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
        assert not any(Path(d).exists() for d in ("out", "g")), "nothing is written"

    tiny = ["--timesteps", "64", "--hp", "n_steps=32", "--hp", "batch_size=32", "--hp", "n_envs=1"]
    transfer = ["transfer", "--source", str(source_dir), "--family", "cartpole", "--strategy", "finetune", *tiny]
    refused(
        *transfer,
        "--targets",
        "long,heldout0",
        "--out",
        "out",
        says=f"target 'cartpole/heldout0' (length=0.575, gravity=11.0833) {band}",
    )
    refused(
        *transfer,
        "--targets",
        "{length: 0.6, gravity: 11}",
        "--out",
        "out",
        says="target 'cartpole/custom0' (length=0.6, gravity=11) lies in",
    )
    refused(
        *transfer,
        "--targets",
        "long,acrobot/heldout1",
        "--out",
        "out",
        says="lies in acrobot's held-out band (link_length_2 in [1.1, 1.3])",
    )
    refused("pretrain", "--family", "cartpole/heldout2", *tiny, "--out", "out", says="source 'cartpole/heldout2' (")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(grid_spec("band", targets=["long", "heldout1"])))
    refused("run", "spec.yaml", "--out", "g", says="target 'cartpole/heldout1' (")
    refused("run", "spec.yaml", "--out", "g", "--dry-run", says="target 'cartpole/heldout1' (")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(grid_spec("band", source={"variant": "heldout0"})))
    refused("run", "spec.yaml", "--out", "g", says="source 'cartpole/heldout0' (")
    PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, seed=0).save(tmp_path / "plain.zip")
    sources = f"{source_dir},{tmp_path / 'plain.zip'}@heldout0"
    refused(
        "distill",
        "--family",
        "cartpole",
        "--sources",
        sources,
        "--out",
        "out",
        says="teacher task 'cartpole/heldout0-1' (",
    )
