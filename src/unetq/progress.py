"""The one progress display of unetq's long loops: what, a bar, done of total (bytes and speed
for a download, items per second where a rate is asked for), time elapsed and time left."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items done per second, e.g. '12.3 images/s' (rich's estimate over the last 30 s)."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"- {self.unit}/s")


def make_progress(
    console: Console, transient: bool = False, download: bool = False, rate: str | None = None
) -> Progress:
    """`transient`: the bars vanish when done (a command that prints a table after them);
    `rate`: the unit of an items-per-second column (e.g. "images")."""
    counter = (DownloadColumn(), TransferSpeedColumn()) if download else (MofNCompleteColumn(),)
    if rate:
        counter = (*counter, RateColumn(rate))
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        *counter,
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )
