"""Source-task forgetting: does the fine-tuned trunk still serve the source policy's heads?

Forgetting is measured by putting the fine-tuned trunk back under the source policy's own
heads and evaluating on the source task: ``before`` is the source policy as pretrained,
``after`` the same heads on the fine-tuned trunk. A frozen trunk forgets nothing by
construction; a drifting trunk shows how far its features moved away from the source task.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch as th

from rltransfer import normalization
from rltransfer.checkpoint import Checkpoint
from rltransfer.envs import Family, Variant, make_eval_env
from rltransfer.envs.multitask import make_task_vec_env
from rltransfer.evaluation import evaluate_tasks
from rltransfer.hyperparams import ppo_kwargs
from rltransfer.policies import TRUNK_PREFIX
from rltransfer.ppo import TransferPPO
from rltransfer.pretraining import source_policy_kwargs


@dataclass
class Forgetting:
    before: float
    after: float

    @property
    def drop(self) -> float:
        """Positive when the source task got worse."""
        return self.before - self.after


def measure_forgetting(
    checkpoint: Checkpoint,
    family: Family,
    trunk_state: dict[str, th.Tensor],
    n_episodes: int,
    seed: int,
) -> Forgetting | None:
    """``None`` when the source is not an rltransfer source checkpoint of ``family``."""
    manifest = checkpoint.manifest
    if not manifest or manifest.get("kind") != "source" or manifest.get("family") != family.name:
        return None
    hp = manifest["hyperparams"]
    variant = Variant("source-task", manifest["variant"]["params"], "source")
    env = normalization.wrap(make_task_vec_env(family, variant, 1, seed=seed), hp, False, False)
    kwargs = {k: v for k, v in ppo_kwargs(hp).items() if k not in ("n_steps", "batch_size")}
    model = TransferPPO(
        "MlpPolicy",
        env,
        seed=seed,
        policy_kwargs=source_policy_kwargs(hp),
        device="cpu",
        n_steps=64,
        batch_size=64,
        **kwargs,
    )
    model.policy.load_state_dict(checkpoint.state_dict)
    eval_env = {"source": normalization.wrap(make_eval_env(family, variant, n_episodes), hp, False, False)}
    if checkpoint.obs_normalization is not None:
        normalization.load_stats(eval_env["source"], checkpoint.obs_normalization)
    before = evaluate_tasks(model, eval_env, n_episodes, seed)["source"][0]
    with th.no_grad():
        for name, param in model.policy.named_parameters():
            if name.startswith(TRUNK_PREFIX):
                param.copy_(trunk_state[name])
    after = evaluate_tasks(model, eval_env, n_episodes, seed)["source"][0]
    env.close()
    return Forgetting(before, after)
