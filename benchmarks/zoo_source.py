"""An RL Zoo agent as a transfer source: plain SB3 PPO trained inside ``VecNormalize``.

Trains plain SB3 PPO on Gymnasium's ``Acrobot-v1`` with the RL Zoo's hyperparameters
(``normalize: true``) and saves it as the Zoo does (``<out>/ppo/Acrobot-v1_1/Acrobot-v1.zip``
and ``Acrobot-v1/vecnormalize.pkl``). Then:

* zero-shot returns of the zip on rltransfer's Acrobot ``source`` task and three targets, with
  the statistics saved beside it (what rltransfer reads) and on raw observations without them
  (what rltransfer did before it read them);
* a fine-tuning check of the zip's heads on its own task and one target, with and without the
  Zoo's reward scaling, beside SB3's own continued training with its critic reset;
* a transfer-vs-scratch grid from the zip (``scratch``, ``zero-shot``, ``freeze``,
  ``finetune-heads``): every arm, scratch included, runs the zip's architecture and its
  ``VecNormalize`` options (rewards scaled too, as the Zoo trained it).

    python benchmarks/zoo_source.py [--timesteps 300000] [--seeds 3] [--target-timesteps 300000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch
import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize

from rltransfer.checkpoint import load_checkpoint
from rltransfer.compare.summary import Estimate
from rltransfer.experiment.run import run_experiment
from rltransfer.finetuning import finetune
from rltransfer.report.tables import fmt_estimate
from rltransfer.strategies import parse_strategy
from rltransfer.transfer import parse_parts

TARGETS = ["long1-far", "heavy1-far", "heavy2"]
EVERY = 12_000  # the fine-tuning check's evaluation interval
# rl-baselines3-zoo, hyperparams/ppo.yml, Acrobot-v1
ZOO = {"n_steps": 256, "gae_lambda": 0.94, "gamma": 0.99, "n_epochs": 4, "ent_coef": 0.0}


def train_zoo_agent(run_dir: Path, timesteps: int, seed: int) -> Path:
    """Plain SB3 PPO on Acrobot-v1 inside VecNormalize, saved in the RL Zoo's layout."""
    zip_path = run_dir / "Acrobot-v1.zip"
    if zip_path.exists():
        return zip_path
    (run_dir / "Acrobot-v1").mkdir(parents=True, exist_ok=True)
    env = VecNormalize(make_vec_env("Acrobot-v1", n_envs=16, seed=seed), gamma=ZOO["gamma"])
    model = PPO("MlpPolicy", env, seed=seed, device="cpu", **ZOO)  # type: ignore[arg-type]
    model.learn(timesteps)
    env.save(str(run_dir / "Acrobot-v1" / "vecnormalize.pkl"))  # the training env's, as the Zoo saves it
    model.save(zip_path)
    env.training, env.norm_reward = False, False
    mean, std = evaluate_policy(model, env, n_eval_episodes=20, deterministic=True)
    print(f"Zoo agent: {timesteps} steps, deterministic return on Acrobot-v1 {mean:.1f} +- {std:.1f} (SB3's)")
    return zip_path


def collapse_check(zip_path: Path, timesteps: int) -> None:
    """Fine-tuning the zip's heads with and without the Zoo's reward scaling, on its own task and a target.

    A plain zip's critic layers do not transfer, so the value head starts fresh on the shared
    trunk; the rows show what its value loss does to the trunk on unscaled returns, and what
    SB3's own continued training does (its critic is a separate network), critic reset too.
    """
    heads = dataclasses.replace(parse_strategy("finetune"), transfer=parse_parts("heads"))
    frozen = dataclasses.replace(parse_strategy("freeze"), transfer=parse_parts("heads"))
    print(f"\n{timesteps} steps on [source, long1-far], evaluations every {EVERY} steps (20 episodes)")
    cases = (
        ("finetune-heads, the zip's VecNormalize options (rewards scaled)", heads, {}),
        ("finetune-heads, observations only (rewards unscaled)", heads, {"normalize": {"norm_reward": False}}),
        ("freeze-heads, observations only", frozen, {"normalize": {"norm_reward": False}}),
    )
    for label, strategy, hp in cases:
        result = finetune(
            "acrobot",
            ["source", "long1-far"],
            zip_path,
            strategy,
            timesteps=timesteps,
            hyperparams={"eval_freq": EVERY, "eval_episodes": 20, **hp},
        )
        curves = [" ".join(f"{r:.0f}" for r in task) for task in zip(*result.curve.returns, strict=True)]
        print(f"| {label} | " + " | ".join(curves) + " |")
    stats = zip_path.parent / zip_path.stem / "vecnormalize.pkl"
    env = VecNormalize.load(str(stats), make_vec_env("Acrobot-v1", n_envs=16, seed=1))
    evaluation = VecNormalize.load(str(stats), make_vec_env("Acrobot-v1", n_envs=1, seed=5))
    evaluation.training, evaluation.norm_reward = False, False
    model = PPO.load(zip_path, env=env, device="cpu", seed=1)
    for layer in (*model.policy.mlp_extractor.value_net, model.policy.value_net):
        if isinstance(layer, torch.nn.Linear):
            layer.reset_parameters()
    returns = []
    for _ in range(timesteps // EVERY + 1):
        evaluation.obs_rms = env.obs_rms
        returns.append(evaluate_policy(model, evaluation, n_eval_episodes=20)[0])
        model.learn(EVERY, reset_num_timesteps=False)
    print("| SB3's PPO.load + learn on Acrobot-v1, critic reset | " + " ".join(f"{r:.0f}" for r in returns) + " | |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=300_000, help="the Zoo agent's training steps")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--target-timesteps", type=int, default=300_000, help="as experiments/acrobot.yaml")
    parser.add_argument("--check-steps", type=int, default=60_000, help="fine-tuning check (0: skip)")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--out", default="runs/zoo-source")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    started = time.time()
    zip_path = train_zoo_agent(out / "ppo" / "Acrobot-v1_1", args.timesteps, seed=0)
    print(f"machine: {platform.machine()} {platform.processor()}; agent ready after {time.time() - started:.0f}s")

    ckpt = load_checkpoint(zip_path)
    raw = dataclasses.replace(ckpt, trained_normalized=False, stats_file=None, vec_normalize=None)
    print("\n| observations | " + " | ".join(["source", *TARGETS]) + " |")
    print("| --- |" + " --- |" * (len(TARGETS) + 1))
    for label, source in (("normalised with the saved statistics", ckpt), ("raw (statistics not read)", raw)):
        result = finetune("acrobot", ["source", *TARGETS], source, "zero-shot", hyperparams={"eval_episodes": 20})
        returns = result.curve.returns[0]
        print(f"| {label} | " + " | ".join(f"{r:.1f}" for r in returns) + " |")

    if args.check_steps:
        collapse_check(zip_path, args.check_steps)

    spec = {
        "name": "acrobot-from-zoo",
        "family": "acrobot",
        "source": {"checkpoint": str(zip_path.resolve())},
        "targets": TARGETS,
        "arms": [
            "scratch",
            "zero-shot",
            "freeze",
            {"name": "finetune-heads", "strategy": "finetune", "transfer": "heads"},
        ],
        "seeds": args.seeds,
        "timesteps": args.target_timesteps,
        "eval": {"freq": args.target_timesteps // 10, "episodes": 10},
    }
    spec_path = out / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    grid_started = time.time()
    result, report = run_experiment(spec_path, out=out / "grid", workers=args.workers, resume=True, progress=False)
    if report is None or result.failed:
        print(f"grid incomplete: {len(result.failed)} failed runs", file=sys.stderr)
        return 1
    summary = json.loads((report / "summary.json").read_text())
    config = json.loads((out / "grid" / "scratch" / "seed0" / "config.json").read_text())["hyperparams"]
    print(
        f"\ngrid: {args.seeds} seeds, {args.target_timesteps} target steps, {time.time() - grid_started:.0f}s; "
        f"every arm: trunk {config['trunk_arch']}, heads {config['head_arch']}, normalize {config['normalize']}"
    )
    print("| target | arm | final return [95% CI] | AUC gain over scratch [95% CI] | flag |")
    print("| --- | --- | --- | --- | --- |")
    for c in summary["comparisons"]:
        final = fmt_estimate(Estimate.from_dict(c["metrics"]["final_return"]["mean"]))  # one seed: [—, —]
        gain = c["auc_difference"]
        flag = "NEGATIVE" if c["negative_transfer"] else "positive" if c["positive_transfer"] else ""
        text = "" if gain is None else fmt_estimate(Estimate.from_dict(gain))
        print(f"| {c['task']} | {c['arm']} | {final} | {text} | {flag} |")
    print(f"report: {report / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
