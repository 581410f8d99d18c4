"""TensorBoard custom-scalars layout: scratch and every transfer arm on one chart per task."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from rltransfer.experiment.spec import ExperimentSpec

LAYOUT_DIR = "_layout"  # the Custom Scalars layout: every arm's runs on one chart per task


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
    directory = out / LAYOUT_DIR
    # Written aside and swapped in: a resumed grid would otherwise add one event file per
    # invocation, and TensorBoard reads any one of a run's layouts, not the newest.
    for stale in out.glob(".layout-*"):  # left by a runner killed while writing (the grid's lock: no other now)
        shutil.rmtree(stale, ignore_errors=True)
    fresh = Path(tempfile.mkdtemp(prefix=".layout-", dir=out))
    with SummaryWriter(str(fresh)) as writer:
        writer.add_custom_scalars(layout)
    shutil.rmtree(directory, ignore_errors=True)
    fresh.rename(directory)
    return directory
