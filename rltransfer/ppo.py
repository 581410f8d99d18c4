"""PPO with per-parameter-group learning-rate scales that survive SB3's schedule."""

from __future__ import annotations

from collections.abc import Sequence

import torch as th
from stable_baselines3 import PPO


class TransferPPO(PPO):
    """SB3 PPO whose optimizer groups may carry an ``lr_scale``.

    SB3's ``_update_learning_rate`` sets every group's rate to the schedule's value before
    each update, which would erase per-layer rates; here each group gets
    ``schedule(progress) * lr_scale``. Saved zips load with plain ``PPO.load``.
    """

    def _update_learning_rate(self, optimizers: list[th.optim.Optimizer] | th.optim.Optimizer) -> None:
        lr = self.lr_schedule(self._current_progress_remaining)
        self.logger.record("train/learning_rate", lr)
        for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)

    def set_param_groups(self, groups: Sequence[tuple[str, Sequence[th.nn.Parameter], float]]) -> None:
        """Rebuild the policy optimizer with named groups ``(name, params, lr_scale)``.

        Every policy parameter must be in exactly one group (frozen ones included, so that
        unfreezing later needs no new optimizer; Adam skips parameters without gradients).
        """
        policy = self.policy
        seen: set[int] = set()
        param_groups = []
        for name, params, scale in groups:
            ids = {id(p) for p in params}
            if ids & seen:
                raise ValueError(f"parameter group '{name}' overlaps an earlier group")
            seen |= ids
            if params:
                param_groups.append({"params": list(params), "name": name, "lr_scale": float(scale)})
        missing = [n for n, p in policy.named_parameters() if id(p) not in seen]
        if missing:
            raise ValueError(f"parameters in no group: {missing}")
        lr = self.lr_schedule(1.0)
        policy.optimizer = policy.optimizer_class(param_groups, lr=lr, **policy.optimizer_kwargs)

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        # A multi-group optimizer state would not load into plain PPO's single-group
        # optimizer; the weights are what a transferred model is for.
        if len(self.policy.optimizer.param_groups) > 1:
            state_dicts = [s for s in state_dicts if s != "policy.optimizer"]
        return state_dicts, variables
