"""Interrupts of a grid (Ctrl-C, ``kill -INT`` of the runner or of one worker): the runs in flight
stop within seconds, each snapshotting the PPO iteration in progress for ``--resume``; a run takes
one between two environment steps, never inside TensorBoard's writer (``rltransfer.interrupts``)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest
import torch as th
import yaml
from specs import grid_spec, start_cli
from stable_baselines3.common.logger import TensorBoardOutputFormat

from rltransfer import interrupts, pretrain
from rltransfer.distill import distill
from rltransfer.experiment.pool import stop_workers
from rltransfer.ppo import TransferPPO
from rltransfer.training import learn


@pytest.mark.parametrize("whom", ["runner", "group", "worker"])
def test_an_interrupt_stops_the_runs_in_flight_at_once(tmp_path: Path, whom: str) -> None:
    """Ctrl-C (the whole process group), ``kill -INT`` of the runner alone or of one worker all stop
    the grid in seconds, not once the runs in flight finish: exit 130, no worker left, no traceback,
    and each run snapshotted where it stopped for ``--resume``, though its 5-minute snapshot
    interval had not come (a runner's request does not count as a second Ctrl-C, "stop at once")."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(grid_spec("rel", seeds=2, arms=["scratch"], timesteps=200_000)))
    out = tmp_path / "run"
    args = ["run", str(spec), "--out", str(out), "--workers", "2", "--quiet"]
    proc = start_cli(args, start_new_session=True)
    try:
        deadline = time.time() + 120
        while (
            time.time() < deadline
            and [  # both runs a few PPO iterations in
                len(log.read_text().splitlines()) >= 3 for log in out.glob("scratch/seed*.partial-*/logs/progress.csv")
            ].count(True)
            < 2
        ):
            time.sleep(0.1)
        workers = {int(p.name.split(".partial-")[1].split("-")[0]) for p in out.glob("scratch/seed*.partial-*")}
        assert len(workers) == 2 and proc.poll() is None, "both runs should be training"
        stopped = time.time()
        if whom == "group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid if whom == "runner" else min(workers), signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:  # not left training for minutes after a failure
            os.killpg(proc.pid, signal.SIGKILL)
    assert time.time() - stopped < 30  # a run of this budget takes minutes here
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert "interrupted; finished runs are kept" in err and "Traceback" not in err, err
    time.sleep(0.5)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    assert len(list(out.glob("scratch/seed*.partial-*/snapshot.pt"))) == 2


def interrupt_inside_tensorboard(monkeypatch: pytest.MonkeyPatch, step: int) -> list[int]:
    """A SIGINT sent from inside TensorBoard's first write at ``step`` or later, as Ctrl-C might land;
    the steps whose write then finished."""
    write = TensorBoardOutputFormat.write
    written: list[int] = []

    def interrupted_write(self: TensorBoardOutputFormat, values: Any, excluded: Any, at: int = 0) -> None:
        if at >= step and not written:
            os.kill(os.getpid(), signal.SIGINT)
            write(self, values, excluded, at)
            written.append(at)
        else:
            write(self, values, excluded, at)

    monkeypatch.setattr(TensorBoardOutputFormat, "write", interrupted_write)
    return written


def test_an_interrupt_inside_the_tensorboard_writer_stops_the_run_at_the_next_step(
    tmp_path: Path, tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGINT landing inside TensorBoard's writer is raised at the next environment step, not
    there: an interrupt inside its queue could lose the wake-up of its writer thread, and the
    run's ``logger.close()`` then hung for up to two minutes (a grid worker kept training)."""
    written = interrupt_inside_tensorboard(monkeypatch, 256)  # a few iterations in: a snapshot was taken
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as caught:
        pretrain("cartpole", timesteps=100_000, hyperparams=tiny, out=tmp_path / "src", snapshot_every=0)
    assert written, "the interrupted write was not finished"
    assert caught.traceback[-1].name == "raise_pending"  # raised between two steps
    assert signal.getsignal(signal.SIGINT) is before
    assert list(tmp_path.glob("src.partial-*/snapshot.pt")), "the snapshot to resume from is kept"


def test_distillation_takes_an_interrupt_between_two_steps(
    tmp_path: Path, tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    teachers = [tmp_path / v for v in ("source", "long")]
    for out in teachers:
        pretrain("cartpole", out.name, timesteps=64, hyperparams=tiny, out=out)
    written = interrupt_inside_tensorboard(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt) as caught:
        distill("cartpole", teachers, rounds=50, steps_per_round=64, epochs=1, out=tmp_path / "s", snapshot_every=0)
    assert written and caught.traceback[-1].name == "raise_pending"


def test_an_interrupted_run_snapshots_the_iteration_in_progress_and_resumes_exactly(
    tmp_path: Path, tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C long before the next periodic snapshot is due: the run finishes its PPO iteration,
    snapshots it and stops, so that ``--resume`` loses nothing and ends where an uninterrupted run does."""
    from rltransfer.snapshot import read_snapshot

    reference = pretrain("cartpole", timesteps=1024, hyperparams=tiny, out=tmp_path / "ref")
    interrupt_inside_tensorboard(monkeypatch, 512)
    with pytest.raises(KeyboardInterrupt):
        pretrain("cartpole", timesteps=1024, hyperparams=tiny, out=tmp_path / "src", snapshot_every=300)
    [staging] = tmp_path.glob("src.partial-*")
    state = read_snapshot(staging)
    assert state is not None and 512 <= state["num_timesteps"] < 1024
    monkeypatch.undo()
    resumed = pretrain("cartpole", timesteps=1024, hyperparams=tiny, out=tmp_path / "src", resume=True)
    assert resumed.manifest["resumed"][0]["at_step"] == state["num_timesteps"]
    ours, theirs = resumed.model.policy.state_dict(), reference.model.policy.state_dict()
    assert all(th.equal(ours[k], theirs[k]) for k in theirs)


def test_an_interrupt_in_the_last_iteration_lets_the_run_finish_then_stops(
    tmp_path: Path, tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the last PPO iteration has begun no snapshot point is left: the run finishes, evaluates
    and is renamed into place, and only then is the interrupt raised (it lost the run before)."""
    written = interrupt_inside_tensorboard(monkeypatch, 1024)  # the last iteration's logs
    with pytest.raises(KeyboardInterrupt):
        pretrain("cartpole", timesteps=1024, hyperparams=tiny, out=tmp_path / "src", snapshot_every=300)
    assert written == [1024]
    assert (tmp_path / "src" / "manifest.json").is_file() and not list(tmp_path.glob("src.partial-*"))


def test_a_deferral_inside_another_leaves_the_interrupt_to_the_outer() -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGINT)
        reached.append(interrupts.pending())  # the inner one raised nothing at its end
    assert reached == [True] and not interrupts.pending()


def test_a_runners_stop_request_is_a_first_interrupt_never_a_second() -> None:
    """A worker that had the terminal's Ctrl-C and then its runner's request still snapshots before
    it stops (a second SIGINT would stop it at once); the request alone stops it as one Ctrl-C."""
    calls: list[int] = []

    def previous(signum: int, frame: object) -> None:
        calls.append(signum)

    old = signal.signal(signal.SIGINT, previous), signal.signal(interrupts.STOP_REQUEST, previous)
    try:
        for first in (signal.SIGINT, None):
            with pytest.raises(KeyboardInterrupt), interrupts.deferred():
                if first is not None:
                    os.kill(os.getpid(), first)
                os.kill(os.getpid(), interrupts.STOP_REQUEST)
                os.kill(os.getpid(), interrupts.STOP_REQUEST)
                assert interrupts.pending() and not calls
            assert signal.getsignal(interrupts.STOP_REQUEST) is previous
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(interrupts.STOP_REQUEST, old[1])


def test_a_second_interrupt_goes_to_the_previous_handler_at_once() -> None:
    """The user who presses Ctrl-C twice (or a runner stopping its workers) is not made to wait."""
    calls: list[int] = []

    def previous(signum: int, frame: object) -> None:
        calls.append(signum)

    old = signal.signal(signal.SIGINT, previous)
    try:
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            assert interrupts.pending() and not calls
            os.kill(os.getpid(), signal.SIGINT)
            assert calls == [signal.SIGINT]
            with pytest.raises(KeyboardInterrupt):
                interrupts.raise_pending()
            interrupts.raise_pending()  # raised once
        assert signal.getsignal(signal.SIGINT) is previous and not interrupts.pending()
    finally:
        signal.signal(signal.SIGINT, old)


def test_an_interrupt_after_the_last_step_is_not_lost() -> None:
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        os.kill(os.getpid(), signal.SIGINT)
    assert not interrupts.pending()


def test_outside_the_main_thread_nothing_is_deferred() -> None:
    """Python runs signal handlers in the main thread only; a run in another thread leaves them be."""
    seen: list[object] = []

    def body() -> None:
        with interrupts.deferred():
            seen.append(signal.getsignal(signal.SIGINT))

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [before]


class StuckWorker:
    """A pool process that stops only when killed: it takes every wait it is given in full."""

    pid = None  # nothing to signal

    def __init__(self) -> None:
        self.killed = False

    def join(self, timeout: float | None = None) -> None:
        time.sleep(timeout or 0.0)

    def is_alive(self) -> bool:
        return not self.killed

    def kill(self) -> None:
        self.killed = True


class StuckPool:
    def __init__(self, workers: int) -> None:
        self._processes = {k: StuckWorker() for k in range(workers)}

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def test_a_stopping_runner_waits_for_its_workers_together() -> None:
    """One second for the workers to take their own Ctrl-C, then the grace, for all of them at
    once: waited one by one, a 16-worker pool heard nothing for 16 s."""
    pool = StuckPool(6)
    started = time.monotonic()
    stop_workers(cast(Any, pool), grace=0.5)
    assert time.monotonic() - started < 3.0  # 1 + 0.5 s; one by one: 6 x (1 + 0.5) s
    assert all(p.killed for p in pool._processes.values())


def test_learn_closes_the_logger_sb3_sets_up_for_a_model_without_one() -> None:
    """``learn`` on a model no logger was attached to (as ``benchmarks/overhead.py`` builds them):
    SB3's ``learn`` sets its default logger up, and that is the one closed after."""
    model = TransferPPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, seed=0)
    learn(model, 64, [])
    assert model.num_timesteps == 64
