"""A grid's events as ``(event, arm)`` pairs (``"source"`` for the source task), and the order
a source pretrained inside the grid must keep, for the local and the Ray backends' tests."""

from __future__ import annotations

from typing import Any

from rltransfer.experiment.runner import Job, SourceJob


class Events(list[tuple[str, str]]):
    """An ``on_event`` sink that keeps every event in order."""

    def __call__(self, event: str, job: Job | SourceJob, info: dict[str, Any]) -> None:
        self.append((event, "source" if isinstance(job, SourceJob) else job.arm.name))


def assert_source_beside_scratch(events: Events) -> None:
    """The source started first, a scratch run started before it finished, no other run did."""
    source_done = events.index(("done", "source"))
    assert events[0] == ("start", "source")
    assert events.index(("start", "scratch")) < source_done, "no scratch run beside the source"
    others = [i for i, (event, arm) in enumerate(events) if event == "start" and arm not in ("source", "scratch")]
    assert others and min(others) > source_done, "a run used the source before it was ready"
