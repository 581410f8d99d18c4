"""Ctrl-C during training, taken between two environment steps rather than wherever it lands.

Python raises ``KeyboardInterrupt`` at whatever bytecode the main thread is running when SIGINT
arrives. Inside TensorBoard's event writer (a queue shared with its writer thread, whose
``threading.Condition`` is pure Python) that can lose the wake-up of the writer thread: the run's
``logger.close()`` then waits for it until its next flush, up to two minutes, and a grid worker
interrupted alone kept training while its runner waited (2 of ~130 interrupts in a stress loop).
While ``deferred`` is active a first SIGINT only sets a flag, raised as ``KeyboardInterrupt`` once the
run has finished its PPO iteration and snapshotted it (``Snapshots.on_rollout``: nothing is lost), or,
in a run that takes no snapshots, at the next environment step (``StopOnInterrupt``); a second SIGINT
goes to the handler that was there before (Python's: ``KeyboardInterrupt`` at once), for a run stuck
elsewhere. A grid runner asks its workers to stop with ``STOP_REQUEST``, which counts as a first.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import FrameType
from typing import TypeVar

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

_received = 0  # SIGINTs while deferred
_raised = False  # whether the first was raised
_active = False  # whether a deferral is in force (an inner one leaves it to the outer)
T = TypeVar("T")
# A runner's request that its workers stop (``pool.stop_workers``): a deferred stop as a first SIGINT,
# never a second, which a worker that also had the terminal's Ctrl-C would take as "stop at once".
STOP_REQUEST = getattr(signal, "SIGUSR1", signal.SIGINT)


def pending() -> bool:
    """Whether a deferred SIGINT waits to be raised."""
    return _received > 0 and not _raised


def raise_pending() -> None:
    """Raise the deferred SIGINT as ``KeyboardInterrupt``, if one arrived."""
    global _raised
    if pending():
        _raised = True
        raise KeyboardInterrupt


@contextmanager
def deferred() -> Iterator[None]:
    """SIGINT deferred to the body's next ``raise_pending`` (or its end), as the module says.

    Only in the main thread, whose handler Python runs, and only over a handler set from Python
    (one set in C, or SIGINT ignored, is left alone); the previous handler is restored after.
    Nested, the inner one changes nothing: what it would raise at its end, the outer raises at its.
    """
    global _received, _raised, _active
    previous = signal.getsignal(signal.SIGINT)
    if _active or threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    again: Callable[[int, FrameType | None], object] = previous

    def flag(signum: int, frame: FrameType | None) -> None:
        global _received
        _received += 1
        if _received > 1:  # the second: the user insists, at once
            again(signum, frame)

    def requested(signum: int, frame: FrameType | None) -> None:
        global _received
        _received = max(_received, 1)

    # A pool worker takes its runner's stop request as it takes SIGINT (``pool._worker_init``).
    before = signal.getsignal(STOP_REQUEST)
    relay = STOP_REQUEST != signal.SIGINT and callable(before)
    _received, _raised, _active = 0, False, True
    signal.signal(signal.SIGINT, flag)
    if relay:
        signal.signal(STOP_REQUEST, requested)
    try:
        yield
        raise_pending()  # one that arrived after the last step is not lost
    finally:
        signal.signal(signal.SIGINT, previous)
        if relay:
            signal.signal(STOP_REQUEST, before)
        _received, _raised, _active = 0, False, False


@contextmanager
def run_in(staging: AbstractContextManager[T]) -> Iterator[T]:
    """A run's staging directory (``io.staging_dir``) with SIGINT ``deferred`` over all of it: an
    interrupt that arrives once the last PPO iteration has begun (no snapshot point is left) lets the
    run finish, evaluate and be renamed into place, and is raised then; earlier, training raises it."""
    with deferred(), staging as directory:
        yield directory


@contextmanager
def training(model: BaseAlgorithm) -> Iterator[None]:
    """The body trains ``model`` with SIGINT ``deferred``, then its logger is closed (an interrupt there
    deferred too): the body raises it at its steps (``raise_pending``, ``StopOnInterrupt``). The logger
    is looked up after the body: ``learn`` sets SB3's default one up on a model that has none."""
    with deferred():
        try:
            yield
        finally:
            model.logger.close()


class StopOnInterrupt(BaseCallback):
    """Raise a deferred SIGINT between two environment steps (first in the callbacks of a run that
    takes no snapshots; one that does raises it at its next, ``Snapshots.on_rollout``)."""

    def _on_step(self) -> bool:
        raise_pending()
        return True
