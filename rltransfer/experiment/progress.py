"""A rich progress display over the grid: runs done / running / failed / left, elapsed, ETA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from rltransfer.experiment.runner import Job, SourceJob
from rltransfer.io import interrupted_runs


class GridProgress:
    """Event sink for ``run_grid``; prints failures as they happen."""

    def __init__(self, total: int, enabled: bool = True, label: str = "runs") -> None:
        # soft_wrap: a line piped to a log keeps its path whole instead of breaking at 80 columns.
        self.console = Console(stderr=True, soft_wrap=True)
        self.enabled = enabled
        self.running = self.failed = 0
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled,
        )
        self.task = self.progress.add_task(label, total=total, status="")

    def __enter__(self) -> GridProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def __call__(self, event: str, job: Job | SourceJob, info: dict[str, Any]) -> None:
        if event == "start":
            self.running += 1
            if interrupted_runs(Path(job.label)):
                self.console.print(f"[cyan]continuing from its last snapshot:[/cyan] {escape(job.label)}")
        elif event == "retry":
            self.running -= 1
            self.console.print(f"[yellow]worker died, retrying:[/yellow] {escape(job.label)}")
        elif event in ("done", "failed"):
            self.running -= 1
            self.progress.advance(self.task)
        elif event == "skip":
            self.progress.advance(self.task)
        if event == "failed":
            self.failed += 1
            last = (info.get("error") or info.get("traceback", "")).strip().splitlines()[-1:] or ["?"]
            what = "source pretraining failed" if isinstance(job, SourceJob) else "run failed"
            # Escaped: an error's own brackets ("[/x]") would otherwise be read as markup and raise.
            self.console.print(f"[red]{what}:[/red] {escape(job.label)}: {escape(last[0])}")
        status = f"running {self.running}" + (f" · [red]failed {self.failed}[/red]" if self.failed else "")
        self.progress.update(self.task, status=status)
