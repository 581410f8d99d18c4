"""The grid's progress lines on stderr, as a log file receives them."""

from __future__ import annotations

from pathlib import Path

import pytest

from rltransfer.experiment.progress import GridProgress
from rltransfer.experiment.runner import SourceJob


def test_a_failure_prints_one_literal_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Brackets in an error are text, not rich markup ("[/x]" used to raise out of the grid), and a
    long path is not broken at 80 columns when stderr is a file."""
    label = tmp_path / ("deep-" * 20) / "[arm]" / "seed0"
    error = "ValueError: bad shape [/obs] in [bold] wrapper"
    with GridProgress(1, enabled=False) as display:
        display("start", SourceJob(label), {})
        display("failed", SourceJob(label), {"error": error})
        display("retry", SourceJob(label), {})
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"source pretraining failed: {label}: {error}",
        f"worker died, retrying: {label}",
    ]


def test_a_runs_progress_bar_counts_the_whole_rollouts_ppo_takes() -> None:
    """A budget of 100 steps is 2 rollouts of 2 envs x 32 steps: the bar ends at 128/128, not 128/100."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from rltransfer.training import RolloutProgressBar

    model = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2), n_steps=32, batch_size=64, n_epochs=1)
    bar = RolloutProgressBar()
    model.learn(100, callback=bar)
    assert (bar.pbar.total, bar.pbar.n) == (128, 128)
    bar = RolloutProgressBar()
    model.learn(64, callback=bar, reset_num_timesteps=False)  # continued: the steps still to take
    assert (bar.pbar.total, bar.pbar.n) == (64, 64)
