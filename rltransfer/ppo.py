"""PPO with per-parameter-group learning-rate scales that survive SB3's schedule."""

from __future__ import annotations

from collections.abc import Sequence

import torch as th
from stable_baselines3 import PPO


class TransferPPO(PPO):
    """SB3 PPO whose optimizer groups may carry an ``lr_scale``.

    SB3's ``_update_learning_rate`` sets every group's rate to the schedule's value before
    each update, which would erase per-layer rates; here each group gets
    ``schedule(progress) * lr_scale``. Saved zips load with plain ``PPO.load`` (the optimizer
    state is saved in the single-group layout plain PPO builds).
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
        policy.optimizer = policy.optimizer_class(param_groups, lr=lr, **policy.optimizer_kwargs)  # type: ignore[call-arg]

    def get_parameters(self) -> dict[str, dict]:
        params = super().get_parameters()
        optimizer = self.policy.optimizer
        if len(optimizer.param_groups) > 1:
            # Plain PPO.load expects the single-group optimizer SB3 builds from
            # ``policy.parameters()``; save the same moments in that layout.
            params["policy.optimizer"] = single_group_state(optimizer, list(self.policy.parameters()))
        return params


def single_group_state(optimizer: th.optim.Optimizer, params: Sequence[th.nn.Parameter]) -> dict:
    """``optimizer.state_dict()`` re-indexed as one group over ``params`` (in that order).

    Per-group settings other than the first group's (``lr_scale``, rates) are dropped: the
    learning rate is re-set from the schedule at every update anyway.
    """
    state = optimizer.state_dict()
    position = {id(p): i for i, p in enumerate(params)}
    old_index = {}
    for group, saved in zip(optimizer.param_groups, state["param_groups"], strict=True):
        for p, idx in zip(group["params"], saved["params"], strict=True):
            old_index[idx] = position[id(p)]
    first = {k: v for k, v in state["param_groups"][0].items() if k not in ("params", "name", "lr_scale")}
    return {
        "state": {old_index[i]: v for i, v in state["state"].items()},
        "param_groups": [{**first, "params": list(range(len(params)))}],
    }
