"""Source-task forgetting: does the fine-tuned trunk still serve the source policy's heads?

Forgetting is measured by putting the fine-tuned trunk back under the source policy's own
heads and evaluating on the source task: ``before`` is the source policy as pretrained,
``after`` the same heads on the fine-tuned trunk. A frozen trunk forgets nothing by
construction; a drifting trunk shows how far its features moved away from the source task.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch as th

from rltransfer.checkpoint import Checkpoint
from rltransfer.envs import Family
from rltransfer.evaluation import evaluate_tasks
from rltransfer.policies import TRUNK_PREFIX
from rltransfer.source_policy import load_source_model, runs_as_source_of, source_eval_env, source_variant


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
    """``None`` when the source cannot run on ``family``'s source task (``runs_as_source_of``).

    A plain SB3 zip records no task: its source task is taken as the family's source variant."""
    if not runs_as_source_of(checkpoint, family):
        return None
    model = load_source_model(checkpoint, family, seed)
    eval_env = {"source": source_eval_env(checkpoint, family, source_variant(checkpoint, family), n_episodes)}
    before = evaluate_tasks(model, eval_env, n_episodes, seed)["source"][0]
    with th.no_grad():
        for name, param in model.policy.named_parameters():
            if name.startswith(TRUNK_PREFIX):
                param.copy_(trunk_state[name])
    after = evaluate_tasks(model, eval_env, n_episodes, seed)["source"][0]
    model.get_env().close()  # type: ignore[union-attr]
    return Forgetting(before, after)
