"""User-defined families: loaded by ``module:ATTRIBUTE`` from the CLI, specs and Python, with their
own hyperparameters, recorded in manifests, registered lazily in worker processes, and shipped to
Ray workers that lack the module; every mistake in a reference or a definition is one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch
import yaml
from rltransfer.envs import FAMILIES, Family, Param, Variant, family_from_mapping, get_family
from specs import HP as TINY
from specs import grid_spec

from rltransfer.cli import main
from rltransfer.errors import UserError
from rltransfer.experiment.spec import load_spec
from rltransfer.hyperparams import resolve_hyperparams
from rltransfer.io import sha256
from rltransfer.resolve import resolve_family

REPO = Path(__file__).resolve().parents[1]

# A user's module: an environment class of their own (a Pendulum whose gravity is `g`) and a family.
MODULE = """
from gymnasium.envs.classic_control.pendulum import PendulumEnv
from rltransfer.envs import Family, Param, Variant


class Swing(PendulumEnv):
    def __init__(self, g: float = 10.0, render_mode=None):
        super().__init__(render_mode=render_mode, g=g)


FAMILY = Family(
    name="swing",
    title="Swing{tag}",
    entry_point="{module}:Swing",
    params=(Param("g", 10.0, 1.0, 30.0, "gravity"),),
    variants=(
        Variant("source", {{}}, "source"),
        Variant("g12", {{"g": 12.0}}, "near"),
        Variant("g15", {{"g": 15.0}}, "far"),
    ),
    max_episode_steps=50,
    threshold=-300.0,
    hyperparams={{"n_timesteps": 4096, "gamma": 0.9}},
)
NOT_A_FAMILY = 3
"""


def write_module(directory: Path, body: str = MODULE) -> str:
    """A uniquely named module under ``directory``; returns its name."""
    name = f"userfam_{uuid.uuid4().hex[:8]}"
    (directory / f"{name}.py").write_text(textwrap.dedent(body).format(module=name, tag=name[-8:]))
    return name


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.syspath_prepend(str(tmp_path))
    return write_module(tmp_path)


def test_reference_loads_registers_and_remembers_itself(user_module: str) -> None:
    family = get_family(f"{user_module}:FAMILY")
    assert family.name == "swing" and family.ref == f"{user_module}:FAMILY"
    assert "swing" not in FAMILIES  # shipped families stay as they are
    env = gym.make(family.env_id("g12"))
    assert env.unwrapped.g == 12.0 and env.spec is not None and env.spec.max_episode_steps == 50
    assert resolve_family(f"{user_module}:FAMILY") == family
    # The shipped families load by reference too, as themselves.
    assert get_family("rltransfer.envs.cartpole:CARTPOLE") is FAMILIES["cartpole"]


def test_a_family_unknown_to_this_process_registers_when_first_built(user_module: str) -> None:
    # As in a worker process: the Family arrives pickled, its ids not registered there yet.
    family = get_family(f"{user_module}:FAMILY")
    for variant in family.all_variants():
        gym.registry.pop(family.env_id(variant), None)
    assert family.make("g15").unwrapped.g == 15.0


def test_user_hyperparameters_sit_over_the_generic_defaults(user_module: str) -> None:
    family = get_family(f"{user_module}:FAMILY")
    hp = resolve_hyperparams(family, {"n_steps": 64})
    assert hp["n_timesteps"] == 4096 and hp["gamma"] == 0.9  # the family's own
    assert hp["n_steps"] == 64  # the caller's
    assert hp["batch_size"] == 64 and hp["n_epochs"] == 10 and hp["learning_rate"] == 3e-4  # SB3's PPO defaults
    assert hp["normalize"] is False and hp["trunk_arch"] == [64, 64]
    # A shipped family keeps its tuned block.
    assert resolve_hyperparams("cartpole")["n_steps"] == 32


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_such_module_xyz:FAMILY", "cannot import module 'no_such_module_xyz'"),
        ("{m}:MISSING", "has no attribute 'MISSING'"),
        ("{m}:NOT_A_FAMILY", "is a int, not a rltransfer.envs.Family"),
        ("{m}:", "must look like module:ATTRIBUTE"),
        ("nope", "unknown family 'nope'.*module:ATTRIBUTE"),
    ],
)
def test_bad_references_are_one_line(user_module: str, ref: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as e:
        resolve_family(ref.format(m=user_module))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("import not_installed_dep_xyz\n", "failed: No module named 'not_installed_dep_xyz'; install it"),
        ("raise RuntimeError('boom')\n", "failed: RuntimeError: boom"),
        (MODULE.replace('name="swing"', 'name="cartpole"'), "named 'cartpole' like a shipped family"),
        (MODULE.replace('title="Swing{tag}"', 'title="CartPole"'), "already registered for another environment"),
        (MODULE.replace('"g": 15.0', '"g": 99.0'), r"outside its valid range \[1.0, 30.0\]"),
        (MODULE.replace('Variant("g12", {{"g": 12.0}}, "near")', 'Variant("g12", {{}}, "source")'), "exactly one"),
        (MODULE.replace('Param("g", 10.0,', 'Param("g", 0.5,'), "default 0.5 lies outside"),
    ],
)
def test_bad_modules_and_definitions_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, message: str
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    name = write_module(tmp_path, body)
    with pytest.raises(UserError, match=message) as e:
        resolve_family(f"{name}:FAMILY")
    assert "\n" not in str(e.value)


def test_a_lookalike_of_a_shipped_family_is_refused() -> None:
    lookalike = Family(
        "cartpole",
        "Other",
        "gymnasium.envs.classic_control.cartpole:CartPoleEnv",
        (),
        (Variant("source", {}, "source"),),
    )
    with pytest.raises(UserError, match="like a shipped family"):
        resolve_family(lookalike)
    with pytest.raises(ValueError, match="must look like module:Class"):
        Family("x", "X", "CartPole-v1", (Param("a", 1, 0, 2),), (Variant("source", {}, "source"),))


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line in a fresh process run from ``cwd``, where the user's module lies (not on PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import sys; from rltransfer.cli import main; sys.exit(main(sys.argv[1:]))"
    # -c would put the working directory on the path itself; the console script does not: mimic it.
    cmd = [sys.executable, "-I", "-c", code, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """``here(*args)``: the command line in this process, run from ``tmp_path`` (where the user's
    module lies, not on the path: it is found as the working directory); ``(exit code, out, err)``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # what load_family appends goes with the test
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # modules edited within one second reload

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        for name in [m for m in sys.modules if m.startswith("userfam_")]:
            del sys.modules[name]  # as a fresh process would: edited modules are read again
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_command_line_pretrains_and_runs_a_grid_of_a_user_family(tmp_path: Path, here: Any) -> None:
    name = write_module(tmp_path)
    ref = f"{name}:FAMILY"
    code, out, err = here("envs", "--family", ref, "--json")
    assert code == 0, err
    assert [v["name"] for v in json.loads(out)[0]["variants"]][:3] == ["source", "g12", "g15"]

    hp = [f"--hp={k}={v}" for k, v in TINY.items()]
    code, _, err = here("pretrain", "--family", ref, "--timesteps", "64", "--quiet", *hp)
    assert code == 0, err
    manifest = json.loads((tmp_path / "runs/sources/swing-source-seed0/manifest.json").read_text())
    definition = manifest["family_definitions"]["swing"]
    assert definition["ref"] == ref and definition["entry_point"] == f"{name}:Swing"
    assert manifest["hyperparams"]["gamma"] == 0.9  # the family's own hyperparameters

    spec = grid_spec("swing", family=ref, targets=["g12", {"name": "g14", "params": {"g": 14.0}}], timesteps=64)
    spec["source"]["timesteps"] = 64
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    # Two spawned worker processes: each gets the family pickled and the module from the inherited path.
    grid = cli(tmp_path, "run", "spec.yaml", "--workers", "2", "--quiet")
    assert grid.returncode == 0, grid.stderr
    runs = sorted((tmp_path / "runs/swing").glob("*/seed*/manifest.json"))
    assert len(runs) == 4 and not list((tmp_path / "runs/swing").glob("*/*.failed.json"))
    for path in runs:
        assert json.loads(path.read_text())["family_definitions"]["swing"]["ref"] == ref
    assert (tmp_path / "runs/swing/report/report.md").is_file()

    code, _, err = here("pretrain", "--family", "absent_module_xyz:FAMILY")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "cannot import module 'absent_module_xyz'" in err


def test_ray_ships_the_users_module_to_workers_without_it(tmp_path: Path) -> None:
    """The module is uploaded when the session opens; its directory then disappears, as on a node
    that never had it, so every run must import the shipped copy."""
    pytest.importorskip("ray")
    home = tmp_path / "home"
    home.mkdir()
    name = write_module(home)
    spec = grid_spec("swing", family=f"{name}:FAMILY", targets=["g12"], seeds=1, timesteps=32)
    spec["source"]["timesteps"] = 32
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    script = textwrap.dedent(
        f"""
        import contextlib, shutil, sys
        sys.path.insert(0, {str(home)!r})
        from rltransfer.experiment import ray_backend
        opened = ray_backend.ray_session

        @contextlib.contextmanager
        def session(*args, **kwargs):
            with opened(*args, **kwargs):
                shutil.rmtree({str(home)!r})  # uploaded already: the workers must not need it here
                yield

        ray_backend.ray_session = session
        from rltransfer.cli import main
        sys.exit(main(["run", {str(tmp_path / "spec.yaml")!r}, "--backend", "ray", "--workers", "2",
                       "--out", {str(tmp_path / "out")!r}, "--quiet"]))
        """
    )
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not home.exists()
    assert len(list((tmp_path / "out").glob("*/seed*/manifest.json"))) == 2
    assert not list((tmp_path / "out").glob("*/*.failed.json"))


def test_the_shipped_pointmass_example_spec_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    spec = load_spec(Path("experiments/pointmass.yaml"))
    assert spec.family.name == "pointmass" and spec.family.ref == "experiments.pointmass:POINT_MASS"
    assert resolve_hyperparams(spec.family)["n_steps"] == 128
    assert isinstance(spec.family.params[0], Param)
    assert spec.family.make("heavy").unwrapped.mass == 2.0


def test_a_changed_definition_refuses_resume_and_changed_code_is_not_comparable(tmp_path: Path, here: Any) -> None:
    name = write_module(tmp_path)
    module = tmp_path / f"{name}.py"
    spec = grid_spec("swing", family=f"{name}:FAMILY", targets=["g12"], arms=["scratch"], seeds=1, timesteps=32)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    code, _, err = here("run", "spec.yaml", "--workers", "1", "--quiet")
    assert code == 0, err
    manifest = json.loads((tmp_path / "runs/swing/scratch/seed0/manifest.json").read_text())
    assert manifest["family_definitions"]["swing"]["code_sha256"] == {name: sha256(module)}

    # Another definition under the same spec: the finished run is of another experiment.
    original = module.read_text()
    module.write_text(original.replace('"g": 12.0', '"g": 13.0'))
    code, _, err = here("run", "spec.yaml", "--resume", "--seeds", "2", "--workers", "1", "--quiet")
    assert code == 2 and "holds runs of a different experiment" in err

    # The same definition, other code: the grid resumes, and its report says the runs differ.
    module.write_text(original.replace("super().__init__(", "super().__init__(  # edited\n            "))
    code, _, err = here("run", "spec.yaml", "--resume", "--seeds", "2", "--workers", "1", "--quiet")
    assert code == 0, err
    report = (tmp_path / "runs/swing/report/report.md").read_text()
    assert "NOT COMPARABLE" in report and f"family swing: code of {name}" in report
    assert f"| family loaded from | {name}:FAMILY |" in report


@pytest.mark.parametrize(
    ("entry_point", "params", "message"),
    [
        ("gymnasium.envs.toy_text.frozen_lake:FrozenLakeEnv", (), r"observations are Discrete\(16\); the trunk takes"),
        (
            "gymnasium.envs.classic_control.pendulum:PendulumEnv",
            (Param("gee", 10.0, 1.0, 30.0),),
            "'gee'.*constructor argument",
        ),
        ("no_module_here_xyz:Env", (), "building its source environment.*make the module importable"),
    ],
)
def test_an_environment_the_policy_cannot_take_is_refused_on_load(
    entry_point: str, params: tuple[Param, ...], message: str
) -> None:
    title = f"Check{uuid.uuid4().hex[:8]}"
    family = Family("check", title, entry_point, params, (Variant("source", {}, "source"),), max_episode_steps=20)
    with pytest.raises(UserError, match=message) as e:
        resolve_family(family)
    assert "\n" not in str(e.value)


# --- families written as data (YAML) -------------------------------------------------------------

PENDULUM_G = {
    "name": "pend-g",
    "env": "Pendulum-v1",
    "params": {"g": [10.0, 1.0, 30.0]},
    "near": {"g12": {"g": 12.0}},
    "far": {"g15": {"g": 15.0}},
    "threshold": -250,
}


def test_a_gymnasium_id_becomes_a_family_in_a_spec(tmp_path: Path) -> None:
    spec = grid_spec("pg", family=PENDULUM_G, targets=["g12", "g15"])
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    family = load_spec(path).family
    assert family.title == "PendG" and family.ref == f"{path}#family"
    assert family.entry_point == "gymnasium.envs.classic_control.pendulum:PendulumEnv"
    assert family.max_episode_steps == 200  # the id's own time limit
    assert [(v.name, v.distance) for v in family.variants] == [("source", "source"), ("g12", "near"), ("g15", "far")]
    env = family.make("g15")
    assert env.unwrapped.g == 15.0 and env.spec is not None and env.spec.max_episode_steps == 200


def test_an_ids_own_arguments_are_kept_under_env_kwargs_and_parameters(tmp_path: Path) -> None:
    from gymnasium.envs.classic_control.pendulum import PendulumEnv

    gym.register(id="rltransfer-test/LowG-v0", entry_point=PendulumEnv, kwargs={"g": 5.0})
    with pytest.raises(UserError, match="registered with a callable; give its class as entry_point"):
        resolve_family(str(write_family(tmp_path, {**PENDULUM_G, "env": "rltransfer-test/LowG-v0"})))
    gym.register(
        id="rltransfer-test/LowGByName-v0",
        entry_point="gymnasium.envs.classic_control.pendulum:PendulumEnv",
        kwargs={"g": 5.0},
        max_episode_steps=77,
        reward_threshold=-100.0,
    )
    low = {"name": "low-g", "env": "rltransfer-test/LowGByName-v0", "params": {}, "far": {"same": {}}}
    family = resolve_family(str(write_family(tmp_path, low)))
    assert family.make("source").unwrapped.g == 5.0  # the id's own argument
    assert family.threshold == -100.0 and family.max_episode_steps == 77
    family = resolve_family(str(write_family(tmp_path, {**low, "name": "low-g7", "env_kwargs": {"g": 7.0}})))
    assert family.make("same").unwrapped.g == 7.0  # env_kwargs over the id's


def write_family(directory: Path, definition: dict[str, Any]) -> Path:
    path = directory / f"{definition['name']}.yaml"
    path.write_text(yaml.safe_dump(definition))
    return path


@pytest.mark.parametrize(
    ("changes", "token", "message"),
    [
        ({"colour": "red"}, "colour:", "unknown key 'colour'"),
        ({"env": "NoSuchEnv-v0"}, "env:", "NoSuchEnv.*give a registered Gymnasium id"),
        ({"entry_point": "x:Y"}, "env:", "either env .* or entry_point"),
        ({"threshold": None}, "family:", "declares no reward_threshold; give threshold"),
        ({"params": {"g": [10.0, 1.0]}}, "g:", r"give \[default, low, high\] or"),
        ({"params": {"g": {"default": 10.0, "low": 1.0}}}, "g:", r"give \{default, low, high\}"),
        ({"far": {"g15": {"g": 99.0}}}, "family:", r"g=99.0 is outside its valid range \[1.0, 30.0\]"),
        ({"far": {"g15": {"gee": 15.0}}}, "family:", "no parameter 'gee'"),
        ({"far": {"g15": 15.0}}, "g15:", "a variant is a mapping of parameter values"),
        ({"held_out": {"g": [25.0, 40.0]}}, "family:", r"held-out band g \[25.0, 40.0\] must lie within"),
        ({"max_episode_steps": 0}, "max_episode_steps:", "must be a positive integer"),
        ({"params": {"gee": [10.0, 1.0, 30.0]}, "near": {}, "far": {}}, "family:", "unexpected keyword argument 'gee'"),
    ],
)
def test_mistakes_in_a_written_family_name_their_line(
    tmp_path: Path, changes: dict[str, Any], token: str, message: str
) -> None:
    definition = {k: v for k, v in {**PENDULUM_G, **changes}.items() if v is not None}
    if "entry_point" in changes:
        definition["env"] = PENDULUM_G["env"]
    spec = {"name": "bad", "family": definition, "targets": ["source"], "arms": ["scratch"]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(UserError, match=message) as e:
        load_spec(path)
    found = re.match(rf"{re.escape(str(path))}:(\d+): ", str(e.value))
    assert found is not None and "\n" not in str(e.value)
    # The line named is the key at fault (or `family:` for what only the whole definition shows).
    assert path.read_text().splitlines()[int(found.group(1)) - 1].strip().startswith(token)


def test_command_line_takes_a_family_file(tmp_path: Path, here: Any) -> None:
    write_family(tmp_path, PENDULUM_G)
    code, out, err = here("envs", "--family", "pend-g.yaml", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["family"] == "pend-g"
    hp = [f"--hp={k}={v}" for k, v in TINY.items()]
    code, _, err = here("pretrain", "--family", "pend-g.yaml", "--timesteps", "32", "--quiet", *hp)
    assert code == 0, err
    manifest = json.loads((tmp_path / "runs/sources/pend-g-source-seed0/manifest.json").read_text())
    assert manifest["family_definitions"]["pend-g"]["ref"] == "pend-g.yaml"
    # An experiment spec given as the family: the family it defines, recorded as the spec's runs record it.
    spec = {"name": "exp", "family": PENDULUM_G, "targets": ["source"], "arms": ["scratch"]}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    code, out, err = here("envs", "--family", "exp.yaml", "--json")
    assert code == 0 and json.loads(out)[0]["family"] == "pend-g", err
    assert load_spec(tmp_path / "exp.yaml").family.ref == get_family(str(tmp_path / "exp.yaml")).ref
    (tmp_path / "named.yaml").write_text("family: cartpole\ntargets: [long]\narms: [scratch]\n")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- pend-g\n")
    for family, message in (
        ("broken.yaml", "malformed YAML"),
        ("absent.yaml", "cannot read family file"),
        ("list.yaml", "list.yaml: family definition: must be a mapping"),
        ("named.yaml", "'named.yaml' is an experiment spec of family 'cartpole'; pass --family cartpole"),
        ("fams/pend.py:PEND", "names a Python file; name its module and the Family in it instead: fams.pend:PEND"),
    ):
        code, _, err = here("envs", "--family", family)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_written_family_learns_exactly_as_the_shipped_one_of_the_same_dynamics() -> None:
    """Gymnasium's Pendulum-v1 written as data, against the shipped pendulum family (the same
    physics at its default mass and length; batched there, a DummyVecEnv here): same numbers."""
    from rltransfer.finetuning import finetune
    from rltransfer.hyperparams import default_hyperparams
    from rltransfer.pretraining import pretrain

    shipped = FAMILIES["pendulum"]
    written = resolve_family(family_from_mapping({**PENDULUM_G, "hyperparams": default_hyperparams("pendulum")}))
    hp = {**TINY, "n_envs": 2, "eval_freq": 64, "eval_episodes": 2}
    results = []
    for family in (shipped, written):
        source = pretrain(family, seed=3, timesteps=128, hyperparams=hp)
        tuned = finetune(family, ["g12", "g15"], None, "scratch", seed=3, timesteps=128, hyperparams=hp)
        weights = [p.detach().clone() for p in source.model.policy.parameters()]
        results.append((source.curve.returns, tuned.curve.returns, weights))
    (src_a, tuned_a, w_a), (src_b, tuned_b, w_b) = results
    assert src_a == src_b and tuned_a == tuned_b
    assert all(torch.equal(a, b) for a, b in zip(w_a, w_b, strict=True))


def test_a_family_beside_its_spec_is_found_from_another_directory(tmp_path: Path, here: Any) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    name = write_module(specs)
    spec = grid_spec("swing", family=f"{name}:FAMILY", targets=["g12"], arms=["scratch"], seeds=1, timesteps=32)
    (specs / "spec.yaml").write_text(yaml.safe_dump(spec))
    # Run from tmp_path: the module is neither importable nor in the working directory, but beside the spec.
    code, _, err = here("run", "specs/spec.yaml", "--workers", "1", "--quiet")
    assert code == 0, err
    code, _, err = here("report", "runs/swing")  # rebuilt from the recorded spec, found the same way
    assert code == 0, err

    write_family(specs, PENDULUM_G)
    (specs / "data.yaml").write_text(yaml.safe_dump({**spec, "family": "pend-g.yaml"}))
    assert load_spec(Path("specs/data.yaml")).family.ref == str(Path("specs") / "pend-g.yaml")


def test_a_runs_family_is_found_from_any_working_directory(
    tmp_path: Path, here: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spec naming its family by a package path from a directory above it (``lab.mod:FAMILY`` for a
    spec in ``proj/lab/``) runs from elsewhere; its runs, and those of a family the spec defines
    (recorded as ``spec.yaml#family``), act from any working directory."""
    package = f"lab{uuid.uuid4().hex[:8]}"
    home = tmp_path / "proj" / package
    home.mkdir(parents=True)
    name = f"userfam_{uuid.uuid4().hex[:8]}"
    (home / f"{name}.py").write_text(textwrap.dedent(MODULE).format(module=f"{package}.{name}", tag=name[-8:]))
    spec = grid_spec("swing", family=f"{package}.{name}:FAMILY", targets=["g12"], arms=["scratch"], seeds=1)
    (home / "spec.yaml").write_text(yaml.safe_dump({**spec, "timesteps": 32}))
    (home / "data.yaml").write_text(yaml.safe_dump({**spec, "name": "data", "family": PENDULUM_G, "timesteps": 32}))
    for spec_file, out in (("spec.yaml", "grid"), ("data.yaml", "data")):
        code, _, err = here("run", f"proj/{package}/{spec_file}", "--out", out, "--workers", "1", "--quiet")
        assert code == 0, err
    definition = json.loads((tmp_path / "grid" / "scratch" / "seed0" / "manifest.json").read_text())
    assert definition["family_definitions"]["swing"]["found_in"] == str((tmp_path / "proj").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # A fresh process, where the module is not imported yet: found where the run found it.
    played = cli(elsewhere, "evaluate", str(tmp_path / "grid" / "scratch" / "seed0"), "--episodes", "1", "--json")
    assert played.returncode == 0, played.stderr
    assert list(json.loads(played.stdout)) == ["g12"]
    rebuilt = cli(elsewhere, "report", "../grid")  # the recorded spec's directory leads to the module
    assert rebuilt.returncode == 0, rebuilt.stderr

    monkeypatch.chdir(elsewhere)
    code, out, err = here("evaluate", "../data/scratch/seed0", "--episodes", "1", "--json")
    assert code == 0 and list(json.loads(out)) == ["g12"], err
    # Resumed from there, the spec's family is read as ../proj/...: the same family, comparable runs.
    code, _, err = here(
        "run", f"../proj/{package}/data.yaml", "--out", "../data", "--resume", "--seeds", "2", "--quiet"
    )
    assert code == 0, err
    assert "NOT COMPARABLE" not in (tmp_path / "data" / "report" / "report.md").read_text()
