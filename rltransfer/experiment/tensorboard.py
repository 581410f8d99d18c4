"""TensorBoard custom-scalars layout: scratch and every transfer arm on one chart per task."""

from __future__ import annotations

import re
from pathlib import Path

from rltransfer.experiment.spec import ExperimentSpec


def write_layout(spec: ExperimentSpec, out: Path) -> Path:
    """Write the layout into ``<out>/_layout`` (runs live in ``<out>/<arm>/seed<k>/logs``).

    ``tensorboard --logdir <out>`` then shows, under Custom Scalars, one chart per task with
    every run's ``eval/<task>/mean_return`` and ``rollout/<task>/ep_rew_mean``.
    """
    from torch.utils.tensorboard import SummaryWriter

    def tag(kind: str, task: str) -> list[str]:
        return [rf"{kind}/{re.escape(task)}/(mean_return|ep_rew_mean)$"]

    layout = {
        "evaluation return per task (all arms)": {t: ["Multiline", tag("eval", t)] for t in spec.task_names},
        "training episode return per task (all arms)": {t: ["Multiline", tag("rollout", t)] for t in spec.task_names},
    }
    directory = out / "_layout"
    with SummaryWriter(str(directory)) as writer:
        writer.add_custom_scalars(layout)
    return directory
